"""Scenario files (``dags/scenarios/*.yaml``) validated into typed objects.

A scenario is configuration, not code: its source and schema, its schedule and its policies. A bad
file fails with a :class:`ScenarioError` that names the file and the offending key.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from cityfactory.config.yaml_files import ScenarioError, load_validated

__all__ = ["Scenario", "ScenarioError", "get_scenario", "load_scenario", "load_scenarios", "scan_scenarios"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetFile(_Strict):
    """One file of a public dataset, pinned by checksum."""

    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    url: str | None = None


class CsvDialect(_Strict):
    """How a source spells its CSV: separators, quoting, missing values, header quirks."""

    delimiter: str = Field(",", min_length=1, max_length=1)
    decimal: Literal[".", ","] = "."
    quote_char: str = Field('"', min_length=1, max_length=1)
    null_values: list[str] = ["", "NA", "NaN", "null"]
    # Blank column names in the header (e.g. a trailing ";;") name no data and are dropped.
    blank_header_columns: Literal["drop", "error"] = "drop"

    @model_validator(mode="after")
    def _distinct(self) -> CsvDialect:
        if self.decimal == self.delimiter:
            raise ValueError(f"decimal mark {self.decimal!r} cannot also be the delimiter")
        return self


class JsonLines(_Strict):
    """Gateway messages, one JSON object per line; ``fields`` maps a column to a dotted path."""

    fields: dict[str, str] = Field(min_length=1)


class ImageIndex(_Strict):
    """How an image replay reads its dataset's index (one line per image): the columns in order
    (whitespace- or ``delimiter``-separated), which column names the image file, which columns
    a camera knows at capture (they go into each drop's captures file) and which ones only
    inspectors give later (they go into the label feed)."""

    file: str
    columns: list[str] = Field(min_length=2)
    delimiter: str | None = None  # None: runs of whitespace
    capture_columns: list[str] = []
    label_columns: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _known(self) -> ImageIndex:
        for name in [self.file, *self.capture_columns, *self.label_columns]:
            if name not in self.columns:
                raise ValueError(f"{name!r} is not one of the index's columns {self.columns}")
        return self


class ImageReplay(_Strict):
    """An inspection station's drops, replayed: ``per_day`` images a day in the index's order,
    captured every ``interval_seconds`` from ``first_capture`` (wall clock), spread over
    ``cameras`` in turn; the inspectors' verdicts land ``label_delay_days`` later."""

    index: ImageIndex
    per_day: int = Field(ge=1)
    cameras: list[str] = Field(min_length=1)
    first_capture: dt.time = dt.time(6, 0)
    interval_seconds: int = Field(60, ge=1)
    label_delay_days: int = Field(1, ge=0)
    start: dt.date = dt.date(2024, 1, 1)  # the replay's own first day (``time_shift`` moves it)


class Source(_Strict):
    """Where a scenario's files come from and how they are written.

    ``csv_replay`` replays a pinned public dataset into ``landing/``, one file per source file per
    day, as the gateways would; ``image_replay`` replays an image dataset as an inspection
    station's daily drops (image files, a captures file, a later label feed); ``gateway`` means
    the city's gateways drop files into landing themselves. A dataset is a folder of the data
    directory, or the data inside an installed Python ``package`` (pinned in requirements.txt). ``time_shift`` moves a replay forward by whole weeks (weekdays keep their
    meaning): ``auto`` makes the dataset's last week play as the week just past, ``none`` keeps its
    own time, an integer shifts by that many weeks. ``time_shift_clock`` says what moves: ``instant``
    (every reading kept at its own instant; where the dataset's year and the target year are on
    different sides of a clock change, a reading shows one hour off on the wall) or ``wall_clock``
    (the wall-clock text moves, so hour of day and weekday stay the dataset's exactly, and the
    readings of an hour that one year's clock skips or repeats are quarantined with that reason).
    """

    kind: Literal["csv_replay", "image_replay", "gateway"] = "csv_replay"
    format: Literal["csv", "jsonl", "images"] = "csv"
    dataset: str | None = None
    package: str | None = None
    licence: str | None = None  # the dataset's licence, shown in the data card, model card and report
    citation: str | None = None
    files: list[DatasetFile] = []
    images: ImageReplay | None = None
    time_shift: Literal["auto", "none"] | int = "none"
    time_shift_clock: Literal["instant", "wall_clock"] = "instant"
    csv: CsvDialect = CsvDialect()
    jsonl: JsonLines | None = None

    @model_validator(mode="after")
    def _complete(self) -> Source:
        if self.kind == "csv_replay" and (not self.dataset or not self.files):
            raise ValueError("a csv_replay source needs 'dataset' and at least one of 'files'")
        if self.kind == "csv_replay" and self.format != "csv":
            raise ValueError("a csv_replay source replays CSV files: format must be csv")
        if self.format == "jsonl" and self.jsonl is None:
            raise ValueError("format jsonl needs 'jsonl.fields' (column: dotted.path)")
        if self.kind == "image_replay" and (self.format != "images" or self.images is None or not self.files):
            raise ValueError("an image_replay source needs format images, 'images' (index, per_day, cameras) "
                             "and its index among 'files'")
        return self


Personal = Literal["encrypt", "pseudonymise"]


class Column(_Strict):
    type: Literal["string", "int", "float", "timestamp"]
    description: str = ""
    unit: str | None = None
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    format: str | None = None
    personal: Personal | None = None

    @model_validator(mode="after")
    def _checks(self) -> Column:
        if self.type == "timestamp" and not self.format:
            raise ValueError("a timestamp column needs a strptime 'format'")
        if (self.min is not None or self.max is not None) and self.type not in ("int", "float"):
            raise ValueError("min/max apply to int and float columns only")
        if self.personal and self.type != "string":
            raise ValueError("personal-data columns must be strings")
        return self


class ComposedTime(_Strict):
    """An event time built from several columns (e.g. year, month, day, hour; or date and time):
    their texts joined by single spaces must match ``format`` (strptime)."""

    name: str
    from_: list[str] = Field(alias="from", min_length=1)
    format: str

    @model_validator(mode="after")
    def _one_part_each(self) -> ComposedTime:
        if len(self.format.split(" ")) != len(self.from_):
            raise ValueError(f"format {self.format!r} needs one space-separated part per column of 'from' "
                             f"({len(self.from_)})")
        return self


class Schema(_Strict):
    """What a landed row must look like to enter bronze.

    Event times are wall-clock times in ``timezone``; bronze stores them as UTC instants. A
    repeated fall-back hour gives two instants (first occurrence the earlier one), a skipped
    spring-forward hour is rejected with a reason. ``series`` names the column that tells the
    series (station, sensor, intersection) apart, if the scenario has more than one.
    """

    columns: dict[str, Column] = Field(min_length=1)
    event_time: str | ComposedTime
    key: list[str] = Field(min_length=1)
    series: str | None = None
    timezone: str = "UTC"
    # Columns files carry that bronze does not need (kept in raw, not warned about).
    ignored_columns: list[str] = []

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Rome)") from None
        return value

    @model_validator(mode="after")
    def _names_exist(self) -> Schema:
        if isinstance(self.event_time, ComposedTime):
            if self.event_time.name in self.columns:
                raise ValueError(f"composed event_time {self.event_time.name!r} must not also be a declared column")
            for part in self.event_time.from_:
                if part not in self.columns:
                    raise ValueError(f"event_time.from: {part!r} is not a declared column")
        elif self.event_time not in self.columns or self.columns[self.event_time].type != "timestamp":
            raise ValueError(f"event_time {self.event_time!r} must be a declared timestamp column")
        for name in [*self.key, *([self.series] if self.series else [])]:
            if name not in self.columns and name != self.time_column:
                raise ValueError(f"{name!r} is not a declared column")
        return self

    @property
    def time_column(self) -> str:
        """The bronze column holding the event time (a UTC instant)."""
        return self.event_time if isinstance(self.event_time, str) else self.event_time.name

    @property
    def personal_columns(self) -> dict[str, Personal]:
        return {n: c.personal for n, c in self.columns.items() if c.personal}


