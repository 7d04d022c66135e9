"""The run ledger: what every task of a run read and wrote (URI, sha256, rows), in the lake.

Each task instance writes its own entry object under ``governance/<scenario>/<run_id>/ledger/``, so
mapped tasks never contend for one file and the same code works on S3. Lineage, reports and the
audit trail are built from these entries; recording here is the one way a task reports outputs.

Every entry says what it records (its ``kind``) and which try of its task instance wrote it, so
readers decide from typed facts and from the latest try of each task instance, never from task ids.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from cityfactory.storage.lake import Lake, StoredObject, join_key


class Kind(StrEnum):
    """What a ledger entry records."""

    RUN_PLANNED = "run_planned"
    LANDED = "landed"
    BATCH_INGESTED = "batch_ingested"
    INGESTED = "ingested"
    QUALITY_GATE = "quality_gate"
    DBT_BUILD = "dbt_build"
    GOLD_EXPORTED = "gold_exported"
    MONITORED = "monitored"
    RETRAIN_DECIDED = "retrain_decided"
    SEARCH_PLANNED = "search_planned"
    SEARCH_TRIALS = "search_trials"
    MODEL_TRAINED = "model_trained"
    BUNDLE_SIGNED = "bundle_signed"
    ROLLOUT_PLANNED = "rollout_planned"
    STAGE_STARTED = "stage_started"
    DEPLOYED = "deployed"
    ROLLOUT_GATE = "rollout_gate"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    GOVERNED = "governed"


ROLLOUT_KINDS = frozenset({Kind.ROLLOUT_PLANNED, Kind.STAGE_STARTED, Kind.DEPLOYED, Kind.ROLLOUT_GATE,
                           Kind.PROMOTED, Kind.ROLLED_BACK})


@dataclass(frozen=True)
class Artifact:
    uri: str
    sha256: str
    rows: int | None = None
    kind: str = "file"
    # lineage ids this output was made from, when not simply from all of the task's inputs
    derived_from: tuple[str, ...] = ()
    # what a person calls it, where the uri is an address (an edge node: its id and district)
    label: str = ""

    @classmethod
    def of(cls, stored: StoredObject, rows: int | None = None, kind: str = "file") -> Artifact:
        return cls(stored.uri, stored.sha256, rows, kind)


@dataclass
class LedgerEntry:
    task_id: str
    kind: Kind
    inputs: list[Artifact] = field(default_factory=list)
    outputs: list[Artifact] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    status: str = "success"
    map_index: int = -1
    try_number: int = 1
    started_at: str = ""
    ended_at: str = ""


def safe_run_id(run_id: str) -> str:
    """A run id as a portable lake folder name (run ids carry ':' and '+'), injective: the cleaned
    id is followed by a digest of the id itself, so two ids never share a folder, however alike
    they look once cleaned (``a:b`` and ``a_b``) or whatever a caller names a run."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id)[:120] + "." + hashlib.sha256(run_id.encode()).hexdigest()[:16]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class RunLedger:
    def __init__(self, lake: Lake, scenario: str, run_id: str):
        self.lake, self.scenario, self.run_id = lake, scenario, run_id
        self.prefix = join_key("governance", scenario, safe_run_id(run_id))

    def record(self, entry: LedgerEntry) -> str:
        entry.ended_at = entry.ended_at or _now()
        suffix = ("" if entry.map_index < 0 else f"-{entry.map_index:05d}") + f"-try{entry.try_number}"
        key = join_key(self.prefix, "ledger", f"{time.time_ns()}-{entry.task_id}{suffix}.json")
        body = {"scenario": self.scenario, "run_id": self.run_id, **asdict(entry)}
        self.lake.put_bytes(key, json.dumps(body, indent=1, sort_keys=True).encode())
        return key

    def entries(self) -> list[dict]:
        """Every entry of every try, in the order they were written."""
        keys = self.lake.list(join_key(self.prefix, "ledger"))
        return [json.loads(self.lake.get_bytes(k)) for k in keys if k.endswith(".json")]

    def current(self) -> list[dict]:
        """The latest try of each task instance (what the run's outcome is made of)."""
        return latest_tries(self.entries())


def latest_tries(entries: Iterable[dict]) -> list[dict]:
    """One entry per task instance, its latest try; in the order those were written."""
    latest: dict[tuple[str, int], tuple[int, dict]] = {}
    for position, entry in enumerate(entries):
        instance = (entry["task_id"], entry["map_index"])
        held = latest.get(instance)
        if held is None or entry["try_number"] >= held[1]["try_number"]:
            latest[instance] = (position, entry)
    return [entry for _, entry in sorted(latest.values(), key=lambda pair: pair[0])]


def of_kind(entries: Iterable[dict], *kinds: Kind) -> list[dict]:
    return [e for e in entries if e["kind"] in kinds]


def last_of(entries: Iterable[dict], kind: Kind) -> dict | None:
    """The last entry of a kind (of a single-instance task: its only one)."""
    found = of_kind(entries, kind)
    return found[-1] if found else None


class timed_entry:
    """``with timed_entry(ledger, task_id, kind) as entry:`` records the entry on exit, failed or not."""

    def __init__(self, ledger: RunLedger, task_id: str, kind: Kind, map_index: int = -1, try_number: int = 1,
                 on_record=None):
        self.ledger, self.on_record = ledger, on_record
        self.entry = LedgerEntry(task_id=task_id, kind=kind, map_index=map_index, try_number=try_number,
                                 started_at=_now())

    def __enter__(self) -> LedgerEntry:
        return self.entry

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self.entry.status = "failed"
            self.entry.details.setdefault("error", f"{type(exc).__name__}: {exc}")
        self.ledger.record(self.entry)
        if self.on_record is not None:
            self.on_record(asdict(self.entry))
