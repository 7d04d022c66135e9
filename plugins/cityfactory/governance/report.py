"""The compliance report of one DAG run: facts from its ledger, as JSON (checked against
``report.schema.json``) and as one self-contained HTML page.

Assembly is pure: the governance task gathers the Airflow, MLflow and audit facts and passes them
in, so a report can be rebuilt and tested from a ledger alone.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from cityfactory.config.scenarios import Scenario
from cityfactory.governance import controls, lineage
from cityfactory.governance.summary import layer_rows, task_summary

SCHEMA_PATH = Path(__file__).with_name("report.schema.json")
TEMPLATES = Path(__file__).with_name("templates")
SCHEMA_VERSION = "1.0"

PROTECTION = {
    "encrypt": "encrypted in bronze with Parquet modular encryption (AES-GCM column key, wrapped by the "
               "lake-master key); raw files sealed with AES-GCM",
    "pseudonymise": "replaced in bronze by a keyed HMAC-SHA256 pseudonym (joinable, not reversible without "
                    "the key); raw files sealed with AES-GCM",
}


class ReportSchemaError(ValueError):
    """The assembled report does not match its schema; the message names the path."""


def _by_task(entries: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for entry in entries:
        grouped.setdefault(entry["task_id"], []).append(entry)
    return grouped


def _last(grouped: dict, task_id: str) -> dict | None:
    """A task's latest entry (a retried task has one per try)."""
    return grouped[task_id][-1] if task_id in grouped else None


def _outcome(entries: list[dict], task_states: dict[str, str]) -> dict:
    """Where and why the run stopped: the first task instance whose last try failed (a retry that
    succeeded does not count), or a task Airflow saw fail before it could record anything."""
    latest = {(e["task_id"], e["map_index"]): e for e in entries}
    failed = [e for e in latest.values() if e["status"] == "failed"
              and task_states.get(e["task_id"], "failed") not in ("success", "skipped")]
    failed_tasks = [t for t, s in task_states.items() if s == "failed" and t not in ("watcher", "governance")]
    first = failed[0] if failed else None
    stopped_at = first["task_id"] if first else (failed_tasks[0] if failed_tasks else None)
    reason = first["details"].get("error") if first else (f"task {stopped_at} failed (see its log)" if stopped_at else None)
    return {
        "state": "failed" if stopped_at else "success",
        "stopped_at": stopped_at,
        "reason": reason,
        "task_states": task_states,
        "ledger_tasks": sorted({e["task_id"] for e in entries}),
        "tasks": [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
                  for row in task_summary(entries)],
    }


def _sources(scenario: Scenario, grouped: dict) -> list[dict]:
    pinned = {f.name: f.sha256 for f in scenario.source.files}
    landed = grouped.get("land", [])
    seen = {a["uri"]: a for e in landed for a in e["inputs"] if a["kind"] == "source"}
    rows = sum(e["counts"].get("rows", 0) for e in landed)
    files = sum(e["counts"].get("files", 0) for e in landed)
    return [{"uri": uri, "sha256": a["sha256"], "pinned_sha256": pinned.get(uri.rsplit("/", 1)[-1], ""),
             "dataset": scenario.source.dataset, "rows_landed": rows, "files_landed": files} for uri, a in seen.items()]


def _quarantine(grouped: dict) -> dict:
    summary = _last(grouped, "ingest_summary")
    if summary is None:
        return {"rows_in": None, "rows_bronze": None, "rows": None, "reasons": {}, "file_errors": []}
    counts = summary["counts"]
    return {"rows_in": counts.get("rows_in"), "rows_bronze": counts.get("rows_bronze"),
            "rows": counts.get("rows_quarantined"), "reasons": summary["details"].get("reasons", {}),
            "file_errors": summary["details"].get("file_errors", [])}


def _personal_data(scenario: Scenario, grouped: dict) -> dict:
    """Declared personal-data columns, and whether every ingest batch of this run applied the protection."""
    batches = [e for e in grouped.get("ingest", []) if e["status"] == "success"]
    return {"columns": [{"column": c, "protection": how, "how": PROTECTION[how],
                         "applied_batches": sum(e["details"].get("protected", {}).get(c) == how for e in batches),
                         "batches": len(batches)}
                        for c, how in scenario.schema_.personal_columns.items()]}


def _gates(grouped: dict) -> list[dict]:
    gates = []
    for task_id in ("bronze_gate", "features_gate"):
        entry = _last(grouped, task_id)
        if entry and "suite" in entry["details"]:
            gates.append({"task": task_id, "suite": entry["details"]["suite"], "success": entry["details"]["success"],
                          "rows": entry["counts"]["rows"], "expectations": entry["counts"]["expectations"],
                          "failed": entry["counts"]["failed"], "checks": entry["details"]["checks"]})
    return gates


def _dbt(grouped: dict) -> dict | None:
    entry = _last(grouped, "transform")
    if entry is None or "models" not in entry["details"]:
        return None
    keep = ("name", "status", "seconds", "message")
    return {"models": [{k: m.get(k) for k in keep} for m in entry["details"]["models"]],
            "tests": [{**{k: t.get(k) for k in keep}, "failures": t.get("failures")} for t in entry["details"]["tests"]]}


def model_of(entries: list[dict]) -> dict | None:
    """The model this run trained and registered, from its ``train`` entry (None if it did not)."""
    entry = _last(_by_task(entries), "train")
    if entry is None or entry["status"] != "success":
        return None
    d = entry["details"]
    run = next(a["uri"] for a in entry["outputs"] if a["kind"] == "mlflow_run")
    return {"registered_model": d["registered_model"], "version": str(entry["counts"]["version"]), "alias": d["alias"],
            "reason": d["reason"], "champion_version": d["champion_version"], "mlflow_run_id": run.removeprefix("runs:/"),
            "metrics": d["metrics"], "metrics_by_series": d.get("metrics_by_series", {}),
            "train_rows": d["train_rows"], "fit_seconds": d["fit_seconds"]}


