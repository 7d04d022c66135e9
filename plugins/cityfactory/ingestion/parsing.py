"""Parse one landed file to the scenario's schema, keeping every record accounted for.

Each record ends up either as a typed row or as a rejected row with a reason naming the column,
the value and the rule it broke. Problems with the file as a whole (empty, missing columns) are
reported as file errors and their rows are rejected too, so ``rows_in == accepted + rejected``.
The file's dialect (delimiter, decimal mark, quoting, missing-value spellings, blank header
columns) and format (CSV or JSON lines) come from the scenario. Event times are the scenario's
wall clock and become UTC instants. The work is vectorised in pyarrow; Python loops touch only
the rejected rows.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from cityfactory.config.scenarios import Column, ComposedTime, Scenario, Schema, Source
from cityfactory.ingestion.wall_clock import (
    RepeatedHours,
    parse_wall_clock,
    to_instants,
)

PATTERNS = {
    "int": r"^\s*[+-]?\d+\s*$",
    "float": r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$",
}
INSTANT = pa.timestamp("s", tz="UTC")
ARROW_TYPES = {"string": pa.string(), "int": pa.int64(), "float": pa.float64(), "timestamp": INSTANT}
REJECT_SCHEMA = pa.schema(
    [("source_file", pa.string()), ("line", pa.int64()), ("record", pa.string()), ("reason", pa.string())]
)
LINE = "_line"
SOURCE = "_source_file"
CHUNK_ROWS = 1 << 18  # rows typed and checked at a time
LANDING_DAY = "_landing_day"


@dataclass
class ReadFile:
    """One file split into string rows (with ``_line``, ``_source_file``, ``_landing_day``) and
    the records that could not even be split into fields."""

    source_file: str
    rows_in: int
    strings: pa.Table | None
    rejected: list[dict] = field(default_factory=list)  # REJECT_SCHEMA rows
    file_errors: list[str] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    blank: int = 0  # empty or whitespace-only lines: counted in rows_in, neither bronze nor quarantine


@dataclass
class Converted:
    accepted: pa.Table  # bronze_schema plus _landing_day
    rejected_table: pa.Table  # REJECT_SCHEMA plus dt

    @property
    def rejected(self) -> list[dict]:
        return self.rejected_table.to_pylist()


def bronze_schema(schema: Schema) -> pa.Schema:
    fields = [
        pa.field(name, ARROW_TYPES[col.type], nullable=col.nullable, metadata=_field_metadata(col))
        for name, col in schema.columns.items()
    ]
    if isinstance(schema.event_time, ComposedTime):
        composed = schema.event_time
        fields.append(pa.field(composed.name, INSTANT, nullable=False, metadata={
            "description": f"event time from {', '.join(composed.from_)} ({schema.timezone}), as UTC"}))
    return pa.schema([*fields, pa.field(SOURCE, pa.string()), pa.field(LINE, pa.int64())])


def empty_bronze(schema: Schema) -> pa.Table:
    """A bronze table with no rows (and the ``dt`` partition column)."""
    return bronze_schema(schema).empty_table().append_column("dt", pa.array([], pa.date32()))


def _field_metadata(col: Column) -> dict[str, str]:
    meta = {"description": col.description}
    if col.unit:
        meta["unit"] = col.unit
    if col.personal:
        meta["personal"] = col.personal
    return meta


def _reject(source: str, line: int, record: str, reason: str) -> dict:
    return {"source_file": source, "line": line, "record": record, "reason": reason}


def _invalid_utf8_lines(data: bytes) -> tuple[bytes, dict[int, tuple[str, str]]]:
    """The data with lines that are not UTF-8 repaired (to be rejected after the split), and those
    lines' numbers with reasons."""
    try:
        data.decode("utf-8")
        return data, {}
    except UnicodeDecodeError:
        pass
    lines, bad = data.split(b"\n"), {}
    for number, line in enumerate(lines, 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"invalid UTF-8 (byte 0x{line[exc.start]:02x} at column {exc.start + 1})"
            bad[number] = (reason, line.decode("utf-8", "replace").removesuffix("\r"))
            lines[number - 1] = line.decode("utf-8", "replace").encode()
    return b"\n".join(lines), bad


def _first_line(data: bytes) -> str:
    return re.split(rb"\r\n|\r|\n", data, maxsplit=1)[0].decode("utf-8", "replace")  # any line ending


def _header(data: bytes, source: Source) -> list[str]:
    dialect = source.csv
    return next(csv.reader([_first_line(data)], delimiter=dialect.delimiter, quotechar=dialect.quote_char), [])


def unreadable_file(data: bytes, source_file: str, problem: str, reason: str | None = None) -> ReadFile:
    """A file that cannot be split into records as a whole: a file error naming it (``problem``),
    and every line after the first quarantined with ``reason`` (so nothing is lost and the rest of
    the batch goes on)."""
    lines = data.splitlines()
    rejected = [_reject(source_file, n, line.decode("utf-8", "replace")[:10_000], reason or f"file {problem}")
                for n, line in enumerate(lines[1:], 2)]
    return ReadFile(source_file, len(rejected), None, rejected, [f"{source_file}: {problem}"])


def read_file(data: bytes, source_file: str, scenario: Scenario, landing_day: dt.date) -> ReadFile:
    """Split a landed file into string rows; structural problems are rejected here."""
    if scenario.source.format == "jsonl":
        return _read_jsonl(data, source_file, scenario, landing_day)
    schema, dialect = scenario.schema_, scenario.source.csv
    data = data.removeprefix(b"\xef\xbb\xbf")
    cleaned, bad_utf8 = _invalid_utf8_lines(data)
    header = [] if 1 in bad_utf8 else _header(cleaned, scenario.source)
    if not header or not any(h.strip() for h in header):
        return unreadable_file(cleaned, source_file, "empty file (no header)", "file has no header")

    names = [h if h.strip() else f"_blank_{i}" for i, h in enumerate(header)]
    blank = [n for n in names if n.startswith("_blank_")]
    needed = list(schema.columns)
    missing = [c for c in needed if c not in names]
    problem = None
    if missing:
        problem = f"header lacks column(s) {', '.join(missing)}"
        if len(header) == 1 and any(d in header[0] for d in ";\t|,".replace(dialect.delimiter, "")):
            problem += f" (wrong delimiter? the scenario declares {dialect.delimiter!r})"
    elif len(set(names)) != len(names):
        problem = "header repeats a column name"
    elif blank and dialect.blank_header_columns == "error":
        problem = f"header has {len(blank)} blank column name(s)"
    if problem:
        return unreadable_file(cleaned, source_file, f"{problem}; header was {_first_line(cleaned)[:200]!r}", problem)

    result = ReadFile(source_file, 0, None)
    result.extra_columns = [c for c in names if c not in needed and c not in schema.ignored_columns and c not in blank]
    invalid: list[int] = []

    def on_invalid_row(row) -> str:
        invalid.append(row.number)
        if row.number not in bad_utf8 and row.text.strip():  # rejected below for its bytes, or blank
            reason = f"wrong number of fields (expected {len(names)}, got {row.actual_columns})"
            result.rejected.append(_reject(source_file, row.number, row.text, reason))
        return "skip"

    if not re.search(rb"[\r\n].", cleaned, re.DOTALL):  # a header and nothing after it: no records
        return result
    table = pv.read_csv(
        pa.py_buffer(cleaned),
        read_options=pv.ReadOptions(column_names=names, skip_rows=1, use_threads=False, block_size=1 << 26),
        parse_options=pv.ParseOptions(delimiter=dialect.delimiter, quote_char=dialect.quote_char,
                                      newlines_in_values=True, ignore_empty_lines=False,
                                      invalid_row_handler=on_invalid_row),
        convert_options=pv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()), include_columns=needed,
                                          null_values=dialect.null_values, strings_can_be_null=True),
    )
    n = table.num_rows
    result.rows_in = n + len(invalid)
    lines = np.arange(2, result.rows_in + 2)
    if invalid:
        lines = np.setdiff1d(lines, np.asarray(invalid), assume_unique=True)[:n]
    if bad_utf8:
        result.rejected += [_reject(source_file, n, text, reason) for n, (reason, text) in sorted(bad_utf8.items()) if n > 1]
        keep = ~np.isin(lines, np.fromiter(bad_utf8, dtype=np.int64))
        table, lines = table.filter(pa.array(keep)), lines[keep]
    blank = blank_lines(cleaned)
    result.blank = int(np.isin(blank, np.asarray(invalid, dtype=np.int64)).sum())
    if len(blank):
        keep = ~np.isin(lines, blank)
        result.blank += int((~keep).sum())
        table, lines = table.filter(pa.array(keep)), lines[keep]
    result.strings = _with_provenance(table, lines, source_file, landing_day)
    return result


