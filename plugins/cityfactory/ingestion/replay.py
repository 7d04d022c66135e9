"""Replay a public dataset into ``landing/`` as the gateways would: one file per source file per day.

One landed file per source file (a station, a sensor) and day, named after that source file, so a
scenario's sensors can be added or retired without touching history. The dataset can play
shifted by whole weeks (see ``Source.time_shift``) so that a deployment looks live: with ``auto``,
the whole dataset lands by yesterday (its last day within the week just past), and each night after
its end replays the dataset's last week again, weekday for weekday, so the nightly run always
finds yesterday's drop (and the first night lands the days between the history's end and yesterday,
as every night catches up the days it missed). Whatever today is, the history holds the same
readings: a model trained on it sees the same rows in the dataset's own time.

By default the shift moves instants (``Source.time_shift_clock``), so no reading is lost: each
stays one distinct instant, none lands on an hour the target year's clock skips, and a repeated hour
is written in order (see ``_ShiftedFile``). A reading keeps its weekday and hour of the day except
where the dataset's year and the target year are on different sides of a clock change: up to a
third of the year when the shift is not close to whole years, and there it reads one hour off.
A scenario whose model leans on the hour of the day may move wall-clock text instead and accept
that the readings of a skipped or repeated hour are quarantined (a few a year, with that reason).
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
from cityfactory.ingestion.parsing import blank_lines
from cityfactory.ingestion.wall_clock import (
    RepeatedHours,
    parse_wall_clock,
    to_instants,
)
from cityfactory.storage.lake import Lake, StoredObject, join_key


@dataclass(frozen=True)
class Replayable:
    """One source file as strings, with each row's wall-clock event time, sorted by day (stable)."""

    name: str
    header: list[str]
    table: pa.Table
    event_time: pa.Array  # timestamp[s], dataset wall clock
    days: np.ndarray  # days since epoch, ascending
    # What cannot be placed on a day: rows whose event time does not parse, and blank lines. They land
    # with the file's first day, so the parser counts them like any gateway's (nothing vanishes).
    unplaced: pa.Table
    blank_lines: int

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
    """One source file, parsed once per process; ``stamp`` (path, size, mtime) is only part of the
    cache key, so a file changed under a running process is read and verified again."""
    path = dataset_file(dataset, spec)
    data = path.read_bytes()  # read once: parsed, and its blank lines counted
    header = read_header(path, delimiter, quote_char)
    names = [h if h.strip() else f"_blank_{i}" for i, h in enumerate(header)]
    table = pv.read_csv(
        pa.py_buffer(data),
        read_options=pv.ReadOptions(column_names=names, skip_rows=1),
        parse_options=pv.ParseOptions(delimiter=delimiter, quote_char=quote_char),
        convert_options=pv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False),
    )
    joined = pc.binary_join_element_wise(*[pc.utf8_trim_whitespace(table[p]) for p in parts], " ")
    event_time = parse_wall_clock(joined, fmt)
    known = pc.is_valid(event_time)
    unplaced, table, event_time = table.filter(pc.invert(known)), table.filter(known), event_time.filter(known)
    days = pc.cast(pc.cast(event_time, pa.date32()), pa.int32()).to_numpy()
    order = np.argsort(days, kind="stable")
    return Replayable(spec.name, header, table.take(order), pc.take(event_time, order).combine_chunks(), days[order],
                      unplaced, len(blank_lines(data)))


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


