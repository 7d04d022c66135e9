"""The city at a glance, inside Airflow's UI (``plugins/city_overview_plugin.py``): every scenario
the caller may read, by department, with its last run, next run, champion, live error, drift,
retraining decision, rollout and links. Which scenarios is Airflow's auth manager's answer
(the DAGs the caller may read), so a department sees its own only.

One query per source: Airflow's metadata DB for runs and next runs, the lake for each scenario's
latest finished report, two registry calls for the champions.
"""

import json  # no ``from __future__ import annotations``: FastAPI reads the route's Annotated types at definition
import os

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from cityfactory.governance.overview import (
    Champion,
    RunFacts,
    ScenarioRow,
    grouped,
    monitoring_facts,
    render,
)

URL_PREFIX = "/cityfactory-overview"
ENDED = ("success", "failed")
HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'; "
                                      "base-uri 'none'; form-action 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


def _runs(session, dag_ids: list[str], states: tuple[str, ...] | None = None) -> dict[str, RunFacts]:
    """The latest run of each DAG (of those states), in one query."""
    from airflow.models.dagrun import DagRun
    from sqlalchemy import func, select, tuple_

    latest = select(DagRun.dag_id, func.max(DagRun.run_after)).where(DagRun.dag_id.in_(dag_ids))
    if states:
        latest = latest.where(DagRun.state.in_(states))
    latest = latest.group_by(DagRun.dag_id)
    query = select(DagRun.dag_id, DagRun.run_id, DagRun.state, DagRun.run_after).where(
        tuple_(DagRun.dag_id, DagRun.run_after).in_(latest))
    return {dag_id: RunFacts(run_id, getattr(state, "value", state), run_after.isoformat()) for dag_id, run_id, state, run_after in session.execute(query)}


def _next_runs(session, dag_ids: list[str]) -> dict[str, str]:
    from airflow.models.dag import DagModel
    from sqlalchemy import select

    query = select(DagModel.dag_id, DagModel.next_dagrun_create_after, DagModel.is_paused).where(DagModel.dag_id.in_(dag_ids))
    return {dag_id: ("paused" if paused else at.isoformat()) for dag_id, at, paused in session.execute(query) if at or paused}


def _report(lake, scenario: str, run_id: str) -> dict | None:
    from cityfactory.governance.ledger import RunLedger
    from cityfactory.storage.lake import join_key

    key = join_key(RunLedger(lake, scenario, run_id).prefix, "report.json")
    return json.loads(lake.get_bytes(key)) if lake.exists(key) else None


def city_rows(readable: set[str], session) -> list[ScenarioRow]:
    """A row per scenario whose DAG the caller may read."""
    from cityfactory.config.scenarios import scan_scenarios
    from cityfactory.settings import get_settings
    from cityfactory.storage.lake import open_lake
    from cityfactory.tasktypes import load_model_spec
    from cityfactory.training.registry import champions

    scenarios = [s for s in scan_scenarios(get_settings().scenarios_dir)[0] if s.dag_id in readable]
    dag_ids = [s.dag_id for s in scenarios]
    models = {s.name: load_model_spec(s.model_spec).registered_model for s in scenarios}
    last, finished, upcoming = _runs(session, dag_ids), _runs(session, dag_ids, ENDED), _next_runs(session, dag_ids)
    champion = champions(sorted(set(models.values())))
    lake, rows = open_lake(), []
    for s in scenarios:
        reported = finished.get(s.dag_id)
        facts = monitoring_facts(_report(lake, s.name, reported.run_id) if reported else None)
        held = champion.get(models[s.name])
        rows.append(ScenarioRow(s.domain, s.name, s.dag_id, models[s.name], last.get(s.dag_id),
                                reported.run_id if reported else None, upcoming.get(s.dag_id),
                                Champion(*held) if held else None, **facts))
    return rows


def create_app() -> FastAPI:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.common.db.common import SessionDep
    from airflow.api_fastapi.core_api.security import GetUserDep

    from cityfactory.config.domains import load_domains

    app = FastAPI(title="City AI Factory: the city at a glance")

    @app.get("/", response_class=HTMLResponse)
    def city_overview(user: GetUserDep, session: SessionDep) -> HTMLResponse:
        readable = get_auth_manager().get_authorized_dag_ids(user=user, method="GET")
        titles = {name: d.title for name, d in load_domains().domains.items()}
        mlflow_url = os.environ.get("CITYFACTORY_MLFLOW_UI_URL", "http://127.0.0.1:5000")
        return HTMLResponse(render(grouped(city_rows(readable, session), titles), mlflow_url), headers=HEADERS)

    return app
