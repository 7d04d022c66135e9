"""The monitor stage as Airflow tasks see it: collect what the edge served, score it against the
actuals that arrived, measure drift, and decide whether this run retrains."""

from __future__ import annotations

import datetime as dt
import json
import math

import pandas as pd

from cityfactory.edge.fleet import edge_token, load_fleet
from cityfactory.edge.prediction_log import KeyWindow
from cityfactory.governance.ledger import Artifact, Kind
from cityfactory.monitoring import level_shift, live
from cityfactory.monitoring.collect import collect
from cityfactory.monitoring.decision import Evidence, decide
from cityfactory.monitoring.drift import drift_table
from cityfactory.monitoring.figures import monitoring_figure
from cityfactory.pipeline.context import RunContext
from cityfactory.storage.lake import join_key
from cityfactory.storage.parquet import partition_days, read_partitions
from cityfactory.tasktypes import load_model_spec, spec_digest, task_type_of
from cityfactory.training import registry
from cityfactory.transform.dbt import duckdb_path, model_uri, read_days

HISTORY_DAYS = 14  # evaluations read back for the picture and the decision (at least the rule's days)
SHIFT_DAYS = 60  # the level-shift test looks this far back at most (and never before the champion's data ends)


def _evaluation_key(scenario: str, day: str) -> str:
    return join_key("monitoring", scenario, f"dt={day}", "evaluation.json")


def _recent_evaluations(ctx: RunContext, days: int) -> list[dict]:
    recent = partition_days(ctx.lake, "monitoring", ctx.scenario.name)[-days:]
    return [json.loads(ctx.lake.get_bytes(_evaluation_key(ctx.scenario.name, day.isoformat()))) for day in recent]


def _served_for(ctx: RunContext, days: list[dt.date], window: KeyWindow) -> pd.DataFrame:
    """The served rows that predicted any of ``days``, read once from every served day that can
    hold them (a key lies within the window around the moment it was served), with their local day."""
    before, after = math.ceil(window.ahead_hours / 24) + 1, math.ceil(window.past_hours / 24) + 1
    served_days = sorted({day + dt.timedelta(days=d) for day in days for d in range(-before, after + 1)})
    table = read_partitions(ctx.lake, "predictions", ctx.scenario.name, served_days)
    served = live.served_rows(table.to_pandas() if table is not None else None)
    local = pd.to_datetime(served["predicted_for"], utc=True).dt.tz_convert(ctx.scenario.timezone).dt.date
    return served.assign(predicted_day=local.to_numpy())


def _evaluate(ctx: RunContext, spec, days: set[str], window: KeyWindow) -> list[dict]:
    """Each of ``days`` that has actuals in the mart, scored on them with every row served for it
    (earlier collections too), kept under ``monitoring/``. A day without actuals (not yet arrived,
    or one no sensor ever saw) is left for a later night: never a client's claim alone."""
    with_actuals = {}
    for when in sorted(dt.date.fromisoformat(day) for day in days):
        actuals = read_days(ctx.scenario, when, when)
        if not actuals.empty:
            with_actuals[when] = actuals
    if not with_actuals:
        return []
    served = _served_for(ctx, list(with_actuals), window)
    evaluated, offline = [], {}  # a version's offline metrics: one MLflow read for all the days
    for when, actuals in with_actuals.items():
        rows = served[served["predicted_day"] == when].drop(columns="predicted_day")
        for version in set(rows["model_version"].unique()) - set(offline):
            offline[version] = registry.offline_metrics(spec.registered_model, version)
        evaluation = task_type_of(spec).evaluate_served(when.isoformat(), rows, actuals, spec, offline)
        evaluation["key"] = _evaluation_key(ctx.scenario.name, when.isoformat())
        ctx.lake.put_bytes(evaluation["key"], json.dumps(evaluation).encode())
        evaluated.append(evaluation)
    return evaluated


def _drift(ctx: RunContext, spec, champion: str | None, last_day: dt.date) -> tuple[list[dict], int]:
    """The champion's drift table over the usable mart rows of the window ending ``last_day``."""
    window = ctx.scenario.maintenance.drift.window_days
    recent = read_days(ctx.scenario, last_day - dt.timedelta(days=window - 1), last_day)
    recent = task_type_of(spec).usable(spec, recent)
    reference = registry.drift_reference(spec.registered_model, champion) if champion else None
    return (drift_table(reference, recent) if reference is not None and len(recent) else []), len(recent)


def _level_shift(ctx: RunContext, spec, champion: str | None, last_day: dt.date) -> level_shift.LevelShift:
    """The level-shift test over the mart's rows since the champion's training data ended, against
    the residuals of its last weeks of training data."""
    kind = task_type_of(spec)
    trained_to = registry.version_tags(spec.registered_model, champion).get("features_to") if champion else None
    if trained_to is None:
        return level_shift.LevelShift()
    trained_to = dt.date.fromisoformat(trained_to)
    first = max(trained_to + dt.timedelta(days=1), last_day - dt.timedelta(days=SHIFT_DAYS - 1))
    if first > last_day:
        return level_shift.LevelShift()
    reference = kind.usable(spec, read_days(ctx.scenario, trained_to - dt.timedelta(days=level_shift.REFERENCE_DAYS - 1),
                                            trained_to))
    recent = kind.usable(spec, read_days(ctx.scenario, first, last_day)).sort_values(kind.time_column(spec), kind="stable")
    residuals = kind.level_residuals(spec, recent)
    if residuals is None or reference.empty or recent.empty:
        return level_shift.LevelShift()
    days = pd.to_datetime(recent[kind.time_column(spec)], utc=True).dt.tz_convert(ctx.scenario.timezone).dt.date
    test = ctx.scenario.maintenance.level_shift
    return level_shift.detect(kind.level_residuals(spec, reference), pd.DataFrame({"day": days.to_numpy(),
                                                                                  "residual": residuals}),
                              test.threshold, test.delta)


