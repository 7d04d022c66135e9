"""Where gateway drops land: ``landing/<scenario>/<yyyy-mm-dd>/``, one folder per play-time day;
and which of the landed files may be taken.

The gateway convention (README, "Landing"): write a file under a name starting with ``.tmp-`` and
rename it when complete; a file written in place is taken only once its size and change time held
still for ``settle_seconds`` (checked again after it is read, so the bytes taken are exactly the
bytes hashed). A file is refused, and left where it is, if it is not a regular file or has more
than one name (a hard link: another name for a file the gateway could still change, or one it
could not read itself). A file over ``max_file_bytes`` is moved whole, unread, to ``set_aside/``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field

from cityfactory.config.scenarios import Ingestion
from cityfactory.storage.lake import Lake, LakeError, ObjectFacts, join_key

EPOCH = dt.date(1970, 1, 1)
UNFINISHED = ".tmp-"


def landing_prefix(scenario: str, day: dt.date) -> str:
    return join_key("landing", scenario, day.isoformat())


def set_aside_prefix(scenario: str, day: dt.date) -> str:
    """Where whole landed files that could not be taken are kept, with their reason (beside
    quarantine's rows, whose partitions are rewritten whole)."""
    return join_key("set_aside", scenario, f"dt={day.isoformat()}")


@dataclass
class Taken:
    files: dict[str, bytes] = field(default_factory=dict)  # landing key -> the exact bytes read
    problems: list[str] = field(default_factory=list)  # refused or set aside: reported, the batch fails after
    waiting: list[str] = field(default_factory=list)  # still being written: left for the next run


def _set_aside(lake: Lake, key: str, scenario: str, day: dt.date, reason: str) -> str:
    name = key.rsplit("/", 1)[1]
    target = join_key(set_aside_prefix(scenario, day), name)
    lake.move(key, target)
    lake.put_bytes(target + ".reason.json", json.dumps({"file": name, "reason": reason}).encode())
    return lake.uri_for(target)


def take_landed(lake: Lake, scenario: str, day: dt.date, rules: Ingestion, sleep=time.sleep) -> Taken:
    """The day's landed files that may be taken, read once (see the module's doc)."""
    taken, facts = Taken(), {}
    for key in lake.list(landing_prefix(scenario, day), include_partial=True):
        where = lake.uri_for(key)
        if key.rsplit("/", 1)[1].startswith(UNFINISHED):
            taken.problems.append(f"{where}: a name starting with '{UNFINISHED}' marks an unfinished write; left in landing")
            continue
        try:
            facts[key] = lake.describe(key)
        except LakeError as exc:
            taken.problems.append(f"{exc}; left in landing")
    youngest = max((f.modified_ns for f in facts.values()), default=0) / 1e9
    if facts and (wait := rules.settle_seconds - (time.time() - youngest)) > 0:
        sleep(min(wait, rules.settle_seconds))  # once for the batch: then every file has had its time
    for key, before in facts.items():
        where = lake.uri_for(key)
        if before.links > 1:
            taken.problems.append(f"{where}: has {before.links} names (a hard link); refused and left in landing")
        elif before.size > rules.max_file_bytes:
            kept = _set_aside(lake, key, scenario, day, f"{before.size} bytes, over the limit of {rules.max_file_bytes}")
            taken.problems.append(f"{where}: {before.size} bytes, over the limit of {rules.max_file_bytes}; "
                                  f"set aside unread in {kept}")
        else:
            _read_if_settled(lake, key, before, taken)
    return taken


def _read_if_settled(lake: Lake, key: str, before: ObjectFacts, taken: Taken) -> None:
    where = lake.uri_for(key)
    try:
        if lake.describe(key) != before:
            taken.waiting.append(f"{where}: still being written; left in landing for the next run")
            return
        data = lake.get_bytes(key)
        if len(data) != before.size or lake.describe(key) != before:
            taken.waiting.append(f"{where}: changed while it was read; left in landing for the next run")
            return
    except LakeError as exc:
        taken.problems.append(f"{exc}; left in landing")
        return
    taken.files[key] = data
