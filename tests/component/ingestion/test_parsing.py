"""The bad-input corpus, file by file: every row is accepted or rejected with a reason."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from cityfactory.config.scenarios import get_scenario
from cityfactory.ingestion.parsing import parse_file
from corpus import corpus, first_day

CASES = corpus()


def _data_lines(data: bytes) -> int:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return max(len(lines) - 1, 0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_corpus_file(name):
    data, expected = CASES[name]
    day, _, _ = first_day()
    read, converted = parse_file(data, name, get_scenario("traffic_flow"), day)
    rejected = read.rejected + converted.rejected

    assert read.rows_in == _data_lines(data)
    assert read.rows_in == converted.accepted.num_rows + len(rejected) + read.blank, "a row was lost"
    assert len(rejected) == expected["rejected"]
    if "reason" in expected:
        assert any(expected["reason"] in r["reason"] for r in rejected), rejected
        assert all(r["source_file"] == name and r["line"] >= 2 for r in rejected)
    if "file_error" in expected:
        assert len(read.file_errors) == 1
        assert name in read.file_errors[0] and expected["file_error"] in read.file_errors[0]
    else:
        assert read.file_errors == []
    if "warning" in expected:
        assert read.extra_columns == [expected["warning"]]


def test_rejected_rows_point_at_their_line():
    data, _ = CASES["wrong_types.csv"]
    day, _, _ = first_day()
    _, converted = parse_file(data, "wrong_types.csv", get_scenario("traffic_flow"), day)
    by_line = {r["line"]: r for r in converted.rejected}
    assert set(by_line) == {2, 3}
    assert '"traffic_volume": "many"' in by_line[2]["record"]
    assert by_line[3]["reason"] == "temp='warm' is not a number"
    assert converted.accepted.column("_line").to_pylist()[0] == 4


def test_typed_values_and_units():
    data, _ = CASES["clean.csv"]
    day, header, rows = first_day()
    _, converted = parse_file(data, "clean.csv", get_scenario("traffic_flow"), day)
    first = converted.accepted.to_pylist()[0]
    raw = dict(zip(header, rows[0].split(",")))
    assert first["traffic_volume"] == int(raw["traffic_volume"])
    assert first["temp"] == float(raw["temp"])
    # wall clock in the scenario's zone (America/Chicago) -> a UTC instant
    local = dt.datetime.fromisoformat(raw["date_time"]).replace(tzinfo=ZoneInfo("America/Chicago"))
    assert first["date_time"] == local.astimezone(dt.UTC)
    assert converted.accepted.schema.field("temp").metadata[b"unit"] == b"K"
