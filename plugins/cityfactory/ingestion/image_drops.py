"""Ingest days of image drops: landing → raw (immutable) → images kept once + the bronze manifest.

A drop holds image files, a captures file (which camera took each file, and when) and, later, the
inspectors' label feed. Each image is checked (``images.inspect_image``); an accepted one is kept
once under ``images/<scenario>/<sha256[:2]>/<sha256>.png`` and becomes a manifest row with its
capture record and statistics; a refused one is quarantined with its reason, and the batch goes
on. Captures and labels are parsed to their schemas like any rows. Every record is accounted
for: image files, label rows and capture rows that name no landed image end up in bronze or in
quarantine. Each day's bronze partition holds ``part-0.parquet`` (the manifest) and
``labels-0.parquet`` (the verdicts that landed that day), rewritten whole on a re-run.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cityfactory.config.scenarios import Scenario
from cityfactory.governance.ledger import Artifact, LedgerEntry
from cityfactory.ingestion import pipeline
from cityfactory.ingestion.images import CleanImage, ImageRefused, inspect_image
from cityfactory.ingestion.parsing import (
    LANDING_DAY,
    LINE,
    REJECT_SCHEMA,
    SOURCE,
    convert,
    empty_strings,
    read_file,
)
from cityfactory.storage.lake import Lake, join_key, sha256_bytes

log = logging.getLogger(__name__)
THREADS = 2
IMAGE_COLUMNS = [
    ("image_key", pa.string()), ("sha256", pa.string()), ("source_sha256", pa.string()), ("format", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("channels", pa.int8()), ("mode_in", pa.string()),
    ("exif_rotated", pa.bool_()), ("metadata_stripped", pa.string()), ("bytes", pa.int64()),
    ("brightness", pa.float64()), ("contrast", pa.float64()), ("sharpness", pa.float64()), ("phash", pa.string()),
    ("phash_bits", pa.int64()),
]


def manifest_columns(scenario: Scenario) -> list[str]:
    """The bronze manifest's columns (what a bronze suite may name), ``dt`` included."""
    return [name for name, _ in IMAGE_COLUMNS] + list(scenario.schema_.columns) + [SOURCE, "dt"]


def image_key(scenario: str, sha256: str) -> str:
    return join_key("images", scenario, sha256[:2], f"{sha256}.png")


def _kind(name: str, scenario: Scenario) -> str:
    rules = scenario.images
    if fnmatch.fnmatch(name, rules.captures_pattern):
        return "captures"
    if fnmatch.fnmatch(name, rules.labels_pattern):
        return "labels"
    return "image"


def _rows(files: list[tuple[dt.date, str, bytes]], scenario: Scenario) -> tuple[pa.Table, list[dict], list[str], int]:
    """Parse row files (captures or labels) to ``scenario``'s schema: accepted rows (with
    provenance), rejected rows, file errors, rows in."""
    strings, rejected, errors, rows_in = [], [], [], 0
    for day, key, data in files:
        read = read_file(data, key.rsplit("/", 1)[1], scenario, day)
        rows_in += read.rows_in
        errors += read.file_errors
        rejected += [{**r, "dt": day} for r in read.rejected]
        if read.strings is not None:
            strings.append(read.strings)
    converted = convert(pa.concat_tables(strings) if strings else empty_strings(scenario.schema_), scenario)
    rejected += converted.rejected
    return converted.accepted, rejected, errors, rows_in


def _refusal(day: dt.date, source: str, reason: str, record: dict | None = None) -> dict:
    return {"source_file": source, "line": 0, "record": json.dumps(record or {"file": source.rsplit("/", 1)[1]}),
            "reason": reason, "dt": day}


def _write_day(lake: Lake, scenario: str, day: dt.date, tables: dict[str, pa.Table]) -> list:
    """Rewrite one day's bronze partition with one file per table (empty tables too, so readers
    always find both)."""
    with lake.staging_dir() as tmp:
        folder = Path(tmp) / f"dt={day.isoformat()}"
        folder.mkdir()
        for name, table in tables.items():
            part = table.filter(pc.equal(table["dt"], pa.scalar(day, pa.date32()))).drop_columns(["dt"])
            pq.write_table(part, folder / f"{name}-0.parquet")
        return lake.replace_prefix(pipeline.partition_key("bronze", scenario, day), folder)


