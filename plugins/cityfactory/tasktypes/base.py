"""The one protocol every kind of model implements, and the tables the stages read from it.

A stage never asks which kind of model it has in hand: it asks the scenario's task type (``task_type`` in the
model spec) for what differs by kind: the spec's own keys, examples from gold and their split,
baselines, metrics (and which direction is better), the gate, the families a search draws from,
the ONNX variants and the edge contract, how served predictions meet what really happened, and
the figures and model-card values. As in MLflow Recipes, metrics are data (``Metric``), not code
branches; as in OpenLineage's extractor manager, a new kind is a new class registered by name
(``tasktypes.register``), and nothing that asks is edited.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cityfactory.profiling.drafts import Draft, DraftRequest
from cityfactory.tasktypes.spec import ModelSpec

if TYPE_CHECKING:  # parsing a DAG file reads specs through here: no numpy or pandas at import
    import numpy as np
    import pandas as pd

    from cityfactory.compression.variants import Variant

Report = Callable[[int, float], None]  # (step, validation value): a search's pruner raises from it


@dataclass(frozen=True)
class Metric:
    """One metric a task type reports: its label, which direction is better, and how it pools
    over days of different sizes (``mean`` of the values, or ``rms`` for a root-mean-square)."""

    name: str
    label: str
    greater_is_better: bool = False
    pooled: str = "mean"
    in_summary: bool = True  # a column of the terminal's run summary (the report shows every metric)

    def better(self, a: float, b: float) -> bool:
        return a > b if self.greater_is_better else a < b

    def pool(self, values: list[float], rows: list[int]) -> float:
        total = sum(rows)
        if self.pooled == "rms":
            return math.sqrt(sum(n * v**2 for v, n in zip(values, rows)) / total)
        return sum(n * v for v, n in zip(values, rows)) / total


def digest(*arrays: np.ndarray) -> str:
    """sha256 of arrays' dtypes, shapes and bytes."""
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    for a in arrays:
        h.update(str((a.dtype, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


@dataclass
class Examples:
    """Gold rows split for training: frames (for baselines, spans and figures) and model arrays."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    x_train: np.ndarray
    y_train: np.ndarray
    x_validation: np.ndarray
    y_validation: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    test_start: pd.Timestamp
    spans: dict[str, str] = field(default_factory=dict)  # part -> "first .. last", for the card
    split: dict[str, int] = field(default_factory=dict)  # how the parts were cut (MLflow params, the card)
    # rolling-origin validation: the earlier windows as (training end, validation end) row positions
    # in the seen rows (training then validation, in time order), the latest first
    folds: list[tuple[int, int]] = field(default_factory=list)

    @property
    def seen(self) -> pd.DataFrame:
        """The rows a refit trains on: training and validation."""
        import pandas as pd

        return pd.concat([self.train, self.validation])

    @cached_property
    def x_seen(self) -> np.ndarray:
        import numpy as np

        return np.concatenate([self.x_train, self.x_validation])

    @cached_property
    def y_seen(self) -> np.ndarray:
        import numpy as np

        return np.concatenate([self.y_train, self.y_validation])

    def fingerprint(self) -> dict[str, str]:
        """sha256 of the model arrays a refit trains on and of the test arrays: two runs saw the same
        examples exactly when these are equal, whatever day or machine they ran on."""
        return {"seen": digest(self.x_seen, self.y_seen), "test": digest(self.x_test, self.y_test)}

    def earlier_folds(self) -> Iterator[Examples]:
        """Each earlier validation window with the rows before it to train on (views, no copies), so
        a trial is judged on several origins rather than on one window's luck."""
        x, y = self.x_seen, self.y_seen
        for train_end, validation_end in self.folds:
            yield replace(self, x_train=x[:train_end], y_train=y[:train_end], x_validation=x[train_end:validation_end],
                          y_validation=y[train_end:validation_end], folds=[])


@dataclass
class Trained:
    """A fitted model of some family, with its per-step validation history (``step`` and
    ``validation_<metric>`` keys) and the step it was best at."""

    model: Any  # has family, predict_array(x) and log_model(**mlflow kwargs)
    history: list[dict]
    best_step: int


@dataclass
class Combination:
    """What the model is made of: the search trials whose refitted models are averaged (one: the
    winner alone), and each candidate's validation score (mean over the folds) by its ``name``
    (empty when nothing was compared)."""

    members: list[dict]
    validation: dict[str, float] = field(default_factory=dict)

    @property
    def families(self) -> list[str]:
        """The families averaged, each once (a bag's refits of one trial are one member)."""
        return list(dict.fromkeys(m["family"] for m in self.members))

    @property
    def family(self) -> str:
        return " + ".join(self.families)

    @property
    def trials(self) -> list[tuple]:
        """The search trials averaged, each once: (family, the trial's run id)."""
        return list(dict.fromkeys((m["family"], m["run_id"]) for m in self.members))

    @property
    def depth(self) -> int:
        """How many of each family's best trials are averaged (the most of any family)."""
        return max(sum(t[0] == family for t in self.trials) for family in self.families)

    @property
    def name(self) -> str:
        """The families, and how many of each one's best trials where more than one."""
        return self.family if self.depth == 1 else f"{self.family} top {self.depth}"

    @property
    def refits(self) -> int:
        """How many refits, seed after seed, each chosen trial has (``training.refit_seeds``)."""
        return len(self.members) // len(self.trials)


@dataclass
class GateDecision:
    alias: str | None
    reason: str


@dataclass
class Judgement:
    """A candidate scored once on the test rows beside the baselines (and the champion)."""

    metrics: dict[str, dict[str, float]]  # model name -> metric -> value
    by_group: dict[str, dict[str, dict[str, float]]]  # group (series, class, ...) -> model name -> metrics
    decision: GateDecision
    predictions: dict[str, np.ndarray]  # model name -> its test predictions (the candidate is "model")


class TaskType(ABC):
    """What a stage may ask of a kind of model. Subclasses fill the class tables and the methods;
    ``tasktypes.register`` makes them known by ``name``."""

    name: ClassVar[str]
    spec_class: ClassVar[type[ModelSpec]]
    metrics: ClassVar[Mapping[str, Metric]]
    hand_set_family: ClassVar[str]  # the family of the spec's hand-set model (the search's first trial)
    compression_metric: ClassVar[str]  # what a compressed variant may lose at most a share of
    bake_metric: ClassVar[Metric]  # what ``bake_error`` measures (lower is better), for the rollout gate
    reference_baseline: ClassVar[str]  # the baseline live accuracy is shown against
    # compression: may the fp32 export ship when no compressed variant fits (rather than fail), and
    # must a compressed variant be faster at batch 1 to ship
    compression_fallback: ClassVar[bool] = False
    compression_must_be_faster: ClassVar[bool] = False

    # -- a new scenario --------------------------------------------------------------------------
    drafts_from: ClassVar[type | None] = None  # the profile of sample data (``profiling``) it drafts from

    def draft(self, name: str, profile: Any, request: DraftRequest) -> Draft:
        """Every file of a new scenario ``name`` of this kind over ``profile`` (``cli new-scenario``)."""
        raise NotImplementedError(f"the {self.name} kind drafts no scenarios")

    # -- the spec --------------------------------------------------------------------------------
    @abstractmethod
    def spec_problems(self, spec: ModelSpec, has_series: bool, path: Path) -> list[str]:
        """Cross-file problems a spec's own validation cannot see (naming ``path`` and the key)."""

    @abstractmethod
    def mart_columns(self, spec: ModelSpec) -> dict[str, str]:
        """Every feature-mart column the spec names, by its key in the spec (``data.numeric.3``):
        ``validate`` checks each against the mart's documented columns before any run."""

    def series_categories(self, spec: ModelSpec) -> list | None:
        """The series the model knows by name (a one-hot list, say), or None if it takes any: a
        series in the data but not here would reach the model as unknown."""
        return None

    @abstractmethod
    def gate_metric(self, spec: ModelSpec) -> str: ...

    def search_metric(self, spec: ModelSpec) -> str:
        return (spec.search.metric if spec.search else None) or self.gate_metric(spec)

    @abstractmethod
    def hand_set(self, spec: ModelSpec) -> tuple[dict, int]:
        """The spec's hand-set model as settings of ``hand_set_family``, and its seed."""

    # -- data ------------------------------------------------------------------------------------
    @abstractmethod
    def examples(self, spec: ModelSpec, gold: pd.DataFrame) -> Examples: ...

    @abstractmethod
    def usable(self, spec: ModelSpec, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows a model can be fed (inputs and target present)."""

    @abstractmethod
    def input_names(self, spec: ModelSpec) -> list[str]:
        """The model's inputs in order (a champion trained on others may not be comparable)."""

    @abstractmethod
    def target(self, spec: ModelSpec) -> str: ...

    @abstractmethod
    def time_column(self, spec: ModelSpec) -> str:
        """When an example happened (the split, drift windows and spans read it)."""

    @abstractmethod
    def drift_columns(self, spec: ModelSpec) -> list[str]:
        """The gold columns whose distribution the monitor compares with the training rows'."""

    def level_residuals(self, spec: ModelSpec, frame: pd.DataFrame) -> np.ndarray | None:
        """Per usable row, the target's relative deviation from a seasonal reference, in which a
        sensor's level shift shows at once (``monitoring/level_shift.py``); None for a kind
        without a level to shift (the default)."""
        return None

    # -- training --------------------------------------------------------------------------------
    @abstractmethod
    def fit(self, family: str, spec: ModelSpec, params: dict, examples: Examples, metric: str, seed: int,
            report: Report | None = None) -> Trained:
        """Train on the training rows, early-stopped on the validation rows."""

    @abstractmethod
    def refit(self, family: str, spec: ModelSpec, params: dict, steps: int, x: np.ndarray, y: np.ndarray,
              seed: int):
        """The chosen settings trained again on ``x`` (training + validation rows) for ``steps``."""

    def combine(self, spec: ModelSpec, examples: Examples, rankings: list[list[dict]], metric: str,
                seed: int) -> Combination:
        """Which of the families' trials (``rankings``: each family's best first, the winner's family
        first) to average into the model. A kind that averages no models keeps the winner alone (this
        default)."""
        return Combination(rankings[0][:1])

    def refit_combination(self, spec: ModelSpec, combination: Combination, examples: Examples, seed: int):
        """The combination's trials trained again on the examples' training + validation rows; one
        member is ``refit`` of it."""
        (member,) = combination.members
        return self.refit(member["family"], spec, member["params"], member["best_step"], examples.x_seen,
                          examples.y_seen, seed)

    @abstractmethod
    def load_model(self, uri: str):
        """A registered version as the model ``refit`` returns."""

    # -- judging ---------------------------------------------------------------------------------
    @abstractmethod
    def score(self, spec: ModelSpec, actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
        """Every metric of ``metrics`` for these examples' predictions."""

    @abstractmethod
    def judge(self, spec: ModelSpec, examples: Examples, predicted: np.ndarray, champion: np.ndarray | None = None,
              without_champion: str = "no champion yet") -> Judgement:
        """Score the candidate on the test rows beside the baselines (fitted on training +
        validation rows) and the champion's predictions, and decide the alias (``without_champion``
        says why no champion was compared)."""

    # -- what people look at ---------------------------------------------------------------------
    @abstractmethod
    def figures(self, spec: ModelSpec, examples: Examples, judgement: Judgement, title: str) -> dict[str, Any]:
        """Artifact path -> matplotlib figure; the first is the run's headline picture."""

    @abstractmethod
    def card_values(self, spec: ModelSpec, judgement: Judgement) -> dict[str, str]:
        """Values the model card template reads beyond the generic ones."""

    @abstractmethod
    def describe(self, spec: ModelSpec) -> str:
        """What the model predicts, in words (registry, bundle manifest)."""

    @abstractmethod
    def unit(self, spec: ModelSpec) -> str:
        """The unit metrics are in (plots)."""

    # -- compression and the edge ----------------------------------------------------------------
    @abstractmethod
    def compress(self, spec: ModelSpec, model, examples: Examples, workdir: Path,
                 parity_tolerance: float) -> tuple[list[Variant], float]:
        """Every edge variant measured side by side (the model in its own framework first, then
        ``onnx_fp32``); and the fp32 export's largest difference from the model."""

    def compression_also(self, spec: ModelSpec) -> tuple[str, ...]:
        """Quality keys held to the same budget as ``compression_metric`` (e.g. each class's recall)."""
        return ()

    def compression_facts(self, spec: ModelSpec, examples: Examples) -> dict:
        """Facts about how the variants were made that go with the bundle and the card (e.g. the
        int8 calibration set's fingerprint)."""
        return {}

    @abstractmethod
    def edge_contract(self, spec: ModelSpec, model) -> dict:
        """The bundle manifest's inputs, outputs and preprocessing (what an edge node feeds)."""

    @abstractmethod
    def bake_rows(self, spec: ModelSpec, frame: pd.DataFrame, per_group: int) -> dict:
        """Recent real rows for a rollout's bake: ``features``, ``actuals``, ``from``, ``to``."""

    @abstractmethod
    def bake_error(self, predicted: np.ndarray, actual: np.ndarray) -> float:
        """``bake_metric`` of a node's bake answers: one number, lower is better."""

    @abstractmethod
    def bake_request(self, bake: dict, start: int, stop: int) -> dict:
        """The HTTP request (httpx keyword arguments) that sends bake examples start..stop of
        ``bake`` (what ``bake_rows`` made) to a node's ``/predict``, purpose ``bake``."""

    @abstractmethod
    def edge_requests(self, spec: ModelSpec, frame: pd.DataFrame, batch: int) -> Iterator[dict]:
        """Requests a consumer would send for these rows: each a dict with ``series``, ``count``
        (examples in it) and ``http`` (httpx keyword arguments of ``POST /predict``)."""

    # -- monitoring ------------------------------------------------------------------------------
    def live_metric(self, spec: ModelSpec) -> str:
        """The error live accuracy is judged by (``evaluate_served``'s ``metric``; lower is better)."""
        return self.gate_metric(spec)

    def daily_test_scores(self, spec: ModelSpec, examples: Examples, predicted: np.ndarray, zone: str) -> list[dict]:
        """The candidate's ``live_metric`` on each test day of the scenario's clock (``day``,
        ``value``, ``rows``): how much it moves from day to day on days it never saw, the yardstick
        the live error is judged against."""
        import pandas as pd

        metric = self.live_metric(spec)
        days = pd.to_datetime(examples.test[self.time_column(spec)], utc=True).dt.tz_convert(zone).dt.date.to_numpy()
        groups = pd.Series(range(len(days))).groupby(days).groups
        return [{"day": str(day), "value": self.score(spec, examples.y_test[at], predicted[at])[metric], "rows": len(at)}
                for day, at in ((day, rows.to_numpy()) for day, rows in sorted(groups.items()))]

    @abstractmethod
    def evaluate_served(self, day: str, served: pd.DataFrame, actuals: pd.DataFrame, spec: ModelSpec,
                        offline: dict) -> dict:
        """One day's live accuracy per version: served predictions joined with what happened."""
