"""Wall-clock times of a zone as instants, and back, without losing a reading to a clock change.

A fall-back night shows one wall-clock hour twice: per series, records are the earlier hour until
one repeats a key met there, and the later hour from then on (records arrive in time order). A
spring-forward night skips an hour: a wall time inside it names no instant and is reported as skipped.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _mask(array) -> np.ndarray:
    return pc.fill_null(array, False).to_numpy(zero_copy_only=False)


class RepeatedHours:
    """What a file has shown so far of each repeated (fall-back) wall-clock hour, per series: the
    keys met there, and whether the second pass of that hour has begun. Records arrive in time
    order: the first record that repeats a key starts the later hour, and every record of that
    series at that wall time after it belongs to the later hour too."""

    def __init__(self):
        self.keys: dict[tuple, set] = {}
        self.later: set[tuple] = set()

    def is_later(self, hour: tuple, key: tuple) -> bool:
        met = self.keys.setdefault(hour, set())
        if key in met:
            self.later.add(hour)
        met.add(key)
        return hour in self.later


def to_instants(wall: pa.Array, zone: str, series: pa.Array | None, keys: list[pa.Array],
                seen: RepeatedHours) -> tuple[pa.Array, np.ndarray]:
    """UTC instants (typed in ``zone``) of naive wall-clock times, and which were skipped.

    ``series`` tells series apart (a station; None: one series) and ``keys`` are the rest of a
    record's key (a weather label, say). ``seen`` carries the repeated hours across calls, so a
    repeated hour split over two chunks of one file still resolves in order."""
    earliest = pc.assume_timezone(wall, zone, ambiguous="earliest", nonexistent="earliest")
    if zone == "UTC":
        return earliest, np.zeros(len(wall), dtype=bool)
    latest = pc.assume_timezone(wall, zone, ambiguous="latest", nonexistent="latest")
    skipped = _mask(pc.not_equal(pc.local_timestamp(earliest), wall))
    ambiguous = np.flatnonzero(_mask(pc.not_equal(earliest, latest)) & ~skipped)
    if not len(ambiguous):
        return earliest, skipped
    later = np.zeros(len(wall), dtype=bool)
    for i in ambiguous:  # one hour a year per series: few rows
        hour = (wall[int(i)].as_py(), series[int(i)].as_py() if series is not None else None)
        later[i] = seen.is_later(hour, tuple(key[int(i)].as_py() for key in keys))
    return pc.if_else(pa.array(later), latest, earliest), skipped


def _unpadded(texts: pa.Array) -> pa.Array:
    """Numbers without leading zeros, so "2013 3 1 0" and "2013 03 01 00" compare equal."""
    return pc.replace_substring_regex(texts, r"(^|[^0-9])0+([0-9])", r"\1\2")


def parse_wall_clock(texts: pa.Array, fmt: str) -> pa.Array:
    """Wall-clock texts as naive timestamps (null where they do not parse). Arrow's strptime rolls an
    impossible date over (31/02 becomes 2 March); a text that does not print back the same is
    checked again by Python's strptime, which refuses it."""
    parsed = pc.strptime(texts, format=fmt, unit="s", error_is_null=True)
    printed, written = (_unpadded(pc.strftime(parsed, format=fmt)), _unpadded(pc.utf8_trim_whitespace(texts)))
    doubtful = np.flatnonzero(_mask(pc.not_equal(printed, written)))
    if not len(doubtful):
        return parsed
    values = parsed.to_pylist()
    for i in doubtful:
        try:
            values[i] = dt.datetime.strptime(texts[int(i)].as_py().strip(), fmt)
        except ValueError:
            values[i] = None
    return pa.array(values, type=parsed.type)
