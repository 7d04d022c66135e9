"""The transform stage as Airflow tasks see it: dbt build over the run's window, then the gold
export of the months it touched."""

from __future__ import annotations

import datetime as dt

from airflow.sdk.exceptions import AirflowFailException

from cityfactory.governance.ledger import Artifact, Kind
from cityfactory.pipeline.context import RunContext
from cityfactory.storage.lake import join_key
from cityfactory.transform.dbt import (
    TransformError,
    definition_digest,
    duckdb_path,
    has_model,
    local_lake_root,
    model_rows,
    model_uri,
    run_dbt,
    run_window,
)
from cityfactory.transform.gold import export_gold as export_months


def transform(ctx: RunContext, batches: list[list[str]], full_refresh: bool) -> dict:
    """Incremental over the run's days; everything when the form asks for a full refresh or the
    mart has never been built. Returns the window later tasks work on (None: everything)."""
    scenario = ctx.scenario
    full = full_refresh or not has_model(scenario, scenario.transform.features_model)
    days = [dt.date.fromisoformat(d) for batch in batches for d in batch]
    window = None if full else run_window(days, scenario.timezone, scenario.transform.lookback_days)
    with ctx.entry(Kind.DBT_BUILD) as entry:
        entry.inputs.append(Artifact(ctx.lake.uri_for(join_key("bronze", scenario.name)), "", kind="bronze"))
        entry.details.update(full_refresh=full, window=window)
        try:
            report = run_dbt(scenario, local_lake_root(ctx.lake, scenario), window, full)
        except TransformError as exc:
            if exc.report:
                entry.details.update(models=exc.report.models, tests=exc.report.tests)
            raise AirflowFailException(str(exc)) from exc
        rows = model_rows(scenario, report)
        database = duckdb_path(scenario)
        entry.outputs = [Artifact(model_uri(database, m["name"]), "", rows[m["name"]], "dbt_model",
                                  tuple(model_uri(database, up) for up in m["depends_on"])) for m in report.models]
        entry.details.update(models=report.models, tests=report.tests, definition_digest=definition_digest(report))
        entry.counts = {"models": len(report.models), "tests": len(report.tests), **{f"rows_{k}": v for k, v in rows.items()}}
    return {**entry.counts, "window": window, "definition_digest": definition_digest(report)}


def export_gold(ctx: RunContext, built: dict) -> dict:
    """The mart's months in the run's window to ``gold/<scenario>/month=<YYYY-MM>/``, and the manifest."""
    scenario = ctx.scenario
    model = scenario.transform.features_model
    with ctx.entry(Kind.GOLD_EXPORTED) as entry:
        exported = export_months(scenario, ctx.lake, built["window"])
        entry.inputs.append(Artifact(model_uri(duckdb_path(scenario), model), "", exported.rows, "dbt_model"))
        entry.outputs.append(Artifact.of(exported.manifest, exported.rows, "gold"))
        entry.counts = {"rows": exported.rows, "months_written": len(exported.months_written),
                        "rows_written": exported.rows_written}
        entry.details["months_written"] = exported.months_written
    return {"uri": exported.manifest.uri, "sha256": exported.manifest.sha256, "rows": exported.rows,
            "definition_digest": built["definition_digest"]}
