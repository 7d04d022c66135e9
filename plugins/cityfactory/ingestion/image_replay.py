"""Replay an image dataset as an inspection station's daily drops.

Each play-time day gets ``per_day`` images of the dataset's index, in its order, as the station's
cameras would drop them: the image files unchanged, and a captures file (file, camera, captured
at, what the camera knows) beside them. The inspectors' verdicts (the index's label columns) land
as their own feed ``label_delay_days`` later, so a day's images arrive unlabelled, as on a real
line. The index and the images are read from the pinned package, never downloaded.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from functools import lru_cache
from pathlib import Path

from cityfactory.config.scenarios import DatasetFile, ImageIndex, Scenario
from cityfactory.ingestion.datasets import source_file
from cityfactory.ingestion.landing import landing_prefix
from cityfactory.storage.lake import Lake, StoredObject, join_key


@lru_cache(maxsize=8)
def _index(path: Path, declared: str) -> tuple[dict, ...]:
    index = ImageIndex.model_validate_json(declared)
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        values = line.split(index.delimiter) if index.delimiter else line.split()
        if len(values) != len(index.columns):
            raise ValueError(f"{path} line {number}: {len(values)} fields, the index declares {len(index.columns)}")
        rows.append(dict(zip(index.columns, (v.strip() for v in values), strict=True)))
    return tuple(rows)


def load_index(scenario: Scenario) -> tuple[Path, tuple[dict, ...]]:
    """The index's folder (image paths are relative to it) and its rows, verified against the pin."""
    source = scenario.source
    index_file: DatasetFile = source.files[0]
    path = source_file(source, index_file)
    return path.parent, _index(path, source.images.index.model_dump_json())


def span(scenario: Scenario) -> tuple[dt.date, dt.date]:
    """The replay's own first and last day (the last verdicts land ``label_delay_days`` after the
    last images)."""
    images = scenario.source.images
    days = math.ceil(len(load_index(scenario)[1]) / images.per_day)
    return images.start, images.start + dt.timedelta(days=days - 1 + images.label_delay_days)


def _csv(header: list[str], rows: list[list[str]], delimiter: str) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def _captured_at(scenario: Scenario, day: dt.date, position: int) -> dt.datetime:
    images = scenario.source.images
    first = dt.datetime.combine(day, images.first_capture)
    return first + dt.timedelta(seconds=position * images.interval_seconds)


def replay_images(scenario: Scenario, lake: Lake, days: list[dt.date], shift: dt.timedelta
                  ) -> list[tuple[StoredObject, int]]:
    """Land each play-time day's drop: its images, ``captures.csv`` and the ``labels.csv`` of the
    images captured ``label_delay_days`` before."""
    images, rules, schema = scenario.source.images, scenario.images, scenario.schema_
    folder, index = load_index(scenario)
    per_day, delimiter = images.per_day, scenario.source.csv.delimiter
    time_column = schema.time_column
    time_format = schema.columns[time_column].format
    labels = rules.labels
    label_time = labels.time_column
    label_format = labels.columns[label_time].format
    capture_header = [rules.file_column, schema.series, time_column, *images.index.capture_columns]
    label_header = [rules.file_column, *images.index.label_columns, label_time]
    landed = []
    for day in days:
        prefix = landing_prefix(scenario.name, day)
        number = (day - shift - images.start).days
        captures = []
        for position, row in enumerate(index[max(number, 0) * per_day : (number + 1) * per_day] if number >= 0 else []):
            name = Path(row[images.index.file]).name
            data = (folder / row[images.index.file]).read_bytes()
            landed.append((lake.put_bytes(join_key(prefix, name), data), 1))
            camera = images.cameras[(number * per_day + position) % len(images.cameras)]
            when = _captured_at(scenario, day, position)
            captures.append([name, camera, when.strftime(time_format), *(row[c] for c in images.index.capture_columns)])
        if captures:
            key = join_key(prefix, f"captures_{day.isoformat()}.csv")
            landed.append((lake.put_bytes(key, _csv(capture_header, captures, delimiter)), len(captures)))
        labelled = number - images.label_delay_days
        verdicts = []
        if labelled >= 0:
            verdict_at = dt.datetime.combine(day, images.first_capture)
            for row in index[labelled * per_day : (labelled + 1) * per_day]:
                verdicts.append([Path(row[images.index.file]).name, *(row[c] for c in images.index.label_columns),
                                 verdict_at.strftime(label_format)])
        if verdicts:
            key = join_key(prefix, f"labels_{day.isoformat()}.csv")
            landed.append((lake.put_bytes(key, _csv(label_header, verdicts, delimiter)), len(verdicts)))
    return landed
