"""Parse one landed CSV file to the scenario's schema, keeping every row accounted for.

Each data line ends up either as a typed row or as a rejected row with a reason naming the column,
the value and the rule it broke. Problems with the file as a whole (empty, missing columns) are
reported as file errors and their rows are rejected too, so ``rows_in == accepted + rejected``.
The work is vectorised in pyarrow; Python loops touch only the rejected rows.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from cityfactory.config.scenarios import Column, Schema

PATTERNS = {
    "int": r"^\s*[+-]?\d+\s*$",
    "float": r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$",
}
ARROW_TYPES = {"string": pa.string(), "int": pa.int64(), "float": pa.float64(), "timestamp": pa.timestamp("s")}
REJECT_SCHEMA = pa.schema(
    [("source_file", pa.string()), ("line", pa.int64()), ("record", pa.string()), ("reason", pa.string())]
)
LINE = "_line"
SOURCE = "_source_file"
LANDING_DAY = "_landing_day"


@dataclass
class ReadFile:
    """One file split into string rows (with ``_line``, ``_source_file``, ``_landing_day``) and
    the lines that could not even be split into fields."""

    source_file: str
    rows_in: int
    strings: pa.Table | None
    rejected: list[dict] = field(default_factory=list)  # REJECT_SCHEMA rows
    file_errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Converted:
    accepted: pa.Table  # bronze_schema plus _landing_day
    rejected: list[dict]


def bronze_schema(schema: Schema) -> pa.Schema:
    fields = [
        pa.field(name, ARROW_TYPES[col.type], nullable=col.nullable, metadata=_field_metadata(col))
        for name, col in schema.columns.items()
    ]
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


def _decode(data: bytes) -> tuple[list[str], dict[int, tuple[str, str]]]:
    """Lines of the file, and the 1-based numbers of lines that are not valid UTF-8 with
    (reason, text with the bad bytes replaced)."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        raw_lines: list[str] | list[bytes] = data.decode("utf-8").split("\n")
        bad: dict[int, tuple[str, str]] = {}
    except UnicodeDecodeError:
        raw_lines, bad = [], {}
        for number, line in enumerate(data.split(b"\n"), 1):
            try:
                raw_lines.append(line.decode("utf-8"))
            except UnicodeDecodeError as exc:
                reason = f"invalid UTF-8 (byte 0x{line[exc.start]:02x} at column {exc.start + 1})"
                bad[number] = (reason, line.decode("utf-8", "replace").removesuffix("\r"))
                raw_lines.append("")
    lines = [line.removesuffix("\r") for line in raw_lines]
    if lines and lines[-1] == "":
        lines.pop()
    return lines, bad


def _reject(source: str, line: int, record: str, reason: str) -> dict:
    return {"source_file": source, "line": line, "record": record, "reason": reason}


def read_file(data: bytes, source_file: str, schema: Schema, landing_day: dt.date) -> ReadFile:
    """Split a landed file into string rows; structural problems are rejected here."""
    lines, bad_utf8 = _decode(data)
    if not lines or not lines[0].strip():
        rows = max(len(lines) - 1, 0)
        result = ReadFile(source_file, rows, None, file_errors=[f"{source_file}: empty file (no header)"])
        result.rejected = [_reject(source_file, n, lines[n - 1], "file has no header") for n in range(2, rows + 2)]
        return result

    header = [] if 1 in bad_utf8 else next(csv.reader([lines[0]]))
    result = ReadFile(source_file, len(lines) - 1, None)
    declared = list(schema.columns)
    missing = [c for c in declared if c not in header]
    if missing or len(set(header)) != len(header):
        problem = f"header lacks column(s) {', '.join(missing)}" if missing else "header repeats a column name"
        if len(header) == 1 and any(d in lines[0] for d in ";\t|"):
            problem += " (wrong delimiter? the header has no commas)"
        result.file_errors.append(f"{source_file}: {problem}; header was {lines[0][:200]!r}")
        result.rejected = [_reject(source_file, n, lines[n - 1], problem) for n in range(2, len(lines) + 1)]
        return result
    extra = [c for c in header if c not in schema.columns]
    if extra:
        result.warnings.append(f"{source_file}: extra column(s) {', '.join(extra)} ignored (kept in raw)")

    result.rejected = [_reject(source_file, n, text, reason) for n, (reason, text) in sorted(bad_utf8.items()) if n > 1]

    def on_invalid_row(row) -> str:
        number_text, _, text = row.text.partition(",")
        number = int(number_text)
        if number not in bad_utf8:
            reason = "empty line" if not text else f"wrong number of fields (expected {len(header)}, got {row.actual_columns - 1})"
            result.rejected.append(_reject(source_file, number, text, reason))
        return "skip"

    numbered = "\n".join([f"{LINE},{lines[0]}", *(f"{n},{line}" for n, line in enumerate(lines[1:], 2))])
    table = pv.read_csv(
        pa.py_buffer(numbered.encode("utf-8")),
        parse_options=pv.ParseOptions(invalid_row_handler=on_invalid_row, ignore_empty_lines=False),
        convert_options=pv.ConvertOptions(
            column_types={LINE: pa.int64(), **{h: pa.string() for h in header}},
            include_columns=[*declared, LINE],
            null_values=schema.null_values,
            strings_can_be_null=True,
        ),
        read_options=pv.ReadOptions(use_threads=False),
    )
    n = table.num_rows
    result.strings = table.append_column(SOURCE, pa.repeat(pa.scalar(source_file), n)).append_column(
        LANDING_DAY, pa.repeat(pa.scalar(landing_day, pa.date32()), n)
    )
    return result