class ImageRules(_Strict):
    """What a landed image must be to enter bronze; anything else is quarantined with a reason.

    Files named like ``captures_pattern`` carry each image's capture record (file, camera, time:
    the ``schema`` columns); files named like ``labels_pattern`` are the inspectors' later label
    feed (the ``labels`` columns); every other landed file is an image. Images are decoded with
    Pillow (``max_pixels`` as an error, not a warning), turned upright by their EXIF orientation,
    converted to ``mode`` where ``convert_modes`` allows, stripped of all metadata (EXIF GPS,
    camera serials) and kept once, as PNG, under ``images/<scenario>/<sha256[:2]>/<sha256>.png``.
    """

    formats: list[Literal["PNG", "JPEG"]] = ["PNG", "JPEG"]
    mode: Literal["L", "RGB"] = "L"
    convert_modes: list[str] = ["L", "RGB", "RGBA", "P", "LA"]  # converted to ``mode``; others quarantined
    max_bytes: int = Field(5_000_000, ge=1)
    max_pixels: int = Field(16_000_000, ge=1)
    min_side: int = Field(32, ge=1)
    max_side: int = Field(4096, ge=1)
    min_contrast: float = Field(2.0, ge=0)  # grey-level standard deviation: below it, a blank frame
    min_sharpness: float = Field(0.0, ge=0)  # variance of the Laplacian: below it, out of focus
    captures_pattern: str = "captures*.csv"
    labels_pattern: str = "labels*.csv"
    file_column: str = "file"  # the column of captures and labels that names the image file
    labels: Schema


