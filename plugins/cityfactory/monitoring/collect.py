"""Collect what the edge served into the lake: ``predictions/<scenario>/dt=<day>/<node>-<segment>.parquet``.

Pulled by the pipeline over each node's admin API (nodes hold no lake credentials): rotate, fetch
each closed segment, store it under the local day of the hour it predicted, then remove it from
the node. The lake key depends only on node, segment and the segment's sha256, so a retry or a
crash between storing and removing rewrites the same object (nothing is lost or counted twice),
and a node whose log folder was wiped and counts segments from 1 again overwrites nothing. A node that cannot be reached
is reported and skipped; the others are collected.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from dataclasses import dataclass, field

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cityfactory.edge.fleet import Fleet
from cityfactory.storage.lake import Lake, StoredObject, join_key, sha256_bytes

log = logging.getLogger(__name__)
SCHEMA = pa.schema([("served_at", pa.timestamp("us", tz="UTC")), ("node", pa.string()), ("model_version", pa.string()),
                    ("series", pa.string()), ("predicted_for", pa.timestamp("us", tz="UTC")), ("input_sha256", pa.string()),
                    ("prediction", pa.float64()), ("purpose", pa.string()),
                    ("confidence", pa.float64()), ("label", pa.string())])  # a class's confidence and name (null for numbers)


@dataclass
class Collected:
    stored: list[StoredObject] = field(default_factory=list)
    rows: int = 0
    days: set[str] = field(default_factory=set)
    segments: int = 0
    unreachable: dict[str, str] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)


def _instant(value) -> dt.datetime | None:
    """An ISO time with an offset (as keys carry it) as UTC; None if absent or unreadable."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return parsed.astimezone(dt.UTC) if parsed.tzinfo else None


def segment_table(data: bytes) -> tuple[pa.Table, int]:
    """A segment's JSON lines as a typed table; lines that do not parse (a torn last line) are counted."""
    records, bad = [], 0
    for line in data.splitlines():
        try:
            record = json.loads(line)
            record["served_at"] = dt.datetime.fromtimestamp(float(record["served_at"]), dt.UTC)
            record["predicted_for"] = _instant(record.get("predicted_for"))
            records.append(record)
        except (ValueError, KeyError, TypeError):
            bad += 1
    return pa.Table.from_pylist([{n: r.get(n) for n in SCHEMA.names} for r in records], schema=SCHEMA), bad


def _local_days(table: pa.Table, zone: str) -> pa.Array:
    """The day (in the scenario's zone) of the hour each row predicted, or of when it was served."""
    when = pc.coalesce(table["predicted_for"], table["served_at"])
    return pc.strftime(pc.cast(when, pa.timestamp("us", tz=zone)), format="%Y-%m-%d")


def store_segment(lake: Lake, scenario: str, node: str, segment: str, data: bytes, zone: str
                  ) -> tuple[list[tuple[str, StoredObject, int]], int]:
    """One Parquet object per day the segment's rows fall on; and the lines that did not parse."""
    table, bad = segment_table(data)
    name = f"{node}-{segment.removesuffix('.jsonl')}-{sha256_bytes(data)[:8]}.parquet"
    days = _local_days(table, zone)
    out = []
    for day in sorted(set(days.to_pylist())):
        part = table.filter(pc.equal(days, day))
        buffer = io.BytesIO()
        pq.write_table(part, buffer)
        out.append((day, lake.put_bytes(join_key("predictions", scenario, f"dt={day}", name), buffer.getvalue()), part.num_rows))
    return out, bad


def collect(lake: Lake, scenario: str, fleet: Fleet, token: str, zone: str, timeout: float = 30) -> Collected:
    """Every node's closed segments into the lake, node by node (see the module's doc)."""
    collected = Collected()
    headers = {"Authorization": f"Bearer {token}"}
    for node in fleet.nodes:
        try:
            with httpx.Client(base_url=node.url, headers=headers, timeout=timeout) as client:
                response = client.post("/admin/predictions/rotate")
                response.raise_for_status()
                for segment in response.json()["segments"]:
                    fetched = client.get(f"/admin/predictions/{segment}")
                    fetched.raise_for_status()
                    parts, bad = store_segment(lake, scenario, node.id, segment, fetched.content, zone)
                    if bad:
                        collected.unreadable.append(f"{node.id}/{segment}: {bad} line(s) that do not parse")
                    for day, stored, rows in parts:
                        collected.stored.append(stored)
                        collected.days.add(day)
                        collected.rows += rows
                    client.delete(f"/admin/predictions/{segment}").raise_for_status()
                    collected.segments += 1
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            collected.unreachable[node.id] = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("could not collect the predictions of %s: %s", node.id, exc)
    return collected
