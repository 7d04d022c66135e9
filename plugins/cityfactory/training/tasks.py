"""The train stage as Airflow tasks see it: the search's winner refitted, scored, registered."""

from __future__ import annotations

from cityfactory.governance.ledger import Artifact, Kind
from cityfactory.runs import RunContext
from cityfactory.search.tasks import run_facts
from cityfactory.training.spec import load_model_spec
from cityfactory.training.stage import train_and_register
from cityfactory.transform.gold import read_gold


def train(ctx: RunContext, gold: dict, batches: list[list[str]], planned: list[dict], trials: list[list[dict]]) -> dict:
    """Refit the best trial on the gold features, track in MLflow, register, and decide the alias."""
    scenario = ctx.scenario
    spec = load_model_spec(scenario.model_spec)
    found = [t for batch in trials for t in batch]
    with ctx.entry(Kind.MODEL_TRAINED) as entry:
        entry.inputs.append(Artifact(gold["uri"], gold["sha256"], gold["rows"], "gold"))
        outcome = train_and_register(spec, read_gold(ctx.lake, scenario.name, gold["sha256"]), run_facts(ctx, gold, batches),
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
                             train_rows=outcome.train_rows, family=outcome.family,
                             search={"trials": len(found), "pruned": sum(t["state"] != "complete" for t in found),
                                     "trial_seconds": round(sum(t["seconds"] for t in found), 1)})
    return {"version": outcome.version, "alias": outcome.alias, "reason": outcome.reason,
            "mlflow_run_id": outcome.mlflow_run_id, "test_rmse": outcome.metrics["model"]["rmse"]}
