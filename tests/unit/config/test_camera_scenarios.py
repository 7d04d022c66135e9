"""A camera scenario's mistakes, caught whole before any run: in the scenario file (the images
block, the replay's index), in its suites (columns the manifest does not have), in its pins (the
package's index file), each named with its file and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cityfactory.config.scenarios import ScenarioError, load_scenario
from cityfactory.pipeline.preflight import validate_scenario
from support import REPO

SHIPPED = REPO / "dags" / "scenarios" / "solar_cells.yaml"


def _variant(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(SHIPPED.read_text())
    edit(data)
    path = tmp_path / "solar_cells.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("edit", "words"), [
    (lambda d: d.pop("images"), "a source of format images needs an 'images' block"),
    (lambda d: d["source"]["images"]["index"].update(label_columns=["verdict"]), "'verdict' is not one of the index's columns"),
    (lambda d: d["images"].update(mode="CMYK"), "key 'images.mode'"),
    (lambda d: d["images"].update(file_column="filename"), "images.file_column 'filename' is not a schema column"),
    (lambda d: d["source"].update(images=None), "an image_replay source needs format images"),
    (lambda d: d["images"]["labels"].update(key=["sha"]), "key 'images.labels': Value error, 'sha' is not a declared column"),
])
def test_a_camera_scenario_mistake_names_the_key(tmp_path, edit, words):
    with pytest.raises(ScenarioError, match="solar_cells.yaml") as caught:
        load_scenario(_variant(tmp_path, edit))
    assert words in str(caught.value)


def test_the_shipped_camera_scenario_validates_whole():
    assert validate_scenario(SHIPPED, check_dbt=False) == []


def test_a_suite_naming_what_the_manifest_lacks_and_a_wrong_pin_are_named(tmp_path, monkeypatch):
    suites = tmp_path / "expectations"
    suites.mkdir()
    for suite in (REPO / "expectations").glob("*.json"):
        (suites / suite.name).write_bytes(suite.read_bytes())
    manifest = json.loads((suites / "solar_cells_manifest.json").read_text())
    manifest["expectations"].append({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "exif_gps"}})
    (suites / "solar_cells_manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("CITYFACTORY_EXPECTATIONS_DIR", str(suites))
    path = _variant(tmp_path, lambda d: d["source"]["files"][0].update(sha256="0" * 64))
    problems = "\n".join(validate_scenario(path, check_dbt=False))
    assert "'exif_gps' is not a bronze column" in problems
    assert "key 'source.files.0'" in problems and "sha256" in problems
