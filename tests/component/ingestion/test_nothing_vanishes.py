"""Every line after a header is counted, whatever becomes of it: a row in bronze, a row in
quarantine with its reason, or a blank line. The replay loses none on the way either: a source row
whose time does not parse, and the source's blank lines, land with its first day."""

from __future__ import annotations

import datetime as dt

from cityfactory.config.scenarios import get_scenario
from cityfactory.ingestion.parsing import parse_file
from support import configure_harbour_air


def test_blank_lines_are_counted_as_blank_and_an_empty_record_is_quarantined():
    scenario = get_scenario("traffic_flow")
    header = ",".join(scenario.schema_.columns)
    row = "None,288.28,0,0,40,Clouds,scattered clouds,2012-10-02 {}:00:00,5545"
    lines = [header, row.format("09"), "", row.format("10"), " \t", ",,,,,,,,", "\r", "", ""]
    read, converted = parse_file("\n".join(lines).encode(), "gateway.csv", scenario, dt.date(2012, 10, 2))
    assert read.rows_in == 7 and read.blank == 4
    assert converted.accepted.num_rows == 2
    [empty] = read.rejected + converted.rejected
    assert empty["line"] == 6


def test_a_replayed_history_counts_the_sources_blank_lines_and_its_unplaceable_row(tmp_path, monkeypatch, lake_uri):
    import hashlib

    import yaml
    from cityfactory.governance.ledger import Kind, LedgerEntry
    from cityfactory.ingestion import replay
    from cityfactory.ingestion.pipeline import ingest_days
    from cityfactory.storage.lake import open_lake

    configure_harbour_air(tmp_path, monkeypatch, "2016-03-01", "2016-03-03")
    source = tmp_path / "data" / "harbour_air_fixture" / "quay_north.csv"
    source.write_bytes(source.read_bytes() + b"1x/03/2016;01.00.00;Quay North;12;;;;;;;;;;;;\r\n" + b"\r\n" * 114)
    path = tmp_path / "scenarios" / "harbour_air.yaml"
    config = yaml.safe_load(path.read_text())
    config["source"]["files"][0]["sha256"] = hashlib.sha256(source.read_bytes()).hexdigest()
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    scenario = get_scenario("harbour_air")

    days = [dt.date(2016, 3, d) for d in (1, 2, 3)]
    landed = replay.replay(scenario, open_lake(), days).files
    result = ingest_days(scenario, open_lake(), days, LedgerEntry("ingest", Kind.BATCH_INGESTED))
    lines = sum(len((tmp_path / "data" / "harbour_air_fixture" / f).read_bytes().split(b"\r\n")) - 2
                for f in ("quay_north.csv", "quay_south.csv", "lighthouse.csv"))
    assert sum(rows for _, rows in landed) == result.rows_in == lines == 3 * 72 + 1 + 114
    assert result.rows_blank == 114 and result.rows_quarantined == 1
    assert result.rows_bronze + result.rows_quarantined + result.rows_blank == result.rows_in
    [(reason, count)] = result.reasons.items()
    assert "does not match" in reason and count == 1


def test_an_impossible_date_is_refused_not_rolled_over_to_another_day():
    scenario = get_scenario("traffic_flow")
    header = ",".join(scenario.schema_.columns)
    data = f"{header}\nNone,288.28,0,0,40,Clouds,scattered clouds,2013-02-31 09:00:00,5545\n".encode()
    _, converted = parse_file(data, "gateway.csv", scenario, dt.date(2013, 3, 3))
    assert converted.accepted.num_rows == 0
    [refused] = converted.rejected
    assert "date_time='2013-02-31 09:00:00' does not match %Y-%m-%d %H:%M:%S" in refused["reason"]
