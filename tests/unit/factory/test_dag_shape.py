"""The scenario DAG: integrity, parse cost, and whole runs through Airflow's dag.test on real data."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import subprocess
import sys
from zoneinfo import ZoneInfo

import pytest
from cityfactory.config.scenarios import get_scenario, load_scenarios
from support import REPO

DAG_FILE = REPO / "dags" / "scenario_pipelines.py"
HEAVY = ["great_expectations", "torch", "mlflow", "onnxruntime", "dbt", "pyarrow", "boto3"]


def test_one_dag_per_scenario(dagbag):
    assert dagbag.import_errors == {}
    scenarios = [s.dag_id for s in load_scenarios(REPO / "dags" / "scenarios")]
    assert sorted(dagbag.dag_ids) == sorted([*scenarios, "governance_maintenance"])


def _next(dag, task_id: str) -> set[str]:
    """Downstream tasks other than governance (which the mapped tasks lead to)."""
    return dag.task_dict[task_id].downstream_task_ids - {"governance"}


def test_traffic_flow_dag_shape(dagbag):
    dag = dagbag.get_dag("traffic_flow")
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.timetable.expression == "30 2 * * *" and dag.timetable.interval == dt.timedelta(days=1)
    assert set(dag.params) == {"data_interval_start", "data_interval_end", "stages", "retrain", "full_refresh",
                               "search_trials"}
    assert dag.params["stages"] == ["ingest", "quality", "transform", "monitor", "train", "compress", "rollout"]
    assert dag.params["retrain"] == "auto" and dag.params["full_refresh"] is False and dag.params["search_trials"] is None
    assert _next(dag, "land") == {"ingest"}
    assert _next(dag, "ingest") == {"ingest_summary"}
    chain = ["ingest_summary", "bronze_gate", "transform", "features_gate", "export_gold", "monitor", "decide"]
    for upstream, downstream in itertools.pairwise(chain):
        assert downstream in _next(dag, upstream)
        assert dag.task_dict[downstream].trigger_rule == "none_failed"  # a deselected stage skips, not blocks
    assert _next(dag, "transform") == {"features_gate", "export_gold"}  # both work on the window it rebuilt
    assert _next(dag, "export_gold") == {"monitor", "decide", "plan_search", "trials", "train", "compress", "rollout_plan"}
    assert _next(dag, "decide") == {"plan_search"}  # training happens only when the decision says so
    assert _next(dag, "plan_search") == {"trials", "train"}
    assert _next(dag, "trials") == {"train"} and dag.task_dict["trials"].is_mapped  # batches of trials over the workers
    assert _next(dag, "train") == {"compress"}
    assert dag.task_dict["canary_deploy"].is_mapped and _next(dag, "city_gate") == {"promote_champion"}
    assert _next(dag, "promote_champion") == {"rollback"}  # a teardown: it waits for the whole rollout anyway
    assert dag.task_dict["rollback"].is_teardown and dag.task_dict["rollout_plan"].is_setup
    assert {t.task_id for t in dag.tasks if t.is_mapped} == {"land", "ingest", "trials", "canary_deploy", "district_deploy",
                                                             "city_deploy"}
    # governance after everything, whatever happened; the watcher, after it alone, keeps a failed run failed
    governance, watcher = dag.task_dict["governance"], dag.task_dict["watcher"]
    assert governance.trigger_rule == watcher.trigger_rule == "all_done"
    # governance follows the tasks that could still run when a failure ends the chain early: the
    # mapped ones (instances side by side) and the end; every other task is on the single chain
    assert governance.upstream_task_ids == {"land", "ingest", "trials", "canary_deploy", "district_deploy", "city_deploy",
                                            "rollback"}
    for task in set(dag.task_ids) - governance.upstream_task_ids - {"governance", "watcher"}:
        assert not dag.task_dict[task].is_mapped and "governance" in dag.task_dict[task].get_flat_relative_ids(upstream=False)
    assert watcher.upstream_task_ids == {"governance"}
    assert {t.task_id for t in dag.tasks if not t.downstream_task_ids} == {"watcher"}
    # no surprise catch-up when unpaused, and no Backfill beside the form's own date range
    assert dag.start_date is None and dag.timetable.run_immediately == dt.timedelta(minutes=2)
    assert set(dag.allowed_run_types) == {"scheduled", "manual"}


def test_parsing_imports_nothing_heavy():
    code = (
        "import sys, time, runpy; t = time.perf_counter();"
        f"runpy.run_path({str(DAG_FILE)!r});"
        "print(round(time.perf_counter() - t, 3));"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split("\n")
    assert out[1] == "[]", f"heavy modules imported at parse time: {out[1]}"


def test_human_oversight_pauses_before_the_final_stage(airflow_db):
    from cityfactory.factory.scenario_dag import build_scenario_dag

    scenario = get_scenario("traffic_flow")
    governance = scenario.governance.model_copy(update={"human_approval_final_stage": True})
    variant = scenario.model_copy(update={"governance": governance, "name": "traffic_flow_overseen"})
    dag = build_scenario_dag(variant)
    approve = dag.task_dict["approve_city"]
    assert type(approve).__name__ == "ApprovalOperator"
    assert approve.upstream_task_ids == {"district_gate"}
    assert dag.task_dict["city_targets"].upstream_task_ids == {"approve_city", "rollout_plan"}
    assert "approve_city" not in dagbag_ids()


def dagbag_ids() -> set[str]:
    from airflow.dag_processing.dagbag import DagBag

    return {t for d in DagBag(dag_folder=str(REPO / "dags")).dags.values() for t in d.task_dict}


def test_governance_waits_for_a_parallel_branch_and_not_for_chain_tasks():
    """The rule itself, on a DAG with a branch beside the chain and a mapped task."""
    from airflow.sdk import DAG, task
    from cityfactory.factory.scenario_dag import tasks_that_may_still_run

    with DAG("shape") as dag:
        @task
        def step(x=None):
            return x

        first = step.override(task_id="first")()
        side = step.override(task_id="side")(first)  # beside middle: neither before nor after it
        middle = step.override(task_id="middle")(first)
        fanned = step.override(task_id="fanned").expand(x=[1, 2])
        middle >> fanned
        last = step.override(task_id="last")()
        [side, fanned] >> last
        step.override(task_id="report")()  # the all_done task the rule is for
    assert {t.task_id for t in tasks_that_may_still_run(dag, {"report"})} == {"side", "middle", "fanned", "last"}


@pytest.mark.parametrize(("seconds_after", "runs_tonight"), [(0.5, True), (25, True), (100, True), (150, False),
                                                           (30 * 60, False), (120 * 60, False), (600 * 60, False)])
def test_unpaused_soon_after_its_nightly_time_a_dag_waits_for_the_next_night(monkeypatch, seconds_after, runs_tonight):
    """Airflow's timetable runs the last fire at once if it was less than a tenth of the period
    (2.4 h for a nightly cron) ago, unless told a shorter ``run_immediately``; the dag-processor asks
    it again at every parse, so a parse in the instant after the nightly time (before the scheduler
    made the run) must still give tonight's run."""
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables import trigger
    from airflow.timetables.base import TimeRestriction
    from cityfactory.config.scenarios import get_scenario
    from cityfactory.factory.scenario_dag import build_scenario_dag

    scenario = get_scenario("traffic_flow")  # 02:30 America/Chicago
    fire = dt.datetime(2026, 11, 25, 2, 30, tzinfo=ZoneInfo(scenario.timezone))
    now = fire + dt.timedelta(seconds=seconds_after)
    monkeypatch.setattr(trigger, "utcnow", lambda: now.astimezone(dt.UTC))
    # the timetable as the scheduler has it: through the serialized DAG, as JSON
    serialized = json.loads(json.dumps(DagSerialization.to_dict(build_scenario_dag(scenario))))
    timetable = DagSerialization.from_dict(serialized).timetable
    first = timetable.next_dagrun_info(last_automated_data_interval=None,
                                       restriction=TimeRestriction(earliest=None, latest=None, catchup=False))
    night = fire if runs_tonight else fire + dt.timedelta(days=1)
    assert first.run_after == night
    assert first.data_interval.start == night - dt.timedelta(days=1)  # the night it ingests: the day before that run


def test_heavy_tasks_share_one_pool_and_ingestion_outranks_them(dagbag):
    """Searches, refits and compression of every scenario take at most the pool's slots; any DAG's
    ingestion is ahead of any DAG's training in Airflow's queue (absolute priorities)."""
    from cityfactory.factory.pools import TRAINING_POOL_NAME, training_pool

    for dag_id in ("traffic_flow", "solar_cells"):
        tasks = {t.task_id.rsplit(".", 1)[-1]: t for t in dagbag.get_dag(dag_id).tasks}
        pooled = {name for name, t in tasks.items() if t.pool == TRAINING_POOL_NAME}
        assert pooled == {"trials", "train", "compress"}, (dag_id, pooled)
        assert {t.weight_rule for t in tasks.values()} == {"absolute"}
        assert min(tasks[n].priority_weight for n in ("plan", "land", "ingest", "ingest_summary")) > \
            max(t.priority_weight for n, t in tasks.items() if n not in ("plan", "land", "ingest", "ingest_summary"))
        assert max(tasks[n].priority_weight for n in pooled) < min(t.priority_weight for n, t in tasks.items()
                                                                 if n not in pooled)
    assert training_pool().set_command()[:4] == ["airflow", "pools", "set", TRAINING_POOL_NAME]