class Ingestion(_Strict):
    # Fail the run (after writing bronze and quarantine) when more rows than this are rejected.
    max_rejected_fraction: float = Field(0.25, ge=0, le=1)
    # Days per mapped ingest task in a bulk run.
    days_per_batch: int = Field(31, ge=1)
    # A landed file larger than this is set aside in quarantine whole, unread (its batch goes on).
    max_file_bytes: int = Field(256 << 20, ge=1)
    # A landed file is taken once its size and change time held still this long; one still changing
    # waits in landing for the next run (a gateway that writes under a .tmp- name and renames the
    # finished file is never caught mid-write).
    settle_seconds: float = Field(1, ge=0, le=600)
    # A nightly run also lands the days missed since the last ingested one (nights that did not run,
    # a history that ends before yesterday), at most this many: a longer hole is a bulk run's job.
    catch_up_days: int = Field(14, ge=0, le=366)


class Transform(_Strict):
    """The scenario's dbt selection and the mart that training reads."""

    dbt_select: str
    features_model: str
    order_by: list[str] = Field(min_length=1)  # a total order (e.g. time, series): gold's sha256 is stable
    time_column: str | None = None  # the mart's UTC time (default: the first of order_by); gold is split by its month
    # How far back (whole days) the mart's features reach (lags, windows): a nightly run rebuilds
    # only its days' rows (and those whose features reach into them) from this much history.
    lookback_days: int = Field(8, ge=1)

    @field_validator("order_by", mode="before")
    @classmethod
    def _listed(cls, value):
        return [value] if isinstance(value, str) else value

    @property
    def time(self) -> str:
        return self.time_column or self.order_by[0]


class Quality(_Strict):
    """Expectation suites (``expectations/<name>.json``) for the two gates."""

    bronze_suite: str
    features_suite: str


class Compression(_Strict):
    # A compressed variant may lose at most this share of the fp32 model's test quality, measured
    # by the task type's compression metric.
    max_quality_loss: float = Field(0.01, ge=-1)
    # onnxruntime fp32 must match the model within this much (the output's unit) on every test row.
    parity_tolerance: float = Field(0.5, gt=0)


