"""A scenario nobody here had seen, added by configuration only (tests/fixtures): another CSV
dialect, an event time composed from two columns in a zone with daylight saving, three renamed
stations, its own spec, suite and fleet, and air_quality's dbt models. It runs end to end through
the DAG, edge rollout included; no Python in plugins/ or dags/ knows it."""

from __future__ import annotations

import datetime as dt
import shutil

import pyarrow.compute as pc
import pytest
import yaml
from support import REPO, harbour_dataset, write_fleet

FIXTURES = REPO / "tests" / "fixtures"
STATIONS = {"Aotizhongxin": ("quay_north.csv", "Quay North"), "Dingling": ("quay_south.csv", "Quay South"),
            "Shunyi": ("lighthouse.csv", "Lighthouse")}


def configure(root, monkeypatch, first="2015-06-01", last="2016-05-31", stations=STATIONS) -> None:
    """A config tree like the repo's for the fixture scenario, pins filled in from the data written."""
    pins = harbour_dataset(root / "data" / "harbour_air_fixture", stations, first, last)
    scenario = yaml.safe_load((FIXTURES / "scenarios" / "harbour_air.yaml").read_text())
    scenario["source"]["files"] = [{"name": name, "sha256": sha} for name, sha in pins.items()]
    (root / "scenarios").mkdir(parents=True, exist_ok=True)
    (root / "scenarios" / "harbour_air.yaml").write_text(yaml.safe_dump(scenario, sort_keys=False))
    (root / "models").mkdir(exist_ok=True)
    shutil.copy(FIXTURES / "models" / "harbour_air.yaml", root / "models")
    shutil.copy(REPO / "models" / "model_card.md", root / "models")
    (root / "expectations").mkdir(exist_ok=True)
    shutil.copy(FIXTURES / "expectations" / "harbour_air_bronze.json", root / "expectations")
    shutil.copy(REPO / "expectations" / "air_quality_features.json", root / "expectations")
    for name, path in {"SCENARIOS": "scenarios", "MODELS": "models", "EXPECTATIONS": "expectations", "DATA": "data"}.items():
        monkeypatch.setenv(f"CITYFACTORY_{name}_DIR", str(root / path))
    monkeypatch.setenv("CITYFACTORY_FLEETS_DIR", str(write_fleet(root / "fleets", "harbour_air", 3)))


def test_the_fixture_validates_whole(tmp_path, monkeypatch):
    from cityfactory.cli import main

    configure(tmp_path, monkeypatch)
    assert main(["validate", "harbour_air"]) == 0


def test_adding_a_sensor_to_a_scenario_with_history_keeps_bronze_free_of_duplicates(tmp_path, monkeypatch, lake_uri):
    from cityfactory.config.scenarios import get_scenario
    from cityfactory.governance.ledger import Kind, LedgerEntry
    from cityfactory.ingestion import replay
    from cityfactory.ingestion.pipeline import ingest_days
    from cityfactory.storage.lake import open_lake
    from cityfactory.storage.parquet import read_partitions

    two = dict(list(STATIONS.items())[:2])
    configure(tmp_path, monkeypatch, "2016-03-01", "2016-03-03", two)
    days = [dt.date(2016, 3, d) for d in (1, 2, 3)]
    lake = open_lake()
    before = get_scenario("harbour_air")
    replay.replay(before, lake, days)
    first = ingest_days(before, lake, days, LedgerEntry("ingest", Kind.BATCH_INGESTED))
    assert first.rows_bronze == 2 * 24 * 3 and first.rows_quarantined == 0

    configure(tmp_path, monkeypatch, "2016-03-01", "2016-03-03")  # a third station joins; the YAML lists it
    after = get_scenario("harbour_air")
    replay.replay(after, lake, days)
    again = ingest_days(after, lake, days, LedgerEntry("ingest", Kind.BATCH_INGESTED))
    assert again.rows_quarantined == 0, again.reasons
    bronze = read_partitions(lake, "bronze", "harbour_air", days)
    assert bronze.num_rows == 3 * 24 * 3
    keys = pc.binary_join_element_wise(pc.cast(bronze["observed_at"], "string"), bronze["station"], "|")
    assert len(pc.unique(keys)) == bronze.num_rows
    assert len(lake.list("raw/harbour_air/dt=2016-03-01")) == 3  # one landed file per station, none renamed


@pytest.mark.slow
def test_a_third_scenario_runs_end_to_end_with_rollout(airflow_db, tmp_path, monkeypatch, lake_uri, private_mlflow):
    import mlflow
    from airflow.dag_processing.dagbag import DagBag
    from cityfactory.config.scenarios import get_scenario
    from cityfactory.edge.fleet import LocalFleet, edge_token, load_fleet
    from cityfactory.governance.ledger import RunLedger
    from cityfactory.rollout.controller import snapshot
    from cityfactory.storage.lake import open_lake
    from cityfactory.storage.parquet import read_partitions

    configure(tmp_path, monkeypatch)
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {} and set(bag.dag_ids) >= {"harbour_air"}
    with LocalFleet.for_scenario(get_scenario("harbour_air")):
        run = bag.get_dag("harbour_air").test(run_conf={"data_interval_start": "2015-06-01",
                                                        "data_interval_end": "2016-05-31"})
        serving = snapshot(load_fleet("harbour_air"), edge_token())
    assert run.state == "success"

    entries = {e["task_id"]: e for e in RunLedger(open_lake(), "harbour_air", run.run_id).entries()}
    summary = entries["ingest_summary"]["counts"]
    assert summary["rows_in"] == summary["rows_bronze"] + summary["rows_quarantined"]
    # the spring-forward hour (2016-03-27 02:00, Europe/Rome) does not exist: one row per station;
    # the fall-back hour (2015-10-25 02:00) comes once per station and is the earlier instant
    assert entries["ingest_summary"]["details"]["reasons"] == {"observed_at does not exist in Europe/Rome": 3}
    bronze = read_partitions(open_lake(), "bronze", "harbour_air", [dt.date(2016, 3, 1)])
    assert sorted(set(bronze["station"].to_pylist())) == ["Lighthouse", "Quay North", "Quay South"]
    assert bronze["PM2.5"].type == "double" and bronze["observed_at"].type.tz == "UTC"

    version = str(entries["train"]["counts"]["version"])
    assert entries["train"]["details"]["alias"] == "challenger", entries["train"]["details"]["reason"]
    assert {"compress", "canary_gate", "all_gate", "promote_champion"} <= set(entries), sorted(entries)
    assert set(entries["train"]["details"]["metrics_by_series"]) == {"Lighthouse", "Quay North", "Quay South"}
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("cityfactory.harbour_air", "champion").version) == version
    assert set(serving.values()) == {version}  # every node of the fleet serves the new version
    gates = [e for t, e in entries.items() if t.endswith("_gate") and "verdict" in e["details"]]
    assert gates and all(e["status"] == "success" for e in gates)
