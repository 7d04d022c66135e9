"""The two quality gates as Airflow tasks see them."""

from __future__ import annotations

import datetime as dt

from airflow.sdk.exceptions import AirflowFailException

from cityfactory.governance.ledger import Artifact, Kind, safe_run_id
from cityfactory.ingestion.parsing import empty_bronze
from cityfactory.pipeline.context import RunContext
from cityfactory.quality.gates import QualityGateError, run_gate
from cityfactory.storage.lake import join_key
from cityfactory.storage.parquet import read_partitions
from cityfactory.transform.dbt import duckdb_path, model_uri, read_model
from cityfactory.transform.gold import quarantine_rows


def _gate(ctx: RunContext, frame, suite: str, dataset_uri: str, dataset_kind: str, layer: str,
          set_aside=None) -> dict:
    """Run the suite; rows a quarantining expectation flags go to ``set_aside`` (with the entry)."""
    with ctx.entry(Kind.QUALITY_GATE) as entry:
        entry.details["layer"] = layer
        try:
            result = run_gate(frame, suite, ctx.ledger, entry, dataset_uri, dataset_kind)
        except QualityGateError as exc:
            raise AirflowFailException(str(exc)) from exc  # bad data: a retry will not fix it
        if result.quarantined and set_aside:
            set_aside(frame, result.quarantined, entry)
    return entry.counts


def bronze_gate(ctx: RunContext, batches: list[list[str]]) -> dict:
    """Validate the bronze rows of the run's days."""
    days = [dt.date.fromisoformat(d) for batch in batches for d in batch]
    table = read_partitions(ctx.lake, "bronze", ctx.scenario.name, days, prefix="part-")
    if table is None:
        table = empty_bronze(ctx.scenario.schema_)
    uri = ctx.lake.uri_for(join_key("bronze", ctx.scenario.name))
    return _gate(ctx, table.to_pandas(), ctx.scenario.quality.bronze_suite, uri, "bronze", "bronze")


def features_gate(ctx: RunContext, built: dict | None) -> dict:
    """Validate the mart rows of the run's window with their lookback (all rows after a full build):
    a suite's shares and means, set on the whole history, judged on one day alone would stop a
    night for a single gappy day; over the window and its lookback (9 days for a nightly run) they
    hold for normal days and still catch a broken feed."""
    model = ctx.scenario.transform.features_model
    if not duckdb_path(ctx.scenario).exists():
        raise AirflowFailException(f"no feature mart {model} has been built yet: run the transform stage")
    window = (built or {}).get("window")
    with_lookback = {"output_from": window["input_from"], "input_to": window["input_to"]} if window else None
    frame = read_model(ctx.scenario, model, ctx.scenario.transform.time, with_lookback)

    def set_aside(rows, reasons: dict[int, str], entry) -> None:
        stored = quarantine_rows(ctx.scenario, ctx.lake, rows, reasons, safe_run_id(ctx.run_id))
        entry.outputs.append(Artifact.of(stored, len(reasons), "quarantine"))

    return _gate(ctx, frame, ctx.scenario.quality.features_suite, model_uri(duckdb_path(ctx.scenario), model), "dbt_model",
                 "features", set_aside)
