"""Ingestion on the local lake: real data, the bad-input corpus, idempotency and raw immutability."""

from __future__ import annotations

import datetime as dt

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from cityfactory.config.scenarios import get_scenario
from cityfactory.governance.ledger import Kind, LedgerEntry
from cityfactory.ingestion import replay
from cityfactory.ingestion.pipeline import IngestionError, check_acceptable, ingest_days
from cityfactory.storage.lake import open_lake, sha256_bytes
from corpus import corpus, first_day

TRAFFIC = get_scenario("traffic_flow")


def _days(first: dt.date, n: int) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range(n)]


def _bronze(lake_uri: str):
    path = lake_uri.removeprefix("file://") + "/bronze/traffic_flow"
    return ds.dataset(path, format="parquet", partitioning="hive").to_table().sort_by(
        [("date_time", "ascending"), ("weather_description", "ascending")]
    )


def _ingest(days):
    lake = open_lake()
    entry = LedgerEntry("ingest", Kind.BATCH_INGESTED)
    return ingest_days(TRAFFIC, lake, days, entry), entry


def test_real_fortnight_lands_and_ingests(lake_uri):
    start, _ = replay.history_interval(TRAFFIC)
    days = _days(start + dt.timedelta(days=400), 14)
    landed = replay.replay(TRAFFIC, open_lake(), days).files
    result, entry = _ingest(days)

    assert result.rows_in == sum(rows for _, rows in landed) > 14 * 20
    assert result.rows_in == result.rows_bronze + result.rows_quarantined
    assert open_lake().list("landing/traffic_flow") == [], "landed files are moved to raw"
    landed_sha = {obj.sha256 for obj, _ in landed}
    assert {a.sha256 for a in entry.inputs if a.kind == "raw"} == landed_sha, "raw keeps files unchanged"
    bronze = _bronze(lake_uri)
    assert bronze.num_rows == result.rows_bronze
    assert sorted({str(d) for d in bronze["dt"].to_pylist()}) == [d.isoformat() for d in days]
    assert "bronze" in {a.kind for a in entry.outputs}
    assert sum(a.rows for a in entry.outputs if a.kind == "bronze") == result.rows_bronze


def test_rerun_replaces_partitions_without_duplicates(lake_uri):
    start, _ = replay.history_interval(TRAFFIC)
    days = _days(start + dt.timedelta(days=100), 5)
    replay.replay(TRAFFIC, open_lake(), days)
    first, _ = _ingest(days)
    before = _bronze(lake_uri)
    replay.replay(TRAFFIC, open_lake(), days)  # the gateway sends the same files again
    second, _ = _ingest(days)
    after = _bronze(lake_uri)
    assert second.counts() == first.counts()
    assert after.equals(before)
    raw = open_lake().list("raw/traffic_flow")
    assert len(raw) == 5, "identical re-sent files are not stored twice"


def test_corpus_through_the_pipeline(lake_uri):
    lake = open_lake()
    day, _, rows = first_day()
    cases = corpus()
    for name, (data, _) in cases.items():
        lake.put_bytes(f"landing/traffic_flow/{day}/{name}", data)
    result, _ = _ingest([day])

    assert result.rows_in == result.rows_bronze + result.rows_quarantined
    assert result.rows_bronze == len(rows), "each real hour enters bronze exactly once"
    assert result.reasons["duplicate key"] > 0, "the same hours in several files are duplicates"
    quarantine = pq.read_table(lake.path_of(f"quarantine/traffic_flow/dt={day}/rejected-0.parquet"))
    assert quarantine.num_rows == result.rows_quarantined
    assert all(quarantine["reason"].to_pylist())
    with pytest.raises(IngestionError) as err:
        check_acceptable(result, TRAFFIC)
    for bad_file in ("empty.csv", "wrong_delimiter.csv", "missing_column.csv"):
        assert bad_file in str(err.value)
    raw = {k.rsplit("/", 1)[1]: lake.get_bytes(k) for k in lake.list(f"raw/traffic_flow/dt={day}")}
    assert {n: sha256_bytes(d) for n, d in raw.items()} == {n: sha256_bytes(d) for n, (d, _) in cases.items()}


def test_duplicate_rows_in_one_file(lake_uri):
    lake = open_lake()
    day, header, rows = first_day()
    body = ",".join(header) + "\n" + "\n".join([rows[0], *rows, rows[5]]) + "\n"
    lake.put_bytes(f"landing/traffic_flow/{day}/dups.csv", body.encode())
    result, _ = _ingest([day])
    assert (result.rows_in, result.rows_bronze, result.rows_quarantined) == (len(rows) + 2, len(rows), 2)
    assert result.reasons == {"duplicate key": 2}
    check_acceptable(result, TRAFFIC)  # 2 of 26 is within the scenario's tolerance


def test_raw_is_never_overwritten(lake_uri):
    lake = open_lake()
    day, header, rows = first_day()
    original = (",".join(header) + "\n" + "\n".join(rows[:10]) + "\n").encode()
    corrected = (",".join(header) + "\n" + "\n".join(rows[:12]) + "\n").encode()
    lake.put_bytes(f"landing/traffic_flow/{day}/drop.csv", original)
    _ingest([day])
    lake.put_bytes(f"landing/traffic_flow/{day}/drop.csv", corrected)
    result, _ = _ingest([day])
    raw = lake.list(f"raw/traffic_flow/dt={day}")
    assert len(raw) == 2
    assert lake.get_bytes(f"raw/traffic_flow/dt={day}/drop.csv") == original
    assert result.rows_bronze == 12 and result.rows_quarantined == 10


def test_a_day_with_every_row_rejected(lake_uri):
    lake = open_lake()
    day, _, rows = first_day()
    lake.put_bytes(f"landing/traffic_flow/{day}/old.csv", corpus()["clean.csv"][0])
    _ingest([day])
    lake.put_bytes(f"landing/traffic_flow/{day}/semicolons.csv", corpus()["wrong_delimiter.csv"][0])
    lake.delete([f"raw/traffic_flow/dt={day}/old.csv"])  # as if retention had removed it
    result, _ = _ingest([day])
    assert (result.rows_bronze, result.rows_quarantined) == (0, len(rows))
    assert lake.list(f"bronze/traffic_flow/dt={day}") == [], "the partition is rewritten whole, empty"
