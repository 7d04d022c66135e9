"""ingest -> bronze gate -> dbt -> features gate -> gold, on real data, and the two ways it stops."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import jsonschema
import pandas as pd
import pyarrow.parquet as pq
import pytest
from cityfactory.config.scenarios import get_scenario
from cityfactory.governance.ledger import RunLedger
from cityfactory.ingestion import replay
from cityfactory.storage.gold import read_gold
from cityfactory.storage.lake import open_lake
from corpus import first_day
from support import METRO_CSV, REPO

REPORT_SCHEMA = REPO / "plugins" / "cityfactory" / "governance" / "report.schema.json"

TRAFFIC = get_scenario("traffic_flow")


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def _entries(run) -> dict[str, dict]:
    return {e["task_id"]: e for e in RunLedger(open_lake(), "traffic_flow", run.run_id).entries()}


@pytest.fixture(scope="module")
def month_run(dagbag, tmp_path_factory):
    """One run over the latest 30 real days with every stage built so far, on a lake of its own."""
    lake_uri = tmp_path_factory.mktemp("lake").as_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CITYFACTORY_LAKE_URI", lake_uri)
        _, last = replay.history_interval(TRAFFIC)
        first = last - dt.timedelta(days=29)  # the latest month: few gaps
        run = dagbag.get_dag("traffic_flow").test(
            run_conf={"data_interval_start": str(first), "data_interval_end": str(last),
                      "stages": ["ingest", "quality", "transform"]}  # a month is too short to train on
        )
        yield run, lake_uri, _entries(run)


def test_every_stage_ran_and_recorded(month_run):
    run, lake_uri, entries = month_run
    assert run.state == "success"
    assert {"bronze_gate", "transform", "features_gate", "export_gold"} <= set(entries)
    assert entries["bronze_gate"]["counts"]["failed"] == 0
    assert entries["bronze_gate"]["counts"]["rows"] == entries["ingest_summary"]["counts"]["rows_bronze"]
    tests = entries["transform"]["details"]["tests"]
    assert len(tests) >= 19 and all(t["status"] == "pass" for t in tests)
    models = [m["name"] for m in entries["transform"]["details"]["models"]]
    assert models == ["stg_traffic_flow__observations", "int_traffic_flow__hourly", "traffic_flow_features"]
    [validation] = [a for a in entries["features_gate"]["outputs"] if a["kind"] == "validation"]
    assert json.loads(Path(validation["uri"].removeprefix("file://")).read_text())["success"] is True
    [gold] = entries["export_gold"]["outputs"]
    assert gold["uri"] == f"{lake_uri}/gold/traffic_flow/manifest.json"
    manifest = json.loads(open_lake().get_bytes("gold/traffic_flow/manifest.json"))
    assert sum(m["rows"] for m in manifest["months"].values()) == gold["rows"] > 24 * 29
    assert all(pq.read_metadata(f"{lake_uri.removeprefix('file://')}/{m['key']}").num_rows == m["rows"]
               for m in manifest["months"].values())


@pytest.fixture(scope="module")
def raw_csv() -> pd.DataFrame:
    return pd.read_csv(METRO_CSV, parse_dates=["date_time"])  # the source's wall clock


def test_features_match_the_raw_csv(month_run, raw_csv):
    gold = read_gold(open_lake(), "traffic_flow")
    assert gold["target_at"].is_unique, "hours the dataset repeats per weather label appear once"
    shift = replay.time_shift(TRAFFIC)
    hourly = raw_csv.groupby("date_time").agg(volume=("traffic_volume", "first"), temp=("temp", "mean"), labels=("weather_main", "size"))
    # the replay moves the wall clock by whole weeks; ingestion stores UTC instants (a skipped
    # spring-forward hour does not exist): the source's hours as the instants gold holds
    played = (hourly.index + shift).tz_localize(TRAFFIC.timezone, ambiguous=True, nonexistent="NaT")
    hourly = hourly[~played.isna()].set_axis(played[~played.isna()].tz_convert("UTC").tz_localize(None))
    hourly = hourly[~hourly.index.duplicated()]
    in_window = hourly.index.isin(gold["target_at"])
    assert (hourly.loc[in_window, "labels"] > 1).any(), "the window holds repeated hours"

    complete = gold[gold["is_complete"]]
    assert len(complete) > 24 * 20
    counted = gold.set_index("target_at")["target_volume"]
    for _, row in complete.iloc[:: max(len(complete) // 7, 1)].iterrows():
        t = row["target_at"]
        h = pd.Timedelta(hours=1)
        assert row["target_volume"] == hourly.loc[t, "volume"]
        assert row["volume_lag_1h"] == hourly.loc[t - h, "volume"]
        assert row["volume_lag_24h"] == hourly.loc[t - 24 * h, "volume"]
        assert row["volume_lag_168h"] == hourly.loc[t - 168 * h, "volume"]
        # the same hour's usual level: the median of the 4 weeks before, of those the lake holds
        weeks = counted.reindex([t - 168 * k * h for k in range(1, 5)]).dropna()
        assert len(weeks) >= 1 and row["volume_weekly_median"] == weeks.median()
        window = hourly.loc[t - 24 * h : t - h, "volume"]
        assert len(window) == 24 and row["volume_mean_24h"] == pytest.approx(window.mean())
        assert row["temp_c_lag_1h"] == pytest.approx(hourly.loc[t - h, "temp"] - 273.15)
        local = row["target_at"].tz_localize("UTC").tz_convert(TRAFFIC.timezone)
        assert row["hour_of_day"] == local.hour and row["day_of_week"] == local.isoweekday()  # calendar: local


def _land(day: dt.date, edit) -> None:
    """Land the dataset's first real day, moved to ``day`` and edited, as one gateway file."""
    real_day, header, rows = first_day()
    frame = pd.read_csv(io.StringIO("\n".join([",".join(header), *rows])), dtype=str, keep_default_na=False)
    frame["date_time"] = frame["date_time"].str.replace(str(real_day), str(day))
    frame = edit(frame)
    open_lake().put_bytes(f"landing/traffic_flow/{day}/gateway-{day}.csv", frame.to_csv(index=False).encode())


