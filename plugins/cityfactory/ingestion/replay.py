"""Replay a public dataset into ``landing/`` as the gateways would: one file per source file per day.

One landed file per source file (a station, a sensor) and day, named after that source file, so a
scenario's sensors can be added or retired without touching history. The dataset can play
shifted by whole weeks (see ``Source.time_shift``) so that a deployment looks live: with ``auto``,
the whole dataset lands by yesterday (its last day within the week just past), and each night after
its end replays the dataset's last week again, weekday for weekday, so the nightly run always
finds yesterday's drop (and the first night lands the days between the history's end and yesterday,
as every night catches up the days it missed). Whatever today is, the history holds the same
readings: a model trained on it sees the same rows in the dataset's own time.

The shift moves wall-clock text, so every reading keeps its hour of the day and its weekday: the
calendar a model reads is the dataset's. Where the two years' clock changes differ, the few readings
of a skipped or repeated hour cannot be written in the source's format (it has no offset) and are
quarantined at parsing with that reason (about two hours a year).
Files keep the source's own columns, dialect and formatting; only the event-time fields move.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from cityfactory.config.scenarios import ComposedTime, DatasetFile, Scenario
from cityfactory.ingestion import image_replay
from cityfactory.ingestion.datasets import dataset_file, file_stamp
from cityfactory.ingestion.landing import EPOCH, landing_prefix
from cityfactory.storage.lake import Lake, StoredObject, join_key


@dataclass(frozen=True)
class Replayable:
    """One source file as strings, with each row's wall-clock event time, sorted by day (stable)."""

    name: str
    header: list[str]
    table: pa.Table
    event_time: pa.Array  # timestamp[s], dataset wall clock
    days: np.ndarray  # days since epoch, ascending

    @property
    def first_day(self) -> dt.date:
        return EPOCH + dt.timedelta(days=int(self.days[0]))

    @property
    def last_day(self) -> dt.date:
        return EPOCH + dt.timedelta(days=int(self.days[-1]))


def _time_parts(scenario: Scenario) -> tuple[list[str], str]:
    event = scenario.schema_.event_time
    if isinstance(event, ComposedTime):
        return event.from_, event.format
    return [event], scenario.schema_.columns[event].format


def read_header(path: Path, delimiter: str, quote_char: str) -> list[str]:
    """A CSV file's column names as written (a UTF-8 byte-order mark is not part of the first)."""
    with open(path, "rb") as handle:
        first = handle.readline().decode("utf-8-sig", "replace").rstrip("\r\n")
    return next(csv.reader([first], delimiter=delimiter, quotechar=quote_char), [])


@lru_cache(maxsize=32)
def _load(dataset: str, spec: DatasetFile, stamp: tuple | None, delimiter: str, quote_char: str, parts: tuple[str, ...],
          fmt: str) -> Replayable:
    path = dataset_file(dataset, spec)
    header = read_header(path, delimiter, quote_char)
    names = [h if h.strip() else f"_blank_{i}" for i, h in enumerate(header)]
    table = pv.read_csv(
        path,
        read_options=pv.ReadOptions(column_names=names, skip_rows=1),
        parse_options=pv.ParseOptions(delimiter=delimiter, quote_char=quote_char),
        convert_options=pv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False),
    )
    joined = pc.binary_join_element_wise(*[pc.utf8_trim_whitespace(table[p]) for p in parts], " ")
    event_time = pc.strptime(joined, format=fmt, unit="s", error_is_null=True)
    known = pc.is_valid(event_time)
    table, event_time = table.filter(known), event_time.filter(known)
    days = pc.cast(pc.cast(event_time, pa.date32()), pa.int32()).to_numpy()
    order = np.argsort(days, kind="stable")
    return Replayable(spec.name, header, table.take(order), pc.take(event_time, order).combine_chunks(), days[order])


def load_dataset(scenario: Scenario) -> list[Replayable]:
    """Every source file of the scenario's dataset, verified against its pin."""
    parts, fmt = _time_parts(scenario)
    source = scenario.source
    dialect = source.csv
    return [_load(source.dataset, f, file_stamp(source.dataset, f), dialect.delimiter, dialect.quote_char, tuple(parts), fmt)
            for f in source.files]


