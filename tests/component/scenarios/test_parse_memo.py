"""The DAG files' verdict on the scenarios is remembered between parses, and never outlives a change:
a broken spec, fleet, card or departments file shows at the next parse, however small the edit."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from support import REPO, configure_harbour_air


@pytest.fixture
def harbour(tmp_path, monkeypatch):
    configure_harbour_air(tmp_path, monkeypatch, "2016-03-01", "2016-03-03")
    monkeypatch.setenv("CITYFACTORY_HOME", str(tmp_path / "home"))
    return tmp_path


def _verdict():
    """(usable names, broken files, whether it was made afresh)."""
    from cityfactory.pipeline import preflight
    from cityfactory.settings import get_settings

    made = []
    make = preflight._verdict

    def counted(directory):
        made.append(directory)
        return make(directory)

    preflight._verdict = counted
    try:
        usable, broken = preflight.usable_scenarios(get_settings().scenarios_dir)
    finally:
        preflight._verdict = make
    return [s.name for s in usable], broken, bool(made)


def test_a_second_parse_reads_the_memo_and_gets_the_same_scenarios(harbour):
    from cityfactory.config.scenarios import load_scenario
    from cityfactory.pipeline.preflight import usable_scenarios
    from cityfactory.settings import get_settings

    assert _verdict() == (["harbour_air"], {}, True)
    assert _verdict() == (["harbour_air"], {}, False)
    [remembered], _ = usable_scenarios(get_settings().scenarios_dir)
    assert remembered == load_scenario(harbour / "scenarios" / "harbour_air.yaml"), "every field, as validated"


def test_an_edit_of_the_same_size_in_the_same_instant_is_seen(harbour):
    """A key of contents, not of sizes and times: file systems stamp times coarsely."""
    spec = harbour / "models" / "harbour_air.yaml"
    assert _verdict()[2]
    text = spec.read_text()
    spec.write_text(text.replace("task_type: forecast", "task_type: forecass"))
    assert len(spec.read_text()) == len(text)
    usable, broken, afresh = _verdict()
    assert afresh and usable == [] and "'forecass' is no known kind of model" in broken["harbour_air.yaml"]
    spec.write_text(text)
    assert _verdict() == (["harbour_air"], {}, True)


@pytest.mark.parametrize("breaks", ["fleet", "card", "departments"])
def test_what_the_scenario_refers_to_is_part_of_the_key(harbour, monkeypatch, breaks):
    from cityfactory.settings import get_settings

    departments = harbour / "domains.yaml"
    shutil.copy(REPO / "dags" / "domains.yaml", departments)
    monkeypatch.setenv("CITYFACTORY_DOMAINS_FILE", str(departments))
    assert _verdict()[1] == {}
    settings = get_settings()
    if breaks == "fleet":
        (settings.fleets_dir / "harbour_air.yaml").write_text("nodes: [")
    elif breaks == "card":
        (settings.models_dir / "model_card.md").unlink()
    else:
        departments.write_text(yaml.safe_dump({"domains": {"transport": {"title": "Transport"}}}))
    usable, broken, afresh = _verdict()
    assert afresh and usable == [] and broken["harbour_air.yaml"]


def test_a_damaged_or_foreign_memo_is_made_afresh(harbour):
    from cityfactory.settings import get_settings

    _verdict()
    [memo] = (get_settings().cache_dir / "parse").glob("*.json")
    memo.write_text("{not json")
    assert _verdict() == (["harbour_air"], {}, True)
    forged = json.loads(memo.read_text())
    forged["usable"][0]["schedule"] = "every night"
    memo.write_text(json.dumps(forged))
    assert _verdict() == (["harbour_air"], {}, True), "a scenario the memo holds is validated again"
    forged["key"] = "0" * 64
    memo.write_text(json.dumps(forged))
    assert _verdict() == (["harbour_air"], {}, True)


def test_a_home_that_cannot_be_written_costs_only_the_memo(harbour):
    from cityfactory.settings import get_settings

    get_settings().cache_dir.parent.mkdir(parents=True)
    get_settings().cache_dir.write_text("a file where the cache folder should be")
    assert _verdict() == (["harbour_air"], {}, True)
    assert _verdict() == (["harbour_air"], {}, True)
