"""The forecast task type: rows of numbers -> the next value of a target, per series.

Every answer the stages ask for is here or in a module of this package; heavy imports (torch,
LightGBM, MLflow, matplotlib) wait until a method runs, because reading a spec at DAG parse time
comes through this class.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from cityfactory.profiling.drafts import Draft, DraftRequest
from cityfactory.profiling.tables import TableProfile
from cityfactory.tasktypes import register
from cityfactory.tasktypes.base import (
    Combination,
    Examples,
    Judgement,
    Metric,
    TaskType,
    Trained,
)
from cityfactory.tasktypes.forecast.spec import ForecastSpec


@register
class ForecastTask(TaskType):
    name = "forecast"
    spec_class = ForecastSpec
    metrics = MappingProxyType({
        "mae": Metric("mae", "MAE"),
        "rmse": Metric("rmse", "RMSE", pooled="rms"),
        "mape": Metric("mape", "MAPE %"),
        "smape": Metric("smape", "sMAPE %", in_summary=False),
    })
    hand_set_family = "residual_mlp"
    compression_metric = "mae"
    bake_metric = Metric("mae", "MAE")
    reference_baseline = "persistence"
    drafts_from = TableProfile

    def draft(self, name: str, profile: TableProfile, request: DraftRequest) -> Draft:
        from cityfactory.tasktypes.forecast.scaffold import draft_forecaster

        return draft_forecaster(name, profile, request)

    # -- the spec --------------------------------------------------------------------------------
    def spec_problems(self, spec: ForecastSpec, has_series: bool, path: Path) -> list[str]:
        problems = []
        if spec.architecture.residual_of not in spec.data.numeric:
            problems.append(f"{path}: key 'architecture.residual_of': {spec.architecture.residual_of!r} is not in data.numeric")
        if bool(spec.data.series) != has_series:
            problems.append(f"{path}: key 'data.series': the scenario {'has' if has_series else 'has no'} "
                            "series key; the spec must say the same")
        return problems

    def mart_columns(self, spec: ForecastSpec) -> dict[str, str]:
        d, b = spec.data, spec.baselines
        named = {"data.target": d.target, "data.time_column": d.time_column, "data.usable": d.usable,
                 **({"data.series": d.series} if d.series else {}),
                 **{f"data.numeric.{i}": c for i, c in enumerate(d.numeric)},
                 **{f"data.one_hot.{c}": c for c in d.one_hot},
                 **{f"data.flags.{i}": c for i, c in enumerate(d.flags)},
                 **{f"data.window.{name}.{i}": c for name, cs in d.window.items() for i, c in enumerate(cs)},
                 "baselines.persistence": b.persistence,
                 **{f"baselines.naive.{name}": c for name, c in b.naive.items()},
                 **{f"baselines.linear_autoregression.lags.{i}": c for i, c in enumerate(b.linear_autoregression.lags)},
                 **{f"baselines.linear_autoregression.seasonal.{i}": c
                    for i, c in enumerate(b.linear_autoregression.seasonal)}}
        return named

    def series_categories(self, spec: ForecastSpec) -> list | None:
        encoding = spec.data.one_hot.get(spec.data.series) if spec.data.series else None
        return encoding.categories if encoding else None

    def gate_metric(self, spec: ForecastSpec) -> str:
        return spec.gate.metric

    def search_metric(self, spec: ForecastSpec) -> str:
        return (spec.search.metric if spec.search else None) or "rmse"

    def hand_set(self, spec: ForecastSpec) -> tuple[dict, int]:
        from cityfactory.tasktypes.forecast.families import hand_set_params

        return hand_set_params(spec), spec.training.seed

    # -- data ------------------------------------------------------------------------------------
    def examples(self, spec: ForecastSpec, gold) -> Examples:
        from cityfactory.tasktypes.forecast import data

        d = spec.data
        parts = data.split_by_time(gold, d, spec.split, spec.architecture.residual_of)
        x = {name: data.features(getattr(parts, name), d) for name in ("train", "validation", "test")}
        y = {name: getattr(parts, name)[d.target].to_numpy(dtype=float) for name in ("train", "validation", "test")}
        spans = {name: f"{getattr(parts, name)[d.time_column].min()} .. {getattr(parts, name)[d.time_column].max()}"
                 for name in ("train", "validation", "test")}
        spans.update({f"validation fold {k}": span for k, span in enumerate(parts.fold_spans, 2)})
        return data.ForecastExamples(
            parts.train, parts.validation, parts.test, x["train"], y["train"], x["validation"], y["validation"],
            x["test"], y["test"], parts.test_start, spans,
            {"test_days": spec.split.test_days, "validation_folds": spec.split.folds, "rows_with_gaps": len(parts.gaps)},
            parts.folds, data.features(parts.gaps, d), parts.gaps[d.target].to_numpy(dtype=float), parts.gap_ends)

    def usable(self, spec: ForecastSpec, frame):
        return frame[frame[spec.data.usable].astype(bool)]

    def input_names(self, spec: ForecastSpec) -> list[str]:
        return spec.data.feature_names

    def target(self, spec: ForecastSpec) -> str:
        return spec.data.target

    def time_column(self, spec: ForecastSpec) -> str:
        return spec.data.time_column

    def drift_columns(self, spec: ForecastSpec) -> list[str]:
        return spec.data.numeric

    def level_residuals(self, spec: ForecastSpec, frame):
        """Against the spec's first seasonal naive baseline (the same hour a week or a day before),
        relative, with the MAPE floor under quiet hours."""
        import numpy as np

        if not spec.baselines.naive:
            return None
        reference = frame[next(iter(spec.baselines.naive.values()))].to_numpy(dtype=float)
        actual = frame[spec.data.target].to_numpy(dtype=float)
        return (actual - reference) / np.maximum(np.abs(reference), spec.metrics.mape_floor)

    # -- training --------------------------------------------------------------------------------
    def fit(self, family, spec: ForecastSpec, params, examples: Examples, metric, seed, report=None) -> Trained:
        from cityfactory.tasktypes.forecast import families

        x, y = examples.training_rows(family in families.TOLERATE_GAPS)
        trained = families.fit(family, spec, params, x, y, examples.x_validation, examples.y_validation, metric,
                               seed, report)
        return Trained(trained.forecaster, trained.history, trained.best_step)

    def refit(self, family, spec: ForecastSpec, params, steps, x, y, seed):
        from cityfactory.tasktypes.forecast import families

        return families.refit(family, spec, params, steps, x, y, seed)

    def combine(self, spec: ForecastSpec, examples: Examples, leaders, metric, seed) -> Combination:
        from cityfactory.tasktypes.forecast import ensemble

        return ensemble.combine(self, spec, examples, leaders, metric, seed)

    def refit_combination(self, spec: ForecastSpec, combination: Combination, examples: Examples, seed):
        from cityfactory.tasktypes.forecast import ensemble

        return ensemble.refit(spec, combination, examples, seed)

    def load_model(self, uri: str):
        import mlflow

        return mlflow.pyfunc.load_model(uri).unwrap_python_model()

    # -- judging ---------------------------------------------------------------------------------
    def score(self, spec: ForecastSpec, actual, predicted) -> dict[str, float]:
        from cityfactory.tasktypes.forecast.metrics import scores

        return scores(actual, predicted, spec.metrics.mape_floor)

    def judge(self, spec: ForecastSpec, examples: Examples, predicted, champion=None,
              without_champion: str = "no champion yet") -> Judgement:
        from cityfactory.tasktypes.forecast.baselines import baseline_predictions
        from cityfactory.tasktypes.forecast.gate import decide
        from cityfactory.tasktypes.forecast.metrics import scores_by_series

        d, gate, floor = spec.data, spec.gate, spec.metrics.mape_floor
        y_test = examples.y_test
        predictions = {"model": predicted,
                       **baseline_predictions(examples.seen, examples.test, spec.baselines, d.target, d.series)}
        if champion is not None:
            predictions["champion"] = champion
        metrics = {name: self.score(spec, y_test, values) for name, values in predictions.items()}
        series = examples.test[d.series] if d.series else [""] * len(y_test)
        by_series = scores_by_series(series, y_test, predictions, floor)
        worse = [name for name, m in by_series.items() if m["model"][gate.metric] > m["persistence"][gate.metric]]
        decision = decide(gate.metric, metrics["model"][gate.metric], metrics["linear_autoregression"][gate.metric],
                          metrics.get("champion", {}).get(gate.metric), gate.min_improvement_over_linear,
                          gate.champion_tolerance, worse, len(by_series) if d.series else 0,
                          gate.max_series_worse_than_persistence, without_champion)
        return Judgement(metrics, by_series if d.series else {}, decision, predictions)

    # -- what people look at ---------------------------------------------------------------------
    def figures(self, spec: ForecastSpec, examples: Examples, judgement: Judgement, title: str) -> dict:
        from cityfactory.tasktypes.forecast.report import forecast_week_figure

        d = spec.data
        return {"plots/forecast_test_week.png": forecast_week_figure(
            examples.test, d.time_column, d.series, examples.y_test, judgement.predictions["model"],
            judgement.predictions["linear_autoregression"], f"{title}: {d.target_label}, last test week",
            f"{d.target_label} ({d.unit})")}

    def card_values(self, spec: ForecastSpec, judgement: Judgement) -> dict[str, str]:
        from cityfactory.tasktypes.forecast.report import metrics_table, series_table

        return {"metrics_table": metrics_table(judgement.metrics),
                "series_table": series_table(judgement.by_group, spec.gate.metric),
                "target_label": spec.data.target_label, "unit": spec.data.unit}

    def describe(self, spec: ForecastSpec) -> str:
        return f"{spec.data.target_label} ({spec.data.unit})"

    def unit(self, spec: ForecastSpec) -> str:
        return spec.data.unit

    # -- compression and the edge ----------------------------------------------------------------
    def compress(self, spec: ForecastSpec, model, examples: Examples, workdir: Path, parity_tolerance: float):
        from cityfactory.tasktypes.forecast import edge

        e = examples
        return edge.compress(spec, model, e.x_train, e.y_train, e.x_test, e.y_test, workdir, parity_tolerance)

    def edge_contract(self, spec: ForecastSpec, model) -> dict:
        from cityfactory.tasktypes.forecast import edge

        return edge.contract(spec, model)

    def bake_rows(self, spec: ForecastSpec, frame, per_group: int) -> dict:
        from cityfactory.tasktypes.forecast import edge

        return edge.bake_rows(spec, frame, per_group)

    def bake_error(self, predicted, actual) -> float:
        from cityfactory.tasktypes.forecast import edge

        return edge.mean_absolute_error(predicted, actual)

    def bake_request(self, bake: dict, start: int, stop: int) -> dict:
        from cityfactory.tasktypes.forecast import edge

        return edge.bake_request(bake, start, stop)

    def edge_requests(self, spec: ForecastSpec, frame, batch: int):
        from cityfactory.tasktypes.forecast import edge

        return edge.requests(spec, frame, batch)

    # -- monitoring ------------------------------------------------------------------------------
    def evaluate_served(self, day, served, actuals, spec: ForecastSpec, offline: dict) -> dict:
        from cityfactory.tasktypes.forecast.live import evaluate_day

        return evaluate_day(day, served, actuals, spec, offline)