def blank_lines(data: bytes) -> np.ndarray:
    """1-based numbers of the lines that hold nothing but spaces or tabs (any line ending)."""
    starts = [m.start() for m in re.finditer(rb"(?m)^[ \t]*\r?$", data)]
    if not starts:
        return np.zeros(0, dtype=np.int64)
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
    numbers = np.searchsorted(newlines, np.asarray(starts), side="left") + 1
    return numbers[numbers <= len(newlines)] if data.endswith(b"\n") else numbers


def _with_provenance(table: pa.Table, lines: np.ndarray, source_file: str, landing_day: dt.date) -> pa.Table:
    n = table.num_rows
    return (table.append_column(LINE, pa.array(lines, pa.int64()))
            .append_column(SOURCE, pa.repeat(pa.scalar(source_file), n))
            .append_column(LANDING_DAY, pa.repeat(pa.scalar(landing_day, pa.date32()), n)))


def _dig(message: dict, path: str):
    value = message
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return None if value is None or isinstance(value, (dict, list)) else str(value)


def _read_jsonl(data: bytes, source_file: str, scenario: Scenario, landing_day: dt.date) -> ReadFile:
    """One JSON object per line; each column taken from its declared dotted path."""
    paths = scenario.source.jsonl.fields
    columns = list(scenario.schema_.columns)
    result = ReadFile(source_file, 0, None)
    values: dict[str, list] = {c: [] for c in columns}
    lines: list[int] = []
    for number, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").splitlines(), 1):
        if not raw.strip():
            continue
        result.rows_in += 1
        text = raw.decode("utf-8", "replace")
        try:
            message = json.loads(raw)
        except ValueError as exc:
            message, problem = None, str(exc)
        else:
            problem = f"a JSON {type(message).__name__}"
        if not isinstance(message, dict):
            result.rejected.append(_reject(source_file, number, text[:10_000], f"not a JSON object: {problem}"))
            continue
        for column in columns:
            values[column].append(_dig(message, paths.get(column, column)))
        lines.append(number)
    table = pa.table({c: pa.array(v, pa.string()) for c, v in values.items()})
    result.strings = _with_provenance(table, np.asarray(lines, dtype=np.int64), source_file, landing_day)
    return result


