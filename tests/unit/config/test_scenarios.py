"""Scenario files: the shipped ones validate; bad ones fail naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cityfactory.config.scenarios import ScenarioError, load_scenario, load_scenarios
from support import REPO

SCENARIOS = REPO / "dags" / "scenarios"


def test_shipped_scenarios_validate():
    scenarios = load_scenarios(SCENARIOS)
    assert [s.name for s in scenarios] == sorted(p.stem for p in SCENARIOS.glob("*.yaml"))
    traffic = next(s for s in scenarios if s.name == "traffic_flow")
    assert traffic.schema_.event_time == "date_time"
    assert traffic.schema_.columns["traffic_volume"].min == 0


def _write_variant(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load((SCENARIOS / "traffic_flow.yaml").read_text())
    edit(data)
    path = tmp_path / "traffic_flow.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("edit", "key", "message"),
    [
        (lambda d: d.pop("governance"), "governance", "Field required"),
        (lambda d: d["schema"]["columns"]["temp"].update(type="decimal"), "schema.columns.temp.type", "Input should be"),
        (lambda d: d["source"].update(colour="blue"), "source.colour", "'colour' is not a key here"),
        (lambda d: d.update(schedule="nightly"), "schedule", "5-field cron"),
        (lambda d: d["schema"].update(key=["date_time", "plate"]), "schema", "'plate' is not a declared column"),
        (lambda d: d["source"]["files"][0].update(sha256="abc"), "source.files.0.sha256", "pattern"),
    ],
)
def test_bad_scenario_names_file_and_key(tmp_path, edit, key, message):
    path = _write_variant(tmp_path, edit)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert str(path) in str(err.value)
    assert f"key '{key}'" in str(err.value)
    assert message in str(err.value)


def test_name_must_match_file(tmp_path):
    path = _write_variant(tmp_path, lambda d: d.update(name="air_quality"))
    with pytest.raises(ScenarioError, match="key 'name' is 'air_quality' but the file is traffic_flow.yaml"):
        load_scenario(path)


def test_unreadable_yaml_names_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match=str(path)):
        load_scenario(path)


def test_unreadable_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nsource:\n  kind: csv_replay\n   dataset: x\n")
    with pytest.raises(ScenarioError, match=rf"^{path}:4: not valid YAML: "):
        load_scenario(path)


def test_a_comma_in_unquoted_text_gets_a_hint_and_the_line(tmp_path):
    text = (REPO / "dags" / "scenarios" / "air_quality.yaml").read_text()
    broken = text.replace("{type: float, unit: ug/m3, min: 0, max: 2000, nullable: true, description: Fine particulate matter}",
                          "{type: float, unit: ug/m3, min: 0, max: 2000, nullable: true, description: Fine, particulate}")
    assert broken != text
    path = tmp_path / "air_quality.yaml"
    path.write_text(broken)
    line = next(n for n, row in enumerate(broken.splitlines(), 1) if "Fine, particulate" in row)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value) == (f"{path}:{line}: key 'schema.columns.PM2.5.particulate': 'particulate' is not a key here; "
                                 "if it is part of a text value, put that value in quotes (in {...} an unquoted comma "
                                 "starts a new key)")
