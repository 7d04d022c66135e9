"""A bad-input corpus built at test time from the first real day of the Metro dataset."""

from __future__ import annotations

import datetime as dt

from support import METRO_CSV


def first_day() -> tuple[dt.date, list[str], list[str]]:
    """(day, header fields, that day's data lines) from the real file, CRLF stripped."""
    lines = METRO_CSV.read_bytes().decode().splitlines()
    header, body = lines[0], lines[1:]
    day = body[0].split(",")[7][:10]
    return dt.date.fromisoformat(day), header.split(","), [line for line in body if line.split(",")[7].startswith(day)]


def _file(header: list[str], rows: list[str], sep: str = ",") -> bytes:
    return ("\r\n".join([sep.join(header), *rows]) + "\r\n").encode()


def _set(line: str, header: list[str], column: str, value: str) -> str:
    fields = line.split(",")
    fields[header.index(column)] = value
    return ",".join(fields)


def corpus() -> dict[str, tuple[bytes, dict]]:
    """name -> (file bytes, expectations: rejected count, reason fragment, file error fragment)."""
    day, header, rows = first_day()
    n = len(rows)
    cases = {
        "clean.csv": (_file(header, rows), {"rejected": 0}),
        "malformed_lines.csv": (
            _file(header, [rows[0] + ",extra", *rows[1:3], ",".join(rows[3].split(",")[:5]), *rows[4:]]),
            {"rejected": 2, "reason": "wrong number of fields"},
        ),
        "wrong_delimiter.csv": (
            _file(header, [r.replace(",", ";") for r in rows], sep=";"),
            {"rejected": n, "file_error": "wrong delimiter"},
        ),
        "missing_column.csv": (
            _file(header[:-1], [r.rsplit(",", 1)[0] for r in rows]),
            {"rejected": n, "file_error": "lacks column(s) traffic_volume"},
        ),
        "extra_column.csv": (
            _file([*header, "sensor_note"], [r + ",ok" for r in rows]),
            {"rejected": 0, "warning": "sensor_note"},
        ),
        "wrong_types.csv": (
            _file(header, [_set(rows[0], header, "traffic_volume", "many"), _set(rows[1], header, "temp", "warm"), *rows[2:]]),
            {"rejected": 2, "reason": "traffic_volume='many' is not an integer"},
        ),
        "out_of_range.csv": (
            _file(header, [_set(rows[0], header, "temp", "0.0"), _set(rows[1], header, "clouds_all", "150"), *rows[2:]]),
            {"rejected": 2, "reason": "temp=0.0 is below the minimum 200 K"},
        ),
        "negative_volume.csv": (
            _file(header, [_set(rows[0], header, "traffic_volume", "-40"), *rows[1:]]),
            {"rejected": 1, "reason": "traffic_volume=-40 is below the minimum 0"},
        ),
        "missing_value.csv": (
            _file(header, [_set(rows[0], header, "traffic_volume", ""), *rows[1:]]),
            {"rejected": 1, "reason": "traffic_volume is missing"},
        ),
        "empty.csv": (b"", {"rejected": 0, "file_error": "empty file"}),
        "non_utf8.csv": (
            _file(header, rows).replace(rows[2].encode(), rows[2].encode().replace(b"None", b"N\xf6ne", 1)),
            {"rejected": 1, "reason": "invalid UTF-8"},
        ),
        "truncated.csv": (
            _file(header, rows)[: -len(rows[-1]) // 2 - 2],
            {"rejected": 1, "reason": "wrong number of fields"},
        ),
        "wrong_day.csv": (
            _file(header, [_set(rows[0], header, "date_time", (day - dt.timedelta(days=3)).isoformat() + " 10:00:00"), *rows[1:]]),
            {"rejected": 1, "reason": "is not the file's landing date"},
        ),
    }
    return cases


def corpus_on(day: dt.date) -> dict[str, tuple[bytes, dict]]:
    """The corpus with its rows moved to ``day`` (to land it on a date of one's choosing)."""
    real_day, _, _ = first_day()
    return {name: (data.replace(real_day.isoformat().encode(), day.isoformat().encode()), expected)
            for name, (data, expected) in corpus().items()}


def hostile_files(day: dt.date) -> dict[str, tuple[bytes, int]]:
    """Files a careless or hostile gateway drops, each with the records the CSV reader sees in it;
    none may crash its batch."""
    _, header, rows = first_day()
    real = first_day()[0].isoformat()
    rows = [r.replace(real, day.isoformat()) for r in rows[:5]]
    head = ",".join(header)
    quoted = rows[1].split(",")
    quoted[0] = '"None\nwith a newline"'
    return {
        "header_only.csv": (head.encode(), 0),
        "header_only_newline.csv": ((head + "\r\n").encode(), 0),
        "bare_cr.csv": ("\r".join([head, *rows]).encode() + b"\r", 5),
        "stray_cr.csv": (("\n".join([head, rows[0], rows[1].replace(",", ",\r", 1), *rows[2:]]) + "\n").encode(), 6),
        "embedded_newline.csv": (("\n".join([head, rows[0], ",".join(quoted), *rows[2:]]) + "\n").encode(), 5),
        "unclosed_quote.csv": (("\n".join([head, rows[0], '"None,' + rows[1].split(",", 1)[1], *rows[2:]]) + "\n").encode(), None),
        "huge_field.csv": (("\n".join([head, rows[0].replace("None", "x" * 5_000_000, 1), *rows[1:]]) + "\n").encode(), 5),
    }
