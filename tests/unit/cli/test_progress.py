"""What ``make run`` prints (a line per stage as it ends; everything else into the log file) and
how ``make ui`` stops what it started."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time

from cityfactory.config.scenarios import get_scenario
from cityfactory.factory.scenario_dag import build_scenario_dag
from cityfactory.progress import stage_line, stages_of
from support import REPO


def test_output_of_the_process_and_its_children_goes_to_the_log(tmp_path):
    log = tmp_path / "run.log"
    code = f"""
import os, pathlib, subprocess, sys
from cityfactory.progress import output_to
with output_to(pathlib.Path({str(log)!r})) as terminal:
    print("a task log line")
    print("a progress bar", file=sys.stderr)
    subprocess.run([sys.executable, "-c", "print('dbt says hello')"], check=True)
    os.write(1, b"raw fd write\\n")
    terminal.write("  ingest_stage  ok\\n")
print("back")
"""
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONPATH": str(REPO / "plugins")})
    assert shown.stdout == "  ingest_stage  ok\nback\n" and shown.stderr == ""
    assert log.read_text().splitlines() == ["a task log line", "a progress bar", "dbt says hello", "raw fd write"]


def test_stages_are_the_dags_own_task_groups():
    stages = stages_of(build_scenario_dag(get_scenario("traffic_flow")))
    assert stages["ingest"] == stages["land"] == ("ingest_stage", "land, parse, bronze + quarantine")
    assert stages["canary_deploy"][0] == stages["canary_gate"][0] == "rollout_canary"
    assert stages["plan"][0] == "plan" and stages["promote_champion"] == ("promote_champion", "Promote to champion")


def test_a_stage_line_shows_the_worst_state_and_the_stage_wall_time():
    at = dt.datetime(2026, 11, 25, 2, 30, tzinfo=dt.UTC)
    instances = [{"state": "success", "start_date": at, "end_date": at + dt.timedelta(seconds=4)},
                 {"state": "failed", "start_date": at + dt.timedelta(seconds=1), "end_date": at + dt.timedelta(seconds=9.5)},
                 {"state": "skipped", "start_date": None, "end_date": None}]
    line = stage_line("rollout_canary", "deploy to canary, bake, gate", instances)
    assert line.split() == ["rollout_canary", "FAILED", "9.5", "s", "deploy", "to", "canary,", "bake,", "gate",
                            "(2", "task", "instances)"]


def test_stopping_the_services_leaves_no_child_behind():
    """`make ui` stops Airflow standalone by its process group; a child that ignores TERM and
    outlives its parent is killed after the grace period, not left running."""
    from cityfactory import services

    leader = subprocess.Popen(["sh", "-c", "(trap '' TERM; sleep 120) & wait"], start_new_session=True)
    time.sleep(0.5)
    started = time.monotonic()
    services.stop(leader, grace=2)
    assert leader.returncode is not None and time.monotonic() - started < 10
    assert services.live_members(leader.pid) == []


def test_a_run_of_several_scenarios_checks_every_name_before_any_runs(capsys):
    from cityfactory.cli import main
    from cityfactory.settings import get_settings

    logs = get_settings().home / "logs"
    before = set(logs.glob("run-*.log"))  # none where the folder does not exist yet
    assert main(["run", "traffic_flow", "no_such_scenario", "--history"]) == 2
    out, err = capsys.readouterr()
    assert "no_such_scenario" in err and "traffic_flow" not in out, "nothing ran"
    assert set(logs.glob("run-*.log")) == before
