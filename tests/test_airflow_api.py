"""Airflow's services on PostgreSQL: trigger the scenario DAG through the REST API that the UI's
trigger form uses, with Param values, and watch the run succeed."""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import uuid

import pytest
from cityfactory import services
from cityfactory.config.scenarios import get_scenario
from cityfactory.governance.ledger import RunLedger
from cityfactory.ingestion import replay
from cityfactory.storage.lake import open_lake
from support import api_call, free_ports, postgres_admin, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def airflow_on_postgres(tmp_path, lake_uri):
    database = f"cityfactory_airflow_{uuid.uuid4().hex[:8]}"
    postgres_admin(f"CREATE DATABASE {database}")
    [port] = free_ports(1)
    env = {
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "CITYFACTORY_LAKE_URI": lake_uri,
    }
    passwords = tmp_path / "passwords.json"
    password = services.admin_password(passwords)
    process = services.start_airflow(port, passwords, tmp_path / "standalone.log", env)
    base = f"http://127.0.0.1:{port}"
    try:
        services.wait_healthy(base, process)
        yield base, password, port
    finally:
        services.stop(process)
        postgres_admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        print((tmp_path / "standalone.log").read_text()[-3000:])


def test_trigger_with_params_through_the_rest_api(airflow_on_postgres):
    import psutil

    base, password, port = airflow_on_postgres
    listening = {c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port}
    assert listening == {"127.0.0.1"}, f"the embedded Airflow UI listens on {listening}, not only on loopback"
    token = api_call("POST", f"{base}/auth/token", body={"username": "admin", "password": password})["access_token"]
    with pytest.raises(urllib.error.HTTPError) as denied:
        api_call("POST", f"{base}/auth/token", body={"username": "admin", "password": "wrong"})
    assert denied.value.code == 401

    dag = wait_for(lambda: api_call("GET", f"{base}/api/v2/dags/traffic_flow", token), 180, "DAG never parsed")
    assert dag["is_paused"] is False
    start, _ = replay.history_interval(get_scenario("traffic_flow"))
    first, last = start + dt.timedelta(days=200), start + dt.timedelta(days=203)
    conf = {"data_interval_start": str(first), "data_interval_end": str(last), "stages": ["ingest"]}
    run = api_call("POST", f"{base}/api/v2/dags/traffic_flow/dagRuns", token, {"logical_date": None, "conf": conf})
    run_id = run["dag_run_id"]

    def finished():
        state = api_call("GET", f"{base}/api/v2/dags/traffic_flow/dagRuns/{run_id}", token)["state"]
        return state if state in ("success", "failed") else None

    assert wait_for(finished, 300, "run did not finish") == "success"
    entries = RunLedger(open_lake(), "traffic_flow", run_id).entries()
    [summary] = [e for e in entries if e["task_id"] == "ingest_summary"]
    assert summary["counts"]["days"] == 4 and summary["counts"]["rows_bronze"] > 4 * 20
    [plan] = [e for e in entries if e["task_id"] == "plan"]
    assert plan["details"]["first_day"] == str(first) and plan["details"]["last_day"] == str(last)
    # governance ran under the real scheduler too: who triggered, how, and which stages were not run
    report = json.loads(open_lake().get_bytes(f"{RunLedger(open_lake(), 'traffic_flow', run_id).prefix}/report.json"))
    assert report["run"]["triggered_by"] == "admin" and report["run"]["run_type"] == "manual"
    assert report["run"]["conf"]["stages"] == ["ingest"] and report["outcome"]["state"] == "success"
    states = report["outcome"]["task_states"]
    assert states["ingest"] == "success" and states["train"] == "skipped"
