"""Ingest days of landed files: landing → raw (immutable) → bronze Parquet + quarantine.

For each day: every landed file is copied unchanged to ``raw/<scenario>/dt=<day>/`` (sealed with
AES-GCM when the scenario has personal data) and then removed from landing; all raw files of the day
are parsed; the day's bronze and quarantine partitions are rewritten whole, so re-running an
interval gives the same bronze. ``rows_in == rows_bronze + rows_quarantined`` always holds.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from cityfactory.config.scenarios import Scenario
from cityfactory.governance.ledger import Artifact, LedgerEntry
from cityfactory.ingestion.landing import take_landed
from cityfactory.ingestion.leases import day_leases
from cityfactory.ingestion.parsing import (
    REJECT_SCHEMA,
    ReadFile,
    convert,
    empty_bronze,
    empty_strings,
    read_file,
    unreadable_file,
)
from cityfactory.security import encryption
from cityfactory.storage.lake import Lake, join_key, sha256_bytes

log = logging.getLogger(__name__)
RULE = re.compile(r" (is below the minimum|is above the maximum|is not|does not match|does not exist in \S+)")
SEALED_SUFFIX = ".sealed"
PARSE_THREADS = min(4, os.cpu_count() or 1)


class IngestionError(RuntimeError):
    """Ingestion finished writing but the input was not acceptable; the message says which files."""


@dataclass
class IngestResult:
    days: int = 0
    files: int = 0
    rows_in: int = 0
    rows_bronze: int = 0
    rows_quarantined: int = 0
    rows_blank: int = 0  # empty lines seen in files: counted, kept in raw, nothing to parse
    reasons: Counter = field(default_factory=Counter)
    file_errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "days": self.days,
            "files": self.files,
            "rows_in": self.rows_in,
            "rows_bronze": self.rows_bronze,
            "rows_quarantined": self.rows_quarantined,
            "rows_blank": self.rows_blank,
        }


def partition_key(layer: str, scenario: str, day: dt.date) -> str:
    return join_key(layer, scenario, f"dt={day.isoformat()}")


def read_raw(lake: Lake, key: str) -> bytes:
    data = lake.get_bytes(key)
    return encryption.unseal(data, lake.uri_for(key)) if key.endswith(SEALED_SUFFIX) else data


def _raw_name(name: str, data: bytes, sealed: bool) -> str:
    """A landed file keeps its name in raw; a different file under a taken name gets its hash."""
    suffix = SEALED_SUFFIX if sealed else ""
    stem, dot, ext = name.rpartition(".")
    return f"{stem}.{sha256_bytes(data)[:12]}{dot}{ext}{suffix}" if dot else f"{name}.{sha256_bytes(data)[:12]}{suffix}"


def land_to_raw(scenario: Scenario, lake: Lake, day: dt.date, entry: LedgerEntry) -> tuple[dict[str, bytes], list[str]]:
    """Copy the day's landed files that may be taken (``landing.take_landed``) into raw, read-only
    and never overwriting, then remove them from landing; returns raw key -> plain bytes, and a
    problem for each landed name that was refused or set aside (reported, never silently skipped).
    Raw is a copy of exactly the bytes read and hashed: no name the gateway kept reaches it."""
    sealed = bool(scenario.schema_.personal_columns)
    raw_prefix = partition_key("raw", scenario.name, day)
    landed = take_landed(lake, scenario.name, day, scenario.ingestion)
    if landed.waiting:
        entry.details.setdefault("waiting_in_landing", []).extend(landed.waiting)
        log.warning("%d landed file(s) still being written, left for the next run: %s", len(landed.waiting),
                    "; ".join(landed.waiting[:3]))
    moved: dict[str, bytes] = {}
    for key, data in landed.files.items():
        name = key.rsplit("/", 1)[1]
        stored = encryption.seal(data) if sealed else data
        raw_key = join_key(raw_prefix, name + (SEALED_SUFFIX if sealed else ""))
        if not lake.put_new(raw_key, stored, read_only=True) and sha256_bytes(read_raw(lake, raw_key)) != sha256_bytes(data):
            raw_key = join_key(raw_prefix, _raw_name(name, data, sealed))  # a different file, same name
            lake.put_new(raw_key, stored, read_only=True)
        entry.inputs.append(Artifact(lake.uri_for(key), sha256_bytes(data), kind="landing"))
        moved[raw_key] = data
        lake.delete([key])
    return moved, landed.problems


def _deduplicate(table: pa.Table, key: list[str], personal: set[str]) -> tuple[pa.Table, list[dict]]:
    """Keep the first row of each key; later ones are rejected, naming where the first one is."""
    index = pa.array(np.arange(table.num_rows))
    groups = table.select(key).append_column("_i", index).group_by(key, use_threads=False)
    firsts = groups.aggregate([("_i", "min"), ("_i", "count")])
    if firsts.num_rows == table.num_rows:
        return table, []
    duplicate = pc.invert(pc.is_in(index, value_set=firsts["_i_min"]))
    repeated = firsts.filter(pc.greater(firsts["_i_count"], 1))["_i_min"].to_pylist()
    first_seen = {tuple(row[k] for k in key): row for row in table.take(repeated).to_pylist()}
    rejected = []
    for row in table.filter(duplicate).to_pylist():
        original = first_seen[tuple(row[k] for k in key)]
        shown = ", ".join(f"{k}={row[k]}" for k in key if k not in personal)
        reason = f"duplicate key ({shown}) first seen in {original['_source_file']} line {original['_line']}"
        record = {k: None if v is None else str(v) for k, v in row.items() if not k.startswith("_")}
        rejected.append(
            {"source_file": row["_source_file"], "line": row["_line"], "record": json.dumps(record), "reason": reason,
             "dt": row["_landing_day"]}
        )
    return table.filter(pc.invert(duplicate)), rejected


def write_partitions(
    lake: Lake, layer: str, scenario: str, table: pa.Table, days: list[dt.date], basename: str, options
) -> dict[dt.date, list]:
    """Rewrite the ``dt=`` partition of every day in ``days`` from ``table`` (empty days too)."""
    written: dict[dt.date, list] = {}
    with lake.staging_dir() as tmp:
        if table.num_rows:
            ds.write_dataset(
                table,
                tmp,
                format="parquet",
                partitioning=ds.partitioning(pa.schema([("dt", pa.date32())]), flavor="hive"),
                basename_template=basename + "-{i}.parquet",
                file_options=options,
                existing_data_behavior="overwrite_or_ignore",
                max_rows_per_group=1 << 20,
                max_partitions=max(len(days), 1),
            )
        for day in days:  # a day with no rows: its partition is emptied
            written[day] = lake.replace_prefix(partition_key(layer, scenario, day), Path(tmp) / f"dt={day.isoformat()}")
    return written


def _protect(table: pa.Table, personal: dict[str, str]) -> pa.Table:
    for name, how in personal.items():
        if how == "pseudonymise":
            table = table.set_column(table.schema.get_field_index(name), table.schema.field(name), encryption.pseudonymise(table[name].combine_chunks()))
    return table


Ingest = Callable[[Scenario, Lake, list[dt.date], LedgerEntry], IngestResult]


def ingest_days(scenario: Scenario, lake: Lake, days: list[dt.date], entry: LedgerEntry,
                ingest: Ingest | None = None) -> IngestResult:
    """Ingest ``days`` (play-time dates) holding their leases, by ``ingest`` (rows by default);
    records inputs and outputs on ``entry``."""
    with day_leases(lake, scenario.name, days, holder=f"{entry.task_id}[{entry.map_index}]@{uuid.uuid4().hex[:8]}"):
        return (ingest or ingest_rows)(scenario, lake, days, entry)


def ingest_rows(scenario: Scenario, lake: Lake, days: list[dt.date], entry: LedgerEntry) -> IngestResult:
    schema = scenario.schema_
    personal = schema.personal_columns
    result = IngestResult(days=len(days))
    strings: list[pa.Table] = []
    rejected: list[dict] = []
    touched: list[dt.date] = []
    extra: Counter = Counter()
    files: list[tuple[dt.date, str, bytes]] = []
    for day in days:
        moved, problems = land_to_raw(scenario, lake, day, entry)
        result.file_errors += problems
        raw_keys = lake.list(partition_key("raw", scenario.name, day))
        if raw_keys:
            touched.append(day)
        files += [(day, key, moved[key] if key in moved else read_raw(lake, key)) for key in raw_keys]

    def parse(item: tuple[dt.date, str, bytes]) -> ReadFile:
        day, key, data = item
        name = key.rsplit("/", 1)[1].removesuffix(SEALED_SUFFIX)
        try:
            return read_file(data, name, scenario, day)
        except Exception as exc:  # noqa: BLE001 - one unreadable file must not block its batch
            return unreadable_file(data, name, f"cannot be parsed ({type(exc).__name__}: {exc})")

    with ThreadPoolExecutor(max_workers=PARSE_THREADS) as pool:  # pyarrow parses with the GIL released
        reads = list(pool.map(parse, files))
    for (day, key, data), read in zip(files, reads):
        entry.inputs.append(Artifact(lake.uri_for(key), sha256_bytes(data), read.rows_in, kind="raw"))
        if read.strings is not None:
            strings.append(read.strings)
        rejected.extend({**r, "dt": day} for r in read.rejected)
        result.files += 1
        result.rows_in += read.rows_in
        result.rows_blank += read.blank
        result.file_errors += read.file_errors
        extra.update({tuple(read.extra_columns): 1} if read.extra_columns else {})

    result.warnings = [f"{files} file(s) have undeclared column(s) {', '.join(cols)}: ignored, kept in raw "
                       "(declare them in schema.ignored_columns to silence this)" for cols, files in extra.items()]
    converted = convert(pa.concat_tables(strings) if strings else empty_strings(schema), scenario)
    good, duplicates = _deduplicate(converted.accepted, schema.key, set(personal))
    quarantine_schema = REJECT_SCHEMA.append(pa.field("dt", pa.date32()))
    quarantine = pa.concat_tables([pa.Table.from_pylist(rejected + duplicates, schema=quarantine_schema),
                                   converted.rejected_table.cast(quarantine_schema)])
    accepted = [good.rename_columns([*good.column_names[:-1], "dt"])] if good.num_rows else []

    bronze = _protect(pa.concat_tables(accepted) if accepted else empty_bronze(schema), personal)
    result.rows_bronze = bronze.num_rows
    result.rows_quarantined = quarantine.num_rows
    result.reasons = reason_kinds(quarantine["reason"])
    if result.rows_in != result.rows_bronze + result.rows_quarantined + result.rows_blank:
        raise AssertionError(f"row accounting broken: {result.counts()}")

    encrypted = [n for n, how in personal.items() if how == "encrypt"]
    if touched:
        bronze_files = write_partitions(
            lake, "bronze", scenario.name, bronze, touched, "part",
            encryption.parquet_write_options(encrypted) if encrypted else None,
        )
        quarantine_files = write_partitions(
            lake, "quarantine", scenario.name, quarantine, touched, "rejected",
            encryption.parquet_write_options(["record"]) if personal else None,
        )
        rows_per_day, rejects_per_day = _per_day(bronze["dt"]), _per_day(quarantine["dt"])
        for day in touched:
            entry.outputs += [Artifact.of(o, rows_per_day[day], "bronze") for o in bronze_files[day]]
            entry.outputs += [Artifact.of(o, rejects_per_day[day], "quarantine") for o in quarantine_files[day]]
    entry.counts.update(result.counts())
    entry.details.update(
        reasons=dict(result.reasons.most_common(20)), file_errors=result.file_errors, warnings=result.warnings,
        protected=dict(scenario.schema_.personal_columns),  # what this run applied, for the compliance report
    )
    for warning in result.warnings:
        log.warning(warning)
    log.info("ingested %s", result.counts())
    return result


def _per_day(days: pa.ChunkedArray) -> Counter:
    counts = pc.value_counts(days)
    return Counter(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)))


def reason_kinds(reasons: pa.ChunkedArray) -> Counter:
    """Reasons grouped for summaries, vectorised: 'temp=0.0 is below the minimum 200 K' -> 'temp is
    below the minimum' (the first reason of a row counts)."""
    if not len(reasons):
        return Counter()
    first = pc.list_element(pc.split_pattern(reasons, "; ", max_splits=1), 0)
    ruled = pc.replace_substring_regex(first, pattern=r"^([^= ]+)=.*?" + RULE.pattern + r".*$", replacement=r"\1 \2")
    plain = pc.utf8_trim_whitespace(pc.replace_substring_regex(first, pattern=r"[\d(].*$", replacement=""))
    kinds = pc.if_else(pc.match_substring_regex(first, r"^[^= ]+=.*?" + RULE.pattern), ruled, plain)
    counts = pc.value_counts(kinds)
    return Counter(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)))


def check_acceptable(result: IngestResult, scenario: Scenario) -> None:
    """Fail loudly, after everything was written, on bad files or too many rejected rows."""
    problems = list(result.file_errors)
    if result.rows_in and result.rows_quarantined / result.rows_in > scenario.ingestion.max_rejected_fraction:
        top = ", ".join(f"{k} ({v})" for k, v in result.reasons.most_common(5))
        problems.append(
            f"{result.rows_quarantined} of {result.rows_in} rows rejected, more than "
            f"{scenario.ingestion.max_rejected_fraction:.0%} allowed; top reasons: {top}"
        )
    if problems:
        raise IngestionError("ingestion of " + scenario.name + " rejected input: " + " | ".join(problems))
