"""The image classification task type: camera frames -> one of the declared classes.

Every answer the stages ask for is here or in a module of this package; heavy imports (torch,
scikit-learn, MLflow, matplotlib, Pillow) wait until a method runs, because reading a spec at DAG
parse time comes through this class.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from cityfactory.profiling.drafts import Draft, DraftRequest
from cityfactory.profiling.image_folders import ImageFolderProfile
from cityfactory.tasktypes import register
from cityfactory.tasktypes.base import (
    Examples,
    GateDecision,
    Judgement,
    Metric,
    TaskType,
    Trained,
)
from cityfactory.tasktypes.image_classification.spec import ImageClassificationSpec


def _group_name(column: str, value) -> str:
    """An MLflow-safe group name: ``cell_type_mono``, ``defect_probability_0.33``."""
    shown = f"{value:.2f}" if isinstance(value, float) else str(value)
    return f"{column}_{shown}".replace(" ", "_")


@register
class ImageClassificationTask(TaskType):
    name = "image_classification"
    spec_class = ImageClassificationSpec
    metrics = MappingProxyType({
        "accuracy": Metric("accuracy", "accuracy", greater_is_better=True),
        "macro_f1": Metric("macro_f1", "macro-F1", greater_is_better=True),
        "balanced_accuracy": Metric("balanced_accuracy", "balanced accuracy", greater_is_better=True,
                                    in_summary=False),
        "error_rate": Metric("error_rate", "error rate", in_summary=False),
    })
    hand_set_family = "plain_cnn"
    compression_metric = "accuracy"
    bake_metric = Metric("error_rate", "error rate")
    reference_baseline = "majority"
    compression_fallback = True  # fp32 ships (and the stage says why) when int8 is over budget or not faster
    compression_must_be_faster = True
    drafts_from = ImageFolderProfile

    def draft(self, name: str, profile: ImageFolderProfile, request: DraftRequest) -> Draft:
        from cityfactory.tasktypes.image_classification.scaffold import draft_classifier

        return draft_classifier(name, profile, request)

    # -- the spec --------------------------------------------------------------------------------
    def spec_problems(self, spec: ImageClassificationSpec, has_series: bool, path: Path) -> list[str]:
        if bool(spec.data.series) != has_series:
            return [(f"{path}: key 'data.series': the scenario {'has' if has_series else 'has no'} series key; "
                     "the spec must say the same")]
        return []

    def mart_columns(self, spec: ImageClassificationSpec) -> dict[str, str]:
        d = spec.data
        return {"data.image_key": d.image_key, "data.label": d.label, "data.split": d.split, "data.usable": d.usable,
                "data.time_column": d.time_column, **({"data.series": d.series} if d.series else {}),
                **{f"data.report_by.{i}": c for i, c in enumerate(d.report_by)},
                **{f"data.drift.{i}": c for i, c in enumerate(d.drift)}}

    def gate_metric(self, spec: ImageClassificationSpec) -> str:
        return spec.gate.metric

    def hand_set(self, spec: ImageClassificationSpec) -> tuple[dict, int]:
        from cityfactory.tasktypes.image_classification.families import hand_set_params

        return hand_set_params(spec), spec.training.seed

    # -- data ------------------------------------------------------------------------------------
    def examples(self, spec: ImageClassificationSpec, gold) -> Examples:
        from cityfactory.tasktypes.image_classification.data import examples

        return examples(gold, spec.data)

    def usable(self, spec: ImageClassificationSpec, frame):
        return frame[frame[spec.data.usable].astype(bool)]

    def input_names(self, spec: ImageClassificationSpec) -> list[str]:
        return list(spec.data.mode)  # the channels: ["L"] or ["R", "G", "B"]

    def target(self, spec: ImageClassificationSpec) -> str:
        return spec.data.label

    def time_column(self, spec: ImageClassificationSpec) -> str:
        return spec.data.time_column

    def drift_columns(self, spec: ImageClassificationSpec) -> list[str]:
        return spec.data.drift

    # -- training --------------------------------------------------------------------------------
    def fit(self, family, spec: ImageClassificationSpec, params, examples: Examples, metric, seed, report=None) -> Trained:
        from cityfactory.tasktypes.image_classification import families

        return families.fit(family, spec, params, examples, metric, seed, report)

    def refit(self, family, spec: ImageClassificationSpec, params, steps, x, y, seed):
        import numpy as np

        from cityfactory.tasktypes.image_classification import families

        return families.refit(family, spec, params, steps, x, y.astype(np.int64), seed)

    def load_model(self, uri: str):
        import mlflow

        return mlflow.pyfunc.load_model(uri).unwrap_python_model()

    # -- judging ---------------------------------------------------------------------------------
    def score(self, spec: ImageClassificationSpec, actual, probabilities) -> dict[str, float]:
        from cityfactory.tasktypes.image_classification.metrics import scores

        found = scores(actual, probabilities, len(spec.data.classes))
        return {**found, "error_rate": 1 - found["accuracy"]}

    def judge(self, spec: ImageClassificationSpec, examples: Examples, predicted, champion=None,
              without_champion: str = "no champion yet") -> Judgement:
        import numpy as np

        from cityfactory.tasktypes.image_classification import baselines
        from cityfactory.tasktypes.image_classification.metrics import class_scores

        d, k = spec.data, len(spec.data.classes)
        x_seen = np.concatenate([examples.x_train, examples.x_validation])
        y_seen = np.concatenate([examples.y_train, examples.y_validation])
        y_test = examples.y_test
        predictions = {"model": predicted, "majority": baselines.majority(y_seen, len(y_test), k),
                       "classical": baselines.classical(x_seen, y_seen, examples.x_test, k, spec.baselines)}
        if champion is not None:
            predictions["champion"] = champion
        metrics = {name: self.score(spec, y_test, p) for name, p in predictions.items()}
        by_group: dict[str, dict[str, dict[str, float]]] = {}
        per_class = {name: class_scores(y_test, p, d.classes) for name, p in predictions.items()}
        for label in d.classes:
            by_group[_group_name("class", label)] = {name: per_class[name][label] for name in predictions}
        for column in d.report_by:
            for value in sorted(examples.test[column].dropna().unique()):
                index = np.flatnonzero(examples.test[column].to_numpy() == value)
                by_group[_group_name(column, value)] = {
                    name: {**self.score(spec, y_test[index], p[index]), "images": float(len(index))}
                    for name, p in predictions.items()}
        return Judgement(metrics, by_group, self._decide(spec, metrics, per_class["model"], without_champion),
                         predictions)

    def _decide(self, spec: ImageClassificationSpec, metrics: dict, per_class: dict, without_champion: str) -> GateDecision:
        gate, metric = spec.gate, spec.gate.metric
        model = metrics["model"][metric]
        margins = {"classical": gate.min_improvement_over_classical, "majority": 0.0}
        bars = {name: metrics[name][metric] + margins[name] for name in gate.must_beat}
        if model < max(bars.values()):
            shown = ", ".join(f"{name} {metrics[name][metric]:.3f}" + (f" + {margins[name]}" if margins[name] else "")
                              for name in bars)
            return GateDecision(None, f"test {metric} {model:.3f} is below the baselines' bar {max(bars.values()):.3f} "
                                      f"({shown})")
        weak = [f"{label} {c['recall']:.2f}" for label, c in per_class.items() if c["recall"] < gate.min_class_recall]
        if weak:
            return GateDecision(None, f"class recall below {gate.min_class_recall}: {', '.join(weak)}")
        beats = f"test {metric} {model:.3f} vs classical {metrics['classical'][metric]:.3f}"
        if "champion" not in metrics:
            return GateDecision("challenger", f"{beats}; {without_champion}")
        champion = metrics["champion"][metric]
        if model < champion - gate.champion_tolerance:
            return GateDecision(None, f"{beats}, but below the champion's {champion:.3f} by more than "
                                      f"{gate.champion_tolerance}")
        return GateDecision("challenger", f"{beats}; champion {champion:.3f} (tolerance {gate.champion_tolerance})")

    # -- what people look at ---------------------------------------------------------------------
    def figures(self, spec: ImageClassificationSpec, examples: Examples, judgement: Judgement, title: str) -> dict:
        from cityfactory.tasktypes.image_classification import report

        d, predicted = spec.data, judgement.predictions["model"]
        names = examples.test[d.image_key].map(lambda k: k.rsplit("/", 1)[-1]).tolist()
        return {
            "plots/confusion_matrix.png": report.confusion_figure(
                examples.y_test, predicted, d.classes,
                f"{title}: test confusion ({len(examples.y_test)} images, accuracy "
                f"{judgement.metrics['model']['accuracy']:.1%})"),
            "plots/worst_mistakes.png": report.mistakes_figure(examples.x_test, examples.y_test, predicted, d.classes,
                                                               names, title),
        }

    def card_values(self, spec: ImageClassificationSpec, judgement: Judgement) -> dict[str, str]:
        from cityfactory.tasktypes.image_classification import report

        return {"metrics_table": report.metrics_table(judgement.metrics),
                "series_table": report.groups_table(judgement.by_group),
                "classes": ", ".join(spec.data.classes), "image_size": f"{spec.data.size}x{spec.data.size} {spec.data.mode}"}

    def describe(self, spec: ImageClassificationSpec) -> str:
        return f"class of the image ({', '.join(spec.data.classes)})"

    def unit(self, spec: ImageClassificationSpec) -> str:
        return "share"

    # -- compression and the edge ----------------------------------------------------------------
    def compress(self, spec: ImageClassificationSpec, model, examples: Examples, workdir: Path, parity_tolerance: float):
        from cityfactory.tasktypes.image_classification import edge

        return edge.compress(spec, model, examples, workdir, parity_tolerance)

    def compression_also(self, spec: ImageClassificationSpec) -> tuple[str, ...]:
        return tuple(f"recall_{label}" for label in spec.data.classes)

    def compression_facts(self, spec: ImageClassificationSpec, examples: Examples) -> dict:
        from cityfactory.tasktypes.image_classification import edge

        return edge.calibration_set(spec, examples)[1]

    def edge_contract(self, spec: ImageClassificationSpec, model) -> dict:
        from cityfactory.tasktypes.image_classification import edge

        return edge.contract(spec, model)

    def bake_rows(self, spec: ImageClassificationSpec, frame, per_group: int) -> dict:
        from cityfactory.tasktypes.image_classification import edge

        return edge.bake_rows(spec, frame, per_group)

    def bake_request(self, bake: dict, start: int, stop: int) -> dict:
        from cityfactory.tasktypes.image_classification import edge

        return edge.bake_request(bake, start, stop)

    def bake_error(self, predicted, actual) -> float:
        from cityfactory.tasktypes.image_classification import edge

        return edge.error_rate(predicted, actual)

    def edge_requests(self, spec: ImageClassificationSpec, frame, batch: int):
        from cityfactory.tasktypes.image_classification import edge

        return edge.requests(spec, frame, batch)

    # -- monitoring ------------------------------------------------------------------------------
    def live_metric(self, spec: ImageClassificationSpec) -> str:
        return "error_rate"

    def evaluate_served(self, day, served, actuals, spec: ImageClassificationSpec, offline: dict) -> dict:
        from cityfactory.tasktypes.image_classification.live import evaluate_day

        return evaluate_day(day, served, actuals, spec, offline)
