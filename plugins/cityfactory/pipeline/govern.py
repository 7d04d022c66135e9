"""The governance task: runs at the end of every DAG run, whatever happened upstream.

It turns the run's ledger into audit events (sealed), a lineage graph and picture, and the
compliance report (JSON + HTML) under ``governance/<scenario>/<run_id>/``; when the run trained a
model, the report is attached to that MLflow run too.
"""

from __future__ import annotations

import base64
import getpass
import json
import logging
import tempfile
from pathlib import Path

from cityfactory.governance import audit, lineage, report
from cityfactory.governance.events import ledger_events
from cityfactory.governance.ledger import Artifact, Kind
from cityfactory.pipeline.context import RunContext, fold_task_states
from cityfactory.security.keys import generated_keys
from cityfactory.security.signing import audit_public_key_pem
from cityfactory.settings import get_settings
from cityfactory.storage.lake import join_key
from cityfactory.training import registry

log = logging.getLogger(__name__)

def _triggered_by(user: str | None) -> str | None:
    """Airflow's ``dag.test`` (``make run``, the tests) names every run's user "dag_test"; such a
    run executes in the caller's own process, so the process's login names the person."""
    return f"{getpass.getuser()} (dag.test)" if user == "dag_test" else user


def airflow_run_facts() -> tuple[dict, dict[str, str | None]]:
    """What Airflow knows of the running DAG run: trigger, who, conf, and every task's state."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    dag_run, ti = context["dag_run"], context["ti"]
    task_ids = list(context["dag"].task_ids)
    states = ti.get_task_states(dag_id=dag_run.dag_id, run_ids=[dag_run.run_id]).get(dag_run.run_id, {})
    facts = {
        "run_id": dag_run.run_id, "run_type": str(getattr(dag_run.run_type, "value", dag_run.run_type)),
        "triggered_by": _triggered_by(getattr(dag_run, "triggering_user_name", None)), "conf": dict(dag_run.conf or {}),
        "logical_date": dag_run.logical_date.isoformat() if dag_run.logical_date else None,
        "started_at": dag_run.start_date.isoformat() if dag_run.start_date else None,
        "code_version": registry.code_version(),
    }
    return facts, fold_task_states({k: str(v) if v else None for k, v in states.items()}, task_ids)


def append_run_events(ctx: RunContext, entries: list[dict]) -> tuple[int | None, int | None]:
    """Audit events for this run not yet in the trail (and keys generated since); their seq range."""
    present = audit.entries(ctx.lake)
    done = {e["details"].get("source") for e in present if e["details"].get("run_id") == ctx.run_id}
    known_keys = {e["details"].get("key_id") for e in present if e["event"] == "key_generated"}
    pending = [(event, {"scenario": ctx.scenario.name, "run_id": ctx.run_id, **details})
               for event, details in ledger_events(entries) if details["source"] not in done]
    for key in generated_keys(get_settings().keys_dir):
        if key["key_id"] not in known_keys:
            pending.append(("key_generated", {"run_id": ctx.run_id, **key}))
            known_keys.add(key["key_id"])
    appended = audit.append_all(ctx.lake, pending)
    return (appended[0]["seq"], appended[-1]["seq"]) if appended else (None, None)


def _audit_state(ctx: RunContext, first: int | None, last: int | None) -> dict:
    audit.seal(ctx.lake)
    try:
        verified = audit.verify(ctx.lake, audit_public_key_pem(), full=False)  # from the witness: new entries only
        return {"first_seq": first, "last_seq": last, "verified": True, "verified_entries": verified.entries, "error": None}
    except audit.AuditError as exc:  # the report says so; the maintenance DAG and verify-audit fail on it
        log.error("audit trail does not verify: %s", exc)
        return {"first_seq": first, "last_seq": last, "verified": False, "verified_entries": 0, "error": str(exc)}


def _mlflow_extras(model: dict | None) -> tuple[str | None, str | None, str | None]:
    """The model card text, the task type's headline picture and the search's (base64) of the run's
    MLflow run; Nones if MLflow cannot give them (the report then shows the model card control failed)."""
    if model is None:
        return None, None, None
    import mlflow

    mlflow.set_tracking_uri(registry.tracking_uri())
    run = f"runs:/{model['mlflow_run_id']}"
    try:
        card = mlflow.artifacts.load_text(f"{run}/model_card.md")
        with tempfile.TemporaryDirectory() as tmp:
            pictures = [Path(mlflow.artifacts.download_artifacts(f"{run}/{path}", dst_path=tmp)).read_bytes()
                        for path in (model["headline_figure"], "plots/search.png")]
    except Exception as exc:  # noqa: BLE001 - MLflow down or artifacts gone: the report must still be written
        log.error("model card and plots of %s not available: %s", run, exc)
        return None, None, None
    return card, *(base64.b64encode(png).decode() for png in pictures)


def _monitoring_picture(ctx: RunContext, facts: dict) -> str | None:
    """The monitor's picture (base64), from beside the run's ledger."""
    key = join_key(ctx.ledger.prefix, "monitoring.png")
    if not facts.get("monitoring") or not ctx.lake.exists(key):
        return None
    return base64.b64encode(ctx.lake.get_bytes(key)).decode()


def govern(ctx: RunContext) -> dict:
    run_facts, task_states = airflow_run_facts()
    entries = ctx.ledger.entries()
    with ctx.entry(Kind.GOVERNED) as entry:
        first, last = append_run_events(ctx, entries)
        audit_state = _audit_state(ctx, first, last)
        model = report.model_of(entries)
        card, headline, search = _mlflow_extras(model)
        graph = lineage.build(entries)
        facts = report.assemble(ctx.scenario, entries, run_facts, task_states, audit_state, card, graph)
        picture = lineage.svg(graph)
        files = {
            "report.json": json.dumps(facts, indent=1, default=str).encode(),
            "report.html": report.render_html(facts, picture, headline, _monitoring_picture(ctx, facts), search).encode(),
            "lineage.svg": picture.encode(),
        }
        stored = {name: ctx.lake.put_bytes(join_key(ctx.ledger.prefix, name), data) for name, data in files.items()}
        entry.outputs = [Artifact.of(s, kind="report") for s in stored.values()]
        audit.append(ctx.lake, "run_report", {
            "scenario": ctx.scenario.name, "run_id": ctx.run_id, "source": "governance", "state": facts["outcome"]["state"],
            "stopped_at": facts["outcome"]["stopped_at"], "report_sha256": stored["report.json"].sha256,
            "html_sha256": stored["report.html"].sha256,
        })
        audit.seal(ctx.lake)
        if model is not None:
            try:
                _attach_to_mlflow(model["mlflow_run_id"], files)
            except Exception as exc:  # noqa: BLE001 - the report is in the lake either way; say where it is missing
                log.error("report not attached to MLflow run %s: %s", model["mlflow_run_id"], exc)
                entry.details["mlflow_error"] = str(exc)
        entry.counts = {"controls_failed": facts["controls_summary"].get("failed", 0), "lineage_nodes": len(graph.nodes)}
        entry.details.update(state=facts["outcome"]["state"], stopped_at=facts["outcome"]["stopped_at"],
                             report=stored["report.html"].uri)
    log.info("compliance report: %s (run %s%s)", stored["report.html"].uri, facts["outcome"]["state"],
             f", stopped at {facts['outcome']['stopped_at']}" if facts["outcome"]["stopped_at"] else "")
    return {"report": stored["report.html"].uri, "state": facts["outcome"]["state"], "controls": facts["controls_summary"]}


def _attach_to_mlflow(run_id: str, files: dict[str, bytes]) -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        mlflow.MlflowClient(registry.tracking_uri()).log_artifacts(run_id, tmp, artifact_path="governance")
