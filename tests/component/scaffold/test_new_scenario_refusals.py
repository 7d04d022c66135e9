"""``new-scenario`` refuses before it writes: a bad name, data outside the data folder, a scenario
that exists (nothing of it overwritten); and its fleet takes ports no other fleet or process holds."""

from __future__ import annotations

import datetime as dt
import socket

import pytest
import yaml
from cityfactory import cli
from cityfactory.profiling.drafts import ScaffoldError
from cityfactory.scaffold.new_scenario import new_scenario
from cityfactory.scaffold.ports import FIRST_PORT, free_ports
from support import scaffold_project


def _hourly_csv(path, hours: int = 24 * 30):
    start = dt.datetime(2024, 1, 1)
    rows = [f"{start + dt.timedelta(hours=i):%Y-%m-%d %H:%M:%S},{50 + (i * 7) % 13}" for i in range(hours)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("time,level\n" + "\n".join(rows) + "\n")
    return path


def test_refusals_name_what_and_how(tmp_path, monkeypatch, capsys):
    data = scaffold_project(tmp_path, monkeypatch)
    csv = _hourly_csv(data / "river" / "gauge.csv")
    with pytest.raises(ScaffoldError, match="'River-1': a scenario name is lower case letters"):
        new_scenario("River-1", [csv], check_dbt=False)
    outside = _hourly_csv(tmp_path / "elsewhere" / "gauge.csv")
    assert cli.main(["new-scenario", "river", "--from", str(outside)]) == 2
    assert "a scenario's data lives in a folder of the data directory" in capsys.readouterr().err
    with pytest.raises(ScaffoldError, match="no such file or folder"):
        new_scenario("river", [data / "river" / "missing.csv"], check_dbt=False)
    with pytest.raises(ScaffoldError, match=r"--domain 'water': not a department of .*domains\.yaml \(one of: city_management, "):
        new_scenario("river", [csv], domain="water", check_dbt=False)


def test_an_existing_scenario_is_never_overwritten(tmp_path, monkeypatch):
    data = scaffold_project(tmp_path, monkeypatch)
    csv = _hourly_csv(data / "river" / "gauge.csv")
    spec = tmp_path / "models" / "river.yaml"
    spec.write_text("# mine\n")
    with pytest.raises(ScaffoldError, match=r"scenario 'river' exists already: .*models/river\.yaml"):
        new_scenario("river", [csv], check_dbt=False)
    assert spec.read_text() == "# mine\n"
    assert not (tmp_path / "scenarios" / "river.yaml").exists(), "nothing is written when anything exists"


def test_a_single_series_draft_validates_and_its_fleet_serves_every_row(tmp_path, monkeypatch):
    data = scaffold_project(tmp_path, monkeypatch)
    made = new_scenario("river", [_hourly_csv(data / "river" / "gauge.csv")], domain="environment", check_dbt=True)
    assert made.kind == "forecast" and made.problems == []
    assert yaml.safe_load((tmp_path / "scenarios" / "river.yaml").read_text())["domain"] == "environment"
    fleet = yaml.safe_load((tmp_path / "fleets" / "river.yaml").read_text())
    assert len(fleet["nodes"]) == 2 and all("series" not in n for n in fleet["nodes"])
    spec = yaml.safe_load((tmp_path / "models" / "river.yaml").read_text())
    assert spec["data"]["target"] == "target_level" and "series" not in spec["data"]
    assert spec["baselines"]["fit"] == "pooled"


def test_ports_are_free_and_no_other_fleets(tmp_path):
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({"nodes": [{"id": "a", "district": "d",
                                                                    "url": f"http://127.0.0.1:{FIRST_PORT}"}]}))
    (tmp_path / "broken.yaml").write_text("nodes: [\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", FIRST_PORT + 1))
        busy.listen()
        ports = free_ports(2, tmp_path)
    assert FIRST_PORT not in ports and FIRST_PORT + 1 not in ports and len(set(ports)) == 2


def test_a_dataset_linked_into_the_data_folder_is_taken_where_it_is_linked(tmp_path, monkeypatch):
    data = scaffold_project(tmp_path, monkeypatch)
    elsewhere = _hourly_csv(tmp_path / "downloads" / "gauge.csv")
    (data / "river").symlink_to(elsewhere.parent)
    made = new_scenario("river", [data / "river" / "gauge.csv"], check_dbt=False)
    assert made.problems == []
    assert yaml.safe_load((tmp_path / "scenarios" / "river.yaml").read_text())["source"]["dataset"] == "river"
