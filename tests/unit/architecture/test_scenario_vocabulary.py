"""The library holds no scenario's words: names, columns, units, datasets, series or node ids from
the scenario files (and their model specs and fleets) must not appear in plugins/ or dags/ Python.
A scenario is configuration; code that knows one by name would not work for the next."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import yaml
from cityfactory.ingestion.image_drops import IMAGE_COLUMNS
from cityfactory.profiling.tables import CALENDAR_PARTS
from cityfactory.tasktypes.forecast.scaffold import MADE_NAMES as FORECAST_DRAFT_NAMES
from cityfactory.tasktypes.image_classification.scaffold import (
    MADE_NAMES as CAMERA_DRAFT_NAMES,
)
from support import REPO

CODE = [*sorted((REPO / "plugins").rglob("*.py")), *sorted((REPO / "dags").glob("*.py"))]
SCENARIO_FILES = [*sorted((REPO / "dags" / "scenarios").glob("*.yaml")),
                  *sorted((REPO / "tests" / "fixtures" / "scenarios").glob("*.yaml"))]


# The library's own field names that a scenario may also use for a column: the run ledger's times,
# the image manifest's columns (the library makes them; a camera scenario's models read them), the
# calendar columns the scaffold recognises and the names it gives the columns it drafts.
LIBRARY_WORDS = {"started_at", "ended_at", *(name for name, _ in IMAGE_COLUMNS), *CALENDAR_PARTS,
                 *FORECAST_DRAFT_NAMES, *CAMERA_DRAFT_NAMES}


def _strings(value, depth: int = 0) -> set[str]:
    """Every string value in a block of YAML, and the keys one level in (column names, e.g. a one-hot
    column's); the block's own keys and deeper ones are the spec's field names, not the scenario's."""
    if isinstance(value, dict):
        keys = set(map(str, value)) if depth == 1 else set()
        return keys.union(*(_strings(v, depth + 1) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_strings(v, depth + 1) for v in value))
    return {value} if isinstance(value, str) else set()


def _words(scenario: dict) -> set[str]:
    words = {scenario["name"], scenario["source"].get("dataset") or "", *scenario.get("tags", [])}
    schema = scenario["schema"]
    for name, column in schema["columns"].items():
        words |= {name, column.get("unit") or ""}
    event = schema["event_time"]
    words.add(event["name"] if isinstance(event, dict) else event)
    words |= {schema.get("series") or "", *schema["key"]}
    words |= {f["name"] for f in scenario["source"].get("files", [])}
    images = scenario["source"].get("images") or {}
    words |= {*images.get("cameras", []), *images.get("index", {}).get("columns", [])}
    words |= set((scenario.get("images") or {}).get("labels", {}).get("columns", {}))
    spec_path = REPO / "models" / f"{scenario['model_spec']}.yaml"
    if spec_path.exists():
        spec = yaml.safe_load(spec_path.read_text())
        words |= {spec["name"], spec["registered_model"], *_strings(spec["data"])}
    fleet_path = REPO / "dags" / "fleets" / f"{scenario['rollout']['fleet']}.yaml"
    if fleet_path.exists():
        words |= {node["id"] for node in yaml.safe_load(fleet_path.read_text())["nodes"]}
    return {w for w in words if w and w not in LIBRARY_WORDS}


def _distinctive(word: str) -> bool:
    """Words a library would only write because it knows the scenario (not 'day', 'hour' or 'N')."""
    return len(word) >= 4 and (any(c in word for c in "_./") or len(word) >= 8 or word[:1].isupper())


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])", text) is not None


def _literals(path: Path) -> list[tuple[int, str]]:
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return [(t.start[0], t.string) for t in tokens if t.type == tokenize.STRING]


def test_no_scenario_vocabulary_in_library_or_dags():
    vocabulary = set().union(*(_words(yaml.safe_load(p.read_text())) for p in SCENARIO_FILES))
    distinctive = sorted(w for w in vocabulary if _distinctive(w))
    assert "PM2.5" in vocabulary and "hour_of_day" in vocabulary and "vehicles/h" in vocabulary  # the test sees them
    found = []
    for path in CODE:
        for line, text in _literals(path):
            body = text.strip("\"'rbfRBF")
            hits = [w for w in vocabulary if body == w and len(w) >= 5] + [w for w in distinctive if body != w and _mentions(body, w)]
            found += [f"{path.relative_to(REPO)}:{line}: {w!r}" for w in hits]
    assert not found, "scenario words in code:\n" + "\n".join(found)
