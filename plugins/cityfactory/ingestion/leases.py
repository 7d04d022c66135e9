"""Leases: one ingestion at a time per scenario and week, claimed with the lake's exclusive create.

Two runs of the same scenario and days (a retry next to a stuck try, a manual run beside the
nightly one) would otherwise move and rewrite the same files under each other. A lease names its
holder and expires (a crashed worker does not block a day forever); a second claimant waits, then
fails with a message naming the week and the holder. A lease covers an ISO week (a bulk run of six
years claims ~300, not ~2,200): runs that touch the same week take turns.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
import uuid

from cityfactory.storage.lake import Lake, LakeError, join_key


class LeaseTaken(RuntimeError):
    """A day is being ingested by another run; the message names it."""


def _week(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def _key(scenario: str, week: str) -> str:
    return join_key("_leases", "ingest", scenario, f"{week}.json")


def _claim(lake: Lake, key: str, holder: str, ttl: float) -> dict | None:
    """None if claimed; else the current lease (an expired one is broken and claimed again)."""
    body = {"holder": holder, "until": time.time() + ttl}
    if lake.put_new(key, json.dumps(body).encode()):
        return None
    try:
        current = json.loads(lake.get_bytes(key))
    except (LakeError, ValueError):
        return {"holder": "unknown", "until": 0}
    if current.get("until", 0) < time.time():
        lake.delete([key])  # expired: its holder died; the exclusive create decides who gets it now
        return _claim(lake, key, holder, ttl)
    return current


@contextlib.contextmanager
def day_leases(lake: Lake, scenario: str, days: list[dt.date], holder: str | None = None,
               wait_seconds: float = 300, ttl_seconds: float = 3600):
    """Hold the leases of the weeks of ``days`` (claimed in order, so two claimants cannot deadlock)
    for the block; waits up to ``wait_seconds`` for each taken one, then raises :class:`LeaseTaken`."""
    holder = holder or uuid.uuid4().hex
    held: list[str] = []
    try:
        for week in sorted({_week(day) for day in days}):
            key, deadline = _key(scenario, week), time.monotonic() + wait_seconds
            while (current := _claim(lake, key, holder, ttl_seconds)) is not None:
                if time.monotonic() > deadline:
                    raise LeaseTaken(f"{scenario} week {week} is being ingested by {current.get('holder')} "
                                     f"(lease until {dt.datetime.fromtimestamp(current.get('until', 0), dt.UTC):%H:%M:%S} UTC); "
                                     "try again when that run has finished")
                time.sleep(0.2)
            held.append(key)
        yield holder
    finally:
        lake.delete(held)
