"""A CSV dataset's profile, read from its files: dialect, columns with types and ranges, the event
time (one column, date and time, or year/month/day/hour) and its step, and the series key.

Guesses are kept modest and said out loud (``Profile.notes``): a code such as -200 that stands for
"missing" is only guessed when it sits far below every real value of a column.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import median
from typing import Literal

from cityfactory.profiling.drafts import ScaffoldError

SNIFFED_BYTES = 1 << 16
NULL_WORDS = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "-")
SENTINELS = (-99.0, -200.0, -999.0, -9999.0, -99999.0)
MAX_CATEGORIES = 40  # a string column with more distinct values is an identifier or free text
DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d", "%d-%m-%Y", "%Y%m%d")
TIME_FORMATS = ("%H:%M:%S", "%H:%M", "%H.%M.%S", "%H.%M", "%H")
CALENDAR_PARTS = ("year", "month", "day", "hour")
CALENDAR_FORMAT = "%Y %m %d %H"
_INT = re.compile(r"^[+-]?\d+$")


class ProfileError(ScaffoldError):
    """The files cannot be profiled as one table (names the file and what is wrong)."""


ColumnType = Literal["string", "int", "float", "timestamp"]


@dataclass(frozen=True)
class ColumnProfile:
    name: str
    type: ColumnType
    null_fraction: float
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] = ()  # a string column's values, when there are few
    format: str | None = None  # a timestamp column's strptime format
    typical_change: float | None = None  # median |change| between a series' consecutive readings
    longest_repeat: int | None = None  # the longest run of one unchanged value within a series


@dataclass(frozen=True)
class EventTime:
    """Where the time of a row is: one column, or several joined by spaces (``format`` covers all)."""

    columns: tuple[str, ...]
    format: str
    step: dt.timedelta
    first: dt.datetime
    last: dt.datetime

    @property
    def composed(self) -> bool:
        return len(self.columns) > 1


@dataclass(frozen=True)
class TableProfile:
    files: tuple[Path, ...]
    delimiter: str
    decimal: str
    null_values: tuple[str, ...]
    blank_header_columns: bool
    columns: dict[str, ColumnProfile]  # in the header's order
    time: EventTime
    series: str | None
    series_values: tuple[str, ...]
    rows: int
    row_numbers: tuple[str, ...] = ()  # columns that only count the file's lines (1, 2, 3, ...)
    notes: list[str] = field(default_factory=list)

    def measured(self) -> list[ColumnProfile]:
        """Numeric columns that are readings (not parts of the time, not line numbers)."""
        return [c for c in self.columns.values() if c.type in ("int", "float") and c.name not in self.time.columns
                and c.name not in self.row_numbers]


def profile_table(files: list[Path], series: str | None = None) -> TableProfile:
    """Profile ``files`` (one layout: one file per station, say, or one file of all)."""
    if not files:
        raise ProfileError("no files given")
    dialect = _dialect(files[0])
    header, rows, starts = None, [], []
    for path in files:
        file_header, file_rows = _read(path, dialect)
        if header is not None and file_header != header:
            raise ProfileError(f"{path}: header {file_header} differs from {files[0].name}'s {header}")
        header = file_header
        starts.append(len(rows))
        rows += file_rows
    if not rows:
        raise ProfileError(f"{files[0]}: no rows under the header")
    blank = [i for i, name in enumerate(header) if not name.strip()]
    names = [n for n in header if n.strip()]
    values = {name: [row[i] if i < len(row) else "" for row in rows] for i, name in enumerate(header) if name.strip()}
    decimal = _decimal(values, dialect.delimiter)
    notes: list[str] = []
    nulls = set(NULL_WORDS) | _sentinels(values, decimal, notes)
    columns = {name: _column(name, values[name], decimal, nulls) for name in names}
    time = _event_time(columns, values, files[0])
    if time.format != CALENDAR_FORMAT:  # a date's or a time's text is declared as text, whatever it looks like
        columns |= {c: replace(columns[c], type="string", min=None, max=None) for c in time.columns if columns[c].type != "timestamp"}
    series_column = series or _series_key(columns, values, time)
    if series_column is not None and series_column not in columns:
        raise ProfileError(f"--series {series_column!r} is not a column of {files[0].name} ({', '.join(names)})")
    columns = _dynamics(columns, values, time, series_column, decimal, nulls)
    return TableProfile(
        files=tuple(files), delimiter=dialect.delimiter, decimal=decimal,
        null_values=tuple(sorted({""} | (nulls & _all_values(values)))),
        blank_header_columns=bool(blank), columns=columns, time=time, series=series_column,
        series_values=tuple(sorted(set(values[series_column]))) if series_column else (),
        rows=len(rows), row_numbers=_row_numbers(columns, values, starts), notes=notes)


def _row_numbers(columns: dict[str, ColumnProfile], values: dict[str, list[str]], starts: list[int]) -> tuple[str, ...]:
    """Integer columns that number each file's lines 1, 2, 3, ...: no reading, left out of bronze."""
    ends = [*starts[1:], len(next(iter(values.values())))]
    return tuple(c.name for c in columns.values() if c.type == "int" and c.null_fraction == 0 and all(
        [int(v) for v in values[c.name][a:b]] == list(range(1, b - a + 1)) for a, b in zip(starts, ends, strict=True)))


