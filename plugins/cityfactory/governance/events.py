"""Which facts of a run's ledger become audit-trail events.

The audit trail keeps the decisions an auditor asks about (what came in, what passed a gate, which
model was registered, which alias moved, what was deployed or rolled back, who approved, which key
was generated), not every file: those stay in the ledger, whose report checksum the trail holds.
Each event names its source (task, map index and try), so a retried governance task adds nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterator

from cityfactory.governance.ledger import Kind, latest_tries


def _source(entry: dict) -> str:
    return f"{entry['task_id']}[{entry['map_index']}]#{entry['try_number']}@{entry['ended_at']}"


def ledger_events(entries: list[dict]) -> Iterator[tuple[str, dict]]:
    """``(event, details)`` pairs of the latest try of each task instance, in ledger order."""
    for e in latest_tries(entries):
        kind, d, c = e["kind"], e["details"], e["counts"]
        base = {"task": e["task_id"], "try": e["try_number"], "source": _source(e), "status": e["status"]}
        if kind == Kind.INGESTED:
            yield "ingested", {**base, **{k: c.get(k) for k in ("days", "files", "rows_in", "rows_bronze", "rows_quarantined")}}
        elif kind == Kind.QUALITY_GATE and "suite" in d:
            yield "quality_gate", {**base, "layer": d["layer"], "suite": d["suite"], "passed": d["success"],
                                   "failed": c.get("failed"), "expectations": c.get("expectations"), "rows": c.get("rows")}
        elif kind == Kind.DBT_BUILD and "tests" in d:
            failed = [t["name"] for t in d["tests"] if t["status"] != "pass"]
            yield "dbt_build", {**base, "models": len(d.get("models", [])), "tests": len(d["tests"]), "failed_tests": failed}
        elif kind == Kind.MODEL_TRAINED and e["status"] == "success":
            version = str(c["version"])
            yield "model_registered", {**base, "model": d["registered_model"], "version": version, "reason": d["reason"]}
            if d.get("alias"):
                yield "alias_moved", {**base, "model": d["registered_model"], "alias": d["alias"], "to": version}
        elif kind == Kind.BUNDLE_SIGNED and e["status"] == "success":
            manifest = next((a for a in e["outputs"] if a["uri"].endswith("manifest.json")), None)
            yield "bundle_signed", {**base, "variant": d.get("chosen"), "manifest_sha256": manifest["sha256"] if manifest else ""}
        elif kind == Kind.DEPLOYED:
            yield "deployed", {**base, "node": d.get("node"), "version": d.get("version"), "error": d.get("error")}
        elif kind == Kind.ROLLOUT_GATE and "verdict" in d:
            yield "rollout_gate", {**base, "stage": d["stage"], "passed": d["verdict"]["passed"], "reasons": d["verdict"]["reasons"]}
        elif kind == Kind.PROMOTED and e["status"] == "success":
            yield "alias_moved", {**base, "alias": "champion", "from": d.get("previous_champion"), "to": d.get("champion")}
        elif kind == Kind.ROLLED_BACK and "nodes" in d:
            yield "rolled_back", {**base, "reason": d.get("reason"), "nodes": d["nodes"], "champion": d.get("champion")}
        elif kind == Kind.STAGE_STARTED and d.get("approval") is not None:
            yield "approved", {**base, "stage": d.get("stage"), "approval": d["approval"]}