class RolloutStage(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    nodes: int | None = Field(None, ge=1)      # absolute count, or
    fraction: float | None = Field(None, gt=0, le=1)  # share of the fleet (cumulative)

    @model_validator(mode="after")
    def _one_size(self) -> RolloutStage:
        if (self.nodes is None) == (self.fraction is None):
            raise ValueError("give exactly one of 'nodes' or 'fraction'")
        return self


class Rollout(_Strict):
    """Staged rollout to the fleet in ``dags/fleets/<fleet>.yaml`` and its health gates."""

    fleet: str
    stages: list[RolloutStage] = Field(min_length=1)
    bake_seconds: float = Field(3, ge=0)
    bake_rows: int = Field(168, ge=1)         # the most recent real feature rows of every series, with actuals
    max_error_rate: float = Field(0.0, ge=0, le=1)
    max_p95_ms: float = Field(100, gt=0)
    max_error_ratio: float = Field(1.10, ge=1)  # new model's bake error vs the model the other nodes serve


class Drift(_Strict):
    """Data drift of each numeric feature: the population stability index (PSI) of the latest
    ``window_days`` against the training rows. A feature drifts when its PSI is above ``min_psi``
    and above what 95 % of the full same-length windows inside the training period stayed under
    (the threshold comes from the data: seasonal features move a lot within a normal year)."""

    window_days: int = Field(7, ge=1)
    bins: int = Field(10, ge=2, le=100)
    min_psi: float = Field(0.1, gt=0)


class LevelShiftTest(_Strict):
    """A sensor's level shift (``monitoring/level_shift.py``): the Page-Hinkley test over the hourly
    residuals against the task type's seasonal reference, in (robust) standard deviations of normal
    weeks. An alarm needs about ``threshold`` / (shift - ``delta``) hours: a 35 % drop of traffic
    (some 3.7 standard deviations) within a day of rows; a one-day holiday dip stays under it."""

    threshold: float = Field(48.0, gt=0)
    delta: float = Field(1.5, ge=0)


class RetrainWhen(_Strict):
    """When the nightly run retrains (any one reason is enough; none: the champion stays)."""

    live_error_margin: float = Field(0.25, gt=0)  # live metric above the version's offline one by this fraction,
    live_error_days: int = Field(3, ge=1)        # pooled over its latest this many evaluated days,
    live_error_quantile: float = Field(0.95, gt=0, le=1)  # and above what its test days' windows of as many
                                                          # days reached at this quantile (when it has them)
    drifted_features: int = Field(3, ge=1)       # this many features drifting at once
    max_model_age_days: int | None = Field(90, ge=1)  # data days since the champion's last training day
    on_feature_change: bool = True               # the dbt models or the model spec changed
    on_code_change: bool = True                  # the platform's code version changed
    on_level_shift: bool = True                  # a sensor's level shifted (its days are left out of training)


class Maintenance(_Strict):
    """Watching the champion in the field and deciding whether a run retrains."""

    drift: Drift = Drift()
    level_shift: LevelShiftTest = LevelShiftTest()
    retrain_when: RetrainWhen = RetrainWhen()


class Retries(_Strict):
    """How often a task that failed for a passing reason (a node or service unreachable, a worker
    lost) is tried again; refusals (bad data, a failed gate, a refused bundle) are never retried."""

    retries: int = Field(1, ge=0, le=10)
    delay_seconds: float = Field(30, ge=0)


RetainedLayer = Literal["raw", "quarantine", "set_aside", "bronze", "predictions", "refused_predictions", "monitoring"]
KEPT_AS = {"predictions": "bronze", "refused_predictions": "bronze", "monitoring": "bronze",  # unless declared
           "set_aside": "quarantine"}


class Governance(_Strict):
    risk_level: Literal["minimal", "limited", "high"]
    owners: list[str] = Field(min_length=1)
    retention_days: dict[RetainedLayer, int] = Field(description="days each layer's day partitions are kept; what the "
                                                                 "edge served and its evaluations default to bronze's, "
                                                                 "landed files set aside to quarantine's")
    human_approval_final_stage: bool = False

    @model_validator(mode="after")
    def _kept_as_their_kin(self):
        for layer, kin in KEPT_AS.items():
            if kin in self.retention_days:
                self.retention_days.setdefault(layer, self.retention_days[kin])
        return self


class Scenario(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    domain: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="the department it belongs to (dags/domains.yaml)")
    description: str
    schedule: str
    tags: list[str] = []
    source: Source
    schema_: Schema = Field(alias="schema")
    images: ImageRules | None = None
    ingestion: Ingestion = Ingestion()
    transform: Transform
    quality: Quality
    model_spec: str = Field(description="models/<model_spec>.yaml")
    compression: Compression = Compression()
    rollout: Rollout
    maintenance: Maintenance = Maintenance()
    governance: Governance
    retries: Retries = Retries()

    @model_validator(mode="after")
    def _images_declared(self) -> Scenario:
        if (self.source.format == "images") != (self.images is not None):
            raise ValueError("a source of format images needs an 'images' block (and only it)")
        if self.images and self.images.file_column not in self.schema_.columns:
            raise ValueError(f"images.file_column {self.images.file_column!r} is not a schema column")
        return self

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError("schedule must be a 5-field cron expression")
        return value

    @property
    def dag_id(self) -> str:
        return self.name

    @property
    def timezone(self) -> str:
        """The scenario's zone: its data's wall clock, its nightly schedule and its days."""
        return self.schema_.timezone


def load_scenario(path: Path) -> Scenario:
    """Read and validate one scenario file; the file's stem must equal its ``name``."""
    scenario = load_validated(path, Scenario.model_validate)
    if scenario.name != path.stem:
        raise ScenarioError(f"{path}: key 'name' is {scenario.name!r} but the file is {path.name}")
    return scenario


def load_scenarios(directory: Path) -> list[Scenario]:
    """All scenarios in a folder, sorted by name so DAGs are generated in a stable order."""
    return [load_scenario(p) for p in sorted(directory.glob("*.yaml"))]


def scan_scenarios(directory: Path) -> tuple[list[Scenario], dict[str, str]]:
    """The scenarios that validate, and file name -> error for those that do not (one broken file
    must not take the others down)."""
    valid, broken = [], {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            valid.append(load_scenario(path))
        except ScenarioError as exc:
            broken[path.name] = str(exc)
    return valid, broken


def get_scenario(name: str, directory: Path | None = None) -> Scenario:
    from cityfactory.settings import get_settings

    path = (directory or get_settings().scenarios_dir) / f"{name}.yaml"
    if not path.exists():
        raise ScenarioError(f"{path}: no such scenario file")
    return load_scenario(path)
