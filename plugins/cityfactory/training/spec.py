"""Model specs (``models/<scenario>.yaml``): what to learn, from what, and how to judge it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cityfactory.config.scenarios import ScenarioError, _location
from cityfactory.settings import get_settings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Encoding(_Strict):
    """A categorical input as one indicator per value: ``values`` listed (strings or numbers), or
    an integer ``range`` [first, last]. A value outside them encodes as all zeros."""

    values: list[str | int] | None = None
    range: tuple[int, int] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value):
        return {"range": value} if isinstance(value, (list, tuple)) else value

    @model_validator(mode="after")
    def _one(self) -> Encoding:
        if (self.values is None) == (self.range is None):
            raise ValueError("give exactly one of 'values' (a list) or 'range' ([first, last])")
        if self.range and self.range[1] < self.range[0]:
            raise ValueError(f"range {list(self.range)} ends before it starts")
        return self

    @property
    def categories(self) -> list:
        return list(self.values) if self.values is not None else list(range(self.range[0], self.range[1] + 1))


class DataSpec(_Strict):
    target: str
    target_label: str = Field(description="what the model predicts, in words (plots, bundle manifest)")
    unit: str = Field(description="the target's unit (plots, bundle manifest, metrics)")
    time_column: str
    series: str | None = None  # the column that tells series apart (station, sensor), if several
    usable: str
    numeric: list[str] = Field(min_length=1)
    one_hot: dict[str, Encoding] = {}
    flags: list[str] = []
    # The recent hours as a sequence: per channel, one column per hour, oldest first. Every family
    # gets them as inputs; the recurrent one reads them hour by hour.
    window: dict[str, list[str]] = {}

    @model_validator(mode="after")
    def _window_rectangular(self) -> DataSpec:
        if len({len(columns) for columns in self.window.values()}) > 1:
            raise ValueError("every window channel needs the same number of hours")
        return self

    @property
    def window_extras(self) -> list[str]:
        """Window columns that are not numeric inputs already."""
        return [c for columns in self.window.values() for c in columns if c not in self.numeric]

    @property
    def feature_names(self) -> list[str]:
        """Model input order: numeric, then one-hot blocks, then flags, then the rest of the window."""
        names = list(self.numeric)
        for column, encoding in self.one_hot.items():
            names += [f"{column}={v}" for v in encoding.categories]
        return names + list(self.flags) + self.window_extras

    @property
    def columns(self) -> list[str]:
        """Every gold column the model reads (before encoding)."""
        return [*self.numeric, *self.one_hot, *self.flags, *self.window_extras]


class SplitSpec(_Strict):
    test_days: int = Field(gt=0)
    validation_days: int = Field(gt=0)


class ArchitectureSpec(_Strict):
    type: Literal["residual_mlp"]
    residual_of: str
    hidden: list[int] = Field(min_length=1)
    output_scale: float = Field(gt=0)


class TrainingSpec(_Strict):
    seed: int
    epochs: int = Field(ge=1)
    patience: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    weight_decay: float = Field(ge=0)


class Range(_Strict):
    """One hyper-parameter's range: ``choices``, or ``low``..``high`` (integers if both are; ``log``
    for a log scale)."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _one(self) -> Range:
        if (self.choices is None) == (self.low is None or self.high is None):
            raise ValueError("give either 'choices' (a list) or both 'low' and 'high'")
        if self.choices is not None and not self.choices:
            raise ValueError("'choices' is empty")
        if self.low is not None and self.high < self.low:
            raise ValueError(f"high {self.high} is below low {self.low}")
        if self.log and self.low is not None and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


FamilyName = Literal["residual_mlp", "recurrent", "lightgbm"]
# Each family's settings and their defaults (``training/families.py`` builds the models from them).
FAMILY_DEFAULTS = {
    "residual_mlp": {"hidden": "128-64", "epochs": 40, "patience": 8, "batch_size": 256, "learning_rate": 1e-3,
                     "weight_decay": 1e-4},
    "recurrent": {"hidden": 32, "context": "64", "epochs": 30, "patience": 6, "batch_size": 256,
                  "learning_rate": 2e-3, "weight_decay": 1e-4},
    "lightgbm": {"n_estimators": 2000, "early_stopping": 100, "learning_rate": 0.05, "num_leaves": 31,
                 "min_child_samples": 20, "subsample": 0.8, "colsample_bytree": 0.8, "reg_lambda": 1.0},
}


