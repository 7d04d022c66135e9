"""The replay's time shift, tried on the days it is easiest to break, whatever today is: moving
instants, every real reading lands in bronze at its own instant moved by the shift, across the clock
changes of the dataset's year and of the year it plays in; moving wall-clock text, every reading
keeps its hour of the day and only the few of a skipped or repeated hour are quarantined."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from cityfactory.config.scenarios import get_scenario
from cityfactory.governance.ledger import Kind, LedgerEntry
from cityfactory.ingestion import replay
from cityfactory.ingestion.pipeline import ingest_days
from cityfactory.ingestion.wall_clock import RepeatedHours, to_instants
from cityfactory.storage.lake import open_lake

TRAFFIC = get_scenario("traffic_flow")  # America/Chicago: two clock changes a year; replayed in wall-clock text
IN_INSTANTS = TRAFFIC.model_copy(update={"source": TRAFFIC.source.model_copy(update={"time_shift_clock": "instant"})})
# the dataset's own clock changes of 2016, and days that the shifts below move onto the target's
SOURCE_WINDOWS = [(dt.date(2016, 3, 10), 7), (dt.date(2016, 11, 3), 7), (dt.date(2017, 3, 1), 21),
                  (dt.date(2017, 10, 25), 21)]


def _source_instants(first: dt.date, last: dt.date) -> list:
    """The dataset's readings of these days as instants, a repeated hour resolved per key in file
    order (as the parser resolves it)."""
    (data,) = replay.load_dataset(IN_INSTANTS)
    inside = pc.and_(pc.greater_equal(data.event_time, dt.datetime.combine(first, dt.time())),
                     pc.less(data.event_time, dt.datetime.combine(last, dt.time())))
    keys = [data.table.filter(inside)[k] for k in TRAFFIC.schema_.key if k != TRAFFIC.schema_.time_column]
    instants, skipped = to_instants(data.event_time.filter(inside), TRAFFIC.schema_.timezone, None, keys, RepeatedHours())
    assert not skipped.any(), "the dataset has no reading at an hour its own clock skipped"
    return instants.cast(pa.timestamp("s", tz="UTC")).to_pylist()


@pytest.mark.parametrize("today", [dt.date(2026, 3, 4), dt.date(2026, 3, 11), dt.date(2026, 10, 28),
                                   dt.date(2026, 11, 4), dt.date(2027, 6, 30)])
def test_every_reading_lands_at_its_own_instant_across_clock_changes(lake_uri, today):
    shift = replay.time_shift(TRAFFIC, today)
    days = sorted({first + shift + dt.timedelta(days=i) for first, n in SOURCE_WINDOWS for i in range(n)})
    landed = replay.replay(IN_INSTANTS, open_lake(), days, today=today)
    result = ingest_days(IN_INSTANTS, open_lake(), days, LedgerEntry("ingest", Kind.BATCH_INGESTED))

    zone = ZoneInfo(TRAFFIC.schema_.timezone)
    around = [t for first, n in SOURCE_WINDOWS for t in _source_instants(first - dt.timedelta(days=1),
                                                                          first + dt.timedelta(days=n + 1))]
    expected = sorted(t for t in around if (t + shift).astimezone(zone).date() in set(days))  # a reading plays on its moved day
    assert sum(rows for _, rows in landed.files) == result.rows_in == len(expected) - landed.set_aside
    # a repeated hour whose second pass shares no weather label with the first cannot be written
    # apart without an offset: set aside and counted, at most the few rows of one hour per change
    assert landed.set_aside <= 3
    assert result.rows_quarantined == 0, result.reasons
    bronze = ds.dataset(lake_uri.removeprefix("file://") + "/bronze/traffic_flow", format="parquet",
                        partitioning="hive").to_table()
    played = sorted(t - shift for t in bronze["date_time"].cast(pa.timestamp("s", tz="UTC")).to_pylist())
    assert len(played) == len(expected) - landed.set_aside and set(played) <= set(expected)
    assert len(set(played)) == len(set(expected)) - (landed.set_aside > 0), "each reading at its own instant"


@pytest.mark.parametrize("today", [dt.date(2026, 3, 4), dt.date(2026, 11, 4), dt.date(2027, 6, 30)])
def test_in_wall_clock_text_readings_keep_their_hour_and_only_clock_change_hours_are_quarantined(lake_uri, today):
    shift = replay.time_shift(TRAFFIC, today)
    days = sorted({first + shift + dt.timedelta(days=i) for first, n in SOURCE_WINDOWS for i in range(n)})
    landed = replay.replay(TRAFFIC, open_lake(), days, today=today)
    result = ingest_days(TRAFFIC, open_lake(), days, LedgerEntry("ingest", Kind.BATCH_INGESTED))

    (data,) = replay.load_dataset(TRAFFIC)
    walls = [w for first, n in SOURCE_WINDOWS for w in data.event_time.to_pylist()
             if first <= w.date() < first + dt.timedelta(days=n)]
    assert sum(rows for _, rows in landed.files) == result.rows_in == len(walls) and landed.set_aside == 0
    clock = {"duplicate key", "date_time does not exist in America/Chicago (skipped by the daylight-saving change)"}
    assert set(result.reasons) <= clock and result.rows_quarantined <= 4 * 3, "a few readings per clock change"
    bronze = ds.dataset(lake_uri.removeprefix("file://") + "/bronze/traffic_flow", format="parquet",
                        partitioning="hive").to_table()
    local = pc.local_timestamp(bronze["date_time"].cast(pa.timestamp("s", tz=TRAFFIC.schema_.timezone)))
    played = [t - shift for t in local.to_pylist()]
    assert set(played) <= set(walls), "a reading keeps its hour of the day and its weekday"
    assert len(played) == result.rows_bronze == len(walls) - result.rows_quarantined


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
        landed.append(sorted((obj.uri.rsplit("/landing/", 1)[1], obj.sha256, rows) for obj, rows in found.files))
        assert sum(rows for _, rows in found.files) + found.set_aside == sum(f.table.num_rows
                                                                             for f in replay.load_dataset(TRAFFIC))
    assert landed[0] == landed[1]