def ingest_image_days(scenario: Scenario, lake: Lake, days: list[dt.date], entry: LedgerEntry) -> pipeline.IngestResult:
    """The image drops of ``days`` into bronze, images and quarantine (the caller holds the leases)."""
    rules = scenario.images
    labels_scenario = scenario.model_copy(update={"schema_": rules.labels})
    result = pipeline.IngestResult(days=len(days))
    files: dict[str, list] = {"captures": [], "labels": [], "image": []}
    touched = []
    for day in days:
        moved, problems = pipeline.land_to_raw(scenario, lake, day, entry)
        result.file_errors += problems
        raw_keys = lake.list(pipeline.partition_key("raw", scenario.name, day))
        touched += [day] if raw_keys else []
        for key in raw_keys:
            data = moved[key] if key in moved else pipeline.read_raw(lake, key)
            entry.inputs.append(Artifact(lake.uri_for(key), sha256_bytes(data), kind="raw"))
            files[_kind(key.rsplit("/", 1)[1], scenario)].append((day, key, data))
    result.files = sum(len(f) for f in files.values())

    captures, rejected, errors, capture_rows = _rows(files["captures"], scenario)
    labels, label_rejects, label_errors, label_rows = _rows(files["labels"], labels_scenario)
    rejected += label_rejects
    result.file_errors += errors + label_errors

    def check(item) -> CleanImage | str:
        _, key, data = item
        try:
            return inspect_image(data, key.rsplit("/", 1)[1], rules)
        except ImageRefused as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - one unreadable image must not block its batch
            return f"cannot be read ({type(exc).__name__}: {exc})"

    with ThreadPoolExecutor(max_workers=THREADS) as pool:  # Pillow and numpy release the GIL
        checked = list(pool.map(check, files["image"]))

    capture_of = {(row[LANDING_DAY], row[rules.file_column]): row for row in captures.to_pylist()}
    time_column = scenario.schema_.time_column
    found = [(day, key, data, outcome, capture_of.pop((day, key.rsplit("/", 1)[1]), None))
             for (day, key, data), outcome in zip(files["image"], checked, strict=True)]
    # the earliest capture of the same pixels is the one kept; a later copy is the duplicate
    found.sort(key=lambda f: (f[4] is None, f[4][time_column] if f[4] else None, f[1]))
    manifest, first_seen, stored = [], {}, 0
    for day, key, data, outcome, capture in found:
        name, uri = key.rsplit("/", 1)[1], lake.uri_for(key)
        if isinstance(outcome, str):
            rejected.append(_refusal(day, uri, outcome))
            continue
        if capture is None:
            rejected.append(_refusal(day, uri, f"no capture record for {name} in a captures file of its drop"))
            continue
        sha = sha256_bytes(outcome.png)
        if sha in first_seen:
            rejected.append(_refusal(day, uri, f"duplicate image: the same pixels as {first_seen[sha]}"))
            continue
        first_seen[sha] = uri
        stored += lake.put_new(image_key(scenario.name, sha), outcome.png)
        manifest.append({
            "image_key": image_key(scenario.name, sha), "sha256": sha, "source_sha256": sha256_bytes(data),
            "format": outcome.format, "width": outcome.width, "height": outcome.height, "channels": outcome.channels,
            "mode_in": outcome.mode_in, "exif_rotated": outcome.rotated, "metadata_stripped": ",".join(outcome.stripped),
            "bytes": len(outcome.png), "brightness": outcome.brightness, "contrast": outcome.contrast,
            "sharpness": outcome.sharpness, "phash": outcome.phash, "phash_bits": outcome.phash_bits,
            **{k: v for k, v in capture.items() if k not in (LINE, LANDING_DAY)}, "dt": day,
        })
    orphans = [_refusal(row[LANDING_DAY], row[SOURCE], f"capture record names {row[rules.file_column]}, which did "
                        "not land", {k: str(v) for k, v in row.items() if not k.startswith("_")})
               for row in capture_of.values()]
    rejected += orphans

    capture_fields = [f for f in captures.schema if f.name not in (LINE, LANDING_DAY)]
    manifest_schema = pa.schema([*IMAGE_COLUMNS, *capture_fields, ("dt", pa.date32())])
    bronze = pa.Table.from_pylist(manifest, schema=manifest_schema)
    verdicts = labels.rename_columns([*labels.column_names[:-1], "dt"]).drop_columns([LINE])
    quarantine = pa.Table.from_pylist(rejected, schema=REJECT_SCHEMA.append(pa.field("dt", pa.date32())))

    result.rows_in = len(files["image"]) + label_rows + capture_rows - (len(captures) - len(orphans))
    result.rows_bronze = bronze.num_rows + verdicts.num_rows
    result.rows_quarantined = quarantine.num_rows
    result.reasons = pipeline.reason_kinds(quarantine["reason"])
    if result.rows_in != result.rows_bronze + result.rows_quarantined:
        raise AssertionError(f"record accounting broken: {result.counts()}")

    kinds = {"part-0.parquet": "bronze", "labels-0.parquet": "labels"}
    for day in touched:
        for written in _write_day(lake, scenario.name, day, {"part": bronze, "labels": verdicts}):
            entry.outputs.append(Artifact.of(written, None, kinds[written.uri.rsplit("/", 1)[1]]))
    quarantine_files = pipeline.write_partitions(lake, "quarantine", scenario.name, quarantine, touched, "rejected", None)
    for day in touched:
        entry.outputs += [Artifact.of(o, None, "quarantine") for o in quarantine_files[day]]
    entry.outputs.append(Artifact(lake.uri_for(join_key("images", scenario.name)), "", bronze.num_rows, kind="images"))
    entry.counts.update(result.counts(), images_stored_new=stored)
    entry.details.update(reasons=dict(result.reasons.most_common(20)), file_errors=result.file_errors,
                         warnings=[], protected={"image_metadata": "stripped (EXIF, text chunks, profiles)"})
    log.info("ingested %s (%d new images stored)", result.counts(), stored)
    return result