def _usual_ratio(spec, champion: str, rules) -> float | None:
    """The champion's live/offline ratio its own test days reached (``rules.live_error_quantile``
    of their windows of ``live_error_days``): a hard week within it is no reason to retrain."""
    kind = task_type_of(spec)
    offline = registry.offline_metrics(spec.registered_model, champion)
    metric = kind.live_metric(spec)
    return live.usual_ratio(offline.get("daily", []), rules.live_error_days, kind.metrics[metric],
                            offline.get("metrics", {}).get(metric), rules.live_error_quantile)


def monitor(ctx: RunContext, batches: list[list[str]]) -> dict:
    """Collect, evaluate the days that got served rows, measure drift of the latest window."""
    scenario, spec = ctx.scenario, load_model_spec(ctx.scenario.model_spec)
    kind = task_type_of(spec)
    metric = kind.gate_metric(spec)
    policy = scenario.maintenance
    registry.use_experiment(scenario.name)
    champion = registry.alias_version(spec.registered_model, registry.CHAMPION)
    with ctx.entry(Kind.MONITORED) as entry:
        mart = scenario.transform.features_model
        entry.inputs.append(Artifact(model_uri(duckdb_path(scenario), mart), "", None, "dbt_model"))
        fleet = load_fleet(scenario.rollout.fleet)
        collected = collect(ctx.lake, scenario.name, fleet, edge_token(scenario.rollout.fleet), scenario.timezone)
        entry.outputs += [Artifact.of(s, kind="predictions") for s in collected.stored]
        shown_days = max(HISTORY_DAYS, policy.retrain_when.live_error_days)
        earlier = _recent_evaluations(ctx, shown_days)  # read once: for the days awaiting actuals, and the history
        awaiting = {e["day"] for e in earlier if e.get("awaiting_actuals")}
        evaluated = _evaluate(ctx, spec, collected.days | awaiting, fleet.logging.window)
        entry.outputs += [Artifact(ctx.lake.uri_for(e.pop("key")), "", e["scored_rows"], "evaluation") for e in evaluated]
        history = sorted(({e["day"]: e for e in earlier} | {e["day"]: e for e in evaluated}).values(),
                         key=lambda e: e["day"])[-shown_days:]
        drift, drift_rows = _drift(ctx, spec, champion, dt.date.fromisoformat(batches[-1][-1]))
        rules = policy.retrain_when
        ratio, days = live.pooled_ratio(history, champion, rules.live_error_days, kind.metrics) if champion else (None, 0)
        usual = _usual_ratio(spec, champion, rules) if ratio is not None else None
        shift = _level_shift(ctx, spec, champion, dt.date.fromisoformat(batches[-1][-1]))
        level_shift.record(ctx.lake, scenario.name, shift, ctx.run_id)
        result = {"champion": champion, "metric": metric, "live_ratio": ratio, "live_days": days, "live_usual": usual,
                  "drifted": [r["feature"] for r in drift if r["drifted"]], "level_shift": shift.as_dict()}
        shown = history[-1]["metric"] if history else metric  # what live scoring measures (an error rate, for images)
        picture = monitoring_figure(drift, history, champion, shown,
                                    f"{scenario.name}: drift over {drift_rows} recent rows, live accuracy",
                                    kind.reference_baseline)
        stored = ctx.lake.put_bytes(join_key(ctx.ledger.prefix, "monitoring.png"), picture)
        entry.outputs.append(Artifact.of(stored, kind="picture"))
        entry.counts = {"predictions_collected": collected.rows, "predictions_refused": sum(collected.refused.values()),
                        "segments": collected.segments,
                        "days_evaluated": len(evaluated), "features_drifting": len(result["drifted"]),
                        "faulty_days": len(shift.faulty_days)}
        entry.details.update(**result, evaluations=evaluated, drift=drift, drift_rows=drift_rows,
                             unreachable=collected.unreachable, refused=dict(collected.refused), picture=stored.uri,
                             live_error_margin=rules.live_error_margin, live_error_days=rules.live_error_days,
                             reference_baseline=kind.reference_baseline)
    return result


def decide_retraining(ctx: RunContext, monitored: dict | None, gold: dict | None, batches: list[list[str]],
                      choice: str) -> dict:
    """The scenario's retraining rules over the monitor's evidence and the champion's tags."""
    scenario, spec = ctx.scenario, load_model_spec(ctx.scenario.model_spec)
    registry.use_experiment(scenario.name)
    champion = registry.alias_version(spec.registered_model, registry.CHAMPION)
    monitored = monitored or {}
    with ctx.entry(Kind.RETRAIN_DECIDED) as entry:
        evidence = Evidence(
            choice=choice, champion=champion,
            champion_tags=registry.version_tags(spec.registered_model, champion) if champion else {},
            current={"feature_definition": (gold or {}).get("definition_digest", ""), "spec_digest": spec_digest(spec),
                     "code_version": registry.code_version()},
            last_day=dt.date.fromisoformat(batches[-1][-1]), live_ratio=monitored.get("live_ratio"),
            live_days=monitored.get("live_days", 0), live_usual=monitored.get("live_usual"), drifted=monitored.get("drifted", []),
            level_shift=monitored.get("level_shift", {}),
        )
        decision = decide(evidence, scenario.maintenance.retrain_when)
        entry.details.update(**decision.as_dict(), choice=choice, champion=champion, monitored=bool(monitored),
                             rules=scenario.maintenance.retrain_when.model_dump())
        entry.counts = {"retrain": int(decision.retrain)}
    return decision.as_dict()

