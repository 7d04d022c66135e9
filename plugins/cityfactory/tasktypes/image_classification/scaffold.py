"""A new camera scenario drafted from a folder of labelled images (one subfolder per class):
scenario, model spec, suites and dbt staging -> intermediate -> marts with docs and tests, and the
replay's index of the folder (``cli new-scenario``).

The folder is replayed as two cameras' daily drops over about a month, each image's class landing
a day later as the verdict feed, exactly as the shipped camera scenario does with its dataset.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from string import Template

from cityfactory.profiling.drafts import Draft, DraftRequest
from cityfactory.profiling.image_folders import ImageFolderProfile

TEMPLATES = Path(__file__).parent / "templates"
INDEX = "index.csv"
REPLAY_DAYS = 30
WORKING_DAY_SECONDS = 12 * 3600
CAMERAS = ("cam-1", "cam-2")
# The names the draft gives the columns it makes (the templates spell them the same).
SERIES, CAPTURE_TIME, SPLIT, LABEL = "camera", "captured_at", "dataset_split", "label"
MADE_NAMES = (SERIES, CAPTURE_TIME, SPLIT, LABEL, INDEX)


def _fill(template: str, **values) -> str:
    return Template((TEMPLATES / template).read_text()).substitute(values)


def replay_index(profile: ImageFolderProfile) -> bytes:
    """The replay's index (no header, as the index format has none): one line per image, in an
    order that mixes the classes over the days (by a hash of the path: stable, and no class
    arrives all at the end)."""
    ordered = sorted(profile.images, key=lambda i: hashlib.sha256(i.path.encode()).hexdigest())
    return "".join(f"{i.path},{i.label}\n" for i in ordered).encode()


def _suite(name: str, notes: str, expectations: list[dict]) -> str:
    lines = ",\n".join(f"    {json.dumps(e)}" for e in expectations)
    return f'{{\n  "name": "{name}",\n  "meta": {{"notes": {json.dumps(notes)}}},\n  "expectations": [\n{lines}\n  ]\n}}\n'


def draft_classifier(name: str, profile: ImageFolderProfile, request: DraftRequest) -> Draft:
    """Every file of a camera scenario ``name`` over the image folder ``profile`` describes."""
    images, classes = profile.images, list(profile.classes)
    index = replay_index(profile)
    per_day = math.ceil(len(images) / REPLAY_DAYS)
    sides = [s for i in images for s in (i.width, i.height)]
    size = min(128, max(32, 16 * (min(sides) // 16)))
    words = {"name": name, "class_list": ", ".join(json.dumps(c) for c in classes), "count": len(images),
             "class_count": len(classes), "mode": profile.mode}
    scenario = _fill(
        "scenario.yaml", **words, folder=request.dataset, dataset=request.dataset, domain=request.domain, index_name=INDEX,
        index_sha256=hashlib.sha256(index).hexdigest(), per_day=per_day, timezone=request.timezone or "UTC",
        timezone_note="" if request.timezone else "   # decide: the site's zone", days=REPLAY_DAYS,
        cameras=", ".join(CAMERAS), interval=max(1, min(240, WORKING_DAY_SECONDS // per_day)),
        formats=", ".join(profile.formats), max_bytes=2 * max(i.bytes for i in images),
        max_pixels=2 * max(i.width * i.height for i in images), min_side=max(1, min(sides) // 2),
        max_side=2 * max(sides), min_contrast=round(min(2.0, min(i.contrast for i in images) / 2), 2))
    per_class = ", ".join(f"{n} {c}" for c, n in sorted(profile.per_class().items()))
    spec = _fill("model_spec.yaml", **words, per_class=per_class, size=size, input_size=min(size, 64),
                 blocks=3 if size < 64 else 4, hog_size=min(size, 64),
                 calibration=max(1, min(32, min(profile.per_class().values()) // 2)))
    models = {
        f"staging/{name}/_{name}__sources.yml": _fill("sources.yml", **words),
        f"staging/{name}/stg_{name}__images.sql": _fill("staging_images.sql", **words),
        f"staging/{name}/stg_{name}__images.yml": _fill("staging_images.yml", **words),
        f"staging/{name}/stg_{name}__labels.sql": _fill("staging_labels.sql", **words),
        f"staging/{name}/stg_{name}__labels.yml": _fill("staging_labels.yml", **words),
        f"intermediate/{name}/int_{name}__labelled.sql": _fill("labelled.sql", **words),
        f"intermediate/{name}/int_{name}__labelled.yml": _fill("labelled.yml", **words),
        f"intermediate/{name}/int_{name}__duplicate_groups.sql": _fill("duplicate_groups.sql", **words),
        f"intermediate/{name}/int_{name}__duplicate_groups.yml": _fill("duplicate_groups.yml", **words),
        f"marts/{name}/{name}_examples.sql": _fill("examples.sql", **words),
        f"marts/{name}/{name}_examples.yml": _fill("examples.yml", **words),
    }
    return Draft(scenario=scenario, model_spec=spec, dbt_models=models, series=CAMERAS,
                 suites={f"{name}_manifest": _manifest_suite(name, profile),
                         f"{name}_examples": _examples_suite(name, profile)},
                 dataset_files={INDEX: index},
                 notes=(*profile.notes, f"classes: {per_class} (one per subfolder)",
                        (f"the folder replays as {len(CAMERAS)} cameras' drops over {REPLAY_DAYS} days; "
                         f"{INDEX} written beside the class folders")))


def _manifest_suite(name: str, profile: ImageFolderProfile) -> str:
    sides = [s for i in profile.images for s in (i.width, i.height)]
    expectations = [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "sha256"}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "sha256"},
         "meta": {"why": "the same pixels twice would sit in two places of the split"}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "format", "value_set": profile.formats}},
        {"type": "expect_column_values_to_be_in_set",
         "kwargs": {"column": "channels", "value_set": [1 if profile.mode == "L" else 3]}},
        {"type": "expect_column_values_to_be_between",
         "kwargs": {"column": "width", "min_value": min(sides) // 2, "max_value": 2 * max(sides)}},
        {"type": "expect_column_values_to_be_between",
         "kwargs": {"column": "height", "min_value": min(sides) // 2, "max_value": 2 * max(sides)}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": SERIES}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": CAPTURE_TIME}},
    ]
    return _suite(f"{name}_manifest", "Gate between image ingestion and dbt, drafted by new-scenario: sizes are "
                  "the folder's, halved and doubled (decide: what these cameras produce).", expectations)


def _examples_suite(name: str, profile: ImageFolderProfile) -> str:
    classes = list(profile.classes)
    expectations = [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 10 * len(classes)}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "sha256"}},
        {"type": "expect_column_values_to_be_in_set",
         "kwargs": {"column": SPLIT, "value_set": ["train", "validation", "test"]}},
        {"type": "expect_column_distinct_values_to_equal_set",
         "kwargs": {"column": SPLIT, "value_set": ["train", "validation", "test"]}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": LABEL, "value_set": classes}},
        {"type": "expect_column_distinct_values_to_equal_set", "kwargs": {"column": LABEL, "value_set": classes},
         "meta": {"why": "every declared class present"}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": LABEL, "mostly": 0.5},
         "meta": {"why": "most images get a verdict within a day"}},
    ]
    return _suite(f"{name}_examples", "Gate between dbt and training, drafted by new-scenario (decide: the "
                  "class balance a healthy label feed keeps).", expectations)
