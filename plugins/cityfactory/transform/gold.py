"""Gold: the feature mart exported for training, one Parquet file per month plus a manifest.

A nightly run rewrites only the months its window touches, so its cost does not grow with the
history. The manifest (``gold/<scenario>/manifest.json``) names every month's file with its sha256
and rows; its own sha256 is the features' digest (equal data, equal digest), and readers check
every file against it. Rows the features gate quarantined (``quarantine/<scenario>/features/``,
one file per run, with their reasons) stay out of gold, in that run and every later export.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cityfactory.config.scenarios import Scenario
from cityfactory.storage.gold import manifest_key, read_manifest
from cityfactory.storage.lake import Lake, StoredObject, join_key
from cityfactory.transform.dbt import duckdb_path


@dataclass
class GoldExport:
    manifest: StoredObject
    rows: int
    months_written: list[str]
    rows_written: int


def _months(first: dt.datetime, last: dt.datetime) -> list[str]:
    """Calendar months (UTC) from ``first`` to ``last`` inclusive, as YYYY-MM."""
    months, year, month = [], first.year, first.month
    while (year, month) <= (last.year, last.month):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def _quarantine_prefix(scenario: Scenario) -> str:
    return join_key("quarantine", scenario.name, "features")


def quarantine_rows(scenario: Scenario, lake: Lake, frame, reasons: dict[int, str], run: str) -> StoredObject:
    """The mart rows at ``reasons``' positions of ``frame`` (their key columns and the reason) to
    ``quarantine/<scenario>/features/<run>.parquet``; gold leaves them out from now on."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    positions = sorted(reasons)
    rows = pa.Table.from_pandas(frame.iloc[positions][scenario.transform.order_by], preserve_index=False)
    rows = rows.append_column("reason", pa.array([reasons[p] for p in positions], pa.string()))
    with tempfile.TemporaryDirectory(prefix="cityfactory-set-aside-") as tmp:
        path = Path(tmp) / "rows.parquet"
        pq.write_table(rows, path)
        return lake.put_file(join_key(_quarantine_prefix(scenario), f"{run}.parquet"), path)


def _quarantined_keys(scenario: Scenario, lake: Lake):
    """Every key the features gate ever quarantined (an empty table of the key columns if none)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(io.BytesIO(lake.get_bytes(k)), columns=scenario.transform.order_by)
              for k in lake.list(_quarantine_prefix(scenario)) if k.endswith(".parquet")]
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


def export_gold(scenario: Scenario, lake: Lake, window: dict | None) -> GoldExport:
    """Rewrite the months of ``window`` (all months without one) from the mart, then the manifest.
    Each month's rows in a total order, so equal data gives equal bytes."""
    import duckdb

    t = scenario.transform
    model, time, order = t.features_model, t.time, ", ".join(f'"{c}"' for c in t.order_by)
    previous = read_manifest(lake, scenario.name) if window else None
    months = dict(previous["months"]) if previous else {}
    written, rows_written = [], 0
    with tempfile.TemporaryDirectory(prefix="cityfactory-gold-") as tmp, duckdb.connect(
        str(duckdb_path(scenario)), read_only=True
    ) as connection:
        source = f'"{model}"'
        if (set_aside := _quarantined_keys(scenario, lake)) is not None:
            connection.register("set_aside", set_aside)
            keys = ", ".join(f'"{c}"' for c in t.order_by)
            source = f'(select * from "{model}" anti join set_aside using ({keys}))'
        if window:
            wanted = _months(dt.datetime.fromisoformat(window["output_from"]),
                             dt.datetime.fromisoformat(window["input_to"]) - dt.timedelta(seconds=1))
        else:
            wanted = [m for (m,) in connection.execute(
                f'select distinct strftime("{time}", \'%Y-%m\') from "{model}" order by 1').fetchall()]
        for month in wanted:
            start = dt.datetime.strptime(month, "%Y-%m")
            end = _months(start, start + dt.timedelta(days=32))[1]
            where = f"where \"{time}\" >= '{start:%Y-%m-%d}'::timestamp and \"{time}\" < '{end}-01'::timestamp"
            rows = connection.execute(f"select count(*) from {source} {where}").fetchone()[0]
            key = join_key("gold", scenario.name, f"month={month}", f"{model}.parquet")
            if not rows:
                months.pop(month, None)
                continue
            path = Path(tmp) / f"{month}.parquet"
            connection.execute(f"copy (select * from {source} {where} order by {order}) to '{path}' (format parquet)")
            stored = lake.put_file(key, path)
            months[month] = {"key": key, "sha256": stored.sha256, "rows": rows}
            written.append(month)
            rows_written += rows
    stale = [m["key"] for name, m in (previous or {}).get("months", {}).items() if name not in months]
    manifest = {"model": model, "time_column": time, "order_by": t.order_by, "months": dict(sorted(months.items()))}
    stored = lake.put_bytes(manifest_key(scenario.name), json.dumps(manifest, sort_keys=True, indent=1).encode())
    if not window:  # a full export drops months the mart no longer has
        listed = [k for k in lake.list(join_key("gold", scenario.name)) if k.endswith(".parquet")]
        stale += [k for k in listed if k not in {m["key"] for m in months.values()}]
    if stale:
        lake.delete(sorted(set(stale)))
    return GoldExport(stored, sum(m["rows"] for m in months.values()), written, rows_written)
