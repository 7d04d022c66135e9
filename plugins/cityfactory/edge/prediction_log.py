"""What a node served, kept until the pipeline collects it.

Each answered row becomes one JSON line (served_at, node, model_version, series, predicted_for,
input_sha256, prediction, purpose) in a numbered segment file. Lines are written before the
answer goes out, by one background thread: requests that arrive while it writes form the next
batch (group commit), so the event loop never waits on the disk and a restart loses nothing a
client was answered for (the lines are in the operating system before the answer leaves; a power
cut may still lose the last moments, which an fsync per batch would cost). The collector rotates
the open segment, then fetches and removes the closed ones (``/admin/predictions``); a restart
starts a new segment and leaves the old ones closed.

What a client may claim is bounded: a row's ``predicted_for`` must be an ISO time with an offset
inside the node's ``KeyWindow`` around the moment it is served (422 naming the key otherwise), and
the segments waiting to be collected hold at most ``max_bytes``: rows beyond are answered but not
logged, and counted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the DAG file reads fleets at every parse, without numpy
    import numpy as np

SEGMENT = re.compile(r"^seg-(\d{8})\.jsonl$")
PURPOSES = ("serve", "bake")
MAX_KEY_CHARS = 64


class RowKeyError(ValueError):
    """Row keys that do not fit the rows; the message names the field."""


@dataclass(frozen=True)
class KeyWindow:
    """How far before and after the moment a row is served its ``predicted_for`` may lie: the
    consumers' look-back and the model's horizon, plus clock skew."""

    past_hours: float = 48
    ahead_hours: float = 48

    def holds(self, when: dt.datetime, served_at: float) -> bool:
        moment = when.timestamp()
        return served_at - self.past_hours * 3600 <= moment <= served_at + self.ahead_hours * 3600

    def describe(self) -> str:
        return f"from {self.past_hours:g} h before to {self.ahead_hours:g} h after the moment it is served"


def parse_instant(value: object) -> dt.datetime | None:
    """An ISO time with an offset; None for anything else (no offset, not a time, out of range)."""
    try:
        parsed = dt.datetime.fromisoformat(value)
        return parsed.astimezone(dt.UTC) if parsed.tzinfo else None
    except (TypeError, ValueError, OverflowError):
        return None


def parse_keys(payload: dict, rows: int, served_at: float, window: KeyWindow
               ) -> tuple[list[tuple[str | None, str | None]], str]:
    """The optional ``keys`` (one ``{"series": ..., "predicted_for": ...}`` per row) and ``purpose``;
    a ``predicted_for`` must be an ISO time with an offset inside ``window`` around ``served_at``."""
    purpose = payload.get("purpose", "serve")
    if purpose not in PURPOSES:
        raise RowKeyError(f"purpose: expected one of {', '.join(PURPOSES)}, got {purpose!r}"[:200])
    keys = payload.get("keys")
    if keys is None:
        return [(None, None)] * rows, purpose
    if not isinstance(keys, list) or len(keys) != rows:
        raise RowKeyError(f"keys: expected a list of {rows} objects, one per row")
    parsed = []
    for i, key in enumerate(keys):
        if not isinstance(key, dict):
            raise RowKeyError(f"keys[{i}]: expected an object with series and predicted_for")
        values = []
        for field in ("series", "predicted_for"):
            value = key.get(field)
            if value is not None and (not isinstance(value, str) or len(value) > MAX_KEY_CHARS):
                raise RowKeyError(f"keys[{i}].{field}: expected a string of at most {MAX_KEY_CHARS} characters")
            values.append(value)
        if values[1] is not None:
            when = parse_instant(values[1])
            if when is None:
                raise RowKeyError(f"keys[{i}].predicted_for: {values[1]!r} is not an ISO time with an offset")
            if not window.holds(when, served_at):
                raise RowKeyError(f"keys[{i}].predicted_for: {values[1]!r} is outside the node's window, "
                                  f"{window.describe()}")
        parsed.append(tuple(values))
    return parsed, purpose


def log_lines(served_at: float, node: str, version: str, rows: np.ndarray, values: np.ndarray,
              keys: list[tuple[str | None, str | None]], purpose: str) -> bytes:
    """The JSON lines of one answered request (the input named by the sha256 of its float32 row);
    none for a rollout's health check (its gate measures those)."""
    if purpose == "bake":
        return b""
    lines = []
    for row, value, (series, predicted_for) in zip(rows, values.ravel().tolist(), keys):
        lines.append(json.dumps({"served_at": served_at, "node": node, "model_version": version, "series": series,
                                 "predicted_for": predicted_for, "input_sha256": hashlib.sha256(row.tobytes()).hexdigest()[:16],
                                 "prediction": value, "purpose": purpose}))
    return ("\n".join(lines) + "\n").encode()


class PredictionLog:
    def __init__(self, directory: Path, max_bytes: int = 256 << 20):
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.max_bytes = directory, max_bytes
        self._lock = threading.Lock()  # the open file: writes and rotation
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="prediction-log")
        self._pending: list[bytes] = []
        self._waiting: list[asyncio.Future] = []
        self._flushing = False
        segments = [p for p in directory.iterdir() if SEGMENT.match(p.name)]
        self.held = sum(p.stat().st_size for p in segments)  # bytes waiting to be collected
        self._open(max((int(SEGMENT.match(p.name).group(1)) for p in segments), default=0) + 1)

    def _open(self, number: int) -> None:
        self.current = f"seg-{number:08d}.jsonl"
        self._file = open(self.directory / self.current, "ab", buffering=0)  # noqa: SIM115 - kept open

    def _write(self, data: bytes) -> bool:
        with self._lock:
            if self.held + len(data) > self.max_bytes:
                return False
            self._file.write(data)  # unbuffered: in the OS once this returns (a killed process loses nothing)
            self.held += len(data)
            return True

    async def append(self, data: bytes) -> bool:
        """Returns once ``data`` is written (with the other requests' lines of the same batch);
        False if the log is full (``max_bytes`` waiting to be collected) and it was dropped."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._pending.append(data)
        self._waiting.append(done)
        if not self._flushing:
            self._flushing = True
            loop.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, waiting = b"".join(self._pending), self._waiting
                self._pending, self._waiting = [], []
                try:
                    written = await loop.run_in_executor(self._writer, self._write, batch)
                except OSError as exc:
                    for future in waiting:
                        future.set_exception(exc)
                else:
                    for future in waiting:
                        future.set_result(written)
        finally:
            self._flushing = False

    def rotate(self) -> list[str]:
        """Close the open segment if it holds anything; the closed segments, oldest first."""
        with self._lock:
            if (self.directory / self.current).stat().st_size:
                self._file.close()
                self._open(int(SEGMENT.match(self.current).group(1)) + 1)
            return sorted(p.name for p in self.directory.iterdir() if SEGMENT.match(p.name) and p.name != self.current)

    def _closed(self, name: str) -> Path:
        if not SEGMENT.match(name) or name == self.current or not (self.directory / name).exists():
            raise LookupError(f"no closed segment {name!r}")
        return self.directory / name

    def path(self, name: str) -> Path:
        """A closed segment's file, to be streamed to the collector."""
        return self._closed(name)

    def remove(self, name: str) -> None:
        """The collector has stored the segment in the lake: it is no longer needed here."""
        with self._lock:
            path = self._closed(name)
            self.held -= path.stat().st_size
            path.unlink()

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        with self._lock:
            self._file.close()
