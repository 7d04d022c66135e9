"""Whole DAG runs of a scenario on real data: a bulk run, bad input that fails the run and says
where, bad form values."""

from __future__ import annotations

import datetime as dt

import pyarrow.dataset as ds
from cityfactory.config.scenarios import get_scenario
from cityfactory.governance.ledger import RunLedger
from cityfactory.ingestion import replay
from cityfactory.storage.lake import open_lake
from corpus import corpus_on
from support import REPO

DAG_FILE = REPO / "dags" / "scenario_pipelines.py"
HEAVY = ["great_expectations", "torch", "mlflow", "onnxruntime", "dbt", "pyarrow", "boto3"]


def _run(dagbag, **conf):
    return dagbag.get_dag("traffic_flow").test(run_conf=conf)


def test_bulk_run_over_real_data(airflow_db, dagbag, lake_uri):
    start, _ = replay.history_interval(get_scenario("traffic_flow"))
    first, last = start + dt.timedelta(days=30), start + dt.timedelta(days=50)
    run = _run(dagbag, data_interval_start=str(first), data_interval_end=str(last), stages=["ingest"])
    assert run.state == "success"

    entries = RunLedger(open_lake(), "traffic_flow", run.run_id).entries()
    by_task = {}
    for e in entries:
        by_task.setdefault(e["task_id"], []).append(e)
    assert set(by_task) == {"plan", "land", "ingest", "ingest_summary", "governance"}
    [summary] = by_task["ingest_summary"]
    counts = summary["counts"]
    assert counts["days"] == 21
    assert counts["rows_in"] == sum(e["counts"]["rows"] for e in by_task["land"]) > 21 * 20
    assert counts["rows_in"] == counts["rows_bronze"] + counts["rows_quarantined"]
    bronze = ds.dataset(lake_uri.removeprefix("file://") + "/bronze/traffic_flow", partitioning="hive").to_table()
    assert bronze.num_rows == counts["rows_bronze"]
    assert all(a["sha256"] and a["uri"].startswith(lake_uri) for e in by_task["ingest"] for a in e["outputs"])


def test_bad_input_fails_the_run_and_says_where(airflow_db, dagbag, lake_uri):
    start, _ = replay.history_interval(get_scenario("traffic_flow"))
    day = start - dt.timedelta(days=10)  # before the replayed history: only our files land
    lake = open_lake()
    for name, (data, _) in corpus_on(day).items():
        lake.put_bytes(f"landing/traffic_flow/{day}/{name}", data)
    run = _run(dagbag, data_interval_start=str(day), data_interval_end=str(day))
    assert run.state == "failed"

    entries = RunLedger(lake, "traffic_flow", run.run_id).entries()
    [summary] = [e for e in entries if e["task_id"] == "ingest_summary"]
    assert summary["status"] == "failed"
    for name in ("empty.csv", "wrong_delimiter.csv", "missing_column.csv"):
        assert name in summary["details"]["error"]
    counts = summary["counts"]
    assert counts["rows_in"] == counts["rows_bronze"] + counts["rows_quarantined"] > 0
    assert lake.list(f"quarantine/traffic_flow/dt={day}") and lake.list(f"bronze/traffic_flow/dt={day}")
    assert len(lake.list(f"raw/traffic_flow/dt={day}")) == len(corpus_on(day))


def test_bad_params_fail_clearly(airflow_db, dagbag, lake_uri):
    run = _run(dagbag, data_interval_start="2026-02-10", data_interval_end="2026-02-01")
    assert run.state == "failed"
    [plan, governance] = RunLedger(open_lake(), "traffic_flow", run.run_id).entries()
    assert plan["task_id"] == "plan" and plan["status"] == "failed"
    assert governance["task_id"] == "governance" and governance["details"]["stopped_at"] == "plan"
    assert "the last day (data_interval_end) 2026-02-01 is before the first day (data_interval_start) 2026-02-10" in plan["details"]["error"]