def _dialect(path: Path) -> type[csv.Dialect]:
    sample = path.read_text(encoding="utf-8-sig", errors="replace")[:SNIFFED_BYTES]
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        raise ProfileError(f"{path}: cannot tell its delimiter (tried , ; tab |)") from None


def _read(path: Path, dialect) -> tuple[list[str], list[list[str]]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=dialect.delimiter, quotechar=dialect.quotechar or '"')
        try:
            header = next(reader)
        except StopIteration:
            raise ProfileError(f"{path}: empty file") from None
        return [h.strip() for h in header], [row for row in reader if any(v.strip() for v in row)]


def _all_values(values: dict[str, list[str]]) -> set[str]:
    return {v for column in values.values() for v in set(column)}


def _decimal(values: dict[str, list[str]], delimiter: str) -> str:
    """',' when the delimiter is not a comma and numbers are written like 12,5."""
    if delimiter == ",":
        return "."
    comma = re.compile(r"^[+-]?\d+,\d+$")
    return "," if any(comma.match(v) for column in values.values() for v in column[:1000]) else "."


def _number(text: str, decimal: str) -> float | None:
    try:
        return float(text.replace(decimal, ".") if decimal == "," else text)
    except ValueError:
        return None


def _sentinels(values: dict[str, list[str]], decimal: str, notes: list[str]) -> set[str]:
    """Texts of a code for "missing" (-200, -999, ...) that sits far below a column's real values."""
    found: dict[str, list[str]] = defaultdict(list)
    for name, column in values.items():
        numbers = {v: _number(v, decimal) for v in set(column)}
        real = sorted(x for x in numbers.values() if x is not None and x not in SENTINELS)
        for text, x in numbers.items():
            if x in SENTINELS and real and (real[0] >= 0 or real[0] - x > real[-1] - real[0]):
                found[text].append(name)
    notes += [f"{text} read as 'missing' in {', '.join(names)} (far below every other value)"
              for text, names in sorted(found.items())]
    return set(found)


def _column(name: str, column: list[str], decimal: str, nulls: set[str]) -> ColumnProfile:
    present = [v.strip() for v in column if v.strip() not in nulls]
    null_fraction = 1 - len(present) / len(column)
    if present and all(_INT.match(v) for v in present):
        numbers = [int(v) for v in present]
        return ColumnProfile(name, "int", null_fraction, min(numbers), max(numbers))
    numbers = [_number(v, decimal) for v in present]
    if present and all(x is not None for x in numbers):
        return ColumnProfile(name, "float", null_fraction, min(numbers), max(numbers))
    distinct = sorted(set(present))
    if fmt := _time_format(distinct, ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M",
                                      *(f"{d} {t}" for d in DATE_FORMATS for t in TIME_FORMATS[:2]))):
        return ColumnProfile(name, "timestamp", null_fraction, format=fmt)
    return ColumnProfile(name, "string", null_fraction,
                         categories=tuple(distinct) if len(distinct) <= MAX_CATEGORIES else ())


def _time_format(texts: list[str], formats) -> str | None:
    """The first format every text parses with (day-first before month-first, as most of the world)."""
    for fmt in formats:
        try:
            for text in texts:
                dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
        return fmt
    return None


