"""The compliance reports, served inside Airflow's UI: a FastAPI app that an Airflow 3 plugin mounts
on the api-server (``plugins/compliance_report_plugin.py``), shown as a tab of every DAG run and
task instance. Each request passes Airflow's own auth: the caller must be allowed to read the
DAG's runs (the UI's session cookie or an API token).

A report comes from the lake, which others can write to; it is shown on Airflow's origin, where
the admin's session lives. So it is served only if its sha256 is the one the audit trail recorded
for the run (the trail verified against its signed checkpoints first), and always under a strict
Content-Security-Policy: a sandbox with no script, nothing loaded from elsewhere, framed only by
Airflow's own pages. An altered report gets a page that says so, never its content.
"""

from __future__ import annotations

import html

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse

from cityfactory.config.scenarios import Scenario, load_scenarios
from cityfactory.governance import audit
from cityfactory.governance.ledger import RunLedger
from cityfactory.settings import get_settings
from cityfactory.storage.lake import join_key, open_lake, sha256_bytes

URL_PREFIX = "/cityfactory"
HEADERS = {
    "Content-Security-Policy": "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                               "frame-ancestors 'self'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _scenario(dag_id: str) -> Scenario:
    for scenario in load_scenarios(get_settings().scenarios_dir):
        if scenario.dag_id == dag_id:
            return scenario
    raise HTTPException(404, f"{dag_id} is not a scenario DAG: it has no compliance reports")


class ReportAltered(Exception):
    """The report in the lake is not the one the audit trail recorded; the message says how."""


def recorded_sha256(lake, scenario: str, run_id: str) -> str | None:
    """The sha256 of the run's latest report as the verified audit trail records it."""
    from cityfactory.security.signing import audit_public_key_pem

    try:
        trail = audit.verify(lake, audit_public_key_pem()).verified
    except (audit.AuditError, FileNotFoundError) as exc:
        raise ReportAltered(f"the audit trail does not verify ({exc}), so no report can be trusted") from None
    found = [e["details"]["html_sha256"] for e in trail if e.get("event") == "run_report"
             and e["details"].get("scenario") == scenario and e["details"].get("run_id") == run_id]
    return found[-1] if found else None


def report_html(dag_id: str, run_id: str) -> str:
    """The run's report page from the lake, if the audit trail recorded exactly it; 404 while the
    run has none yet; ``ReportAltered`` otherwise."""
    scenario = _scenario(dag_id)
    ledger = RunLedger(open_lake(), scenario.name, run_id)
    key = join_key(ledger.prefix, "report.html")
    if not ledger.lake.exists(key):
        raise HTTPException(404, f"no compliance report for {run_id} yet: the governance task writes it when the run ends")
    data = ledger.lake.get_bytes(key)
    expected = recorded_sha256(ledger.lake, scenario.name, run_id)
    if expected is None:
        raise ReportAltered("the audit trail records no report for this run")
    if sha256_bytes(data) != expected:
        raise ReportAltered(f"its sha256 is {sha256_bytes(data)[:16]}…, the audit trail recorded {expected[:16]}…")
    return data.decode()


def altered_page(run_id: str, reason: str) -> str:
    return (f"<!doctype html><meta charset=utf-8><title>Report altered</title><h1>Report altered</h1>"
            f"<p>The compliance report of run <code>{html.escape(run_id)}</code> in the lake is not the one its run "
            f"wrote: {html.escape(reason)}. It is not shown. Ask the platform team to check the lake and the audit "
            f"trail (<code>python -m cityfactory.cli verify-audit</code>).</p>")


def create_app() -> FastAPI:
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
    )
    from airflow.api_fastapi.core_api.security import requires_access_dag

    app = FastAPI(title="City AI Factory compliance reports")

    @app.get("/reports/{dag_id}/{run_id}", response_class=HTMLResponse,
             dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN))])
    def compliance_report(dag_id: str, run_id: str) -> HTMLResponse:
        try:
            return HTMLResponse(report_html(dag_id, run_id), headers=HEADERS)
        except ReportAltered as exc:
            return HTMLResponse(altered_page(run_id, str(exc)), status_code=409, headers=HEADERS)

    return app
