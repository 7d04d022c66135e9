"""Landing as an attacker and a careless gateway would use it: links to secrets, files the CSV
reader finds hostile, reserved names, two runs of the same days at once, many rejected rows. One
bad file never blocks its batch, nothing is lost, and every landed name is ingested or reported."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import stat
import threading
import time

import pyarrow.compute as pc
import pytest
from cityfactory.config.scenarios import get_scenario
from cityfactory.governance.ledger import Kind, LedgerEntry
from cityfactory.ingestion.pipeline import ingest_days
from cityfactory.storage.lake import open_lake
from cityfactory.storage.parquet import read_partitions
from corpus import corpus_on, hostile_files

DAY = dt.date(2019, 6, 3)
SCENARIO = get_scenario("traffic_flow")


def _land(lake, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        lake.put_bytes(f"landing/traffic_flow/{DAY}/{name}", data)


def test_a_link_to_a_secret_is_not_copied_anywhere(lake_uri, tmp_path):
    lake = open_lake()
    secret = tmp_path / "signing-private.pem"
    secret.write_bytes(b"key material of the worker: TOP SECRET\n")
    _land(lake, {"clean.csv": corpus_on(DAY)["clean.csv"][0]})
    landing = lake.path_of(f"landing/traffic_flow/{DAY}")
    os.symlink(secret, landing / "gateway.csv")
    os.symlink(tmp_path, landing / "a_folder_link")
    result = ingest_days(SCENARIO, lake, [DAY], LedgerEntry("ingest", Kind.BATCH_INGESTED))

    assert result.rows_bronze > 0  # the clean file went through
    everything = b"".join(lake.get_bytes(k) for k in lake.list("raw") + lake.list("quarantine"))
    assert b"TOP SECRET" not in everything
    assert sum("gateway.csv" in e and "not a regular file" in e for e in result.file_errors) == 1
    assert sum("a_folder_link" in e for e in result.file_errors) == 1
    assert os.path.islink(landing / "gateway.csv")  # left where it was, reported


def test_hostile_files_never_block_their_batch_and_nothing_is_lost(lake_uri):
    lake = open_lake()
    hostile = hostile_files(DAY)
    _land(lake, {name: data for name, (data, _) in hostile.items()} | {"clean.csv": corpus_on(DAY)["clean.csv"][0]})
    result = ingest_days(SCENARIO, lake, [DAY], LedgerEntry("ingest", Kind.BATCH_INGESTED))

    assert result.rows_in == result.rows_bronze + result.rows_quarantined
    assert len(lake.list(f"raw/traffic_flow/dt={DAY}")) == len(hostile) + 1
    assert not lake.list(f"landing/traffic_flow/{DAY}")
    bronze = read_partitions(lake, "bronze", "traffic_flow", [DAY])
    quarantine = read_partitions(lake, "quarantine", "traffic_flow", [DAY])

    def count(table, column, name):
        return pc.sum(pc.equal(table[column], name)).as_py() or 0

    for name, (_, records) in hostile.items():  # every record the reader sees: in bronze or quarantine
        kept = count(bronze, "_source_file", name) + count(quarantine, "source_file", name)
        assert kept == (records if records is not None else 2), name  # an unclosed quote swallows the rest
    assert count(bronze, "_source_file", "clean.csv") > 0 and result.file_errors == []


def test_a_reserved_temporary_name_is_reported_not_skipped(lake_uri):
    lake = open_lake()
    landing = lake.path_of(f"landing/traffic_flow/{DAY}")
    landing.mkdir(parents=True)
    (landing / ".tmp-upload.csv").write_bytes(corpus_on(DAY)["clean.csv"][0])
    result = ingest_days(SCENARIO, lake, [DAY], LedgerEntry("ingest", Kind.BATCH_INGESTED))
    assert any(".tmp-upload.csv" in e and "unfinished write" in e for e in result.file_errors)


def test_two_runs_of_the_same_days_at_once_do_not_trip_over_each_other(lake_uri):
    lake = open_lake()
    days = [DAY + dt.timedelta(days=i) for i in range(4)]
    for day in days:
        for name, (data, _) in list(corpus_on(day).items())[:3]:
            lake.put_bytes(f"landing/traffic_flow/{day}/{name}", data)
    results, errors = [], []

    def run():
        try:
            results.append(ingest_days(SCENARIO, lake, days, LedgerEntry("ingest", Kind.BATCH_INGESTED)))
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 2
    bronze = read_partitions(lake, "bronze", "traffic_flow", days)
    keys = pc.binary_join_element_wise(pc.cast(bronze["date_time"], "string"), bronze["weather_description"], "|")
    assert len(pc.unique(keys)) == bronze.num_rows == results[1].rows_bronze
    assert not lake.list("_leases")


def test_a_lease_held_elsewhere_fails_clearly(lake_uri):
    from cityfactory.ingestion.leases import LeaseTaken, day_leases

    lake = open_lake()
    with (day_leases(lake, "traffic_flow", [DAY], holder="nightly-run"),
          pytest.raises(LeaseTaken, match="traffic_flow week 2019-W23 is being ingested by nightly-run"),
          day_leases(lake, "traffic_flow", [DAY], wait_seconds=0.5)):
        pass


def test_a_file_the_reader_cannot_split_is_quarantined_whole_and_the_batch_goes_on(lake_uri, monkeypatch):
    from cityfactory.ingestion import parsing, pipeline

    lake = open_lake()
    _land(lake, {"clean.csv": corpus_on(DAY)["clean.csv"][0], "zz_broken.csv": b"a,b\n1,2\n3,4\n"})

    def read_file(data, name, scenario, day):
        if name == "zz_broken.csv":
            raise ValueError("straddling object straddles two block boundaries")
        return parsing.read_file(data, name, scenario, day)

    monkeypatch.setattr(pipeline, "read_file", read_file)
    result = ingest_days(SCENARIO, lake, [DAY], LedgerEntry("ingest", Kind.BATCH_INGESTED))
    assert result.rows_bronze > 0 and result.rows_in == result.rows_bronze + result.rows_quarantined
    [error] = result.file_errors
    assert error.startswith("zz_broken.csv: cannot be parsed (ValueError: straddling")
    quarantine = read_partitions(lake, "quarantine", "traffic_flow", [DAY])
    assert pc.sum(pc.equal(quarantine["source_file"], "zz_broken.csv")).as_py() == 2


def test_rejected_records_are_valid_json_whatever_they_hold():
    import json

    from cityfactory.ingestion.parsing import parse_file

    data = corpus_on(DAY)["clean.csv"][0].decode()
    head, first, *rest = data.split("\r\n")
    hostile = first.replace("None", '"say ""hi"" \\ back\tslash"', 1).rsplit(",", 1)[0] + ",many"
    _, converted = parse_file("\r\n".join([head, hostile, *rest]).encode(), "quotes.csv", SCENARIO, DAY)
    [reject] = converted.rejected
    record = json.loads(reject["record"])
    assert record["holiday"] == 'say "hi" \\ back\tslash' and record["traffic_volume"] == "many"
    assert reject["reason"] == "traffic_volume='many' is not an integer" and reject["line"] == 2


def test_a_sparse_file_larger_than_a_third_of_memory_is_set_aside_unread_and_the_batch_goes_on(lake_uri):
    lake = open_lake()
    _land(lake, {"clean.csv": corpus_on(DAY)["clean.csv"][0]})
    landing = lake.path_of(f"landing/traffic_flow/{DAY}")
    huge = landing / "huge.csv"
    with open(huge, "wb") as fh:
        fh.truncate(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 3 + 1)  # sparse: no disk used
    result = ingest_days(SCENARIO, lake, [DAY], LedgerEntry("ingest", Kind.BATCH_INGESTED))

    assert result.rows_bronze > 0 and not lake.list(f"landing/traffic_flow/{DAY}")
    [problem] = [e for e in result.file_errors if "huge.csv" in e]
    assert "over the limit of" in problem and "set aside unread" in problem
    kept = f"set_aside/traffic_flow/dt={DAY}/huge.csv"
    assert lake.exists(kept) and "over the limit" in json.loads(lake.get_bytes(kept + ".reason.json"))["reason"]
    assert not any("huge" in k for k in lake.list("raw"))
    again = ingest_days(SCENARIO, lake, [DAY], LedgerEntry("ingest", Kind.BATCH_INGESTED))
    assert again.file_errors == []  # the next night is not failed by it again


def test_a_file_still_being_written_waits_and_raw_holds_exactly_the_bytes_hashed(lake_uri):
    from cityfactory.ingestion.landing import take_landed

    lake = open_lake()
    first, rest = b"timestamp,volume\n", b"2019-06-03 01:00:00,12\n"
    _land(lake, {"growing.csv": first})
    path = lake.path_of(f"landing/traffic_flow/{DAY}/growing.csv")

    def the_gateway_writes_on(seconds):
        with open(path, "ab") as fh:
            fh.write(rest)

    taken = take_landed(lake, "traffic_flow", DAY, SCENARIO.ingestion, sleep=the_gateway_writes_on)
    assert taken.files == {} and "still being written" in taken.waiting[0] and path.exists()
    entry = LedgerEntry("ingest", Kind.BATCH_INGESTED)
    ingest_days(SCENARIO, lake, [DAY], entry)  # settled now
    [raw] = lake.list(f"raw/traffic_flow/dt={DAY}")
    assert lake.get_bytes(raw) == first + rest
    [landed] = [a for a in entry.inputs if a.kind == "landing"]
    assert landed.sha256 == hashlib.sha256(first + rest).hexdigest()


def test_a_gateway_cannot_change_raw_through_a_name_it_kept(lake_uri, tmp_path):
    lake = open_lake()
    data = corpus_on(DAY)["clean.csv"][0]
    _land(lake, {"clean.csv": data})
    landed = lake.path_of(f"landing/traffic_flow/{DAY}/clean.csv")
    handle = open(landed, "r+b")  # noqa: SIM115 - the gateway keeps its file open
    time.sleep(SCENARIO.ingestion.settle_seconds)
    ingest_days(SCENARIO, lake, [DAY], LedgerEntry("ingest", Kind.BATCH_INGESTED))
    handle.seek(0)
    handle.write(b"EDITED AFTER INGESTION")
    handle.close()
    [raw] = lake.list(f"raw/traffic_flow/dt={DAY}")
    assert lake.get_bytes(raw) == data  # raw is a copy, not the gateway's file
    assert stat.S_IMODE(os.stat(lake.path_of(raw)).st_mode) == 0o444  # and read-only once written


def test_hard_links_are_refused_whoever_owns_the_file(lake_uri, tmp_path):
    lake = open_lake()
    _land(lake, {"clean.csv": corpus_on(DAY)["clean.csv"][0], "kept.csv": b"timestamp,volume\n"})
    landing = lake.path_of(f"landing/traffic_flow/{DAY}")
    os.link(landing / "kept.csv", tmp_path / "the_gateways_copy.csv")  # a name the gateway keeps
    secret = tmp_path / "not_yours.csv"
    secret.write_bytes(b"TOP SECRET of another user\n")
    os.chown(secret, 65534, 65534)
    secret.chmod(0o600)
    os.link(secret, landing / "linked.csv")
    result = ingest_days(SCENARIO, lake, [DAY], LedgerEntry("ingest", Kind.BATCH_INGESTED))

    assert result.rows_bronze > 0
    assert sum("kept.csv" in e and "hard link" in e for e in result.file_errors) == 1
    assert sum("linked.csv" in e and "hard link" in e for e in result.file_errors) == 1
    everything = b"".join(lake.get_bytes(k) for k in lake.list("raw") + lake.list("quarantine"))
    assert b"TOP SECRET" not in everything
    assert (landing / "linked.csv").exists() and (landing / "kept.csv").exists()  # left where they were, reported
