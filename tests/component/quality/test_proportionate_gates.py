"""A suite says per expectation what a breach does: stop the run (the default), or quarantine the
offending rows with the expectation as their reason and let the rest go on."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from support import REPO

FRAME = pd.DataFrame({"station": ["a"] * 6, "repeat_hours": [1, 2, 40, 41, 3, None], "level": [5.0] * 6},
                     index=[10, 11, 12, 13, 14, 15])  # an index that is not the position


@pytest.fixture
def suites(tmp_path, monkeypatch):
    monkeypatch.setenv("CITYFACTORY_EXPECTATIONS_DIR", str(tmp_path))

    def write(*expectations) -> str:
        (tmp_path / "mart.json").write_text(json.dumps({"name": "mart", "expectations": list(expectations)}))
        return "mart"

    return write


STUCK = {"type": "expect_column_values_to_be_between", "kwargs": {"column": "repeat_hours", "max_value": 36}}
LEVEL = {"type": "expect_column_mean_to_be_between", "kwargs": {"column": "level", "min_value": 1, "max_value": 10}}


def test_a_quarantining_expectation_sets_the_rows_aside_and_the_gate_passes(suites):
    from cityfactory.quality.gates import validate

    result = validate(FRAME, suites({**STUCK, "meta": {"on_fail": "quarantine"}}, LEVEL))
    assert result.success and result.failures == []
    assert sorted(result.quarantined) == [2, 3]  # positions in the frame, not its index
    assert "expect_column_values_to_be_between(repeat_hours) {'max_value': 36}" in result.quarantined[2]
    assert [c["quarantined"] for c in result.checks] == [2, 0]
    assert '"unexpected_index_list"' not in json.dumps(result.raw)  # the stored result stays small


def test_by_default_a_breach_stops_and_names_expectation_column_and_rows(suites, capfd):
    from cityfactory.quality.gates import validate

    result = validate(FRAME, suites(STUCK, LEVEL))
    # nothing on stderr: Airflow logs a task's stderr at ERROR (GX's progress bars were such lines)
    assert capfd.readouterr().err == ""
    assert not result.success and result.quarantined == {}
    [failure] = result.failures
    assert failure["column"] == "repeat_hours" and failure["observed"].startswith("2 unexpected of 6")


@pytest.mark.parametrize(("meta", "words"), [
    ({"on_fail": "skip"}, "'skip' is none of stop, quarantine"),
    ({"on_fail": "quarantine"}, "expect_column_mean_to_be_between in the features_suite cannot (use stop)"),
])
def test_validate_refuses_what_a_gate_cannot_do(tmp_path, monkeypatch, meta, words):
    from cityfactory.pipeline.preflight import validate_scenario

    for suite in (REPO / "expectations").glob("*.json"):
        shutil.copy(suite, tmp_path)
    path = tmp_path / "air_quality_features.json"
    suite = json.loads(path.read_text())
    mean = next(e for e in suite["expectations"] if e["type"] == "expect_column_mean_to_be_between")
    mean["meta"] = {**mean.get("meta", {}), **meta}
    path.write_text(json.dumps(suite))
    monkeypatch.setenv("CITYFACTORY_EXPECTATIONS_DIR", str(tmp_path))
    problems = validate_scenario(REPO / "dags" / "scenarios" / "air_quality.yaml", check_dbt=False)
    assert len(problems) == 1 and str(path) in problems[0] and "meta.on_fail" in problems[0] and words in problems[0]
