"""The train stage as Airflow tasks see it."""

from __future__ import annotations

from cityfactory.governance.ledger import Artifact, Kind
from cityfactory.runs import RunContext
from cityfactory.storage.parquet import read_table
from cityfactory.training.spec import load_model_spec
from cityfactory.training.stage import RunFacts, train_and_register


def train(ctx: RunContext, gold: dict, batches: list[list[str]]) -> dict:
    """Train on the gold features, track in MLflow, register, and decide the alias."""
    scenario = ctx.scenario
    spec = load_model_spec(scenario.model_spec)
    with ctx.entry(Kind.MODEL_TRAINED) as entry:
        frame = read_table(ctx.lake, gold["key"]).to_pandas()
        entry.inputs.append(Artifact(gold["uri"], gold["sha256"], gold["rows"], "gold"))
        facts = RunFacts(
            scenario=scenario.name, dag_id=scenario.dag_id, airflow_run_id=ctx.run_id,
            data_interval=f"{batches[0][0]}..{batches[-1][-1]}", features_uri=gold["uri"],
            features_sha256=gold["sha256"], risk_level=scenario.governance.risk_level, owners=scenario.governance.owners,
        )
        outcome = train_and_register(spec, frame, facts)
        run_uri = f"runs:/{outcome.mlflow_run_id}"
        entry.outputs += [
            Artifact(run_uri, "", None, "mlflow_run"),
            Artifact(f"models:/{spec.registered_model}/{outcome.version}", "", None, "model_version", (run_uri,)),
        ]
        entry.counts = {"version": int(outcome.version)}
        entry.details.update(metrics=outcome.metrics, metrics_by_series=outcome.metrics_by_series, alias=outcome.alias, reason=outcome.reason,
                             champion_version=outcome.champion_version, registered_model=spec.registered_model,
                             fit_seconds=round(outcome.fit_seconds, 2), train_rows=outcome.train_rows)
    return {"version": outcome.version, "alias": outcome.alias, "reason": outcome.reason,
            "mlflow_run_id": outcome.mlflow_run_id, "test_rmse": outcome.metrics["model"]["rmse"]}