def _before_history(days: int) -> dt.date:
    start, _ = replay.history_interval(TRAFFIC)
    return start - dt.timedelta(days=days)  # the replay lands nothing here: only our file


def test_bronze_gate_failure_stops_before_dbt(dagbag, lake_uri):
    day = _before_history(20)
    _land(day, lambda f: f.assign(traffic_volume="9500"))  # parses (<= 10000), breaks the suite
    run = dagbag.get_dag("traffic_flow").test(run_conf={"data_interval_start": str(day), "data_interval_end": str(day)})
    assert run.state == "failed"
    entries = _entries(run)
    gate = entries["bronze_gate"]
    assert gate["status"] == "failed"
    assert "expect_column_values_to_be_between(traffic_volume): observed" in gate["details"]["error"]
    assert "expect_column_mean_to_be_between(traffic_volume): observed 9500.0" in gate["details"]["error"]
    assert "transform" not in entries and "export_gold" not in entries, "nothing downstream ran"
    lake = open_lake()
    assert lake.list(f"bronze/traffic_flow/dt={day}") and lake.list(f"raw/traffic_flow/dt={day}")
    prefix = RunLedger(lake, "traffic_flow", run.run_id).prefix
    assert lake.exists(f"{prefix}/quality/traffic_flow_bronze.json")
    # the run still has its compliance report, and it says where and why the run stopped
    report, html = json.loads(lake.get_bytes(f"{prefix}/report.json")), lake.get_bytes(f"{prefix}/report.html").decode()
    jsonschema.Draft202012Validator(json.loads(REPORT_SCHEMA.read_text())).validate(report)
    assert report["outcome"]["state"] == "failed" and report["outcome"]["stopped_at"] == "bronze_gate"
    assert "expect_column_mean_to_be_between(traffic_volume): observed 9500.0" in report["outcome"]["reason"]
    assert "Run FAILED at <code>bronze_gate</code>" in html and "expect_column_mean_to_be_between" in html
    controls = {c["id"]: c["status"] for c in report["controls"]}
    assert controls["QUAL-1"] == "failed" and controls["DATA-3"] == "passed" and controls["MODEL-1"] == "not_applicable"
    assert report["outcome"]["task_states"]["transform"] == "upstream_failed"


def test_failing_dbt_test_stops_the_run(dagbag, lake_uri):
    day = _before_history(30)

    def disagreeing_copies(frame: pd.DataFrame) -> pd.DataFrame:
        copy = frame.iloc[[3]].assign(weather_main="Mist", weather_description="mist")
        copy["traffic_volume"] = str(int(copy["traffic_volume"].iloc[0]) + 100)
        return pd.concat([frame, copy])  # the same hour, another label, another volume

    _land(day, disagreeing_copies)
    run = dagbag.get_dag("traffic_flow").test(run_conf={"data_interval_start": str(day), "data_interval_end": str(day)})
    assert run.state == "failed"
    entries = _entries(run)
    assert entries["bronze_gate"]["status"] == "success"
    transform = entries["transform"]
    assert transform["status"] == "failed"
    assert "accepted_values_stg_traffic_flow__observations_distinct_volumes" in transform["details"]["error"]
    failed = [t for t in transform["details"]["tests"] if t["status"] == "fail"]
    assert [t["failures"] for t in failed] == [1]
    assert "features_gate" not in entries and "export_gold" not in entries
