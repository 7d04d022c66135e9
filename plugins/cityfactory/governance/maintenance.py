"""The daily maintenance DAG's work: verify the audit trail, enforce retention, sum up."""

from __future__ import annotations

import datetime as dt
import json
import logging

from cityfactory.config.scenarios import get_scenario
from cityfactory.governance import audit, retention
from cityfactory.governance.ledger import safe_run_id
from cityfactory.security.signing import audit_public_key_pem
from cityfactory.storage.lake import LakeError, join_key, open_lake

log = logging.getLogger(__name__)


def _verdict_key(run_id: str) -> str:
    return join_key("governance", "_maintenance", safe_run_id(run_id), "audit.json")


def verify_trail(run_id: str) -> dict:
    """The one full check of the trail in a maintenance run (every entry re-read, the root rebuilt);
    its verdict is stored for the summary, which then reads only what came after."""
    from airflow.sdk.exceptions import AirflowFailException

    lake = open_lake()
    try:
        result = audit.verify(lake, audit_public_key_pem())
        verdict = {"verified": True, "entries": result.entries, "sealed_through": result.sealed_through,
                   "read": result.read, "error": None}
    except (audit.AuditError, FileNotFoundError) as exc:
        empty = isinstance(exc, FileNotFoundError) and not lake.list(audit.ENTRIES)  # no key, nothing ever logged
        verdict = {"verified": empty, "entries": 0, "sealed_through": 0, "read": 0, "error": None if empty else str(exc)}
    lake.put_bytes(_verdict_key(run_id), json.dumps(verdict).encode())
    if not verdict["verified"]:
        raise AirflowFailException(f"audit trail does not verify: {verdict['error']}")
    log.info("audit trail verified: %d entries, sealed through %d", verdict["entries"], verdict["sealed_through"])
    return verdict


def enforce_retention(scenario: str, today: dt.date, run_id: str, dry_run: bool) -> dict:
    lake = open_lake()
    result = retention.enforce(lake, get_scenario(scenario), today, run_id, dry_run)
    audit.seal(lake)
    return {k: v for k, v in result.items() if k != "partitions"} | {"partitions": len(result["partitions"])}


def write_summary(run_id: str, scenarios: list[str]) -> dict:
    """What this maintenance run found and did (the audit check's stored verdict and the trail's
    newest entries, so it works after failures); then fails if the trail is broken or a scenario's
    retention did not run."""
    from airflow.sdk.exceptions import AirflowFailException

    lake = open_lake()
    try:
        trail = json.loads(lake.get_bytes(_verdict_key(run_id)))
    except LakeError:
        trail = {"verified": False, "error": "the audit check did not run"}
    # only what this run added after its full check: the retention events
    after = trail.get("sealed_through", 0) + 1 if trail["verified"] else None
    done = [e for e in (audit.entries(lake, after) if after else []) if e["details"].get("run_id") == run_id
            and e["event"] in ("retention_enforced", "retention_dry_run")]
    summary = {"run_id": run_id, "audit": trail,
               "retention": [{"seq": e["seq"], "event": e["event"], **e["details"]} for e in done]}
    stored = lake.put_bytes(join_key("governance", "_maintenance", safe_run_id(run_id), "summary.json"),
                            json.dumps(summary, indent=1).encode())
    log.info("maintenance summary %s: trail %s; retention deleted %d objects", stored.uri,
             "verified" if trail["verified"] else f"BROKEN ({trail['error']})", sum(r["objects"] for r in summary["retention"]))
    missing = sorted(set(scenarios) - {r["scenario"] for r in summary["retention"]})
    if not trail["verified"] or missing:
        raise AirflowFailException(f"maintenance incomplete (summary at {stored.uri}): "
                                   + ("; ".join(filter(None, [trail["error"], missing and f"no retention for {missing}"]))))
    return {"summary": stored.uri, "audit_verified": trail["verified"]}