class FamilySearch(_Strict):
    """A model family in the search: its searched ``ranges`` and its ``fixed`` settings."""

    ranges: dict[str, Range] = {}
    fixed: dict[str, Any] = {}


class PrunerSpec(_Strict):
    """Median pruning: a trial stops when its intermediate validation score is worse than the
    median of the earlier trials at the same step."""

    startup_trials: int = Field(3, ge=0)
    warmup_steps: int = Field(5, ge=0)


class SearchSpec(_Strict):
    """The model search (Optuna, TPE sampler): the families and their ranges, the budget, and the
    validation metric that ranks trials. Given ``seed`` and ``trials`` it is deterministic;
    ``timeout_minutes`` adds a time budget per batch (then it is not)."""

    metric: Literal["rmse", "mae"] = "rmse"
    seed: int = 0
    trials: int = Field(ge=1)
    trials_per_batch: int = Field(4, ge=1)
    random_trials: int = Field(3, ge=1)  # per batch, before the TPE sampler's model guides the rest
    timeout_minutes: float | None = Field(None, gt=0)
    pruner: PrunerSpec = PrunerSpec()
    families: dict[FamilyName, FamilySearch] = Field(min_length=1)

    @model_validator(mode="after")
    def _known_settings(self) -> SearchSpec:
        for family, declared in self.families.items():
            if unknown := sorted((set(declared.ranges) | set(declared.fixed)) - set(FAMILY_DEFAULTS[family])):
                raise ValueError(f"families.{family}: {', '.join(unknown)} is no {family} setting "
                                 f"(known: {', '.join(sorted(FAMILY_DEFAULTS[family]))})")
        return self


class LinearBaseline(_Strict):
    """Least squares on ``lags`` plus one indicator per combination of the ``seasonal`` columns'
    values (two calendar columns, say hour and weekday, give one indicator per hour of the week)."""

    lags: list[str] = Field(min_length=1)
    seasonal: list[str] = []


class BaselineSpec(_Strict):
    """Naive baselines (a column carried forward, e.g. the last value: ``persistence``) and a linear
    autoregression, fitted per series or pooled over all series."""

    persistence: str
    naive: dict[str, str] = {}  # more carried-forward columns by name, e.g. same_hour_last_week
    linear_autoregression: LinearBaseline
    fit: Literal["per_series", "pooled"] = "pooled"


class GateSpec(_Strict):
    metric: Literal["rmse", "mae"]
    min_improvement_over_linear: float = Field(ge=0, lt=1)
    champion_tolerance: float = Field(ge=0)
    # Refuse a model worse than persistence on more than this share of the series.
    max_series_worse_than_persistence: float = Field(0.0, ge=0, le=1)


class MetricSpec(_Strict):
    # MAPE divides by max(|actual|, floor): near-zero actuals do not explode it.
    mape_floor: float = Field(1.0, gt=0)


class ModelSpec(_Strict):
    name: str
    registered_model: str
    description: str
    intended_use: str
    limitations: str
    card_template: str
    data: DataSpec
    split: SplitSpec
    architecture: ArchitectureSpec  # the hand-set model: trained alone when there is no search
    training: TrainingSpec
    search: SearchSpec | None = None
    baselines: BaselineSpec
    gate: GateSpec
    metrics: MetricSpec = MetricSpec()

    @model_validator(mode="after")
    def _recurrent_has_a_window(self) -> ModelSpec:
        if self.search and "recurrent" in self.search.families and not self.data.window:
            raise ValueError("search.families.recurrent needs data.window (the recent hours, per channel)")
        return self


def load_model_spec(name: str, directory: Path | None = None) -> ModelSpec:
    """``models/<name>.yaml`` (or ``$CITYFACTORY_MODELS_DIR``), validated; errors name file and key."""
    path = (directory or get_settings().models_dir) / f"{name}.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
        return ModelSpec.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(f"key '{_location(e['loc'])}': {e['msg']}" for e in exc.errors())
        raise ScenarioError(f"{path}: {problems}") from None


def spec_digest(spec: ModelSpec) -> str:
    """sha256 of the spec's validated content (comments and key order do not count)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
