"""The replay's time shift, tried on the days it is easiest to break: whatever today is, the history
holds the same readings at the same hours of the day; only a clock change that differs between the
dataset's year and the year it plays in sets a few readings aside, with that reason."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from cityfactory.config.scenarios import get_scenario
from cityfactory.governance.ledger import Kind, LedgerEntry
from cityfactory.ingestion import replay
from cityfactory.ingestion.pipeline import ingest_days
from cityfactory.storage.lake import open_lake

TRAFFIC = get_scenario("traffic_flow")  # America/Chicago: two clock changes a year
# the dataset's own clock changes of 2016, and days that the shifts below move onto the target's
SOURCE_WINDOWS = [(dt.date(2016, 3, 10), 7), (dt.date(2016, 11, 3), 7), (dt.date(2017, 3, 1), 21),
                  (dt.date(2017, 10, 25), 21)]


def _source_walls(first: dt.date, last: dt.date) -> list:
    (data,) = replay.load_dataset(TRAFFIC)
    wall = data.event_time
    inside = pc.and_(pc.greater_equal(wall, dt.datetime.combine(first, dt.time())),
                     pc.less(wall, dt.datetime.combine(last, dt.time())))
    return wall.filter(inside).to_pylist()


@pytest.mark.parametrize("today", [dt.date(2026, 3, 4), dt.date(2026, 3, 11), dt.date(2026, 10, 28),
                                   dt.date(2026, 11, 4), dt.date(2027, 6, 30)])
def test_readings_keep_their_hour_and_only_clock_change_hours_are_set_aside(lake_uri, today):
    shift = replay.time_shift(TRAFFIC, today)
    days = sorted({first + shift + dt.timedelta(days=i) for first, n in SOURCE_WINDOWS for i in range(n)})
    landed = replay.replay(TRAFFIC, open_lake(), days, today=today)
    result = ingest_days(TRAFFIC, open_lake(), days, LedgerEntry("ingest", Kind.BATCH_INGESTED))

    expected = [w for first, n in SOURCE_WINDOWS for w in _source_walls(first, first + dt.timedelta(days=n))]
    assert sum(rows for _, rows in landed) == result.rows_in == len(expected), "every reading landed"
    clock = {"duplicate key", "date_time does not exist in America/Chicago (skipped by the daylight-saving change)"}
    assert set(result.reasons) <= clock and result.rows_quarantined <= 4 * 3, "a few readings per clock change"
    bronze = ds.dataset(lake_uri.removeprefix("file://") + "/bronze/traffic_flow", format="parquet",
                        partitioning="hive").to_table()
    local = pc.local_timestamp(bronze["date_time"].cast(pa.timestamp("s", tz=TRAFFIC.schema_.timezone)))
    played = [t - shift for t in local.to_pylist()]
    assert set(played) <= set(expected), "a reading keeps its hour of the day and its weekday"
    assert len(played) == result.rows_bronze == len(expected) - result.rows_quarantined


def test_history_is_whole_and_ends_by_yesterday():
    (first, last) = (min(f.first_day for f in replay.load_dataset(TRAFFIC)),
                     max(f.last_day for f in replay.load_dataset(TRAFFIC)))
    for today in (dt.date(2026, 12, 5) + dt.timedelta(days=i) for i in range(8)):
        start, end = replay.history_interval(TRAFFIC, today)
        shift = replay.time_shift(TRAFFIC, today)
        assert (start - shift, end - shift) == (first, last), "every day of the dataset, whatever today is"
        assert today - dt.timedelta(days=7) <= end < today


def test_nights_after_the_end_replay_its_last_week_weekday_for_weekday():
    last = max(f.last_day for f in replay.load_dataset(TRAFFIC))
    shift = dt.timedelta(weeks=400)
    for k in range(1, 15):
        night = last + shift + dt.timedelta(days=k)
        source = replay.source_day(night, shift, last)
        assert last - dt.timedelta(days=6) <= source <= last
        assert source.weekday() == night.weekday()


def test_two_days_of_one_week_land_the_same_history(tmp_path):
    """Run on Monday or on Saturday: the same files, byte for byte (the history no longer ends where
    today clips it, which moved the test year by up to six days)."""
    from cityfactory.storage.lake import LocalLake

    landed = []
    for today in (dt.date(2026, 12, 7), dt.date(2026, 12, 12)):
        assert replay.time_shift(TRAFFIC, today) == replay.time_shift(TRAFFIC, dt.date(2026, 12, 7))
        start, end = replay.history_interval(TRAFFIC, today)
        days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
        found = replay.replay(TRAFFIC, LocalLake(tmp_path / str(today)), days, today=today)
        landed.append(sorted((obj.uri.rsplit("/landing/", 1)[1], obj.sha256, rows) for obj, rows in found))
    assert landed[0] == landed[1]
    assert sum(rows for _, _, rows in landed[0]) == sum(f.table.num_rows for f in replay.load_dataset(TRAFFIC))
