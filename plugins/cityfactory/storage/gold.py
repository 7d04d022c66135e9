"""Reading gold: the feature export a run made, every month's file checked against the manifest.

The manifest (``gold/<scenario>/manifest.json``) names every month's Parquet file with its sha256
and rows; its own sha256 is the features' digest (equal data, equal digest). The transform stage
writes it (``transform/gold.py``); every stage that trains, compresses or bakes reads it here.
"""

from __future__ import annotations

import json

import pandas as pd

from cityfactory.storage.lake import Lake, join_key, sha256_bytes


class GoldError(RuntimeError):
    """A gold file that does not match its manifest (or no gold at all)."""


def manifest_key(scenario: str) -> str:
    return join_key("gold", scenario, "manifest.json")


def read_manifest(lake: Lake, scenario: str) -> dict | None:
    key = manifest_key(scenario)
    return json.loads(lake.get_bytes(key)) if lake.exists(key) else None


def read_gold(lake: Lake, scenario: str, digest: str | None = None) -> pd.DataFrame:
    """Every month of the scenario's gold, checked against the manifest (and the manifest against
    ``digest``, the sha256 a run exported), as one frame in the manifest's order."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    key = manifest_key(scenario)
    if not lake.exists(key):
        raise GoldError(f"no gold for {scenario} yet ({lake.uri_for(key)}): run the transform stage")
    raw = lake.get_bytes(key)
    if digest and sha256_bytes(raw) != digest:
        raise GoldError(f"{lake.uri_for(key)} changed since this run exported it (sha256 {sha256_bytes(raw)[:12]}, "
                        f"expected {digest[:12]})")
    tables = []
    for month, entry in json.loads(raw)["months"].items():
        data = lake.get_bytes(entry["key"])
        if sha256_bytes(data) != entry["sha256"]:
            raise GoldError(f"{lake.uri_for(entry['key'])}: sha256 does not match the manifest's for {month}")
        tables.append(pq.read_table(io.BytesIO(data)))
    if not tables:
        raise GoldError(f"gold for {scenario} has no rows")
    return pa.concat_tables(tables).to_pandas()
