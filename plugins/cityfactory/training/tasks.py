"""The train stage as Airflow tasks see it."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowSkipException

from cityfactory.governance.ledger import Artifact, Kind
from cityfactory.runs import RunContext
from cityfactory.training import registry
from cityfactory.training.spec import load_model_spec, spec_digest
from cityfactory.training.stage import RunFacts, train_and_register
from cityfactory.transform.gold import read_gold


def train(ctx: RunContext, gold: dict, batches: list[list[str]], decision: dict | None) -> dict:
    """Train on the gold features, track in MLflow, register, and decide the alias; skipped when
    the retraining decision says no, or when a version was already trained on these very inputs."""
    scenario = ctx.scenario
    spec = load_model_spec(scenario.model_spec)
    if decision is not None and not decision["retrain"]:
        raise AirflowSkipException(decision["summary"])
    registry.use_experiment(scenario.name)
    inputs = {"feature_digest": gold["sha256"], "spec_digest": spec_digest(spec), "code_version": registry.code_version()}
    with ctx.entry(Kind.MODEL_TRAINED) as entry:
        entry.inputs.append(Artifact(gold["uri"], gold["sha256"], gold["rows"], "gold"))
        if same := registry.version_with_inputs(spec.registered_model, inputs):
            entry.status = "skipped"
            entry.details.update(registered_model=spec.registered_model, same_inputs_as=same,
                                 reason=f"version {same} was trained on these very inputs (features "
                                        f"{inputs['feature_digest'][:12]}, spec {inputs['spec_digest'][:12]}, "
                                        f"code {inputs['code_version']}): nothing new to register")
        else:
            facts = RunFacts(
                scenario=scenario.name, dag_id=scenario.dag_id, airflow_run_id=ctx.run_id,
                data_interval=f"{batches[0][0]}..{batches[-1][-1]}", features_uri=gold["uri"],
                features_sha256=gold["sha256"], risk_level=scenario.governance.risk_level, owners=scenario.governance.owners,
                feature_definition=gold["definition_digest"],
            )
            outcome = train_and_register(spec, read_gold(ctx.lake, scenario.name, gold["sha256"]), facts,
                                         scenario.maintenance.drift)
            run_uri = f"runs:/{outcome.mlflow_run_id}"
            entry.outputs += [
                Artifact(run_uri, "", None, "mlflow_run"),
                Artifact(f"models:/{spec.registered_model}/{outcome.version}", "", None, "model_version", (run_uri,)),
            ]
            entry.counts = {"version": int(outcome.version)}
            entry.details.update(metrics=outcome.metrics, metrics_by_series=outcome.metrics_by_series, alias=outcome.alias,
                                 reason=outcome.reason, champion_version=outcome.champion_version,
                                 registered_model=spec.registered_model, fit_seconds=round(outcome.fit_seconds, 2),
                                 train_rows=outcome.train_rows)
    if same:
        raise AirflowSkipException(entry.details["reason"])
    return {"version": outcome.version, "alias": outcome.alias, "reason": outcome.reason,
            "mlflow_run_id": outcome.mlflow_run_id, "test_rmse": outcome.metrics["model"]["rmse"]}