def convert(strings: pa.Table, scenario: Scenario, chunk_rows: int = CHUNK_ROWS) -> Converted:
    """Type and check the string rows of many files, vectorised, a slice of rows at a time (the
    intermediate arrays of a slice, not of the whole batch, are what costs memory)."""
    seen = RepeatedHours()  # repeated wall-clock hours, across slices
    parts = [_convert_slice(strings.slice(start, chunk_rows), scenario, seen)
             for start in range(0, max(strings.num_rows, 1), chunk_rows)]
    return Converted(pa.concat_tables([p.accepted for p in parts]), pa.concat_tables([p.rejected_table for p in parts]))


def _convert_slice(strings: pa.Table, scenario: Scenario, seen: RepeatedHours) -> Converted:
    schema = scenario.schema_
    typed, problems = _convert(strings, scenario, seen)
    bad = np.zeros(strings.num_rows, dtype=bool)
    for mask, _ in problems:
        bad |= mask
    keep = pa.array(~bad)
    names = [f.name for f in bronze_schema(schema)][:-2]
    columns = [typed[name].filter(keep) for name in names]
    accepted = pa.Table.from_arrays(
        [*columns, strings[SOURCE].filter(keep), strings[LINE].filter(keep)], schema=bronze_schema(schema)
    )
    return Converted(
        accepted.append_column(LANDING_DAY, strings[LANDING_DAY].filter(keep)),
        _value_rejects(strings, list(schema.columns), problems, bad),
    )