def _span(scenario: Scenario) -> tuple[dt.date, dt.date]:
    if scenario.source.kind == "image_replay":
        return image_replay.span(scenario)
    files = load_dataset(scenario)
    return min(f.first_day for f in files), max(f.last_day for f in files)


def time_shift(scenario: Scenario, today: dt.date | None = None) -> dt.timedelta:
    """How far the dataset moves forward: whole weeks, so weekdays keep their meaning (whole days
    for an image replay); with ``auto``, as far as keeps its last day on or before yesterday."""
    shift = scenario.source.time_shift
    if scenario.source.kind == "gateway" or shift == "none":
        return dt.timedelta(0)
    if isinstance(shift, int):
        return dt.timedelta(weeks=shift)
    yesterday = (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=1)
    behind = (yesterday - _span(scenario)[1]).days
    if scenario.source.kind == "image_replay":  # a line works every day alike: whole days, all of it lands
        return dt.timedelta(days=max(behind, 0))
    return dt.timedelta(weeks=max(behind // 7, 0))


def history_interval(scenario: Scenario, today: dt.date | None = None) -> tuple[dt.date, dt.date]:
    """The dataset's whole span in play time: every reading, once (nothing lands in the future)."""
    (first, last), shift = _span(scenario), time_shift(scenario, today)
    yesterday = (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=1)
    return first + shift, min(last + shift, yesterday)


def source_day(play_day: dt.date, shift: dt.timedelta, last: dt.date) -> dt.date:
    """The dataset's day a play-time day replays: the day the shift says, or, past the dataset's
    end, the same weekday of its last week."""
    day = play_day - shift
    return day - dt.timedelta(weeks=math.ceil((day - last).days / 7)) if day > last else day


def _shifted(rows: pa.Table, times: pa.Array, shift: dt.timedelta, parts: list[str], fmt: str) -> pa.Table:
    if not shift:
        return rows
    texts = pc.strftime(pc.add(times, pa.scalar(shift, pa.duration("s"))), format=fmt)
    if len(parts) == 1:
        return rows.set_column(rows.schema.get_field_index(parts[0]), parts[0], texts)
    pieces = pc.split_pattern(texts, " ")  # a composed time: one space-separated part per column
    for index, name in enumerate(parts):
        rows = rows.set_column(rows.schema.get_field_index(name), name, pc.list_element(pieces, index))
    return rows


def replay(scenario: Scenario, lake: Lake, days: list[dt.date], today: dt.date | None = None) -> list[tuple[StoredObject, int]]:
    """Write each play-time day's rows of every source file to ``landing/<scenario>/<day>/``."""
    if scenario.source.kind == "gateway":
        return []  # the gateways land files themselves
    shift = time_shift(scenario, today)
    if scenario.source.kind == "image_replay":
        return image_replay.replay_images(scenario, lake, days, shift)
    parts, fmt = _time_parts(scenario)
    dialect = scenario.source.csv
    landed = []
    files = load_dataset(scenario)
    last = max(f.last_day for f in files)
    for data in files:
        stem = data.name.rsplit(".", 1)[0]
        for day in days:
            replayed = (source_day(day, shift, last) - EPOCH).days
            lo, hi = np.searchsorted(data.days, [replayed, replayed + 1])
            if lo == hi:
                continue
            move = day - EPOCH - dt.timedelta(days=replayed)  # the shift, or further for a looped week
            rows = _shifted(data.table.slice(lo, hi - lo), data.event_time.slice(lo, hi - lo), move, parts, fmt)
            buffer = io.BytesIO()
            pv.write_csv(rows.rename_columns(data.header), buffer,
                         pv.WriteOptions(quoting_style="needed", delimiter=dialect.delimiter))
            key = join_key(landing_prefix(scenario.name, day), f"{stem}_{day.isoformat()}.csv")
            landed.append((lake.put_bytes(key, buffer.getvalue()), rows.num_rows))
    return landed
