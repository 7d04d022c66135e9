"""Sources as cities have them: CSV dialects, event times split over columns, wall clocks with
daylight saving, JSON-lines gateway messages. Each file is parsed to the same typed bronze."""

from __future__ import annotations

import datetime as dt

import pytest
from cityfactory.config.scenarios import Scenario, ScenarioError, load_scenario
from cityfactory.ingestion.parsing import parse_file

UTC = dt.UTC


def scenario(**overrides) -> Scenario:
    base = {
        "name": "dialects", "domain": "transport", "description": "test", "schedule": "0 3 * * *",
        "source": {"kind": "gateway"},
        "schema": {
            "event_time": {"name": "observed_at", "from": ["date", "time"], "format": "%d/%m/%Y %H.%M.%S"},
            "key": ["observed_at", "sensor"], "series": "sensor", "timezone": "America/Chicago",
            "columns": {"date": {"type": "string"}, "time": {"type": "string"}, "sensor": {"type": "string"},
                        "co": {"type": "float", "nullable": True, "min": 0}},
        },
        "transform": {"dbt_select": "tag:x", "features_model": "x", "order_by": ["observed_at"]},
        "quality": {"bronze_suite": "x", "features_suite": "y"}, "model_spec": "x",
        "rollout": {"fleet": "x", "stages": [{"name": "all", "fraction": 1.0}]},
        "governance": {"risk_level": "minimal", "owners": ["a@b"], "retention_days": {"raw": 1}},
    }
    for key, value in overrides.items():
        base[key] = {**base[key], **value}
    return Scenario.model_validate(base)


SEMICOLONS = {"csv": {"delimiter": ";", "decimal": ",", "null_values": ["-200", "-200,0", ""]}}


def _rows(text: str, s: Scenario, day: dt.date):
    read, converted = parse_file(text.encode(), "drop.csv", s, day)
    return read, converted, read.rejected + converted.rejected


def test_semicolons_decimal_commas_missing_spellings_and_a_blank_trailing_header_column():
    s = scenario(source=SEMICOLONS)
    text = ("date;time;sensor;co;;\r\n"
            "10/03/2004;18.00.00;a;2,6;;\r\n"
            "10/03/2004;19.00.00;a;-200;;\r\n"
            "10/03/2004;20.00.00;a;-200,0;;\r\n"
            "10/03/2004;21.00.00;a;2.2.2;;\r\n")
    read, converted, rejected = _rows(text, s, dt.date(2004, 3, 10))
    assert read.file_errors == [] and read.extra_columns == []
    assert converted.accepted["co"].to_pylist() == [2.6, None, None]
    assert [r["line"] for r in rejected] == [5] and "co='2.2.2' is not a number" in rejected[0]["reason"]
    # Chicago wall clock (CST, UTC-6) -> UTC instants
    assert converted.accepted["observed_at"][0].as_py() == dt.datetime(2004, 3, 11, 0, 0, tzinfo=UTC)


def test_fall_back_hour_is_two_instants_and_spring_forward_hour_is_rejected():
    s = scenario(source=SEMICOLONS)
    fall = "date;time;sensor;co\n06/11/2016;00.00.00;a;1\n06/11/2016;01.00.00;a;2\n06/11/2016;01.00.00;a;3\n06/11/2016;02.00.00;a;4\n"
    _, converted, rejected = _rows(fall, s, dt.date(2016, 11, 6))
    assert rejected == []
    hours = [t.as_py().hour for t in converted.accepted["observed_at"]]
    assert hours == [5, 6, 7, 8]  # 01:00 CDT (06:00Z), then 01:00 CST (07:00Z)

    spring = "date;time;sensor;co\n13/03/2016;01.00.00;a;1\n13/03/2016;02.00.00;a;2\n13/03/2016;03.00.00;a;3\n"
    _, converted, rejected = _rows(spring, s, dt.date(2016, 3, 13))
    assert converted.accepted.num_rows == 2
    assert [r["line"] for r in rejected] == [3]
    assert "observed_at=2016-03-13 02:00:00 does not exist in America/Chicago" in rejected[0]["reason"]


MESSAGES = (
    '{"intersection": {"id": "x-12"}, "at": {"date": "01/06/2026", "time": "08.00.00"}, "counts": {"north": 41}}',
    '{"intersection": {"id": "x-12"}, "at": {"date": "01/06/2026", "time": "09.00.00"}, "counts": {"south": 3}}',
    "not json at all",
    '{"intersection": {"id": "x-12"}, "at": {"date": "01/06/2026", "time": "10.00.00"}, "counts": {"north": -5}}',
)


def test_json_lines_gateway_messages_with_nested_fields():
    s = scenario(source={"format": "jsonl", "jsonl": {"fields": {"date": "at.date", "time": "at.time", "sensor": "intersection.id",
                                                                  "co": "counts.north"}}})
    text = "\n".join(MESSAGES)
    read, converted, rejected = _rows(text, s, dt.date(2026, 6, 1))
    assert read.rows_in == 4 == converted.accepted.num_rows + len(rejected)
    assert converted.accepted["co"].to_pylist() == [41.0, None]  # a missing path is a missing value
    reasons = {r["line"]: r["reason"] for r in rejected}
    assert reasons[3].startswith("not a JSON object") and "co=-5 is below the minimum 0" in reasons[4]


@pytest.mark.parametrize(("change", "message"), [
    ({"schema": {"timezone": "Mars/Olympus"}}, "key 'schema.timezone': Value error, unknown time zone 'Mars/Olympus'"),
    ({"schema": {"event_time": {"name": "t", "from": ["date", "nope"], "format": "%d %H"}}}, "'nope' is not a declared column"),
    ({"schema": {"event_time": {"name": "t", "from": ["date", "time"], "format": "%d/%m/%Y"}}}, "one space-separated part per column"),
    ({"source": {"csv": {"delimiter": ",", "decimal": ","}}}, "cannot also be the delimiter"),
    ({"schema": {"series": "station"}}, "'station' is not a declared column"),
])
def test_bad_scenario_keys_are_named(tmp_path, change, message):
    import yaml

    raw = scenario().model_dump(by_alias=True, mode="json", exclude_none=True)
    for key, value in change.items():
        raw[key] = {**raw[key], **value}
    path = tmp_path / "dialects.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    assert str(path) in str(error.value) and message in str(error.value)