class _ShiftedFile:
    """One source file's rows moved by each shift a replay asks for (computed once per shift over
    the whole file, in instants: ``wall_clock``; or as wall-clock text when the scenario says so),
    and the rows whose moved local date is a play day.

    Moved in instants, a reading keeps its own instant, so none lands on an hour the target year's clock skips. Where
    the target's clock repeats an hour, the two passes are written in time order with a key of the
    first pass leading the second (that is how the parser tells them apart); a second pass that
    shares no key with the first cannot be told apart without an offset in the text, and is set
    aside with that reason rather than merged into the first."""

    def __init__(self, data: Replayable, scenario: Scenario, parts: list[str], fmt: str):
        schema = scenario.schema_
        self.data, self.zone, self.fmt = data, schema.timezone, fmt
        self.in_instants = scenario.source.time_shift_clock == "instant"
        columns = data.table.column_names
        self.series = data.table[schema.series] if schema.series in columns else None
        self.keys = [data.table[k] for k in schema.key if k in columns and k not in parts and k != schema.series]
        self.moved: dict[dt.timedelta, tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]] = {}

    def _moved(self, move: dt.timedelta) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]:
        """Texts, local days, write rank (second passes: a shared key first) and set-aside rows."""
        if move not in self.moved:
            rank, aside = np.zeros(self.data.table.num_rows, dtype=np.int8), np.zeros(self.data.table.num_rows, dtype=bool)
            walls = self.data.event_time
            if move and not self.in_instants:
                walls = pc.add(walls, pa.scalar(move, pa.duration("s")))
            elif move:
                instants, skipped = to_instants(walls, self.zone, self.series, self.keys, RepeatedHours())
                moved = pc.add(instants, pa.scalar(move, pa.duration("s")))
                as_text = pc.add(walls, pa.scalar(move, pa.duration("s")))  # named no instant in the source either
                walls = pc.if_else(pa.array(skipped), as_text, pc.local_timestamp(moved).cast(walls.type))
                self._second_passes(walls, moved, rank, aside)
            days = pc.cast(pc.cast(walls, pa.date32()), pa.int32()).to_numpy()
            self.moved[move] = (pc.strftime(walls, format=self.fmt), days, rank, aside)
        return self.moved[move]

    def _second_passes(self, walls: pa.Array, moved: pa.Array, rank: np.ndarray, aside: np.ndarray) -> None:
        later = pc.assume_timezone(walls, self.zone, ambiguous="latest", nonexistent="latest")
        earlier = pc.assume_timezone(walls, self.zone, ambiguous="earliest", nonexistent="earliest")
        repeated = np.flatnonzero(pc.fill_null(pc.not_equal(earlier, later), False).to_numpy(zero_copy_only=False))
        passes: dict[tuple, tuple[set, list[int]]] = {}
        for i in repeated:  # one hour a year per series: few rows
            hour = (walls[int(i)].as_py(), self.series[int(i)].as_py() if self.series is not None else None)
            first, second = passes.setdefault(hour, (set(), []))
            key = tuple(k[int(i)].as_py() for k in self.keys)
            if moved[int(i)] == later[int(i)]:
                second.append((int(i), key))
            else:
                first.add(key)
        for first, second in passes.values():
            shared = [i for i, key in second if key in first]
            if shared:
                rank[[i for i, _ in second]] = 2
                rank[shared[0]] = 1
            else:
                aside[[i for i, _ in second]] = True

    def rows_of(self, day: dt.date, shift: dt.timedelta, last: dt.date) -> tuple[np.ndarray, pa.Array, int]:
        """Row positions and moved event-time texts of every reading that plays on ``day`` (those of
        the day's source day and of its neighbours' that a clock change moves across midnight; a
        neighbour that loops the last week differently is a repeat, not a reading of this day), and
        how many were set aside."""
        positions, texts, aside = [], [], 0
        moves = {play: play - source_day(play, shift, last) for play in (day - dt.timedelta(days=1), day,
                                                                          day + dt.timedelta(days=1))}
        for play, move in moves.items():
            if move != moves[day]:
                continue
            source = (play - move - EPOCH).days
            lo, hi = np.searchsorted(self.data.days, [source, source + 1])
            moved_texts, moved_days, rank, set_aside = self._moved(move)
            here = lo + np.flatnonzero(moved_days[lo:hi] == (day - EPOCH).days)
            aside += int(set_aside[here].sum())
            here = here[~set_aside[here]]
            here = here[np.argsort(rank[here], kind="stable")] if rank[here].any() else here
            positions.append(here)
            texts.append(moved_texts.take(here))
        return np.concatenate(positions), pa.concat_arrays(texts), aside


def _with_times(rows: pa.Table, texts: pa.Array, parts: list[str]) -> pa.Table:
    if len(parts) == 1:
        return rows.set_column(rows.schema.get_field_index(parts[0]), parts[0], texts)
    pieces = pc.split_pattern(texts, " ")  # a composed time: one space-separated part per column
    for index, name in enumerate(parts):
        rows = rows.set_column(rows.schema.get_field_index(name), name, pc.list_element(pieces, index))
    return rows


@dataclass
class Replayed:
    """The landed files with the rows (lines after the header) each holds, and the readings set
    aside: a repeated hour's second pass that the source's format cannot tell from the first."""

    files: list[tuple[StoredObject, int]]
    set_aside: int = 0


def replay(scenario: Scenario, lake: Lake, days: list[dt.date], today: dt.date | None = None) -> Replayed:
    """Write each play-time day's rows of every source file to ``landing/<scenario>/<day>/``."""
    if scenario.source.kind == "gateway":
        return Replayed([])  # the gateways land files themselves
    shift = time_shift(scenario, today)
    if scenario.source.kind == "image_replay":
        return Replayed(image_replay.replay_images(scenario, lake, days, shift))
    parts, fmt = _time_parts(scenario)
    dialect = scenario.source.csv
    result = Replayed([])
    files = load_dataset(scenario)
    last = max(f.last_day for f in files)
    for data in files:
        stem = data.name.rsplit(".", 1)[0]
        shifted = _ShiftedFile(data, scenario, parts, fmt)
        for day in days:
            positions, texts, aside = shifted.rows_of(day, shift, last)
            result.set_aside += aside
            first = day - shift == data.first_day  # where what has no day of its own lands
            if not len(positions) and not first:
                continue
            rows = _with_times(data.table.take(positions), texts, parts)
            if first:
                rows = pa.concat_tables([rows, data.unplaced])
            buffer = io.BytesIO()
            pv.write_csv(rows.rename_columns(data.header), buffer,
                         pv.WriteOptions(quoting_style="needed", delimiter=dialect.delimiter))
            blank = data.blank_lines if first else 0
            buffer.write(b"\n" * blank)
            key = join_key(landing_prefix(scenario.name, day), f"{stem}_{day.isoformat()}.csv")
            result.files.append((lake.put_bytes(key, buffer.getvalue()), rows.num_rows + blank))  # lines after the header
    return result
