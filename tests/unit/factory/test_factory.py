"""The factory: a DAG per valid scenario, built from configuration alone; a broken scenario file is
an import error naming it while the others load; per-series judgement of a model."""

from __future__ import annotations

import datetime as dt
import shutil

import numpy as np
import pytest
from cityfactory.tasktypes.forecast.gate import decide
from cityfactory.tasktypes.forecast.metrics import scores, scores_by_series
from support import REPO


@pytest.fixture
def dagbag_of(airflow_db, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    def load(scenarios_dir):
        monkeypatch.setenv("CITYFACTORY_SCENARIOS_DIR", str(scenarios_dir))
        return DagBag(dag_folder=str(REPO / "dags"))

    return load


def test_air_quality_dag_reads_as_the_chain(dagbag_of):
    dag = dagbag_of(REPO / "dags" / "scenarios").get_dag("air_quality")
    assert dag.timetable.expression == "30 1 * * *" and str(dag.timetable.timezone) in ("Asia/Shanghai", "Timezone('Asia/Shanghai')")
    assert dag.owner == "environment-data-team@city.example"
    groups = set(dag.task_group.children)
    assert {"ingest_stage", "quality_and_transform", "train_and_compress", "rollout_canary", "rollout_district",
            "rollout_all", "governance_stage"} <= groups
    assert dag.task_group.children["rollout_district"].children.keys() == {"district_targets", "district_deploy", "district_gate"}


def test_a_broken_scenario_is_an_import_error_naming_it_and_the_others_load(dagbag_of, tmp_path):
    shutil.copy(REPO / "dags" / "scenarios" / "traffic_flow.yaml", tmp_path)
    text = (REPO / "dags" / "scenarios" / "air_quality.yaml").read_text()
    (tmp_path / "air_quality.yaml").write_text(text.replace("timezone: Asia/Shanghai", "timezone: Asia/Atlantis"))
    bag = dagbag_of(tmp_path)
    assert "traffic_flow" in bag.dag_ids and "air_quality" not in bag.dag_ids
    [(path, error)] = bag.import_errors.items()
    assert path.endswith("scenario_config_errors.py")
    assert "air_quality.yaml" in error and "schema.timezone" in error and "Asia/Atlantis" in error


def test_nightly_days_are_the_scenarios_own_yesterday():
    from cityfactory.run_calendar import resolve_days

    # 01:30 in Shanghai on the 10th is 17:30 UTC on the 9th: the run covers Shanghai's 9th
    start = dt.datetime(2026, 3, 8, 17, 30, tzinfo=dt.UTC)
    end = dt.datetime(2026, 3, 9, 17, 30, tzinfo=dt.UTC)
    assert resolve_days({}, start, end, "Asia/Shanghai") == [dt.date(2026, 3, 9)]
    assert resolve_days({}, start, end, "UTC") == [dt.date(2026, 3, 8)]


def test_a_nightly_run_takes_the_days_missed_since_the_last_ingested_one():
    from cityfactory.run_calendar import with_missed_days

    night = [dt.date(2026, 3, 9)]
    assert with_missed_days(night, dt.date(2026, 3, 8), 14) == night
    assert with_missed_days(night, None, 14) == night, "a new scenario does not backfill"
    assert with_missed_days(night, dt.date(2026, 3, 5), 14) == [dt.date(2026, 3, d) for d in (6, 7, 8, 9)]
    assert with_missed_days(night, dt.date(2025, 1, 1), 2) == [dt.date(2026, 3, d) for d in (7, 8, 9)], "at most the limit"


def test_the_gate_refuses_a_model_worse_than_persistence_on_too_many_series():
    good = decide("rmse", 9.0, 10.0, None, 0.05, 0.02, worse_series=["b"], series_count=4, max_worse_share=0.25)
    assert good.alias == "challenger"
    bad = decide("rmse", 9.0, 10.0, None, 0.05, 0.02, worse_series=["b", "c"], series_count=4, max_worse_share=0.25)
    assert bad.alias is None and "worse than persistence on 2 of 4 series (b, c)" in bad.reason


def test_mape_has_a_floor_and_smape_is_bounded():
    actual, predicted = np.array([0.0, 100.0]), np.array([5.0, 110.0])
    s = scores(actual, predicted, mape_floor=10.0)
    assert s["mape"] == pytest.approx((5 / 10 + 10 / 100) / 2 * 100)
    assert s["smape"] == pytest.approx((2.0 + 20 / 210) / 2 * 100)
    by = scores_by_series(np.array(["x", "y"]), actual, {"model": predicted})
    assert by["x"]["model"]["mae"] == 5.0 and by["y"]["model"]["mae"] == 10.0


def test_the_trigger_form_offers_stages_as_a_multi_select_and_days_in_the_scenarios_zone():
    from airflow.sdk.definitions.param import ParamValidationError
    from cityfactory.config.scenarios import get_scenario
    from cityfactory.factory.scenario_dag import build_scenario_dag
    from cityfactory.pipeline.stages import STAGES

    params = build_scenario_dag(get_scenario("air_quality")).params
    stages = params.get_param("stages")
    assert stages.schema["type"] == "array" and stages.schema["examples"] == STAGES  # rendered as a multi-select
    assert stages.value == STAGES
    assert "Asia/Shanghai" in params.get_param("data_interval_start").schema["title"]
    for bad in (["ingest", "ingest"], [], ["deploy"]):
        with pytest.raises(ParamValidationError):
            params.get_param("stages").resolve(bad)


def test_every_numeric_param_has_a_maximum_and_the_server_caps_whatever_the_form_says(monkeypatch):
    from airflow.sdk.definitions.param import ParamValidationError
    from cityfactory.config.scenarios import get_scenario, load_scenarios
    from cityfactory.factory.scenario_dag import build_scenario_dag
    from cityfactory.search.plan import BUDGET_CAP, trial_budget
    from cityfactory.settings import get_settings
    from cityfactory.tasktypes import load_model_spec

    for scenario in load_scenarios(get_settings().scenarios_dir):
        params = build_scenario_dag(scenario).params
        for name in params:
            schema = params.get_param(name).schema
            types = schema.get("type") if isinstance(schema.get("type"), list) else [schema.get("type")]
            if {"integer", "number"} & set(types):
                assert "maximum" in schema, f"{scenario.name}: param {name} has no maximum"
    trials = build_scenario_dag(get_scenario("traffic_flow")).params.get_param("search_trials")
    with pytest.raises(ParamValidationError):
        trials.resolve(10**12)
    monkeypatch.setenv(BUDGET_CAP, "2")
    assert trial_budget(load_model_spec(get_scenario("traffic_flow").model_spec), 500) == 2


NOW = dt.datetime(2026, 11, 25, 9, 30, tzinfo=dt.UTC)


def test_the_forms_days_become_the_runs_data_interval_on_the_scenarios_clock():
    from cityfactory.factory.trigger_form import checked_trigger

    body = {"conf": {"data_interval_start": "2026-03-01", "data_interval_end": "2026-03-31", "stages": ["ingest"]},
            "logical_date": None, "data_interval_start": None, "data_interval_end": None}
    checked = checked_trigger(body, "America/Chicago", NOW)
    # midnight to midnight in Chicago, across the spring clock change (CST -6 h, then CDT -5 h)
    assert checked["data_interval_start"] == "2026-03-01T06:00:00+00:00"
    assert checked["data_interval_end"] == "2026-04-01T05:00:00+00:00"
    assert checked["logical_date"] == NOW.isoformat() and checked["conf"] == body["conf"]
    # the same interval given twice is fine; a logical date alone: unchanged (Airflow's schedule infers the interval)
    assert checked_trigger(checked, "America/Chicago", NOW) == checked
    assert checked_trigger({"conf": {}, "logical_date": NOW.isoformat()}, "America/Chicago", NOW)["conf"] == {}
    assert "data_interval_start" not in checked_trigger({"conf": {}, "logical_date": NOW.isoformat()}, "America/Chicago", NOW)
    # nothing at all (a REST call with "logical_date": null): last night on the scenario's clock, as the schedule's run
    night = checked_trigger({"conf": {"retrain": "never"}, "logical_date": None}, "America/Chicago", NOW)
    assert night["data_interval_start"] == "2026-11-24T06:00:00+00:00"
    assert night["data_interval_end"] == "2026-11-25T06:00:00+00:00"
    assert night["logical_date"] == NOW.isoformat() and night["conf"] == {"retrain": "never"}
    assert checked_trigger({"conf": ["not", "a", "mapping"]}, "America/Chicago", NOW)["conf"] == ["not", "a", "mapping"]


@pytest.mark.parametrize(("body", "message"), [
    ({"conf": {"data_interval_start": "2026-03-01"}}, r"give both the first day \(data_interval_start\) and the last day \(data_interval_end\), or neither"),
    ({"conf": {"data_interval_end": "2026-03-01", "data_interval_start": None}}, r"give both the first day \(data_interval_start\) and the last day"),
    ({"conf": {"data_interval_start": "2026-03-10", "data_interval_end": "2026-03-01"}}, r"the last day \(data_interval_end\) 2026-03-01 is before"),
    ({"conf": {"data_interval_start": "March 1", "data_interval_end": "2026-03-01"}}, "must be YYYY-MM-DD dates"),
    ({"conf": {"data_interval_start": 20260301, "data_interval_end": 20260302}}, "must be YYYY-MM-DD dates"),
    ({"conf": {"data_interval_start": "2026-03-01", "data_interval_end": "2026-03-02"},
      "data_interval_start": "2026-01-01T06:00:00Z", "data_interval_end": "2026-01-02T06:00:00Z"}, "two date ranges"),
    ({"conf": {}, "data_interval_start": "2026-01-01T00:00:00Z", "data_interval_end": "2026-01-02T00:00:00Z"},
     "data interval start is 2025-12-31 18:00 in America/Chicago: a run covers whole days there"),
    ({"conf": {}, "data_interval_start": "2026-01-01T06:00:00Z", "data_interval_end": None}, "give both data interval start and end"),
    ({"conf": {}, "data_interval_start": "2026-01-02T06:00:00Z", "data_interval_end": "2026-01-01T06:00:00Z"}, "not after its start"),
    ({"conf": {"data_interval_start": "9999-12-30", "data_interval_end": "9999-12-31"}}, r"data_interval_end\) 9999-12-31 is in the future"),
    ({"conf": {"data_interval_start": "0001-01-01", "data_interval_end": "2026-01-01"}}, r"data_interval_start\) 0001-01-01 is before"),
    ({"conf": {}, "data_interval_start": "9999-12-31T06:00:00Z", "data_interval_end": "9999-12-31T07:00:00Z"},
     "data_interval_start '9999-12-31T06:00:00Z' is out of range"),
])
def test_a_bad_date_range_is_refused_naming_the_field(body, message):
    from cityfactory.factory.trigger_form import checked_trigger
    from cityfactory.run_calendar import ParamsError

    with pytest.raises(ParamsError, match=message):
        checked_trigger(body, "America/Chicago", NOW)


def _trigger(middleware, headers: list[tuple[bytes, bytes]]) -> tuple[list[dict], list[bool]]:
    """A POST to a scenario's dagRuns through the middleware; what went out, and whether Airflow's app was reached."""
    import asyncio

    sent, reached = [], []

    async def airflow(scope, receive, send):
        reached.append(True)

    async def receive():
        return {"type": "http.request", "body": b'{"conf": {}}', "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/v2/dags/traffic_flow/dagRuns", "headers": headers,
             "query_string": b"", "root_path": "", "scheme": "http", "server": ("127.0.0.1", 8080)}
    asyncio.run(middleware(airflow)(scope, receive, send))
    return sent, reached


def test_an_anonymous_trigger_is_passed_to_airflow_before_any_scenario_is_read(monkeypatch):
    from cityfactory.factory import trigger_form

    read = []
    monkeypatch.setattr(trigger_form, "scenario_zones", lambda: read.append(1) or {"traffic_flow": "UTC"})
    sent, reached = _trigger(trigger_form.TriggerFormMiddleware, [(b"content-type", b"application/json")])
    assert reached and not sent and read == []  # Airflow answers 401 itself; no work done for the anonymous


@pytest.mark.parametrize("header", [b"Bearer  eyJhbGciOi.x.y", b"Bearer eyJ x", b"Bearer\teyJhbGciOi.x.y", b"Basic abc"])
def test_a_malformed_authorization_header_never_reaches_airflow(monkeypatch, header):
    """Airflow strips what follows 'Bearer ' and would accept two spaces: such a trigger must not
    pass without the form's check, so it is refused here, before any scenario is read."""
    from cityfactory.factory import trigger_form

    read = []
    monkeypatch.setattr(trigger_form, "scenario_zones", lambda: read.append(1) or {"traffic_flow": "UTC"})
    sent, reached = _trigger(trigger_form.TriggerFormMiddleware, [(b"authorization", header)])
    assert not reached and read == [] and sent[0]["status"] == 401
