"""Retention: delete a scenario's day partitions older than its policy, and say exactly what went.

A partition ``<layer>/<scenario>/dt=<day>/`` is expired when it is more than
``governance.retention_days[<layer>]`` days older than ``today``; a partition exactly that old
stays. Only layers the policy names are touched, and only ``dt=`` folders of the scenario's own.
Every deletion is an audit event listing the partitions and their object counts.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass

from cityfactory.config.scenarios import Scenario
from cityfactory.governance import audit
from cityfactory.storage.lake import Lake, join_key

log = logging.getLogger(__name__)


@dataclass
class Expired:
    layer: str
    day: str
    objects: int


def cutoff(today: dt.date, days: int) -> dt.date:
    """The oldest day that stays."""
    return today - dt.timedelta(days=days)


def expired_partitions(lake: Lake, scenario: Scenario, today: dt.date) -> list[tuple[Expired, list[str]]]:
    found = []
    for layer, days in sorted(scenario.governance.retention_days.items()):
        prefix = join_key(layer, scenario.name)
        for folder in lake.list_dirs(prefix):
            if not folder.startswith("dt="):
                continue
            try:
                day = dt.date.fromisoformat(folder.removeprefix("dt="))
            except ValueError:
                log.warning("retention: %s/%s is not a day partition; left alone", prefix, folder)
                continue
            if day < cutoff(today, days):
                keys = lake.list(join_key(prefix, folder))
                found.append((Expired(layer, day.isoformat(), len(keys)), keys))
    return found


def enforce(lake: Lake, scenario: Scenario, today: dt.date, run_id: str, dry_run: bool = False) -> dict:
    """Delete (or, dry run, only list) the expired partitions; records an audit event either way."""
    expired = expired_partitions(lake, scenario, today)
    if not dry_run:
        for _, keys in expired:
            lake.delete(keys)
    policy = dict(scenario.governance.retention_days)
    result = {
        "scenario": scenario.name, "today": today.isoformat(), "dry_run": dry_run, "policy_days": policy,
        "cutoffs": {layer: cutoff(today, days).isoformat() for layer, days in policy.items()},
        "partitions": [asdict(e) for e, _ in expired],
        "objects": sum(e.objects for e, _ in expired),
    }
    audit.append(lake, "retention_enforced" if not dry_run else "retention_dry_run", {"run_id": run_id, **result})
    log.info("retention %s: %d partitions, %d objects %s", scenario.name, len(expired), result["objects"],
             "would go (dry run)" if dry_run else "deleted")
    return result
