"""The README's screenshots, taken from the embedded stack's latest real run: ``make screenshots``
(after ``make run``).

Starts Airflow and the MLflow UI on the embedded stack as ``make ui`` does (on free ports), then, in
headless Chromium, logged in like a person: traffic_flow's trigger form, its latest run's graph and
its Compliance report tab, the report itself, the city at a glance, and the MLflow page of the version that run
registered. Writes ``tests/screenshots/*.png``; nothing is triggered.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from cityfactory import services
from cityfactory.access.logins import admin_password
from cityfactory.config.scenarios import get_scenario
from cityfactory.governance.ledger import Kind, RunLedger, last_of
from cityfactory.ingestion import replay
from cityfactory.settings import get_settings
from cityfactory.storage.lake import open_lake
from cityfactory.tasktypes import load_model_spec
from support import api_call, free_ports, logged_in_page

OUT = Path(__file__).parent / "screenshots"
SCENARIO = "traffic_flow"


def latest_run(base: str, token: str) -> dict:
    runs = api_call("GET", f"{base}/api/v2/dags/{SCENARIO}/dagRuns?order_by=-run_after&limit=1", token)["dag_runs"]
    if not runs:
        sys.exit(f"no {SCENARIO} run in the embedded stack yet: run `make run` first")
    return runs[0]


def take(base: str, password: str, mlflow_url: str) -> list[Path]:
    from playwright.sync_api import sync_playwright

    token = services.login_token(base, password)
    run = latest_run(base, token)
    trained = last_of(RunLedger(open_lake(), SCENARIO, run["dag_run_id"]).current(), Kind.MODEL_TRAINED)
    if trained is None:
        sys.exit(f"{SCENARIO}'s latest run {run['dag_run_id']} trained no model: run `make run` first")
    model = load_model_spec(get_scenario(SCENARIO).model_spec).registered_model
    shots = {name: OUT / f"{name}.png"
             for name in ("trigger_form", "graph", "run_report_tab", "report", "city_overview", "mlflow_version")}
    with sync_playwright() as pw:
        browser, page = logged_in_page(pw, base, password)

        page.goto(f"{base}/dags/{SCENARIO}")
        page.get_by_role("button", name="Trigger").first.click()
        form = page.get_by_role("dialog")
        _, last = replay.history_interval(get_scenario(SCENARIO))  # a month of history, filled in as a person would
        form.locator("#element_data_interval_start").fill(str(last - dt.timedelta(days=29)))
        form.locator("#element_data_interval_end").fill(str(last))
        page.screenshot(path=shots["trigger_form"])
        page.keyboard.press("Escape")

        page.goto(f"{base}/dags/{SCENARIO}/runs/{run['dag_run_id']}")
        page.get_by_text("Compliance report").first.click()
        page.frame_locator("iframe").first.locator("#outcome").wait_for(timeout=30_000)
        page.screenshot(path=shots["run_report_tab"])
        page.set_viewport_size({"width": 2600, "height": 900})  # the chain is wide: room for its graph
        page.get_by_role("button", name="Graph").first.click()
        page.locator(".react-flow__node").first.wait_for(timeout=30_000)
        page.wait_for_timeout(1500)  # the layout settles
        page.screenshot(path=shots["graph"])
        page.set_viewport_size({"width": 1400, "height": 900})

        page.goto(f"{base}/cityfactory/reports/{SCENARIO}/{run['dag_run_id']}")
        page.locator("#outcome").wait_for()
        page.screenshot(path=shots["report"])

        page.goto(f"{base}/plugin/city_overview")
        page.frame_locator("iframe").first.get_by_role("heading", name="Transport").wait_for(timeout=30_000)
        page.screenshot(path=shots["city_overview"])

        version_page = f"{mlflow_url}/#/models/{model}/versions/{trained['counts']['version']}"
        page.set_viewport_size({"width": 1400, "height": 1500})  # description and every tag
        page.goto(version_page)
        page.get_by_text("Description").first.wait_for(timeout=60_000)
        page.get_by_text("Model training", exact=True).first.click()  # MLflow's side bar opens in its GenAI mode
        page.get_by_role("button", name="Close", exact=True).first.click()  # its assistant panel
        page.goto(version_page)
        page.get_by_text("Description").first.wait_for(timeout=60_000)
        page.wait_for_timeout(2000)  # the version page polls; let it render
        page.screenshot(path=shots["mlflow_version"])
        browser.close()
    return list(shots.values())


def main() -> int:
    settings = get_settings()
    logs = settings.home / "logs"
    password = admin_password(settings.home / "airflow-passwords.json")
    port, mlflow_port = free_ports(2)
    base, mlflow_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{mlflow_port}"
    airflow = services.start_airflow(port, settings.home / "airflow-passwords.json", logs / "screenshots-airflow.log")
    mlflow = services.start_mlflow_ui(mlflow_port, logs / "screenshots-mlflow.log")
    try:
        services.wait_healthy(base, airflow)
        services.wait_for_url(mlflow_url, mlflow)
        OUT.mkdir(exist_ok=True)
        for path in take(base, password, mlflow_url):
            print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    finally:
        services.stop(mlflow)
        services.stop(airflow)
    return 0


if __name__ == "__main__":
    sys.exit(main())