def parse_file(data: bytes, source_file: str, scenario: Scenario, landing_day: dt.date) -> tuple[ReadFile, Converted]:
    """One file end to end (the pipeline reads many files, then converts them together)."""
    read = read_file(data, source_file, scenario, landing_day)
    strings = read.strings if read.strings is not None else empty_strings(scenario.schema_)
    return read, convert(strings, scenario)


def empty_strings(schema: Schema) -> pa.Table:
    fields = [(n, pa.string()) for n in list(schema.columns)]
    return pa.schema([*fields, (LINE, pa.int64()), (SOURCE, pa.string()), (LANDING_DAY, pa.date32())]).empty_table()


# A rule a row can break: the rows that break it, and the parts of its reason (text, or arrays
# whose value at the row is spliced in), so reasons are built for all rejected rows at once.
Problem = tuple[np.ndarray, list]


def _quoted(values: pa.Array) -> list:
    return ["'", values, "'"]


def _mask(array) -> np.ndarray:
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)


def _number(raw: pa.Array, col: Column, decimal: str, name: str, problems: list[Problem]) -> pa.Array:
    text = pc.replace_substring(raw, ",", ".") if decimal == "," and col.type == "float" else raw
    missing = _mask(pc.is_null(raw))
    valid = _mask(pc.match_substring_regex(text, PATTERNS[col.type]))
    unparsable = ~valid & ~missing
    cleaned = pc.utf8_trim_whitespace(pc.if_else(pa.array(valid), text, pa.scalar(None, pa.string())))
    values = pc.cast(cleaned, ARROW_TYPES[col.type])
    noun = "an integer" if col.type == "int" else "a number"
    problems.append((unparsable, [f"{name}=", *_quoted(raw), f" is not {noun}"]))
    unit = f" {col.unit}" if col.unit else ""
    shown = pc.utf8_trim_whitespace(raw)
    if col.min is not None:
        low = _mask(pc.less(values, col.min))
        problems.append((low, [f"{name}=", shown, f" is below the minimum {col.min:g}{unit}"]))
    if col.max is not None:
        high = _mask(pc.greater(values, col.max))
        problems.append((high, [f"{name}=", shown, f" is above the maximum {col.max:g}{unit}"]))
    return values


def _wall_clock(raw: pa.Array, fmt: str, name: str, missing: np.ndarray, problems: list[Problem]) -> pa.Array:
    values = parse_wall_clock(raw, fmt)
    unparsable = _mask(pc.is_null(values)) & ~missing
    problems.append((unparsable, [f"{name}=", *_quoted(raw), f" does not match {fmt}"]))
    return values


def _instants(wall: pa.Array, zone: str, table: pa.Table, schema: Schema, name: str, problems: list[Problem],
              seen: RepeatedHours) -> pa.Array:
    """Wall-clock times in ``zone`` as UTC instants (``wall_clock.to_instants``); a skipped
    (spring-forward) wall time is rejected."""
    others = [table[k] for k in schema.key if k not in (name, schema.series)]
    instants, skipped = to_instants(wall, zone, table[schema.series] if schema.series else None, others, seen)
    problems.append((skipped, [f"{name}=", wall, f" does not exist in {zone} (skipped by the daylight-saving change)"]))
    return instants


