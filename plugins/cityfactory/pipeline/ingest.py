"""The ingest stage as Airflow tasks see it: land a batch, ingest a batch, sum up and judge.

Each function records its ledger entry and returns only small, JSON-able summaries (XCom carries
counts and URIs, never data).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

from airflow.sdk.exceptions import AirflowFailException

from cityfactory.governance.ledger import Artifact, Kind
from cityfactory.ingestion import image_drops, pipeline, replay
from cityfactory.ingestion.datasets import DatasetError, source_file
from cityfactory.pipeline.context import RunContext

# How a source's files become bronze, by its format (rows of CSV or JSON lines by default).
INGEST_BY_FORMAT = {"images": image_drops.ingest_image_days}


def _dates(days: list[str]) -> list[dt.date]:
    return [dt.date.fromisoformat(d) for d in days]


def land_batch(ctx: RunContext, days: list[str]) -> dict:
    """Replay the scenario's dataset into landing/ for these days (the gateway's job)."""
    with ctx.entry(Kind.LANDED) as entry:
        source = ctx.scenario.source
        try:
            entry.inputs = [Artifact(source_file(source, f).as_uri(), f.sha256, kind="source") for f in source.files]
            landed = replay.replay(ctx.scenario, ctx.lake, _dates(days))
        except DatasetError as exc:
            raise AirflowFailException(str(exc)) from exc  # a file that does not match its pin: a retry will not help
        entry.outputs = [Artifact.of(obj, rows, "landing") for obj, rows in landed.files]
        entry.counts = {"files": len(landed.files), "rows": sum(rows for _, rows in landed.files),
                        "set_aside": landed.set_aside}
        entry.details["time_shift_days"] = replay.time_shift(ctx.scenario).days
    return {"days": days, **entry.counts}


def ingest_batch(ctx: RunContext, landed: dict) -> dict:
    """Landing → raw → bronze + quarantine for the days a land task landed; data problems are
    judged in summarize."""
    with ctx.entry(Kind.BATCH_INGESTED) as entry:
        result = pipeline.ingest_days(ctx.scenario, ctx.lake, _dates(landed["days"]), entry,
                                        INGEST_BY_FORMAT.get(ctx.scenario.source.format))
    return {**result.counts(), "reasons": dict(result.reasons), "file_errors": result.file_errors}


def summarize(ctx: RunContext, results: list[dict]) -> dict:
    """Totals over all batches; fails the run (after recording) if the input was not acceptable."""
    total = pipeline.IngestResult()
    for r in results[:]:  # a mapped task's results: one fetch of them all
        for name in ("days", "files", "rows_in", "rows_bronze", "rows_quarantined", "rows_blank"):
            setattr(total, name, getattr(total, name) + r[name])
        total.reasons.update(Counter(r["reasons"]))
        total.file_errors += r["file_errors"]
    with ctx.entry(Kind.INGESTED) as entry:
        entry.counts = total.counts()
        entry.details = {"reasons": dict(total.reasons.most_common()), "file_errors": total.file_errors}
        try:
            pipeline.check_acceptable(total, ctx.scenario)
        except pipeline.IngestionError as exc:
            raise AirflowFailException(str(exc)) from exc  # bad input: retrying will not help
    return total.counts()
