"""The daily maintenance DAG's work: verify the audit trail, enforce retention, sum up."""

from __future__ import annotations

import datetime as dt
import json
import logging

from cityfactory.config.scenarios import get_scenario
from cityfactory.governance import audit, retention
from cityfactory.governance.ledger import safe_run_id
from cityfactory.security.signing import audit_public_key_pem
from cityfactory.storage.lake import join_key, open_lake

log = logging.getLogger(__name__)


def verify_trail() -> dict:
    from airflow.sdk.exceptions import AirflowFailException

    lake = open_lake()
    try:
        result = audit.verify(lake, audit_public_key_pem())  # full: every entry re-read, once a day
    except audit.AuditError as exc:
        raise AirflowFailException(f"audit trail does not verify: {exc}") from exc
    except FileNotFoundError as exc:  # no audit key yet: fine only while nothing was ever logged
        if lake.list(audit.ENTRIES):
            raise AirflowFailException(f"audit trail cannot be verified: {exc}") from exc
        return {"entries": 0, "sealed_through": 0}
    log.info("audit trail verified: %d entries, sealed through %d", result.entries, result.sealed_through)
    return {"entries": result.entries, "sealed_through": result.sealed_through}


def enforce_retention(scenario: str, today: dt.date, run_id: str, dry_run: bool) -> dict:
    lake = open_lake()
    result = retention.enforce(lake, get_scenario(scenario), today, run_id, dry_run)
    audit.seal(lake)
    return {k: v for k, v in result.items() if k != "partitions"} | {"partitions": len(result["partitions"])}


def write_summary(run_id: str, scenarios: list[str]) -> dict:
    """What this maintenance run found and did, from the trail itself (so it works after failures);
    then fails if the trail is broken or a scenario's retention did not run."""
    from airflow.sdk.exceptions import AirflowFailException

    lake = open_lake()
    try:
        verified = audit.verify(lake, audit_public_key_pem())
        trail = {"verified": True, "entries": verified.entries, "sealed_through": verified.sealed_through, "error": None}
    except (audit.AuditError, FileNotFoundError) as exc:
        trail = {"verified": False, "error": str(exc)}
    done = [e for e in audit.entries(lake) if e["details"].get("run_id") == run_id
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
