"""What a node served, kept until the pipeline collects it.

Each answered row becomes one JSON line (served_at, node, model_version, series, predicted_for,
input_sha256, prediction, purpose) in a numbered segment file. Lines are written before the
answer goes out, by one background thread: requests that arrive while it writes form the next
batch (group commit), so the event loop never waits on the disk and a restart loses nothing a
client was answered for (the lines are in the operating system before the answer leaves; a power
cut may still lose the last moments, which an fsync per batch would cost). The collector rotates
the open segment, then fetches and removes the closed ones (``/admin/predictions``); a restart
starts a new segment and leaves the old ones closed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SEGMENT = re.compile(r"^seg-(\d{8})\.jsonl$")
PURPOSES = ("serve", "bake")
MAX_KEY_CHARS = 64


class RowKeyError(ValueError):
    """Row keys that do not fit the rows; the message names the field."""


def parse_keys(payload: dict, rows: int) -> tuple[list[tuple[str | None, str | None]], str]:
    """The optional ``keys`` (one ``{"series": ..., "predicted_for": ...}`` per row) and ``purpose``."""
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
    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._lock = threading.Lock()  # the open file: writes and rotation
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="prediction-log")
        self._pending: list[bytes] = []
        self._waiting: list[asyncio.Future] = []
        self._flushing = False
        numbers = [int(m.group(1)) for p in directory.iterdir() if (m := SEGMENT.match(p.name))]
        self._open(max(numbers, default=0) + 1)

    def _open(self, number: int) -> None:
        self.current = f"seg-{number:08d}.jsonl"
        self._file = open(self.directory / self.current, "ab", buffering=0)  # noqa: SIM115 - kept open

    def _write(self, data: bytes) -> None:
        with self._lock:
            self._file.write(data)  # unbuffered: in the OS once this returns (a killed process loses nothing)

    async def append(self, data: bytes) -> None:
        """Returns once ``data`` is written (with the other requests' lines of the same batch)."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._pending.append(data)
        self._waiting.append(done)
        if not self._flushing:
            self._flushing = True
            loop.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, waiting = b"".join(self._pending), self._waiting
                self._pending, self._waiting = [], []
                try:
                    await loop.run_in_executor(self._writer, self._write, batch)
                except OSError as exc:
                    for future in waiting:
                        future.set_exception(exc)
                else:
                    for future in waiting:
                        future.set_result(None)
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

    def read(self, name: str) -> bytes:
        return self._closed(name).read_bytes()

    def remove(self, name: str) -> None:
        """The collector has stored the segment in the lake: it is no longer needed here."""
        self._closed(name).unlink()

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        with self._lock:
            self._file.close()