def convert(strings: pa.Table, schema: Schema) -> Converted:
    """Type and check the string rows of many files at once (vectorised over the whole batch)."""
    typed, problems = _convert(strings, schema)
    bad = np.zeros(strings.num_rows, dtype=bool)
    for mask, _ in problems:
        bad |= mask
    keep = pa.array(~bad)
    columns = [typed[name].filter(keep) for name in schema.columns]
    accepted = pa.Table.from_arrays(
        [*columns, strings[SOURCE].filter(keep), strings[LINE].filter(keep)], schema=bronze_schema(schema)
    )
    return Converted(
        accepted.append_column(LANDING_DAY, strings[LANDING_DAY].filter(keep)),
        _value_rejects(strings, list(schema.columns), problems, bad),
    )


def parse_file(data: bytes, source_file: str, schema: Schema, landing_day: dt.date) -> tuple[ReadFile, Converted]:
    """One file end to end (the pipeline reads many files, then converts them together)."""
    read = read_file(data, source_file, schema, landing_day)
    strings = read.strings if read.strings is not None else empty_strings(schema)
    return read, convert(strings, schema)


def empty_strings(schema: Schema) -> pa.Table:
    fields = [(n, pa.string()) for n in schema.columns]
    return pa.schema([*fields, (LINE, pa.int64()), (SOURCE, pa.string()), (LANDING_DAY, pa.date32())]).empty_table()


Problem = tuple[np.ndarray, "callable"]


def _mask(array) -> np.ndarray:
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)


def _convert(table: pa.Table, schema: Schema) -> tuple[dict[str, pa.Array], list[Problem]]:
    typed: dict[str, pa.Array] = {}
    problems: list[Problem] = []
    for name, col in schema.columns.items():
        raw = table[name].combine_chunks()
        missing = _mask(pc.is_null(raw))
        if not col.nullable:
            problems.append((missing, lambda i, n=name: f"{n} is missing"))
        if col.type == "string":
            typed[name] = raw
            continue
        if col.type == "timestamp":
            values = pc.strptime(raw, format=col.format, unit="s", error_is_null=True)
            unparsable = _mask(pc.is_null(values)) & ~missing
            problems.append((unparsable, lambda i, n=name, r=raw, f=col.format: f"{n}={r[i].as_py()!r} does not match {f}"))
        else:
            valid = _mask(pc.match_substring_regex(raw, PATTERNS[col.type]))
            unparsable = ~valid & ~missing
            cleaned = pc.utf8_trim_whitespace(pc.if_else(pa.array(valid), raw, pa.scalar(None, pa.string())))
            values = pc.cast(cleaned, ARROW_TYPES[col.type])
            noun = "an integer" if col.type == "int" else "a number"
            problems.append((unparsable, lambda i, n=name, r=raw, w=noun: f"{n}={r[i].as_py()!r} is not {w}"))
            unit = f" {col.unit}" if col.unit else ""
            if col.min is not None:
                low = _mask(pc.less(values, col.min))
                problems.append((low, lambda i, n=name, v=values, m=col.min, u=unit: f"{n}={v[i].as_py()} is below the minimum {m:g}{u}"))
            if col.max is not None:
                high = _mask(pc.greater(values, col.max))
                problems.append((high, lambda i, n=name, v=values, m=col.max, u=unit: f"{n}={v[i].as_py()} is above the maximum {m:g}{u}"))
        typed[name] = values
    event = typed[schema.event_time]
    days = pc.cast(event, pa.date32())
    landing = table[LANDING_DAY].combine_chunks()
    elsewhere = _mask(pc.not_equal(days, landing))
    problems.append(
        (elsewhere, lambda i, d=days: f"event date {d[i].as_py()} is not the file's landing date {landing[i].as_py()}")
    )
    return typed, problems


def _value_rejects(table: pa.Table, declared: list[str], problems: list[Problem], bad: np.ndarray) -> list[dict]:
    rejected = []
    lines, sources = table[LINE].combine_chunks(), table[SOURCE].combine_chunks()
    days = table[LANDING_DAY].combine_chunks()
    strings = {name: table[name].combine_chunks() for name in declared}
    for i in np.flatnonzero(bad):
        reasons = "; ".join(describe(int(i)) for mask, describe in problems if mask[i])
        record = json.dumps({n: strings[n][int(i)].as_py() for n in declared})
        reject = _reject(sources[int(i)].as_py(), lines[int(i)].as_py(), record, reasons)
        rejected.append({**reject, "dt": days[int(i)].as_py()})
    return rejected
