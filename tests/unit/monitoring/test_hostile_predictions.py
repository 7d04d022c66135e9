"""The collector against what a client, a buggy consumer or an altered node log can put in a
segment: far-future and unparseable target times, thousands of distinct target days, torn lines,
fields of the wrong type. Collection never fails on a row; rows that cannot be placed are set
aside with their reason and counted; the number of lake objects does not depend on what clients
claimed; memory stays flat (rows go out in row groups)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cityfactory.edge.prediction_log import KeyWindow, RowKeyError, parse_keys
from cityfactory.monitoring.collect import ROW_GROUP, store_segment
from cityfactory.storage.lake import open_lake
from cityfactory.storage.parquet import read_partitions

NOW = dt.datetime(2026, 12, 5, 12, tzinfo=dt.UTC)
SERVED_AT = NOW.timestamp()
WINDOW = KeyWindow(past_hours=48, ahead_hours=24)


def _line(predicted_for, served_at=SERVED_AT, **changes) -> str:
    row = {"served_at": served_at, "node": "n1", "model_version": "3", "series": "s1", "predicted_for": predicted_for,
           "input_sha256": "ab", "prediction": 1.5, "purpose": "serve"}
    return json.dumps({**row, **changes})


def _store(tmp_path, lines: list[str], zone="UTC"):
    segment = tmp_path / "seg-00000001.jsonl"
    segment.write_text("\n".join(lines) + "\n")
    lake = open_lake()
    return lake, store_segment(lake, "traffic_flow", "n1", segment.name, segment, "f" * 64, zone, WINDOW, "2026-12-05")


def test_a_far_future_key_is_set_aside_and_the_rest_collected(lake_uri, tmp_path):
    good = [_line((NOW - dt.timedelta(hours=h)).isoformat()) for h in range(1, 25)]
    hostile = [_line("9999-12-31T23:00:00+00:00"), _line("0001-01-01T00:00:00+00:00"), _line("2026-12-05T10:00:00"),
               _line("tomorrow"), _line(["a"]), '{"served_at": 17', "[1, 2]", _line("2026-12-05T10:00:00+00:00", prediction="1"),
               _line("2026-12-05T10:00:00+00:00", served_at=1e300), _line("2026-12-05T10:00:00+00:00", node=None),
               "[" * 100_000 + "]" * 100_000]
    lake, stored = _store(tmp_path, good[:12] + hostile + good[12:])
    assert sum(n for _, _, n in stored.parts) == 24 and sum(stored.refused.values()) == len(hostile)
    assert stored.refused["predicted_for: outside the window, from 48 h before to 24 h after the moment it is served"] == 2
    assert stored.refused["predicted_for: not an ISO time with an offset"] == 2 and stored.refused["predicted_for: not text"] == 1
    assert stored.predicted_days == {"2026-12-04", "2026-12-05"}
    kept = lake.list("refused_predictions/traffic_flow/dt=2026-12-05")
    assert len(kept) == 1 and lake.get_bytes(kept[0]).count(b"\n") == len(hostile)  # set aside with reasons, not lost
    frame = read_partitions(lake, "predictions", "traffic_flow", [NOW.date()]).to_pandas()
    assert len(frame) == 24 and frame["predicted_for"].max() < NOW


def test_thousands_of_claimed_days_make_one_object_per_served_day(lake_uri, tmp_path):
    claimed = [_line((NOW - dt.timedelta(minutes=m)).isoformat()) for m in range(2000)]  # 2,000 distinct target times
    lake, stored = _store(tmp_path, claimed)
    assert len(stored.parts) == 1 and len(lake.list("predictions")) == 1  # partitioned by the day served
    assert sum(n for _, _, n in stored.parts) == 2000


def test_a_segment_larger_than_a_row_group_is_written_in_groups(lake_uri, tmp_path):
    import pyarrow.parquet as pq

    rows = ROW_GROUP * 2 + 7
    line = _line((NOW - dt.timedelta(hours=1)).isoformat())
    lake, stored = _store(tmp_path, [line] * rows)
    [(_, obj, n)] = stored.parts
    assert n == rows
    assert pq.ParquetFile(lake.path_of(obj.uri.removeprefix(lake.uri + "/"))).num_row_groups >= 3


def test_rows_fall_on_the_day_they_were_served_in_the_scenario_zone(lake_uri, tmp_path):
    late = dt.datetime(2026, 12, 5, 23, 30, tzinfo=dt.UTC)  # already the 6th in Berlin
    _, stored = _store(tmp_path, [_line(late.isoformat(), served_at=late.timestamp())],
                          zone="Europe/Berlin")
    assert [day for day, _, _ in stored.parts] == ["2026-12-06"] and stored.predicted_days == {"2026-12-06"}


@pytest.mark.parametrize("claim, problem", [
    ("9999-12-31T23:00:00+00:00", "outside the node's window"),
    ((NOW - dt.timedelta(hours=49)).isoformat(), "outside the node's window"),
    ((NOW + dt.timedelta(hours=25)).isoformat(), "outside the node's window"),
    ("2026-12-05T10:00:00", "not an ISO time with an offset"),
    ("99999-01-01T00:00:00+00:00", "not an ISO time with an offset"),
])
def test_the_edge_refuses_keys_outside_its_window_naming_the_key(claim, problem):
    payload = {"keys": [{"series": "s", "predicted_for": (NOW - dt.timedelta(hours=1)).isoformat()},
                        {"series": "s", "predicted_for": claim}]}
    with pytest.raises(RowKeyError, match=rf"keys\[1\]\.predicted_for: .*{problem}"):
        parse_keys(payload, 2, NOW.timestamp(), WINDOW)
    keys, _ = parse_keys({"keys": payload["keys"][:1]}, 1, NOW.timestamp(), WINDOW)
    assert keys == [("s", payload["keys"][0]["predicted_for"])]
