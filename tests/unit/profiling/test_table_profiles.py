"""What a CSV dataset says about itself: dialect, types, the time of a row, the series, codes for
"missing"; and what it cannot say, refused with the file and the fix."""

from __future__ import annotations

import datetime as dt

import pytest
from cityfactory.profiling.drafts import DraftRequest, ScaffoldError
from cityfactory.profiling.tables import profile_table
from cityfactory.tasktypes.forecast.scaffold import (
    bounds,
    draft_forecaster,
    nice,
    snake,
)


def _hours(first: str, count: int, step_minutes: int = 60):
    start = dt.datetime.fromisoformat(first)
    return [start + dt.timedelta(minutes=step_minutes * i) for i in range(count)]


def _write(path, lines: list[str], newline: str = "\n"):
    path.write_text(newline.join(lines) + newline)
    return path


def test_a_plain_csv_with_one_timestamp_column_is_one_series(tmp_path):
    rows = [f"{t:%Y-%m-%d %H:%M:%S},{100 + i % 7},{i % 3 == 0}" for i, t in enumerate(_hours("2024-03-01", 72))]
    profile = profile_table([_write(tmp_path / "flow.csv", ["when,volume,busy", *rows])])
    assert (profile.delimiter, profile.decimal, profile.series) == (",", ".", None)
    assert profile.time.columns == ("when",) and profile.time.format == "%Y-%m-%d %H:%M:%S"
    assert profile.time.step == dt.timedelta(hours=1) and profile.rows == 72
    volume = profile.columns["volume"]
    assert (volume.type, volume.min, volume.max, volume.longest_repeat) == ("int", 100, 106, 1)
    assert profile.columns["busy"].categories == ("False", "True")


def test_a_foreign_dialect_with_split_time_a_series_and_a_missing_code(tmp_path):
    lines = ["date;time;sensor;level;temp;"]
    for sensor in ("North", "South"):
        for i, t in enumerate(_hours("2024-01-30 20:00", 48)):
            level = "-999" if i == 5 else f"{10 + i % 5},{i % 10}"
            lines.append(f"{t:%d/%m/%Y};{t:%H.%M};{sensor};{level};{-20 + i % 9},5;")
    profile = profile_table([_write(tmp_path / "levels.csv", lines, newline="\r\n")])
    assert (profile.delimiter, profile.decimal, profile.blank_header_columns) == (";", ",", True)
    assert profile.time.columns == ("date", "time") and profile.time.format == "%d/%m/%Y %H.%M"
    assert profile.series == "sensor" and profile.series_values == ("North", "South")
    assert "-999" in profile.null_values and profile.notes == ["-999 read as 'missing' in level (far below every other value)"]
    level, temp = profile.columns["level"], profile.columns["temp"]
    assert (level.type, level.min, level.null_fraction) == ("float", 10.0, pytest.approx(2 / 96))
    assert temp.min == -20.5, "a reading below zero is a reading, not a code"


def test_year_month_day_hour_columns_compose_the_time(tmp_path):
    rows = [f"{t.year}\t{t.month}\t{t.day}\t{t.hour}\t{i * 0.5}" for i, t in enumerate(_hours("2024-12-31 22:00", 5))]
    profile = profile_table([_write(tmp_path / "a.tsv", ["Year\tMonth\tDay\tHour\tPM", *rows])])
    assert profile.delimiter == "\t" and profile.time.columns == ("Year", "Month", "Day", "Hour")
    assert profile.time.format == "%Y %m %d %H" and profile.time.last == dt.datetime(2025, 1, 1, 2)


def test_files_of_one_dataset_must_share_a_header(tmp_path):
    a = _write(tmp_path / "a.csv", ["t,x", "2024-01-01 00:00:00,1"])
    b = _write(tmp_path / "b.csv", ["t,y", "2024-01-01 00:00:00,1"])
    with pytest.raises(ScaffoldError, match=r"b\.csv: header \['t', 'y'\] differs from a\.csv's"):
        profile_table([a, b])


def test_repeated_times_without_a_series_column_ask_for_one(tmp_path):
    rows = [f"{t:%Y-%m-%d %H:%M:%S},{i}" for i, t in enumerate(_hours("2024-01-01", 3))] * 2
    with pytest.raises(ScaffoldError, match="no column tells them apart as a series: pass --series COLUMN"):
        profile_table([_write(tmp_path / "twice.csv", ["t,x", *rows])])


def test_no_time_column_is_named_as_such(tmp_path):
    with pytest.raises(ScaffoldError, match=r"no\.csv: no column holds the time of a row.*columns: a, b"):
        profile_table([_write(tmp_path / "no.csv", ["a,b", "x,1", "y,2"])])


def test_the_forecast_draft_wants_hours_and_a_numeric_target(tmp_path):
    quarter = [f"{t:%Y-%m-%d %H:%M:%S},{i}" for i, t in enumerate(_hours("2024-01-01", 20, step_minutes=15))]
    request = DraftRequest(dataset="d", domain="transport", pins={"q.csv": "0" * 64})
    with pytest.raises(ScaffoldError, match=r"every 0:15:00, the forecast draft is for hourly series"):
        draft_forecaster("q", profile_table([_write(tmp_path / "q.csv", ["t,x", *quarter])]), request)
    hourly = [f"{t:%Y-%m-%d %H:%M:%S},{i},{i % 2}" for i, t in enumerate(_hours("2024-01-01", 20))]
    profile = profile_table([_write(tmp_path / "h.csv", ["t,x,y", *hourly])])
    with pytest.raises(ScaffoldError, match=r"--target 'z': not a numeric column of h\.csv \(numeric: x, y\)"):
        draft_forecaster("h", profile, DraftRequest(dataset="d", domain="transport", pins={}, target="z"))


def test_names_and_bounds_read_well():
    assert [snake(n) for n in ("PM2.5", "Flow (veh/h)", "2nd lane")] == ["pm2_5", "flow_veh_h", "c_2nd_lane"]
    assert (nice(1234, up=True), nice(1234, up=False), nice(-0.0123, up=False)) == (1300.0, 1200.0, -0.013)
    from cityfactory.profiling.tables import ColumnProfile

    assert bounds(ColumnProfile("x", "float", 0.0, min=2, max=402)) == (0.0, 510.0)
    assert bounds(ColumnProfile("t", "float", 0.0, min=-20, max=20)) == (-30.0, 30.0)
