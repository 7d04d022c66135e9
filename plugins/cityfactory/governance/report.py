"""The compliance report of one DAG run: facts from its ledger, as JSON (checked against
``report.schema.json``) and as one self-contained HTML page.

Assembly is pure: the governance task gathers the Airflow, MLflow and audit facts and passes them
in, so a report can be rebuilt and tested from a ledger alone.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from cityfactory.config.scenarios import Scenario
from cityfactory.governance import controls, lineage
from cityfactory.governance.ledger import (
    ROLLOUT_KINDS,
    Kind,
    last_of,
    latest_tries,
    of_kind,
)
from cityfactory.governance.summary import layer_rows, task_summary
from cityfactory.numbers import decimals

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


def _outcome(entries: list[dict], task_states: dict[str, str]) -> dict:
    """Where and why the run stopped: the first task instance whose latest try failed (a retry that
    succeeded does not count), or a task Airflow saw fail before it could record anything."""
    failed = [e for e in entries if e["status"] == "failed"
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


def _sources(scenario: Scenario, entries: list[dict]) -> list[dict]:
    pinned = {f.name: f.sha256 for f in scenario.source.files}
    landed = of_kind(entries, Kind.LANDED)
    seen = {a["uri"]: a for e in landed for a in e["inputs"] if a["kind"] == "source"}
    rows = sum(e["counts"].get("rows", 0) for e in landed)
    files = sum(e["counts"].get("files", 0) for e in landed)
    return [{"uri": uri, "sha256": a["sha256"], "pinned_sha256": pinned.get(uri.rsplit("/", 1)[-1], ""),
             "dataset": scenario.source.dataset, "rows_landed": rows, "files_landed": files} for uri, a in seen.items()]


def _replay_shift(entries: list[dict]) -> int | None:
    """Days the replayed dataset was moved forward to look live (None: nothing was replayed)."""
    landed = of_kind(entries, Kind.LANDED)
    return landed[0]["details"].get("time_shift_days") if landed else None


def _quarantine(entries: list[dict]) -> dict:
    summary = last_of(entries, Kind.INGESTED)
    if summary is None:
        return {"rows_in": None, "rows_bronze": None, "rows": None, "blank": None, "reasons": {}, "file_errors": []}
    counts = summary["counts"]
    return {"rows_in": counts.get("rows_in"), "rows_bronze": counts.get("rows_bronze"),
            "rows": counts.get("rows_quarantined"), "blank": counts.get("rows_blank", 0),
            "reasons": summary["details"].get("reasons", {}),
            "file_errors": summary["details"].get("file_errors", [])}


def _personal_data(scenario: Scenario, entries: list[dict]) -> dict:
    """Declared personal-data columns, and whether every ingest batch of this run applied the protection."""
    batches = [e for e in of_kind(entries, Kind.BATCH_INGESTED) if e["status"] == "success"]
    return {"columns": [{"column": c, "protection": how, "how": PROTECTION[how],
                         "applied_batches": sum(e["details"].get("protected", {}).get(c) == how for e in batches),
                         "batches": len(batches)}
                        for c, how in scenario.schema_.personal_columns.items()]}


def _gates(entries: list[dict]) -> list[dict]:
    return [{"task": e["task_id"], "layer": e["details"]["layer"], "suite": e["details"]["suite"],
             "success": e["details"]["success"], "rows": e["counts"]["rows"], "expectations": e["counts"]["expectations"],
             "failed": e["counts"]["failed"], "quarantined": e["counts"].get("quarantined", 0),
             "checks": e["details"]["checks"]}
            for e in of_kind(entries, Kind.QUALITY_GATE) if "suite" in e["details"]]


def _dbt(entries: list[dict]) -> dict | None:
    entry = last_of(entries, Kind.DBT_BUILD)
    if entry is None or "models" not in entry["details"]:
        return None
    keep = ("name", "status", "seconds", "message")
    return {"models": [{k: m.get(k) for k in keep} for m in entry["details"]["models"]],
            "tests": [{**{k: t.get(k) for k in keep}, "failures": t.get("failures")} for t in entry["details"]["tests"]]}


def model_of(entries: list[dict]) -> dict | None:
    """The model this run trained and registered (None if it did not)."""
    entry = last_of(latest_tries(entries), Kind.MODEL_TRAINED)
    if entry is None or entry["status"] != "success":
        return None
    d = entry["details"]
    run = next(a["uri"] for a in entry["outputs"] if a["kind"] == "mlflow_run")
    return {"registered_model": d["registered_model"], "version": str(entry["counts"]["version"]), "alias": d["alias"],
            "reason": d["reason"], "champion_version": d["champion_version"], "mlflow_run_id": run.removeprefix("runs:/"),
            "metrics": d["metrics"], "metrics_by_series": d.get("metrics_by_series", {}),
            "metric_columns": d["metric_columns"], "gate_metric": d["gate_metric"],
            "metric_decimals": {c["name"]: decimals(m.get(c["name"]) for m in d["metrics"].values())
                                for c in d["metric_columns"]},
            "reference_baseline": d["reference_baseline"], "headline_figure": d["headline_figure"],
            "train_rows": d["train_rows"], "fit_seconds": d["fit_seconds"], "family": d.get("family"),
            "search": _search(entries, d.get("search")), "excluded_days": d.get("excluded_days", []),
            "fingerprint": d.get("fingerprint")}


def _search(entries: list[dict], totals: dict | None) -> dict | None:
    """The model search: its budget and batches (one mapped task each), from the ledger."""
    plan = last_of(latest_tries(entries), Kind.SEARCH_PLANNED)
    if plan is None or totals is None:
        return None
    batches = [{"family": e["details"]["family"], "batch": e["details"]["batch"], "seed": e["details"]["seed"],
                "trials": e["counts"]["trials"], "pruned": e["counts"]["pruned"], "best": e["details"]["best"],
                "seconds": e["details"]["seconds"]}
               for e in sorted(of_kind(latest_tries(entries), Kind.SEARCH_TRIALS),
                               key=lambda e: (e["details"]["family"], e["details"]["batch"]))]
    return {**totals, "budget": plan["details"]["trials"], "seed": plan["details"]["seed"],
            "timeout_minutes": plan["details"]["timeout_minutes"], "batches": batches}


def _compression(entries: list[dict]) -> dict | None:
    entry = last_of(entries, Kind.BUNDLE_SIGNED)
    if entry is None or entry["status"] != "success":
        return None
    d = entry["details"]
    return {"chosen": d["chosen"], "parity_max_abs": d["parity_max_abs"], "bundle_bytes": entry["counts"]["bundle_bytes"],
            "quality_columns": d["quality_columns"], "choice": d.get("choice"),
            "calibration": (d.get("facts") or {}).get("calibration"),
            "variants": [{k: v for k, v in row.items() if k != "path"} for row in d["variants"]],
            "files": [{"uri": a["uri"], "sha256": a["sha256"]} for a in entry["outputs"]]}


def _rollout_event(entry: dict) -> str:
    """One line of the rollout timeline."""
    kind, d = entry["kind"], entry["details"]
    if kind == Kind.STAGE_STARTED:
        return f"nodes {', '.join(d.get('nodes', []))}" + (" (approved)" if d.get("approval") else "")
    if kind == Kind.DEPLOYED:
        return f"{d.get('node')} -> version {d.get('version')}"
    if kind == Kind.ROLLOUT_GATE:
        verdict = d.get("verdict") or {}
        return "; ".join(verdict.get("reasons") or ["passed" if verdict.get("passed") else ""])
    if kind == Kind.PROMOTED:
        return f"champion {d.get('previous_champion') or 'none'} -> {d.get('champion')}"
    return d.get("reason", "")


def _rollout(entries: list[dict]) -> dict | None:
    plan = last_of(entries, Kind.ROLLOUT_PLANNED)
    if plan is None:
        return None
    timeline = sorted(of_kind(entries, *(ROLLOUT_KINDS - {Kind.ROLLOUT_PLANNED})), key=lambda e: e["ended_at"])
    events = [{"at": e["ended_at"], "task": e["task_id"], "status": e["status"], "what": _rollout_event(e),
               "error": e["details"].get("error")} for e in timeline]
    gates = [{"stage": e["details"]["stage"], "passed": v["passed"], "reasons": v["reasons"], "new": v["new"],
              "old": v["old"], "reference_error": v["reference_error"], "error_label": v["error_label"]}
             for e in timeline if e["kind"] == Kind.ROLLOUT_GATE and (v := e["details"].get("verdict"))]
    rollback, promote = last_of(entries, Kind.ROLLED_BACK), last_of(entries, Kind.PROMOTED)
    champion = promote["details"]["champion"] if promote and promote["status"] == "success" else None
    if rollback and "nodes" in rollback["details"]:
        champion = None  # the rollback put the previous champion back
    return {"before": plan["details"].get("before", {}), "stages": plan["details"].get("stages", []), "events": events,
            "gates": gates, "champion": champion,
            "rollback": {"reason": rollback["details"].get("reason", ""), "nodes": rollback["details"].get("nodes", []),
                         "champion": rollback["details"].get("champion")}
            if rollback and "nodes" in rollback["details"] else None}


def _monitoring(entries: list[dict]) -> dict | None:
    """What the monitor saw (live vs offline per version and series, drift) and the retraining
    decision with its reasons."""
    monitored, decided = last_of(entries, Kind.MONITORED), last_of(entries, Kind.RETRAIN_DECIDED)
    if monitored is None and decided is None:
        return None
    m = monitored["details"] if monitored else {}
    evaluations = [{"day": e["day"], "served_rows": e["served_rows"], "scored_rows": e["scored_rows"],
                    "awaiting_actuals": e["awaiting_actuals"], "versions": e["versions"]} for e in m.get("evaluations", [])]
    return {
        "champion": m.get("champion"), "metric": m.get("metric"), "reference_baseline": m.get("reference_baseline"),
        "collected_rows": monitored["counts"].get("predictions_collected", 0) if monitored else 0,
        "unreachable": m.get("unreachable", {}), "refused": m.get("refused", {}), "evaluations": evaluations,
        "live_ratio": m.get("live_ratio"), "live_days": m.get("live_days", 0), "live_usual": m.get("live_usual"),
        "live_error_margin": m.get("live_error_margin"), "live_error_days": m.get("live_error_days"),
        "drift": m.get("drift", []), "drift_rows": m.get("drift_rows", 0),
        "picture": m.get("picture"), "error": m.get("error"),
        "decision": {"retrain": decided["details"]["retrain"], "summary": decided["details"]["summary"],
                     "reasons": decided["details"]["reasons"], "choice": decided["details"]["choice"]}
        if decided and "summary" in decided["details"] else None,
    }


def _approvals(entries: list[dict]) -> list[dict]:
    return [{"stage": e["details"]["stage"], "approval": json.dumps(e["details"]["approval"], default=str)}
            for e in entries if e["details"].get("approval") is not None]


def assemble(scenario: Scenario, entries: list[dict], run: dict, task_states: dict[str, str], audit: dict,
             model_card: str | None = None, graph: lineage.Lineage | None = None) -> dict:
    """The report's facts; ``run`` holds the Airflow run facts (id, type, who, conf, times). Every
    fact comes from the latest try of each task instance."""
    entries = latest_tries(entries)
    graph = graph if graph is not None else lineage.build(entries)
    plan = last_of(entries, Kind.RUN_PLANNED)
    facts = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": {**run, "scenario": scenario.name, "dag_id": scenario.dag_id,
                "first_day": plan["details"].get("first_day") if plan else None,
                "last_day": plan["details"].get("last_day") if plan else None,
                "replay_shift_days": _replay_shift(entries)},
        "scenario": {"name": scenario.name, "description": scenario.description.strip(),
                     "risk_level": scenario.governance.risk_level, "owners": scenario.governance.owners,
                     "retention_days": dict(scenario.governance.retention_days),
                     "human_approval_final_stage": scenario.governance.human_approval_final_stage,
                     "final_stage": scenario.rollout.stages[-1].name,
                     "data_licence": scenario.source.licence, "data_citation": (scenario.source.citation or "").strip()},
        "outcome": _outcome(entries, task_states),
        "sources": _sources(scenario, entries),
        "layers": [asdict(layer) for layer in layer_rows(entries)],
        "quarantine": _quarantine(entries),
        "personal_data": _personal_data(scenario, entries),
        "quality_gates": _gates(entries),
        "dbt": _dbt(entries),
        "monitoring": _monitoring(entries),
        "model": model_of(entries),
        "compression": _compression(entries),
        "rollout": _rollout(entries),
        "approvals": _approvals(entries),
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


def render_html(report: dict, lineage_svg: str, model_png_b64: str | None = None,
                monitoring_png_b64: str | None = None, search_png_b64: str | None = None) -> str:
    """One self-contained page (pictures inline), readable offline and from an MLflow artifact."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v, digits=1: "" if v is None else (f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}")
    env.filters["markdown"] = markdown_html
    return env.get_template("report.html.j2").render(r=report, lineage_svg=lineage_svg, model_png=model_png_b64,
                                                   monitoring_png=monitoring_png_b64, search_png=search_png_b64)


def markdown_html(text: str):
    """The model card's markdown as HTML (tables included); raw HTML in it is escaped, not passed on."""
    import markupsafe
    from markdown_it import MarkdownIt

    return markupsafe.Markup(MarkdownIt("commonmark", {"html": False}).enable("table").render(text))