def _event_time(columns: dict[str, ColumnProfile], values: dict[str, list[str]], path: Path) -> EventTime:
    stamps = [c.name for c in columns.values() if c.type == "timestamp"]
    if stamps:
        parts, fmt = (stamps[0],), columns[stamps[0]].format
    elif calendar := _calendar_parts(columns):
        parts, fmt = calendar, CALENDAR_FORMAT
    else:
        parts, fmt = _date_and_time(columns, values, path)
    times = sorted({t for t in _row_times(values, parts, fmt) if t is not None})
    if not times:
        raise ProfileError(f"{path}: no row has a time in {', '.join(parts)}")
    steps = [b - a for a, b in itertools.pairwise(times)]
    return EventTime(parts, fmt, median(steps) if steps else dt.timedelta(hours=1), times[0], times[-1])


def _row_times(values: dict[str, list[str]], parts: tuple[str, ...], fmt: str) -> list[dt.datetime | None]:
    """Each row's time (None where its text is blank or does not parse)."""
    found = []
    for texts in zip(*(values[c] for c in parts), strict=True):
        try:
            found.append(dt.datetime.strptime(" ".join(t.strip() for t in texts), fmt))
        except ValueError:
            found.append(None)
    return found


def _calendar_parts(columns: dict[str, ColumnProfile]) -> tuple[str, ...] | None:
    by_lower = {c.name.lower(): c.name for c in columns.values() if c.type == "int"}
    return tuple(by_lower[p] for p in CALENDAR_PARTS) if all(p in by_lower for p in CALENDAR_PARTS) else None


def _date_and_time(columns, values, path: Path) -> tuple[tuple[str, str], str]:
    strings = [c.name for c in columns.values() if c.type != "timestamp"]  # '20.00' reads as a number too
    dates = [(c, f) for c in strings if (f := _time_format(sorted(set(values[c])), DATE_FORMATS))]
    times = [(c, f) for c in strings if (f := _time_format(sorted(set(values[c])), TIME_FORMATS))
             and c not in {d for d, _ in dates}]
    if not dates or not times:
        raise ProfileError(f"{path}: no column holds the time of a row (a timestamp, date and time, or "
                           f"year, month, day and hour); columns: {', '.join(columns)}")
    (date, date_format), (time, time_format) = dates[0], times[0]
    return (date, time), f"{date_format} {time_format}"


def _dynamics(columns, values, time: EventTime, series: str | None, decimal: str, nulls: set[str]):
    """Each numeric reading's typical hour-to-hour change and longest unchanged run, per series in
    time order."""
    moments = _row_times(values, time.columns, time.format)
    order: dict[str, list[int]] = defaultdict(list)
    for i in sorted((i for i, t in enumerate(moments) if t is not None), key=moments.__getitem__):
        order[values[series][i] if series else ""].append(i)
    profiled = dict(columns)
    for name, column in columns.items():
        if column.type not in ("int", "float") or name in time.columns:
            continue
        changes, longest = [], 1
        for rows in order.values():
            readings = [_number(values[name][i], decimal) if values[name][i].strip() not in nulls else None for i in rows]
            run = 1
            for a, b in itertools.pairwise(readings):
                if a is not None and b is not None:
                    changes.append(abs(b - a))
                    run = run + 1 if a == b else 1
                    longest = max(longest, run)
        profiled[name] = replace(column, typical_change=median(changes) if changes else None, longest_repeat=longest)
    return profiled


def _series_key(columns, values, time: EventTime) -> str | None:
    """The column that makes (time, column) unique where time alone is not: stations, sensors."""
    rows = len(values[time.columns[0]])
    moments = list(zip(*(values[c] for c in time.columns), strict=True))
    if len(set(moments)) == rows:
        return None
    for column in sorted(columns.values(), key=lambda c: len(c.categories)):
        if (column.type == "string" and column.categories and column.name not in time.columns
                and len(set(zip(moments, values[column.name], strict=True))) == rows):
            return column.name
    repeated = Counter(moments).most_common(1)[0]
    raise ProfileError(f"rows repeat the time {' '.join(repeated[0])} ({repeated[1]} times) and no column tells "
                       "them apart as a series: pass --series COLUMN")