def _compression(grouped: dict) -> dict | None:
    entry = _last(grouped, "compress")
    if entry is None or entry["status"] != "success":
        return None
    d = entry["details"]
    return {"chosen": d["chosen"], "parity_max_abs": d["parity_max_abs"], "bundle_bytes": entry["counts"]["bundle_bytes"],
            "variants": [{k: v for k, v in row.items() if k != "path"} for row in d["variants"]],
            "files": [{"uri": a["uri"], "sha256": a["sha256"]} for a in entry["outputs"]]}


def _is_rollout_task(task_id: str, stages: list[str]) -> bool:
    return task_id in ("promote_champion", "rollback") or any(task_id.startswith(f"{s}_") for s in stages)


def _rollout_event(entry: dict) -> str:
    """One line of the rollout timeline."""
    task, d = entry["task_id"], entry["details"]
    if task.endswith("_targets"):
        return f"nodes {', '.join(d.get('nodes', []))}" + (" (approved)" if d.get("approval") else "")
    if task.endswith("_deploy"):
        return f"{d.get('node')} -> version {d.get('version')}"
    if task.endswith("_gate"):
        verdict = d.get("verdict") or {}
        return "; ".join(verdict.get("reasons") or ["passed" if verdict.get("passed") else ""])
    if task == "promote_champion":
        return f"champion {d.get('previous_champion') or 'none'} -> {d.get('champion')}"
    return d.get("reason", "")


def _rollout(entries: list[dict], grouped: dict, stages: list[str]) -> dict | None:
    plan = _last(grouped, "rollout_plan")
    if plan is None:
        return None
    timeline = sorted((e for e in entries if _is_rollout_task(e["task_id"], stages)), key=lambda e: e["ended_at"])
    events = [{"at": e["ended_at"], "task": e["task_id"], "status": e["status"], "what": _rollout_event(e),
               "error": e["details"].get("error")} for e in timeline]
    gates = []
    for e in timeline:
        if e["task_id"].endswith("_gate") and "verdict" in e["details"]:
            v = e["details"]["verdict"]
            gates.append({"stage": e["details"]["stage"], "passed": v["passed"], "reasons": v["reasons"],
                          "new": v["new"], "old": v["old"], "reference_mae": v["reference_mae"]})
    rollback = _last(grouped, "rollback")
    promote = _last(grouped, "promote_champion")
    return {"before": plan["details"].get("before", {}), "stages": plan["details"].get("stages", {}), "events": events,
            "gates": gates, "champion": promote["details"]["champion"] if promote and promote["status"] == "success" else None,
            "rollback": {"reason": rollback["details"].get("reason", ""), "nodes": rollback["details"].get("nodes", [])}
            if rollback and "nodes" in rollback["details"] else None}


def _approvals(grouped: dict) -> list[dict]:
    return [{"stage": e["details"]["stage"], "approval": json.dumps(e["details"]["approval"], default=str)}
            for entries in grouped.values() for e in entries if e["details"].get("approval") is not None]


def assemble(scenario: Scenario, entries: list[dict], run: dict, task_states: dict[str, str], audit: dict,
             model_card: str | None = None, graph: lineage.Lineage | None = None) -> dict:
    """The report's facts; ``run`` holds the Airflow run facts (id, type, who, conf, times)."""
    grouped = _by_task(entries)
    graph = graph if graph is not None else lineage.build(entries)
    plan = _last(grouped, "plan")
    facts = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": {**run, "scenario": scenario.name, "dag_id": scenario.dag_id,
                "first_day": plan["details"].get("first_day") if plan else None,
                "last_day": plan["details"].get("last_day") if plan else None},
        "scenario": {"name": scenario.name, "description": scenario.description.strip(),
                     "risk_level": scenario.governance.risk_level, "owners": scenario.governance.owners,
                     "retention_days": dict(scenario.governance.retention_days),
                     "human_approval_final_stage": scenario.governance.human_approval_final_stage,
                     "final_stage": scenario.rollout.stages[-1].name},
        "outcome": _outcome(entries, task_states),
        "sources": _sources(scenario, grouped),
        "layers": [{"name": n, "rows": r} for n, r in layer_rows(entries)],
        "quarantine": _quarantine(grouped),
        "personal_data": _personal_data(scenario, grouped),
        "quality_gates": _gates(grouped),
        "dbt": _dbt(grouped),
        "model": model_of(entries),
        "compression": _compression(grouped),
        "rollout": _rollout(entries, grouped, [s.name for s in scenario.rollout.stages]),
        "approvals": _approvals(grouped),
        "lineage": graph.as_dict(),
        "model_card": model_card,
        "audit": audit,
    }
    facts["controls"] = controls.evaluate(facts)
    facts["controls_summary"] = dict(Counter(c["status"] for c in facts["controls"]))
    validate(facts)
    return facts


def validate(report: dict) -> None:
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(report), key=lambda e: list(e.path))
    if errors:
        raise ReportSchemaError("; ".join(f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors[:5]))


def render_html(report: dict, lineage_svg: str, forecast_png_b64: str | None = None) -> str:
    """One self-contained page (pictures inline), readable offline and from an MLflow artifact."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v, digits=1: "" if v is None else (f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}")
    return env.get_template("report.html.j2").render(r=report, lineage_svg=lineage_svg, forecast_png=forecast_png_b64)
