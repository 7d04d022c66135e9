"""Airflow's services on PostgreSQL: trigger the scenario DAG through the REST API that the UI's
trigger form uses, with Param values, and watch the run succeed; then, as a person would, in a real
headless Chromium: log in, trigger from the form with a date range, follow the run's "Compliance
report" tab (our Airflow 3 plugin) and find the report's outcome banner."""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.request
import uuid

import pytest
from cityfactory import services
from cityfactory.access.logins import admin_password
from cityfactory.config.scenarios import get_scenario
from cityfactory.governance.ledger import RunLedger
from cityfactory.ingestion import replay
from cityfactory.run_calendar import day_bounds
from cityfactory.storage.lake import open_lake
from support import (
    api_call,
    free_ports,
    logged_in_page,
    not_scheduled_yet,
    postgres_admin,
    scenarios_copy,
    wait_for,
)


@pytest.fixture(scope="module")
def airflow_on_postgres(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("standalone")
    lake_uri = (tmp_path / "lake").as_uri()
    database = f"cityfactory_airflow_{uuid.uuid4().hex[:8]}"
    postgres_admin(f"CREATE DATABASE {database}")
    [port] = free_ports(1)
    env = {
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "CITYFACTORY_LAKE_URI": lake_uri,
        "CITYFACTORY_SCENARIOS_DIR": str(scenarios_copy(tmp_path / "scenarios", not_scheduled_yet)),
    }
    passwords = tmp_path / "passwords.json"
    password = admin_password(passwords)
    process = services.start_airflow(port, passwords, tmp_path / "standalone.log", env)
    base = f"http://127.0.0.1:{port}"
    try:
        services.wait_healthy(base, process)
        next_runs = services.unpause(base, password, ["traffic_flow", "air_quality", "governance_maintenance"], process)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CITYFACTORY_LAKE_URI", lake_uri)
            mp.setenv("CITYFACTORY_SCENARIOS_DIR", env["CITYFACTORY_SCENARIOS_DIR"])
            yield base, password, port, next_runs, process, passwords
    finally:
        services.stop(process)
        postgres_admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        print((tmp_path / "standalone.log").read_text()[-3000:])


def test_trigger_with_params_through_the_rest_api(airflow_on_postgres):
    import psutil

    base, password, port, *_ = airflow_on_postgres
    listening = {c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port}
    assert listening == {"127.0.0.1"}, f"the embedded Airflow UI listens on {listening}, not only on loopback"
    token = services.login_token(base, password)
    with pytest.raises(urllib.error.HTTPError) as denied:
        api_call("POST", f"{base}/auth/token", body={"username": "admin", "password": "wrong"})
    assert denied.value.code == 401

    dag = wait_for(lambda: api_call("GET", f"{base}/api/v2/dags/traffic_flow", token), 180, "DAG never parsed")
    assert dag["is_paused"] is False
    start, _ = replay.history_interval(get_scenario("traffic_flow"))
    first, last = start + dt.timedelta(days=200), start + dt.timedelta(days=203)
    with pytest.raises(urllib.error.HTTPError) as anonymous:  # Airflow's own answer: nothing checked for strangers
        api_call("POST", f"{base}/api/v2/dags/traffic_flow/dagRuns", None, {"conf": {"data_interval_start": str(first)}})
    assert anonymous.value.code == 401 and "data_interval" not in anonymous.value.read().decode()
    with pytest.raises(urllib.error.HTTPError) as half:  # refused before any run exists, naming the field
        api_call("POST", f"{base}/api/v2/dags/traffic_flow/dagRuns", token,
                 {"logical_date": None, "conf": {"data_interval_start": str(first), "stages": ["ingest"]}})
    assert half.value.code == 400 and "give both the first day (data_interval_start) and the last day" in half.value.read().decode()
    conf = {"data_interval_start": str(first), "data_interval_end": str(last), "stages": ["ingest"]}
    run = api_call("POST", f"{base}/api/v2/dags/traffic_flow/dagRuns", token, {"logical_date": None, "conf": conf})
    run_id = run["dag_run_id"]
    # the run's data interval is its days, midnight to midnight on the scenario's clock
    bounds = day_bounds(first, last, get_scenario("traffic_flow").timezone)
    assert (_instant(run["data_interval_start"]), _instant(run["data_interval_end"])) == bounds

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


def test_unpausing_as_make_ui_does_runs_nothing_until_the_next_scheduled_time(airflow_on_postgres):
    """The maintenance DAG keeps its real daily cron here: before, unpausing it ran yesterday's
    05:00 at once (Airflow's catch-up of the last missed run)."""
    base, password, _, next_runs, *_ = airflow_on_postgres
    now = dt.datetime.now(dt.UTC)
    assert all(dt.datetime.fromisoformat(at) > now for at in next_runs.values()), next_runs
    assert dt.datetime.fromisoformat(next_runs["governance_maintenance"]) - now <= dt.timedelta(days=1)
    token = services.login_token(base, password)
    time.sleep(10)  # a few scheduler loops
    for dag_id in next_runs:
        assert api_call("GET", f"{base}/api/v2/dags/{dag_id}", token)["is_paused"] is False
        runs = api_call("GET", f"{base}/api/v2/dags/{dag_id}/dagRuns?run_type=scheduled", token)["dag_runs"]
        caught_up = [r for r in runs if dt.datetime.fromisoformat(r["run_after"]) < dt.datetime.fromisoformat(next_runs[dag_id])]
        assert caught_up == [], f"{dag_id} ran a missed time at once when unpaused: {caught_up}"


def _instant(iso: str) -> dt.datetime:
    return dt.datetime.fromisoformat(iso).astimezone(dt.UTC)


def test_reports_are_served_only_to_those_airflow_lets_read_the_run(airflow_on_postgres):
    base, password, *_ = airflow_on_postgres
    plugins = api_call("GET", f"{base}/api/v2/plugins", services.login_token(base, password))["plugins"]
    [plugin] = [p for p in plugins if p["name"] == "cityfactory_compliance_report"]
    assert {v["destination"] for v in plugin["external_views"]} == {"dag_run", "task_instance"}
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{base}/cityfactory/reports/traffic_flow/manual__x", timeout=10)
    assert anonymous.value.code in (401, 403)
    with pytest.raises(urllib.error.HTTPError) as missing:
        api_call("GET", f"{base}/cityfactory/reports/traffic_flow/manual__no_such_run", services.login_token(base, password))
    assert missing.value.code == 404


def test_a_person_triggers_from_the_form_and_opens_the_report(airflow_on_postgres, tmp_path):
    from playwright.sync_api import sync_playwright

    base, password, *_ = airflow_on_postgres
    start, _ = replay.history_interval(get_scenario("traffic_flow"))
    # weeks (the lags are complete), overlapping the first test's days (a history without a hole),
    # and a first day no other run has (the run is found by its form values)
    first, last = start + dt.timedelta(days=196), start + dt.timedelta(days=250)
    with sync_playwright() as pw:
        browser, page = logged_in_page(pw, base, password, height=1000)
        page.goto(f"{base}/dags/traffic_flow")
        page.get_by_role("button", name="Trigger").first.click()
        form = page.get_by_role("dialog")
        form.locator("#element_data_interval_start").fill(str(first))
        for stage in ("rollout", "compress", "train", "monitor"):  # a quick run: ingest, gates and dbt
            form.locator(f'[aria-label="Remove {stage}"] [role=button]').click()
        form.get_by_role("button", name="Trigger").click()  # a half-filled range: the form says so, no run
        form.get_by_text("give both the first day (data_interval_start) and the last day (data_interval_end), or neither").first.wait_for(timeout=15_000)
        page.screenshot(path=tmp_path / "half_range_refused.png")
        page.mouse.move(10, 10)  # off the error toast, which pauses while hovered, until it goes
        page.locator('[data-scope="toast"][data-type="error"]').first.wait_for(state="hidden", timeout=30_000)
        form.locator("#element_data_interval_end").fill(str(last))
        page.screenshot(path=tmp_path / "trigger_form.png")
        form.get_by_role("button", name="Trigger").click()

        token = services.login_token(base, password)
        runs_url = f"{base}/api/v2/dags/traffic_flow/dagRuns?limit=100"

        def finished():
            ours = [r for r in api_call("GET", runs_url, token)["dag_runs"]
                    if (r["conf"].get("data_interval_start"), r["conf"].get("data_interval_end")) == (str(first), str(last))]
            return ours[0] if ours and ours[0]["state"] in ("success", "failed") else None

        run = wait_for(finished, 300, "the run triggered from the form did not finish")
        assert run["state"] == "success" and run["conf"]["stages"] == ["ingest", "quality", "transform"]
        assert run["conf"]["data_interval_end"] == str(last) and run["triggered_by"] == "ui" and run["triggering_user_name"] == "admin"
        bounds = day_bounds(first, last, get_scenario("traffic_flow").timezone)
        assert (_instant(run["data_interval_start"]), _instant(run["data_interval_end"])) == bounds
        assert len([r for r in api_call("GET", runs_url, token)["dag_runs"] if r["conf"].get("data_interval_start") == str(first)]) == 1
        page.goto(f"{base}/dags/traffic_flow/runs/{run['dag_run_id']}")
        page.get_by_text("Compliance report").first.click()
        banner = page.frame_locator("iframe").first.locator("#outcome")
        try:
            assert "Run succeeded" in banner.inner_text(timeout=30_000)
        finally:
            page.screenshot(path=tmp_path / "report_tab.png")
        browser.close()


def _post(url: str, body: dict, authorization: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json",
                                                                      "Authorization": authorization}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_trigger_attacks_are_refused_before_any_run_exists(airflow_on_postgres):
    """A header with two spaces (which Airflow alone would accept), a 9999 day, a trillion trials:
    each refused naming what is wrong, and no run made."""
    base, password, *_ = airflow_on_postgres
    token = services.login_token(base, password)
    url = f"{base}/api/v2/dags/traffic_flow/dagRuns"
    before = api_call("GET", f"{url}?limit=100", token)["total_entries"]
    tomorrow = dt.date.today() + dt.timedelta(days=1)
    form = {"data_interval_start": str(tomorrow), "data_interval_end": "9999-12-31", "stages": ["ingest"]}
    status, body = _post(url, {"logical_date": None, "conf": form}, f"Bearer  {token}")
    assert status == 401 and "one space" in body["detail"]
    status, body = _post(url, {"logical_date": None, "conf": form}, f"Bearer {token}")
    assert status == 400 and "9999-12-31 is in the future" in body["detail"]
    status, body = _post(url, {"logical_date": None, "conf": {"search_trials": 10**12, "stages": ["ingest"]}},
                         f"Bearer {token}")
    assert status == 400 and "search_trials" in json.dumps(body)
    assert api_call("GET", f"{url}?limit=100", token)["total_entries"] == before


def test_every_airflow_component_listens_on_loopback_only(airflow_on_postgres):
    """The README promises loopback: no scheduler or triggerer log server on 0.0.0.0 (8793/8794)."""
    import psutil

    *_, process, _ = airflow_on_postgres
    listening = []
    for pid in services.live_members(process.pid):
        try:
            listening += [(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections(kind="inet")
                          if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            continue
    assert listening and all(ip in ("127.0.0.1", "::1") for ip, _ in listening), listening


def _status(method: str, url: str, token: str, body: dict | None = None) -> int:
    try:
        api_call(method, url, token, body)
    except urllib.error.HTTPError as exc:
        return exc.code
    return 200


def test_each_department_sees_and_changes_only_its_own_scenarios(airflow_on_postgres):
    """Logins of the department roles (FAB auth manager): the environment's operator triggers
    air_quality; to transport's operator every part of that run is a 403 (DAG, run, task
    instances, log, approval, compliance report), as is triggering it; transport's viewer reads
    transport's scenario but cannot trigger it; each sees only its own department's DAGs."""
    base, *_, passwords = airflow_on_postgres
    logins = json.loads(passwords.read_text())
    token = {name: services.login_token(base, logins[name], name)
             for name in ("environment-operator", "transport-operator", "transport-viewer")}
    start, _ = replay.history_interval(get_scenario("air_quality"))
    day = str(start + dt.timedelta(days=30))
    conf = {"data_interval_start": day, "data_interval_end": day, "stages": ["ingest"]}
    run = api_call("POST", f"{base}/api/v2/dags/air_quality/dagRuns", token["environment-operator"],
                   {"logical_date": None, "conf": conf})
    assert run["triggering_user_name"] == "environment-operator"
    dag_url = f"{base}/api/v2/dags/air_quality"
    run_url = f"{dag_url}/dagRuns/{run['dag_run_id']}"
    others = {
        "its DAG": ("GET", dag_url), "its runs": ("GET", f"{dag_url}/dagRuns"), "the run": ("GET", run_url),
        "its task instances": ("GET", f"{run_url}/taskInstances"),
        "a task's log": ("GET", f"{run_url}/taskInstances/ingest/logs/1"),
        "an approval": ("GET", f"{run_url}/taskInstances/approve_all/-1/hitlDetails"),
        "answering an approval": ("PATCH", f"{run_url}/taskInstances/approve_all/-1/hitlDetails"),
        "the compliance report": ("GET", f"{base}/cityfactory/reports/air_quality/{run['dag_run_id']}"),
        "a trigger": ("POST", f"{dag_url}/dagRuns"), "pausing it": ("PATCH", dag_url),
    }
    bodies = {"POST": {"logical_date": None, "conf": conf}, "PATCH": {"is_paused": True, "chosen_options": ["Approve"]}}
    refused = {what: _status(method, url, token["transport-operator"], bodies.get(method)) for what, (method, url) in others.items()}
    assert refused == dict.fromkeys(others, 403)
    assert _status("GET", run_url, token["environment-operator"]) == 200
    assert _status("GET", f"{run_url}/taskInstances/ingest/logs/1", token["environment-operator"]) != 403
    # a department's logins list their own scenarios only
    for name, dag_ids in (("transport-operator", ["traffic_flow"]), ("transport-viewer", ["traffic_flow"]),
                          ("environment-operator", ["air_quality"])):
        assert [d["dag_id"] for d in api_call("GET", f"{base}/api/v2/dags", token[name])["dags"]] == dag_ids, name
    # a viewer reads, and changes nothing
    viewer = token["transport-viewer"]
    assert _status("GET", f"{base}/api/v2/dags/traffic_flow/dagRuns", viewer) == 200
    assert _status("POST", f"{base}/api/v2/dags/traffic_flow/dagRuns", viewer, {"logical_date": None, "conf": conf}) == 403
    assert _status("PATCH", f"{base}/api/v2/dags/traffic_flow", viewer, {"is_paused": True}) == 403


def test_the_city_at_a_glance_shows_each_person_their_own_departments(airflow_on_postgres):
    """The overview page (our Airflow 3 plugin, through the API server): the platform admin sees
    every department; transport's operator sees transport's scenario only; a stranger gets 401."""
    base, *_, passwords = airflow_on_postgres
    logins = json.loads(passwords.read_text())
    url = f"{base}/cityfactory-overview/"

    def page_for(name: str) -> str:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {services.login_token(base, logins[name], name)}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode()

    everything, transport = page_for("admin"), page_for("transport-operator")
    assert all(s in everything for s in ("traffic_flow", "air_quality", "solar_cells", "Transport", "Environment", "City management"))
    assert "traffic_flow" in transport and "Transport" in transport
    assert not any(s in transport for s in ("air_quality", "solar_cells", "Environment", "City management"))
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(url, timeout=10)
    assert anonymous.value.code == 401


def test_a_department_opens_the_city_at_a_glance_from_the_navigation(airflow_on_postgres, tmp_path):
    """In Chromium, as transport's operator: the navigation's "City at a glance" opens our page
    inside Airflow's UI (the session cookie is the identity), transport's scenario only."""
    from playwright.sync_api import sync_playwright

    base, *_, passwords = airflow_on_postgres
    with sync_playwright() as pw:
        browser, page = logged_in_page(pw, base, json.loads(passwords.read_text())["transport-operator"],
                                       username="transport-operator")
        overview = page.frame_locator("iframe").first
        try:
            page.get_by_role("link", name="City at a glance").first.click()  # Airflow's navigation, our plugin's entry
            page.wait_for_url(f"{base}/plugin/city_overview")
            overview.get_by_role("heading", name="Transport").wait_for(timeout=30_000)
            shown = overview.locator("body").inner_text()
        finally:
            page.screenshot(path=tmp_path / "city_overview.png")
        assert "traffic_flow" in shown and not any(s in shown for s in ("air_quality", "solar_cells", "Environment"))
        browser.close()
