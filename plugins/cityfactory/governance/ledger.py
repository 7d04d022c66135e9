"""The run ledger: what every task of a run read and wrote (URI, sha256, rows), in the lake.

Each task instance writes its own entry object under ``governance/<scenario>/<run_id>/ledger/``, so
mapped tasks never contend for one file and the same code works on S3. Lineage, reports and the
audit trail are built from these entries; recording here is the one way a task reports outputs.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from cityfactory.storage.lake import Lake, StoredObject, join_key


@dataclass(frozen=True)
class Artifact:
    uri: str
    sha256: str
    rows: int | None = None
    kind: str = "file"
    # lineage ids this output was made from, when not simply from all of the task's inputs
    derived_from: tuple[str, ...] = ()

    @classmethod
    def of(cls, stored: StoredObject, rows: int | None = None, kind: str = "file") -> Artifact:
        return cls(stored.uri, stored.sha256, rows, kind)


@dataclass
class LedgerEntry:
    task_id: str
    inputs: list[Artifact] = field(default_factory=list)
    outputs: list[Artifact] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    status: str = "success"
    map_index: int = -1
    started_at: str = ""
    ended_at: str = ""


def safe_run_id(run_id: str) -> str:
    """Run ids carry ':' and '+'; keep lake keys portable."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class RunLedger:
    def __init__(self, lake: Lake, scenario: str, run_id: str):
        self.lake, self.scenario, self.run_id = lake, scenario, run_id
        self.prefix = join_key("governance", scenario, safe_run_id(run_id))

    def record(self, entry: LedgerEntry) -> str:
        entry.ended_at = entry.ended_at or _now()
        suffix = "" if entry.map_index < 0 else f"-{entry.map_index:05d}"
        key = join_key(self.prefix, "ledger", f"{time.time_ns()}-{entry.task_id}{suffix}.json")
        body = {"scenario": self.scenario, "run_id": self.run_id, **asdict(entry)}
        self.lake.put_bytes(key, json.dumps(body, indent=1, sort_keys=True).encode())
        return key

    def entries(self) -> list[dict]:
        keys = self.lake.list(join_key(self.prefix, "ledger"))
        return [json.loads(self.lake.get_bytes(k)) for k in keys if k.endswith(".json")]


class timed_entry:
    """``with timed_entry(ledger, task_id) as entry:`` records the entry on exit, failed or not."""

    def __init__(self, ledger: RunLedger, task_id: str, map_index: int = -1, on_record=None):
        self.ledger, self.on_record = ledger, on_record
        self.entry = LedgerEntry(task_id=task_id, map_index=map_index, started_at=_now())

    def __enter__(self) -> LedgerEntry:
        return self.entry

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self.entry.status = "failed"
            self.entry.details.setdefault("error", f"{type(exc).__name__}: {exc}")
        self.ledger.record(self.entry)
        if self.on_record is not None:
            self.on_record(asdict(self.entry))
