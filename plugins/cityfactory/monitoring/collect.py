"""Collect what the edge served into the lake: ``predictions/<scenario>/dt=<served day>/<node>-<segment>.parquet``.

Pulled by the pipeline over each node's admin API (nodes hold no lake credentials): rotate, fetch
each closed segment, store it, then remove it from the node. The lake key depends only on node,
segment and the segment's sha256, so a retry or a crash between storing and removing rewrites the
same object (nothing is lost or counted twice), and a node whose log folder was wiped and counts
segments from 1 again overwrites nothing. A node that cannot be reached is reported and skipped.

Nothing a client claimed decides where a row goes or how many objects there are: rows are
partitioned by the local day the node served them (one object per node, segment and served day).
A segment streams through a temporary file and Parquet row groups, so memory stays flat whatever
its size. A row that cannot be placed (a torn line, a field of the wrong type, a target time that
is not a time or lies outside the fleet's window) never stops the collection: it goes, with its
reason, to ``refused_predictions/<scenario>/dt=<collection day>/`` and is counted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from cityfactory.edge.fleet import Fleet
from cityfactory.edge.prediction_log import KeyWindow, parse_instant
from cityfactory.storage.lake import Lake, StoredObject, join_key

log = logging.getLogger(__name__)
SCHEMA = pa.schema([("served_at", pa.timestamp("us", tz="UTC")), ("node", pa.string()), ("model_version", pa.string()),
                    ("series", pa.string()), ("predicted_for", pa.timestamp("us", tz="UTC")), ("input_sha256", pa.string()),
                    ("prediction", pa.float64()), ("purpose", pa.string()),
                    ("confidence", pa.float64()), ("label", pa.string())])  # a class's confidence and name (null for numbers)
TEXT = ("node", "model_version", "series", "input_sha256", "purpose", "label")
NUMBER = ("prediction", "confidence")
REQUIRED = ("node", "model_version", "prediction", "purpose")
ROW_GROUP = 50_000  # rows held in memory before they are written


class Refused(ValueError):
    """A logged line that cannot be placed; the message is the reason kept with it."""


@dataclass
class Collected:
    stored: list[StoredObject] = field(default_factory=list)
    rows: int = 0
    days: set[str] = field(default_factory=set)  # the local days the rows predicted (for evaluation)
    segments: int = 0
    refused: Counter = field(default_factory=Counter)  # reason -> rows
    unreachable: dict[str, str] = field(default_factory=dict)


class _Placer:
    """A line as a typed row and its served day, or ``Refused``; days looked up once per hour."""

    def __init__(self, zone: str, window: KeyWindow):
        self.zone, self.window = ZoneInfo(zone), window
        self._served_days: dict[int, str] = {}
        self._target_days: dict[str, tuple[dt.datetime, str]] = {}

    def _served_day(self, served_at: float) -> str:
        hour = int(served_at // 3600)
        if hour not in self._served_days:
            self._served_days[hour] = dt.datetime.fromtimestamp(hour * 3600, self.zone).date().isoformat()
        return self._served_days[hour]

    def _target(self, value: str) -> tuple[dt.datetime, str]:
        if value not in self._target_days:
            when = parse_instant(value)
            if when is None:
                raise Refused("predicted_for: not an ISO time with an offset")
            self._target_days[value] = (when, when.astimezone(self.zone).date().isoformat())
        return self._target_days[value]

    def place(self, line: bytes) -> tuple[dict, str, str]:
        """The row, the day it was served and the day it predicted (both local)."""
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            raise Refused("not a JSON line (torn or altered)") from None
        if not isinstance(record, dict):
            raise Refused("not a JSON object")
        served_at = record.get("served_at")
        if type(served_at) not in (int, float) or not 0 < served_at < 32503680000:  # before year 3000
            raise Refused("served_at: not a time the node could have written")
        row = {"served_at": dt.datetime.fromtimestamp(served_at, dt.UTC)}
        for name in TEXT:
            value = record.get(name)
            if value is not None and not isinstance(value, str):
                raise Refused(f"{name}: not text")
            row[name] = value
        for name in NUMBER:
            value = record.get(name)
            if value is not None and type(value) not in (int, float):
                raise Refused(f"{name}: not a number")
            row[name] = value
        missing = [name for name in REQUIRED if row[name] is None]
        if missing:
            raise Refused(f"{missing[0]}: missing")
        served_day, predicted_day = self._served_day(served_at), None
        row["predicted_for"] = None
        if record.get("predicted_for") is not None:
            if not isinstance(record["predicted_for"], str):
                raise Refused("predicted_for: not text")
            when, predicted_day = self._target(record["predicted_for"])
            if not self.window.holds(when, served_at):
                raise Refused(f"predicted_for: outside the window, {self.window.describe()}")
            row["predicted_for"] = when
        return row, served_day, predicted_day or served_day


@dataclass
class StoredSegment:
    parts: list[tuple[str, StoredObject, int]]  # served day, object, rows
    predicted_days: set[str]
    refused: Counter


def store_segment(lake: Lake, scenario: str, node: str, segment: str, path: Path, digest: str, zone: str,
                  window: KeyWindow, today: str) -> StoredSegment:
    """One Parquet object per served day of the segment's placed rows, written in row groups; the
    refused lines, with their reasons, in one JSON-lines object (see the module's doc)."""
    placer = _Placer(zone, window)
    name = f"{node}-{segment.removesuffix('.jsonl')}-{digest[:8]}"
    pending: dict[str, list[dict]] = {}
    writers: dict[str, pq.ParquetWriter] = {}
    counts: Counter = Counter()
    predicted, refused = set(), Counter()
    with tempfile.TemporaryDirectory(prefix="collect-") as work, open(path, "rb") as lines, \
            open(Path(work) / "refused.jsonl", "wb") as kept_refused:

        def flush(day: str) -> None:
            if day not in writers:
                writers[day] = pq.ParquetWriter(Path(work) / f"{day}.parquet", SCHEMA)
            writers[day].write_table(pa.Table.from_pylist(pending.pop(day), schema=SCHEMA))

        for line in lines:
            if not line.strip():
                continue
            try:
                row, served_day, predicted_day = placer.place(line)
            except Refused as exc:
                refused[str(exc)] += 1
                kept_refused.write(json.dumps({"reason": str(exc), "line": line.decode("utf-8", "replace")[:4096]}).encode() + b"\n")
                continue
            pending.setdefault(served_day, []).append(row)
            counts[served_day] += 1
            predicted.add(predicted_day)
            if sum(counts.values()) % ROW_GROUP == 0:  # memory bound: at most a row group held, all days together
                for day in list(pending):
                    flush(day)
        for day in list(pending):
            flush(day)
        for writer in writers.values():
            writer.close()
        parts = [(day, lake.put_file(join_key("predictions", scenario, f"dt={day}", f"{name}.parquet"),
                                     Path(work) / f"{day}.parquet"), counts[day]) for day in sorted(writers)]
        kept_refused.close()
        if refused:
            lake.put_file(join_key("refused_predictions", scenario, f"dt={today}", f"{name}.jsonl"),
                          Path(work) / "refused.jsonl")
    return StoredSegment(parts, predicted, refused)


def _download(client: httpx.Client, segment: str, target: Path) -> str:
    """The segment streamed to ``target``; its sha256."""
    digest = hashlib.sha256()
    with client.stream("GET", f"/admin/predictions/{segment}") as response, open(target, "wb") as out:
        response.raise_for_status()
        for block in response.iter_bytes(1 << 20):
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def collect(lake: Lake, scenario: str, fleet: Fleet, token: str, zone: str, timeout: float = 30) -> Collected:
    """Every node's closed segments into the lake, node by node (see the module's doc)."""
    collected = Collected()
    window = fleet.logging.window
    today = dt.datetime.now(ZoneInfo(zone)).date().isoformat()
    headers = {"Authorization": f"Bearer {token}"}
    for node in fleet.nodes:
        try:
            with httpx.Client(base_url=node.url, headers=headers, timeout=timeout) as client, \
                    tempfile.TemporaryDirectory(prefix="segment-") as work:
                response = client.post("/admin/predictions/rotate")
                response.raise_for_status()
                for segment in response.json()["segments"]:
                    fetched = Path(work) / "segment.jsonl"
                    digest = _download(client, segment, fetched)
                    stored = store_segment(lake, scenario, node.id, segment, fetched, digest, zone, window, today)
                    collected.refused.update(stored.refused)
                    collected.days |= stored.predicted_days
                    for _, obj, rows in stored.parts:
                        collected.stored.append(obj)
                        collected.rows += rows
                    client.delete(f"/admin/predictions/{segment}").raise_for_status()
                    collected.segments += 1
        except (httpx.HTTPError, KeyError, ValueError, OSError) as exc:
            collected.unreachable[node.id] = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("could not collect the predictions of %s: %s", node.id, exc)
    if collected.refused:
        log.warning("%d collected row(s) could not be placed and were set aside in refused_predictions/%s: %s",
                    sum(collected.refused.values()), scenario,
                    "; ".join(f"{reason} ({n})" for reason, n in collected.refused.most_common(5)))
    return collected
