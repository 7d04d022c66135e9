"""The train stage as Airflow tasks see it: the search's winner refitted, scored, registered."""

from __future__ import annotations

from dataclasses import asdict

from cityfactory.governance.ledger import Artifact, Kind
from cityfactory.pipeline.context import RunContext
from cityfactory.pipeline.search import examples_gold, run_facts
from cityfactory.pipeline.train_stage import train_and_register
from cityfactory.tasktypes import load_model_spec, task_type_of


def train(ctx: RunContext, gold: dict, batches: list[list[str]], planned: list[dict], trials: list[list[dict]]) -> dict:
    """Refit the best trial on the gold features, track in MLflow, register, and decide the alias."""
    scenario = ctx.scenario
    spec = load_model_spec(scenario.model_spec)
    kind = task_type_of(spec)
    found = [t for batch in trials[:] for t in batch]  # a mapped task's results: one fetch (iterating asks past the end)
    with ctx.entry(Kind.MODEL_TRAINED) as entry:
        entry.inputs.append(Artifact(gold["uri"], gold["sha256"], gold["rows"], "gold"))
        frame, excluded = examples_gold(ctx, gold)
        outcome = train_and_register(spec, frame, run_facts(ctx, gold, batches, excluded),
                                     scenario.maintenance.drift, found, planned[0]["run_id"], planned[0]["budget"])
        run_uri = f"runs:/{outcome.mlflow_run_id}"
        entry.outputs += [
            Artifact(run_uri, "", None, "mlflow_run"),
            Artifact(f"models:/{spec.registered_model}/{outcome.version}", "", None, "model_version", (run_uri,)),
        ]
        entry.counts = {"version": int(outcome.version), "trials": len(found)}
        entry.details.update(metrics=outcome.metrics, metrics_by_series=outcome.metrics_by_series, alias=outcome.alias,
                             reason=outcome.reason, champion_version=outcome.champion_version,
                             registered_model=spec.registered_model, fit_seconds=round(outcome.fit_seconds, 2),
                             train_rows=outcome.train_rows, family=outcome.family, task_type=spec.task_type,
                             gate_metric=outcome.gate_metric, reference_baseline=kind.reference_baseline,
                             metric_columns=[asdict(m) for m in kind.metrics.values()],
                             headline_figure=outcome.headline_figure, fingerprint=outcome.fingerprint,
                             excluded_days=excluded,
                             search={"trials": len(found), "pruned": sum(t["state"] != "complete" for t in found),
                                     "trial_seconds": round(sum(t["seconds"] for t in found), 1),
                                     "folds": max((len(t.get("folds", ())) for t in found), default=0) or 1,
                                     "rank_correlation": outcome.rank_correlation, "members": outcome.members,
                                     "combinations": outcome.combinations,
                                     "chosen": outcome.chosen})
    return {"version": outcome.version, "alias": outcome.alias, "reason": outcome.reason,
            "mlflow_run_id": outcome.mlflow_run_id,
            f"test_{outcome.gate_metric}": outcome.metrics["model"][outcome.gate_metric]}
