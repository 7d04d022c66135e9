"""The controls checklist of the compliance report, each mapped to the regulation items it evidences.

Every control looks at the assembled report facts and answers passed / failed / not_applicable
with its evidence. The mappings name the EU AI Act's technical documentation (Annex IV) and
record-keeping (Article 12) and post-market monitoring (Article 72) items and the NIST AI RMF 1.0 functions (Govern, Map, Measure,
Manage) a control gives evidence for; they say where to look, not that the law is satisfied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

PASSED, FAILED, NOT_APPLICABLE = "passed", "failed", "not_applicable"


@dataclass(frozen=True)
class Control:
    id: str
    title: str
    eu_ai_act: tuple[str, ...]
    nist_ai_rmf: tuple[str, ...]
    check: Callable[[dict], tuple[str, str]]


def _task(facts: dict, task_id: str) -> str | None:
    return facts["outcome"]["task_states"].get(task_id)


def _not_run(facts: dict, task_id: str) -> tuple[str, str]:
    state = _task(facts, task_id) or "not run"
    stopped = facts["outcome"].get("stopped_at")
    return NOT_APPLICABLE, f"{task_id} {state}" + (f" (the run stopped at {stopped})" if stopped else "")


def _sources(f: dict) -> tuple[str, str]:
    sources = f["sources"]
    if not sources:
        return _not_run(f, "land")
    pinned = [s for s in sources if s["sha256"] and s["sha256"] == s.get("pinned_sha256")]
    status = PASSED if len(pinned) == len(sources) else FAILED
    return status, "; ".join(f"{s['uri'].rsplit('/', 1)[-1]} sha256 {s['sha256'][:16]}… (pinned {s.get('pinned_sha256', '')[:16]}…)"
                             for s in sources)


def _raw_kept(f: dict) -> tuple[str, str]:
    layers = {n["kind"]: n for n in f["lineage"]["nodes"]}
    if "landing" not in layers:
        return _not_run(f, "ingest")
    raw = layers.get("raw")
    if raw is None or raw["objects"] < layers["landing"]["objects"]:
        return FAILED, f"{layers['landing']['objects']} landed files, {raw['objects'] if raw else 0} kept in raw/"
    return PASSED, f"{raw['objects']} raw files kept unchanged, digest {raw['sha256'][:16]}…"


def _quarantine(f: dict) -> tuple[str, str]:
    q = f["quarantine"]
    if q["rows_in"] is None:
        return _not_run(f, "ingest_summary")
    accounted = q["rows_in"] == q["rows_bronze"] + q["rows"]
    reasons = ", ".join(f"{k}: {v}" for k, v in list(q["reasons"].items())[:5]) or "none"
    return (PASSED if accounted else FAILED,
            f"{q['rows_in']:,} rows in = {q['rows_bronze']:,} bronze + {q['rows']:,} quarantined; reasons: {reasons}")


def _personal(f: dict) -> tuple[str, str]:
    columns = f["personal_data"]["columns"]
    if not columns:
        return NOT_APPLICABLE, "the scenario's schema declares no personal-data column"
    if not columns[0]["batches"]:
        return _not_run(f, "ingest")
    missing = [c["column"] for c in columns if c["applied_batches"] < c["batches"]]
    evidence = "; ".join(f"{c['column']}: {c['how']} ({c['applied_batches']}/{c['batches']} batches)" for c in columns)
    return (FAILED if missing else PASSED), evidence


def _gate(layer: str, task_id: str) -> Callable[[dict], tuple[str, str]]:
    def check(f: dict) -> tuple[str, str]:
        gate = next((g for g in f["quality_gates"] if g["layer"] == layer), None)
        if gate is None:
            return _not_run(f, task_id)
        met = gate["expectations"] - gate["failed"]
        return (PASSED if gate["success"] else FAILED,
                f"suite {gate['suite']}: {met}/{gate['expectations']} expectations met on {gate['rows']:,} rows")
    return check


def _dbt(f: dict) -> tuple[str, str]:
    dbt = f["dbt"]
    if dbt is None:
        return _not_run(f, "transform")
    bad = [t["name"] for t in dbt["tests"] + dbt["models"] if t["status"] not in ("pass", "success")]
    return (FAILED if bad else PASSED,
            f"{len(dbt['models'])} models, {len(dbt['tests'])} tests" + (f"; failing: {', '.join(bad)}" if bad else ", all pass"))


def _evaluated(f: dict) -> tuple[str, str]:
    model = f["model"]
    if model is None:
        return _not_run(f, "train")
    names = ", ".join(n for n in model["metrics"] if n != "model")
    return PASSED, f"version {model['version']} scored on the same test rows as {names}; gate: {model['reason']}"


def _registered(f: dict) -> tuple[str, str]:
    model = f["model"]
    if model is None:
        return _not_run(f, "train")
    return PASSED, (f"{model['registered_model']} version {model['version']} from MLflow run {model['mlflow_run_id']}, "
                    f"alias {model['alias'] or 'none'}, code {f['run']['code_version']}")


def _bundle(f: dict) -> tuple[str, str]:
    c = f["compression"]
    if c is None:
        return _not_run(f, "compress")
    signed = any(a["uri"].endswith(".sig") for a in c["files"])
    return (PASSED if signed else FAILED,
            f"variant {c['chosen']} signed (Ed25519) into {len(c['files'])} files; onnxruntime parity {c['parity_max_abs']:.4f}")


def _rollout(f: dict) -> tuple[str, str]:
    r = f["rollout"]
    if r is None:
        return _not_run(f, "rollout_plan")
    gates = ", ".join(f"{g['stage']} {'passed' if g['passed'] else 'failed'}" for g in r["gates"]) or "no gate ran"
    if r["rollback"] is not None:
        restored = all(n["restored"] for n in r["rollback"]["nodes"])
        return (PASSED if restored else FAILED,
                f"gates: {gates}; rolled back, {'every' if restored else 'NOT every'} touched node restored")
    ok = r["champion"] is not None and all(g["passed"] for g in r["gates"])
    return (PASSED if ok else FAILED, f"gates: {gates}; champion {r['champion'] or 'unchanged'}")


def _oversight(f: dict) -> tuple[str, str]:
    if not f["scenario"]["human_approval_final_stage"]:
        return NOT_APPLICABLE, f"risk level {f['scenario']['risk_level']}: the policy asks no human approval before the last stage"
    if f["approvals"]:
        return PASSED, "; ".join(f"{a['stage']}: {a['approval']}" for a in f["approvals"])
    final_ran = f["rollout"] is not None and any(g["stage"] == f["scenario"]["final_stage"] for g in f["rollout"]["gates"])
    return (FAILED, "the final stage ran without a recorded approval") if final_ran else _not_run(f, "rollout_plan")


def _records(f: dict) -> tuple[str, str]:
    missing = [t for t, state in f["outcome"]["task_states"].items()
               if state in ("success", "failed") and t not in f["outcome"]["ledger_tasks"] and t not in ("governance", "watcher")
               and not t.startswith("approve_")]
    audit = f["audit"]
    evidence = (f"{len(f['outcome']['ledger_tasks'])} tasks in the run ledger; audit events "
                f"{audit['first_seq']}..{audit['last_seq']} appended, chain verified over {audit['verified_entries']} entries")
    if missing or not audit["verified"]:
        return FAILED, evidence + (f"; no ledger entry for {', '.join(missing)}" if missing else "") + \
            ("" if audit["verified"] else f"; audit: {audit['error']}")
    return PASSED, evidence


def _lineage(f: dict) -> tuple[str, str]:
    nodes = f["lineage"]["nodes"]
    if not nodes:
        return _not_run(f, "land")
    return PASSED, f"{len(nodes)} nodes, {len(f['lineage']['edges'])} edges, every artifact with its sha256 where it has one"


def _retention(f: dict) -> tuple[str, str]:
    days = f["scenario"]["retention_days"]
    return PASSED, "retention (days): " + ", ".join(f"{k} {v}" for k, v in days.items()) + "; enforced daily by the maintenance DAG"


def _card(f: dict) -> tuple[str, str]:
    if f["model"] is None:
        return _not_run(f, "train")
    return (PASSED, f"model_card.md of run {f['model']['mlflow_run_id']}") if f["model_card"] else (FAILED, "no model card")


def _monitored(f: dict) -> tuple[str, str]:
    monitoring = f["monitoring"]
    if monitoring is None or monitoring["decision"] is None:
        return _not_run(f, "decide")
    scored = sum(e["scored_rows"] for e in monitoring["evaluations"])
    drifting = sum(d["drifted"] for d in monitoring["drift"])
    return PASSED, (f"{scored} served rows scored against actuals, {drifting} of {len(monitoring['drift'])} features "
                    f"drifting; decision: {monitoring['decision']['summary']}")


CONTROLS: tuple[Control, ...] = (
    Control("DATA-1", "Sources pinned by checksum", ("Annex IV 2(d)", "Art. 12(2)"), ("MAP",), _sources),
    Control("DATA-2", "Raw data kept unchanged", ("Annex IV 2(d)", "Art. 12(1)"), ("GOVERN", "MANAGE"), _raw_kept),
    Control("DATA-3", "Every rejected row quarantined with its reason", ("Annex IV 2(d)",), ("MEASURE",), _quarantine),
    Control("DATA-4", "Personal data protected at rest", ("Annex IV 2(d)",), ("GOVERN", "MANAGE"), _personal),
    Control("QUAL-1", "Bronze data quality gate", ("Annex IV 2(d)", "Annex IV 2(g)"), ("MEASURE",), _gate("bronze", "bronze_gate")),
    Control("QUAL-2", "Transformation tests (dbt)", ("Annex IV 2(d)", "Annex IV 2(g)"), ("MEASURE",), _dbt),
    Control("QUAL-3", "Feature quality gate", ("Annex IV 2(d)", "Annex IV 2(g)"), ("MEASURE",), _gate("features", "features_gate")),
    Control("MODEL-1", "Evaluated against baselines and the champion", ("Annex IV 2(g)", "Annex IV 3", "Annex IV 4"),
            ("MEASURE",), _evaluated),
    Control("MODEL-2", "Registered with provenance (run, data, code)", ("Annex IV 1", "Annex IV 2(b)", "Annex IV 6"),
            ("GOVERN", "MAP"), _registered),
    Control("MODEL-3", "Model card", ("Annex IV 1", "Annex IV 3"), ("MAP", "GOVERN"), _card),
    Control("MONITOR-1", "Champion watched in the field; retraining decided with its reason",
            ("Art. 72", "Annex IV 9"), ("MEASURE", "MANAGE"), _monitored),
    Control("EDGE-1", "Edge bundle compressed within budget and signed", ("Annex IV 2(b)", "Annex IV 2(g)"),
            ("MANAGE", "MEASURE"), _bundle),
    Control("EDGE-2", "Staged rollout with health gates and rollback", ("Annex IV 2(e)", "Annex IV 3", "Art. 12(2)"),
            ("MANAGE",), _rollout),
    Control("OVERSIGHT-1", "Human approval before the final stage (when the policy asks)", ("Annex IV 2(e)",),
            ("GOVERN", "MANAGE"), _oversight),
    Control("RECORD-1", "Run ledger complete and audit trail verified", ("Art. 12(1)", "Art. 12(2)", "Annex IV 6"),
            ("GOVERN",), _records),
    Control("RECORD-2", "Lineage from source to deployment", ("Annex IV 2(d)", "Art. 12(2)"), ("MAP", "GOVERN"), _lineage),
    Control("RECORD-3", "Retention policy", ("Art. 12(1)",), ("GOVERN",), _retention),
)


def evaluate(facts: dict) -> list[dict]:
    rows = []
    for control in CONTROLS:
        status, evidence = control.check(facts)
        rows.append({"id": control.id, "title": control.title, "status": status, "evidence": evidence,
                     "eu_ai_act": list(control.eu_ai_act), "nist_ai_rmf": list(control.nist_ai_rmf)})
    return rows