def _convert(table: pa.Table, scenario: Scenario, seen: RepeatedHours) -> tuple[dict[str, pa.Array], list[Problem]]:
    schema, decimal = scenario.schema_, scenario.source.csv.decimal
    typed: dict[str, pa.Array] = {}
    problems: list[Problem] = []
    raw_columns = {name: table[name].combine_chunks() for name in list(schema.columns)}
    for name, col in schema.columns.items():
        raw = raw_columns[name]
        missing = _mask(pc.is_null(raw))
        if not col.nullable:
            problems.append((missing, [f"{name} is missing"]))
        if col.type == "string":
            typed[name] = raw
        elif col.type == "timestamp":
            typed[name] = _wall_clock(raw, col.format, name, missing, problems)
        else:
            typed[name] = _number(raw, col, decimal, name, problems)
    time_name = schema.time_column
    if isinstance(schema.event_time, ComposedTime):
        parts = [raw_columns[c] for c in schema.event_time.from_]
        joined = pc.binary_join_element_wise(*[pc.utf8_trim_whitespace(p) for p in parts], " ")
        missing = _mask(pc.is_null(joined))
        problems.append((missing, [f"{time_name}: one of {', '.join(schema.event_time.from_)} is missing"]))
        wall = _wall_clock(joined, schema.event_time.format, time_name, missing, problems)
    else:
        wall = typed[time_name]
    typed[time_name] = _instants(wall, schema.timezone, table, schema, time_name, problems, seen)
    for name, col in schema.columns.items():
        if col.type == "timestamp" and name != time_name:
            typed[name] = pc.assume_timezone(typed[name], schema.timezone, ambiguous="earliest", nonexistent="earliest")
    days = pc.cast(wall, pa.date32())
    landing = table[LANDING_DAY].combine_chunks()
    elsewhere = _mask(pc.not_equal(days, landing))
    problems.append((elsewhere, ["event date ", days, " is not the file's landing date ", landing]))
    return typed, problems


def _json_text(values: pa.Array) -> pa.Array:
    """Strings as JSON string literals (null as null), vectorised."""
    escaped = values
    for plain, code in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        escaped = pc.replace_substring(escaped, plain, code)
    return pc.fill_null(pc.binary_join_element_wise('"', escaped, '"', ""), "null")


def _reasons(problems: list[Problem], rows: np.ndarray) -> pa.Array:
    """Each selected row's reasons, joined with '; ' in rule order."""
    texts = []
    for mask, parts in problems:
        hit = mask[rows]
        if not hit.any():
            continue
        pieces = [p if isinstance(p, str) else pc.cast(pc.take(p, pa.array(rows)), pa.string()) for p in parts]
        arrays = [pa.array([p] * len(rows), pa.string()) if isinstance(p, str) else p for p in pieces]
        text = pc.binary_join_element_wise(*arrays, "")
        texts.append(pc.if_else(pa.array(hit), text, pa.scalar(None, pa.string())))
    return pc.binary_join_element_wise(*texts, "; ", null_handling="skip")


def _value_rejects(table: pa.Table, declared: list[str], problems: list[Problem], bad: np.ndarray) -> pa.Table:
    """The rejected rows as a quarantine table (REJECT_SCHEMA plus ``dt``), built column-wise."""
    rows = np.flatnonzero(bad)
    index = pa.array(rows)
    if not len(rows):
        return REJECT_SCHEMA.append(pa.field("dt", pa.date32())).empty_table()
    strings = {name: pc.take(table[name], index) for name in declared}
    empty = np.ones(len(rows), dtype=bool)
    for values in strings.values():
        empty &= _mask(pc.is_null(values))
    reasons = pc.if_else(pa.array(empty), pa.scalar("empty line"), _reasons(problems, rows))
    fields = [pc.binary_join_element_wise(json.dumps(name) + ": ", _json_text(values), "") for name, values in strings.items()]
    record = pc.binary_join_element_wise("{", pc.binary_join_element_wise(*fields, ", "), "}", "")
    return pa.table({"source_file": pc.take(table[SOURCE], index), "line": pc.take(table[LINE], index), "record": record,
                     "reason": reasons, "dt": pc.take(table[LANDING_DAY], index)})
