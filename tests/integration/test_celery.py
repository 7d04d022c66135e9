"""The production path, really run: Airflow on PostgreSQL with its scheduler, dag-processor,
triggerer and api-server as separate processes, the Celery executor (Redis broker, PostgreSQL
result backend) and two Celery workers; MLflow on PostgreSQL; the edge fleet as processes.

Runs are triggered through the REST API with Param values, as the UI's form does; one fires from
its cron. A worker is killed in the middle of a task.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pyarrow.dataset as ds
import pytest
from cityfactory.config.scenarios import get_scenario
from cityfactory.edge.fleet import LocalFleet, edge_token, load_fleet
from cityfactory.factory.pools import TRAINING_POOL_NAME
from cityfactory.governance.ledger import Kind, RunLedger, of_kind
from cityfactory.ingestion import replay
from cityfactory.rollout import controller
from cityfactory.storage.lake import open_lake
from cityfactory.training import registry
from support import (
    api_call,
    not_scheduled_yet,
    production_stack,
    scenarios_copy,
    wait_for,
    write_fleet,
)

WORKERS = {"worker-1", "worker-2"}


def _scenarios(folder):
    """The repo's scenarios with retries 2 s apart, none of them scheduled to fire here, and
    air_quality's batches a quarter long (the killed worker's test ingests two of them)."""

    def change(config: dict) -> None:
        config["retries"] = {"retries": 1, "delay_seconds": 2}
        if config["name"] == "air_quality":
            config["ingestion"]["days_per_batch"] = 92
        not_scheduled_yet(config)

    scenarios_copy(folder, change)


def _fire_traffic_flow_once(folder) -> dt.datetime:
    """traffic_flow's cron set to fire once, two minutes from now (a cron naming that day and
    month). Written once the stack runs, so the DAG is parsed before that time: a time missed
    before the first parse is not run (no catch-up), however slow the start was."""
    import yaml

    at = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)).replace(second=0, microsecond=0)
    path = folder / "traffic_flow.yaml"
    config = yaml.safe_load(path.read_text())
    local = at.astimezone(ZoneInfo(config["schema"]["timezone"]))
    config["schedule"] = f"{local.minute} {local.hour} {local.day} {local.month} *"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return at


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("celery")
    _scenarios(home / "scenarios")
    heartbeat = {"AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
                 "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CITYFACTORY_LAKE_URI", (home / "lake").as_uri())
        mp.setenv("CITYFACTORY_SCENARIOS_DIR", str(home / "scenarios"))
        mp.setenv("CITYFACTORY_FLEETS_DIR", str(write_fleet(home / "fleets", "traffic_flow", 6)))
        mp.setenv("CITYFACTORY_SEARCH_TRIALS", "3")  # this deployment's cap: the form's 3 trials, a batch per family
        mp.setenv("CITYFACTORY_TRAINING_SLOTS", "2")  # one scenario runs here: both workers may train
        try:
            with production_stack(home, 2, heartbeat) as (celery, token), LocalFleet.for_scenario(get_scenario("traffic_flow")):
                for dag_id in ("traffic_flow", "air_quality"):
                    url = f"{celery.base_url}/api/v2/dags/{dag_id}"
                    wait_for(lambda url=url: api_call("GET", url, token), 180, f"{dag_id} not parsed")
                yield celery, token, home / "scenarios"
        finally:
            for log in sorted((home / "airflow" / "logs").glob("*.log")):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}")


def _trigger(stack, dag_id: str, **conf) -> str:
    celery, token, _ = stack
    run = api_call("POST", f"{celery.base_url}/api/v2/dags/{dag_id}/dagRuns", token, {"logical_date": None, "conf": conf})
    return run["dag_run_id"]


def _finished(stack, dag_id: str, run_id: str, timeout: float) -> str:
    celery, token, _ = stack

    def state():
        found = api_call("GET", f"{celery.base_url}/api/v2/dags/{dag_id}/dagRuns/{run_id}", token)["state"]
        return found if found in ("success", "failed") else None

    return wait_for(state, timeout, f"{dag_id} run {run_id} did not finish")


def _task_instances(stack, dag_id: str, run_id: str) -> list[dict]:
    celery, token, _ = stack
    url = f"{celery.base_url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000"
    return api_call("GET", url, token)["task_instances"]


@pytest.mark.timeout(1500)  # past the run's own wait, which says which run did not finish
def test_the_whole_history_runs_on_two_workers(stack):
    start, end = replay.history_interval(get_scenario("traffic_flow"))
    run_id = _trigger(stack, "traffic_flow", data_interval_start=str(start), data_interval_end=str(end), search_trials=3)
    assert _finished(stack, "traffic_flow", run_id, 1200) == "success"
    instances = _task_instances(stack, "traffic_flow", run_id)
    ran = [ti for ti in instances if ti["state"] == "success"]
    assert {ti["hostname"] for ti in ran} == WORKERS
    deploys = [ti for ti in ran if ti["task_id"].endswith("_deploy")]
    assert len(deploys) == 6 and {ti["hostname"] for ti in deploys} == WORKERS, \
        "the mapped deploys ran on both workers"
    trials = [ti for ti in ran if ti["task_id"] == "trials"]
    assert len(trials) == 3 and {ti["hostname"] for ti in trials} == WORKERS, "the search's batches ran on both workers"
    heavy = {ti["task_id"]: ti["pool"] for ti in ran if ti["task_id"] in ("trials", "train", "compress")}
    assert heavy == dict.fromkeys(("trials", "train", "compress"), TRAINING_POOL_NAME), heavy
    celery, token, _ = stack
    assert api_call("GET", f"{celery.base_url}/api/v2/pools/{TRAINING_POOL_NAME}", token)["slots"] == 2
    registry.use_experiment("traffic_flow")  # MLflow pointed at this stack's tracking database
    version = registry.alias_version("cityfactory.traffic_flow", registry.CHAMPION)
    assert set(controller.snapshot(load_fleet("traffic_flow"), edge_token("traffic_flow")).values()) == {version}
    report = RunLedger(open_lake(), "traffic_flow", run_id)
    assert of_kind(report.current(), Kind.PROMOTED)[0]["details"]["champion"] == version


def test_a_scheduled_run_fires_from_its_cron(stack):
    """Set while no other traffic_flow run is active: a scenario's first scheduled time that
    passes while a manual run holds its one active-run slot is not run late (no Airflow catch-up).
    The night lands yesterday and the days since the history's last one (it ends within the week
    before yesterday)."""
    celery, token, scenarios = stack
    nightly_at = _fire_traffic_flow_once(scenarios)

    def planned() -> bool:
        at = api_call("GET", f"{celery.base_url}/api/v2/dags/traffic_flow", token)["next_dagrun_run_after"]
        return at is not None and dt.datetime.fromisoformat(at) == nightly_at

    wait_for(planned, 150, f"traffic_flow's new cron not parsed before {nightly_at}")

    def scheduled():
        runs = api_call("GET", f"{celery.base_url}/api/v2/dags/traffic_flow/dagRuns?run_type=scheduled", token)["dag_runs"]
        return runs[0] if runs else None

    run = wait_for(scheduled, (nightly_at - dt.datetime.now(dt.UTC)).total_seconds() + 300, "no scheduled run")
    assert dt.datetime.fromisoformat(run["run_after"]) == nightly_at
    assert _finished(stack, "traffic_flow", run["dag_run_id"], 900) == "success"
    [plan] = of_kind(RunLedger(open_lake(), "traffic_flow", run["dag_run_id"]).current(), Kind.RUN_PLANNED)
    yesterday = nightly_at.astimezone(ZoneInfo("America/Chicago")).date() - dt.timedelta(days=1)
    _, history_end = replay.history_interval(get_scenario("traffic_flow"))  # what the first test ingested
    assert plan["details"]["last_day"] == str(yesterday)
    assert plan["details"]["first_day"] == str(min(history_end + dt.timedelta(days=1), yesterday)), \
        "the night also lands the days between the history's end and yesterday"


def _air_quality_days() -> tuple[dt.date, dt.date]:
    """Two ingest batches of air_quality, the same days in every test (a history with a hole in it
    would rightly fail the features gate)."""
    scenario = get_scenario("air_quality")
    start, _ = replay.history_interval(scenario)
    return start + dt.timedelta(days=400), start + dt.timedelta(days=400 + 2 * scenario.ingestion.days_per_batch - 1)


def test_a_worker_killed_in_the_middle_of_a_task(stack):
    celery, _, _ = stack
    scenario = get_scenario("air_quality")
    first, last = _air_quality_days()
    run_id = _trigger(stack, "air_quality", data_interval_start=str(first), data_interval_end=str(last), stages=["ingest"])

    def ingesting():
        running = [ti for ti in _task_instances(stack, "air_quality", run_id)
                   if ti["task_id"] == "ingest" and ti["state"] == "running" and ti["hostname"]]
        return running[0] if running else None

    victim = wait_for(ingesting, 300, "no ingest task ran", every=0.2)
    celery.kill_worker(victim["hostname"])
    try:
        assert _finished(stack, "air_quality", run_id, 600) == "success"
    finally:
        celery.start_worker(victim["hostname"])
    retried = next(ti for ti in _task_instances(stack, "air_quality", run_id)
                   if ti["task_id"] == "ingest" and ti["map_index"] == victim["map_index"])
    assert retried["try_number"] == 2 and retried["hostname"] == (WORKERS - {victim["hostname"]}).pop()
    # nothing lost, nothing twice: bronze holds each key once, as many rows as the summary counted
    ledger = RunLedger(open_lake(), "air_quality", run_id)
    [summary] = of_kind(ledger.current(), Kind.INGESTED)
    counts = summary["counts"]
    assert counts["days"] == 2 * scenario.ingestion.days_per_batch
    assert counts["rows_in"] == counts["rows_bronze"] + counts["rows_quarantined"]
    bronze = ds.dataset(open_lake().path_of("bronze/air_quality"), partitioning="hive").to_table()
    assert bronze.num_rows == counts["rows_bronze"]
    keys = bronze.group_by(scenario.schema_.key).aggregate([]).num_rows
    assert keys == bronze.num_rows
    assert len(of_kind(ledger.current(), Kind.BATCH_INGESTED)) == 2


def test_two_scenarios_run_at_the_same_time(stack):
    start, _ = replay.history_interval(get_scenario("traffic_flow"))
    days = {"traffic_flow": (start + dt.timedelta(days=30), start + dt.timedelta(days=120)), "air_quality": _air_quality_days()}
    runs = {name: _trigger(stack, name, data_interval_start=str(first), data_interval_end=str(last),
                           stages=["ingest", "quality", "transform"]) for name, (first, last) in days.items()}
    spans = {}
    for name, run_id in runs.items():
        assert _finished(stack, name, run_id, 900) == "success"
        ran = [ti for ti in _task_instances(stack, name, run_id) if ti["state"] == "success"]
        spans[name] = (min(ti["start_date"] for ti in ran), max(ti["end_date"] for ti in ran))
    (a_start, a_end), (b_start, b_end) = spans.values()
    assert a_start < b_end and b_start < a_end, f"the runs did not overlap: {spans}"
