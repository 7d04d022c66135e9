"""Replay a public dataset into ``landing/`` as a sensor gateway would: one CSV file per day.

The dataset can play shifted by whole weeks (see ``ReplaySource.time_shift``) so that a deployment
looks live: with ``auto``, the dataset's last week plays as the week just past and the nightly run
finds yesterday's drop. Files keep the source's own columns and formatting.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from cityfactory.config.scenarios import DatasetFile, Scenario
from cityfactory.ingestion.datasets import dataset_file
from cityfactory.storage.lake import Lake, StoredObject, join_key

EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class Replayable:
    """The dataset as strings, with each row's event time, sorted by day (stable)."""

    table: pa.Table
    event_time: pa.Array  # timestamp[s], dataset time
    days: np.ndarray  # days since epoch, dataset time, ascending

    @property
    def first_day(self) -> dt.date:
        return EPOCH + dt.timedelta(days=int(self.days[0]))

    @property
    def last_day(self) -> dt.date:
        return EPOCH + dt.timedelta(days=int(self.days[-1]))


@lru_cache(maxsize=4)
def _load(dataset: str, files: tuple[DatasetFile, ...], columns: tuple[str, ...], event: str, fmt: str) -> Replayable:
    options = pv.ConvertOptions(column_types={n: pa.string() for n in columns}, strings_can_be_null=False)
    table = pa.concat_tables([pv.read_csv(dataset_file(dataset, f), convert_options=options) for f in files])
    event_time = pc.strptime(table[event], format=fmt, unit="s")
    days = pc.cast(pc.cast(event_time, pa.date32()), pa.int32()).to_numpy()
    order = np.argsort(days, kind="stable")
    return Replayable(table.take(order), pc.take(event_time, order).combine_chunks(), days[order])


def load_dataset(scenario: Scenario) -> Replayable:
    schema = scenario.schema_
    fmt = schema.columns[schema.event_time].format
    return _load(scenario.source.dataset, tuple(scenario.source.files), tuple(schema.columns), schema.event_time, fmt)


def time_shift(scenario: Scenario, today: dt.date | None = None) -> dt.timedelta:
    """How far the dataset moves forward: whole weeks, so weekdays keep their meaning."""
    shift = scenario.source.time_shift
    if shift == "none":
        return dt.timedelta(0)
    if isinstance(shift, int):
        return dt.timedelta(weeks=shift)
    yesterday = (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=1)
    weeks = math.ceil((yesterday - load_dataset(scenario).last_day).days / 7)
    return dt.timedelta(weeks=max(weeks, 0))


def history_interval(scenario: Scenario, today: dt.date | None = None) -> tuple[dt.date, dt.date]:
    """The dataset's whole span in play time, clipped to yesterday (nothing lands in the future)."""
    data, shift = load_dataset(scenario), time_shift(scenario, today)
    yesterday = (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=1)
    return data.first_day + shift, min(data.last_day + shift, yesterday)


def landing_prefix(scenario: str, day: dt.date) -> str:
    return join_key("landing", scenario, day.isoformat())


def replay(scenario: Scenario, lake: Lake, days: list[dt.date], today: dt.date | None = None) -> list[tuple[StoredObject, int]]:
    """Write each play-time day's rows to ``landing/<scenario>/<day>/``; days with no data land nothing."""
    data, shift = load_dataset(scenario), time_shift(scenario, today)
    column = scenario.schema_.columns[scenario.schema_.event_time]
    stem = scenario.source.files[0].name.rsplit(".", 1)[0]
    landed = []
    for day in days:
        source_day = (day - shift - EPOCH).days
        lo, hi = np.searchsorted(data.days, [source_day, source_day + 1])
        if lo == hi:
            continue
        rows = data.table.slice(lo, hi - lo)
        shifted = pc.add(data.event_time.slice(lo, hi - lo), pa.scalar(shift, pa.duration("s")))
        rows = rows.set_column(
            rows.schema.get_field_index(scenario.schema_.event_time),
            scenario.schema_.event_time,
            pc.strftime(shifted, format=column.format),
        )
        buffer = io.BytesIO()
        pv.write_csv(rows, buffer, pv.WriteOptions(quoting_style="needed"))
        key = join_key(landing_prefix(scenario.name, day), f"{stem}_{day.isoformat()}.csv")
        landed.append((lake.put_bytes(key, buffer.getvalue()), rows.num_rows))
    return landed
