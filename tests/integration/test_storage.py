"""The lake on both backends: a local folder and a real S3 server (SeaweedFS)."""

from __future__ import annotations

import datetime as dt

import pytest
from cityfactory.config.scenarios import get_scenario
from cityfactory.governance.ledger import Kind, LedgerEntry, RunLedger
from cityfactory.ingestion import replay
from cityfactory.ingestion.pipeline import ingest_days
from cityfactory.storage.lake import LakeError, open_lake, sha256_bytes


@pytest.fixture(params=["local", "s3"])
def any_lake_uri(request):
    fixture = "lake_uri" if request.param == "local" else "s3_lake_uri"
    return request.getfixturevalue(fixture)


def test_put_get_list_delete(any_lake_uri, tmp_path):
    lake = open_lake()
    stored = lake.put_bytes("raw/x/dt=2026-01-01/a.csv", b"hello")
    assert stored.uri == f"{any_lake_uri}/raw/x/dt=2026-01-01/a.csv"
    assert stored.sha256 == sha256_bytes(b"hello") and stored.size == 5
    lake.put_bytes("raw/x/dt=2026-01-02/b.csv", b"world")
    assert lake.list("raw/x") == ["raw/x/dt=2026-01-01/a.csv", "raw/x/dt=2026-01-02/b.csv"]
    assert lake.list_dirs("raw/x") == ["dt=2026-01-01", "dt=2026-01-02"]
    assert lake.get_bytes("raw/x/dt=2026-01-01/a.csv") == b"hello"
    assert lake.exists("raw/x/dt=2026-01-01/a.csv") and not lake.exists("raw/x/nope")
    lake.delete(["raw/x/dt=2026-01-01/a.csv"])
    assert lake.list("raw/x") == ["raw/x/dt=2026-01-02/b.csv"]
    with pytest.raises(LakeError, match="nope"):
        lake.get_bytes("raw/x/nope")


def test_replace_prefix_swaps_a_partition_whole(any_lake_uri, tmp_path):
    lake = open_lake()
    lake.put_bytes("bronze/x/dt=2026-01-01/part-0.parquet", b"old0")
    lake.put_bytes("bronze/x/dt=2026-01-01/part-1.parquet", b"old1")
    new = tmp_path / "new"
    new.mkdir()
    (new / "part-0.parquet").write_bytes(b"new0")
    written = lake.replace_prefix("bronze/x/dt=2026-01-01", new)
    assert [w.sha256 for w in written] == [sha256_bytes(b"new0")]
    assert lake.list("bronze/x") == ["bronze/x/dt=2026-01-01/part-0.parquet"]
    assert lake.get_bytes("bronze/x/dt=2026-01-01/part-0.parquet") == b"new0"


def test_ingest_and_ledger_on_both_backends(any_lake_uri):
    scenario = get_scenario("traffic_flow")
    lake = open_lake()
    start, _ = replay.history_interval(scenario)
    days = [start + dt.timedelta(days=i) for i in range(3)]
    landed = replay.replay(scenario, lake, days).files
    entry = LedgerEntry("ingest", Kind.BATCH_INGESTED)
    result = ingest_days(scenario, lake, days, entry)
    assert result.rows_in == sum(r for _, r in landed) == result.rows_bronze + result.rows_quarantined
    assert all(a.uri.startswith(any_lake_uri) for a in entry.outputs)
    bronze_keys = lake.list("bronze/traffic_flow")
    assert [k.split("/")[2] for k in bronze_keys] == [f"dt={d}" for d in days]
    ledger = RunLedger(lake, scenario.name, "scheduled__2026-01-01T02:30:00+00:00")
    ledger.record(entry)
    [saved] = ledger.entries()
    assert saved["counts"]["rows_bronze"] == result.rows_bronze
    assert "scheduled__2026-01-01T02_30_00_00_00" in ledger.prefix


def test_wrong_s3_credentials_name_the_bucket(s3_lake_uri, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    lake = open_lake()
    with pytest.raises(LakeError) as err:
        lake.put_bytes("landing/x/a.csv", b"x")
    message = str(err.value)
    assert s3_lake_uri in message and "AWS_SECRET_ACCESS_KEY" in message


def test_missing_bucket_is_named(s3_server, monkeypatch):
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    lake = open_lake("s3://no-such-bucket-here/p")
    with pytest.raises(LakeError, match="s3://no-such-bucket-here/p/k.*NoSuchBucket"):
        lake.get_bytes("k")


def test_bad_lake_uri():
    with pytest.raises(LakeError, match="scheme must be file:// or s3://"):
        open_lake("ftp://example/lake")
