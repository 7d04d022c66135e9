"""Read date partitions of a lake layer back as one Arrow table (decrypting personal columns)."""

from __future__ import annotations

import contextlib
import datetime as dt
import io

import pyarrow as pa
import pyarrow.parquet as pq

from cityfactory.security.encryption import parquet_decryption
from cityfactory.storage.lake import Lake, join_key


def read_table(lake: Lake, key: str) -> pa.Table:
    """One Parquet object of the lake (encrypted columns decrypted for key holders)."""
    return pq.read_table(io.BytesIO(lake.get_bytes(key)), decryption_properties=parquet_decryption())


def partition_days(lake: Lake, layer: str, scenario: str) -> list[dt.date]:
    """The days ``<layer>/<scenario>/`` holds a ``dt=`` partition for, in order."""
    days = []
    for folder in lake.list_dirs(join_key(layer, scenario)):
        if folder.startswith("dt="):
            with contextlib.suppress(ValueError):  # a name that is not a day is not a day partition
                days.append(dt.date.fromisoformat(folder.removeprefix("dt=")))
    return sorted(days)


def read_partitions(lake: Lake, layer: str, scenario: str, days: list[dt.date], prefix: str = "") -> pa.Table | None:
    """The Parquet files of ``<layer>/<scenario>/dt=<day>/`` for ``days`` whose names start with
    ``prefix`` (bronze's rows are ``part-*``; an image day has ``labels-*`` beside), with a ``dt`` column."""
    tables = []
    for day in days:
        for key in lake.list(join_key(layer, scenario, f"dt={day.isoformat()}")):
            if key.endswith(".parquet") and key.rsplit("/", 1)[1].startswith(prefix):
                table = read_table(lake, key)
                tables.append(table.append_column("dt", pa.repeat(pa.scalar(day, pa.date32()), table.num_rows)))
    return pa.concat_tables(tables) if tables else None
