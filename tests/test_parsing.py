"""The bad-input corpus, file by file: every row is accepted or rejected with a reason."""

from __future__ import annotations

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
    result = parse_file(data, name, get_scenario("traffic_flow").schema_, day)

    assert result.rows_in == _data_lines(data)
    assert result.rows_in == result.accepted.num_rows + len(result.rejected), "a row was lost"
    assert len(result.rejected) == expected["rejected"]
    if "reason" in expected:
        assert any(expected["reason"] in r["reason"] for r in result.rejected), result.rejected
        assert all(r["source_file"] == name and r["line"] >= 2 for r in result.rejected)
    if "file_error" in expected:
        assert len(result.file_errors) == 1
        assert name in result.file_errors[0] and expected["file_error"] in result.file_errors[0]
    else:
        assert result.file_errors == []
    if "warning" in expected:
        assert expected["warning"] in result.warnings[0]


def test_rejected_rows_point_at_their_line():
    data, _ = CASES["wrong_types.csv"]
    day, _, _ = first_day()
    result = parse_file(data, "wrong_types.csv", get_scenario("traffic_flow").schema_, day)
    by_line = {r["line"]: r for r in result.rejected}
    assert set(by_line) == {2, 3}
    assert '"traffic_volume": "many"' in by_line[2]["record"]
    assert by_line[3]["reason"] == "temp='warm' is not a number"
    assert result.accepted.column("_line").to_pylist()[0] == 4


def test_typed_values_and_units():
    data, _ = CASES["clean.csv"]
    day, header, rows = first_day()
    result = parse_file(data, "clean.csv", get_scenario("traffic_flow").schema_, day)
    first = result.accepted.to_pylist()[0]
    raw = dict(zip(header, rows[0].split(",")))
    assert first["traffic_volume"] == int(raw["traffic_volume"])
    assert first["temp"] == float(raw["temp"])
    assert first["date_time"].isoformat(sep=" ") == raw["date_time"]
    assert result.accepted.schema.field("temp").metadata[b"unit"] == b"K"
