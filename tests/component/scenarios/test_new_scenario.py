"""A scenario nobody here had seen, added by configuration only (tests/fixtures): another CSV
dialect, an event time composed from two columns in a zone with daylight saving, three renamed
stations, its own spec, suite and fleet, and air_quality's dbt models. It runs end to end through
the DAG, edge rollout included; no Python in plugins/ or dags/ knows it."""

from __future__ import annotations

import datetime as dt

import pyarrow.compute as pc
from support import HARBOUR_STATIONS, configure_harbour_air


def test_the_fixture_validates_whole(tmp_path, monkeypatch):
    from cityfactory.cli import main

    configure_harbour_air(tmp_path, monkeypatch)
    assert main(["validate", "harbour_air"]) == 0


def test_adding_a_sensor_to_a_scenario_with_history_keeps_bronze_free_of_duplicates(tmp_path, monkeypatch, lake_uri):
    from cityfactory.config.scenarios import get_scenario
    from cityfactory.governance.ledger import Kind, LedgerEntry
    from cityfactory.ingestion import replay
    from cityfactory.ingestion.pipeline import ingest_days
    from cityfactory.storage.lake import open_lake
    from cityfactory.storage.parquet import read_partitions

    two = dict(list(HARBOUR_STATIONS.items())[:2])
    configure_harbour_air(tmp_path, monkeypatch, "2016-03-01", "2016-03-03", two)
    days = [dt.date(2016, 3, d) for d in (1, 2, 3)]
    lake = open_lake()
    before = get_scenario("harbour_air")
    replay.replay(before, lake, days)
    first = ingest_days(before, lake, days, LedgerEntry("ingest", Kind.BATCH_INGESTED))
    assert first.rows_bronze == 2 * 24 * 3 and first.rows_quarantined == 0

    configure_harbour_air(tmp_path, monkeypatch, "2016-03-01", "2016-03-03")  # a third station joins; the YAML lists it
    after = get_scenario("harbour_air")
    replay.replay(after, lake, days)
    again = ingest_days(after, lake, days, LedgerEntry("ingest", Kind.BATCH_INGESTED))
    assert again.rows_quarantined == 0, again.reasons
    bronze = read_partitions(lake, "bronze", "harbour_air", days)
    assert bronze.num_rows == 3 * 24 * 3
    keys = pc.binary_join_element_wise(pc.cast(bronze["observed_at"], "string"), bronze["station"], "|")
    assert len(pc.unique(keys)) == bronze.num_rows
    assert len(lake.list("raw/harbour_air/dt=2016-03-01")) == 3  # one landed file per station, none renamed
