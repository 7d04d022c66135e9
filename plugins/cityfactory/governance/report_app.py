"""The compliance reports, served inside Airflow's UI: a FastAPI app that an Airflow 3 plugin mounts
on the api-server (``plugins/compliance_report_plugin.py``), shown as a tab of every DAG run and
task instance. Each request passes Airflow's own auth: the caller must be allowed to read the
DAG's runs (the UI's session cookie or an API token)."""

from __future__ import annotations

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse

from cityfactory.config.scenarios import Scenario, load_scenarios
from cityfactory.governance.ledger import RunLedger
from cityfactory.settings import get_settings
from cityfactory.storage.lake import join_key, open_lake

URL_PREFIX = "/cityfactory"


def _scenario(dag_id: str) -> Scenario:
    for scenario in load_scenarios(get_settings().scenarios_dir):
        if scenario.dag_id == dag_id:
            return scenario
    raise HTTPException(404, f"{dag_id} is not a scenario DAG: it has no compliance reports")


def report_html(dag_id: str, run_id: str) -> str:
    """The run's report page from the lake; 404 while the run has none yet."""
    scenario = _scenario(dag_id)
    ledger = RunLedger(open_lake(), scenario.name, run_id)
    key = join_key(ledger.prefix, "report.html")
    if not ledger.lake.exists(key):
        raise HTTPException(404, f"no compliance report for {run_id} yet: the governance task writes it when the run ends")
    return ledger.lake.get_bytes(key).decode()


def create_app() -> FastAPI:
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
    )
    from airflow.api_fastapi.core_api.security import requires_access_dag

    app = FastAPI(title="City AI Factory compliance reports")

    @app.get("/reports/{dag_id}/{run_id}", response_class=HTMLResponse,
             dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN))])
    def compliance_report(dag_id: str, run_id: str) -> HTMLResponse:
        return HTMLResponse(report_html(dag_id, run_id))

    return app
