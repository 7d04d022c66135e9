"""The transform stage as Airflow tasks see it: dbt build, then the gold export for training."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowFailException

from cityfactory.governance.ledger import Artifact, Kind
from cityfactory.runs import RunContext
from cityfactory.storage.lake import join_key
from cityfactory.transform.dbt import (
    TransformError,
    duckdb_path,
    export_model,
    local_lake_root,
    model_rows,
    model_uri,
    run_dbt,
)


def transform(ctx: RunContext) -> dict:
    scenario = ctx.scenario
    with ctx.entry(Kind.DBT_BUILD) as entry:
        entry.inputs.append(Artifact(ctx.lake.uri_for(join_key("bronze", scenario.name)), "", kind="bronze"))
        try:
            report = run_dbt(scenario, local_lake_root(ctx.lake, scenario))
        except TransformError as exc:
            if exc.report:
                entry.details.update(models=exc.report.models, tests=exc.report.tests)
            raise AirflowFailException(str(exc)) from exc
        rows = model_rows(scenario, report)
        database = duckdb_path(scenario)
        entry.outputs = [Artifact(model_uri(database, m["name"]), "", rows[m["name"]], "dbt_model",
                                  tuple(model_uri(database, up) for up in m["depends_on"])) for m in report.models]
        entry.details.update(models=report.models, tests=report.tests)
        entry.counts = {"models": len(report.models), "tests": len(report.tests), **{f"rows_{k}": v for k, v in rows.items()}}
    return entry.counts


def export_gold(ctx: RunContext) -> dict:
    """The feature mart, whole, as ``gold/<scenario>/<model>.parquet`` for training."""
    scenario = ctx.scenario
    model = scenario.transform.features_model
    with ctx.entry(Kind.GOLD_EXPORTED) as entry:
        key = join_key("gold", scenario.name, f"{model}.parquet")
        stored, rows = export_model(scenario, model, ctx.lake, key, scenario.transform.order_by)
        entry.inputs.append(Artifact(model_uri(duckdb_path(scenario), model), "", rows, "dbt_model"))
        entry.outputs.append(Artifact.of(stored, rows, "gold"))
        entry.counts = {"rows": rows}
    return {"key": key, "uri": stored.uri, "sha256": stored.sha256, "rows": rows}
