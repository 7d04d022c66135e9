"""What a person sees while ``make run`` runs a DAG in-process: one line per task group (the DAG's
own stages) as it ends, while Airflow's task logs, dbt's and MLflow's output and every progress bar
go to a log file named at the start."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

FINISHED = {"success", "failed", "skipped", "upstream_failed", "removed"}
MARK = {"success": "ok", "failed": "FAILED", "upstream_failed": "not run (upstream failed)", "skipped": "skipped",
        "removed": "removed"}


@contextlib.contextmanager
def output_to(log_file: Path) -> Iterator[TextIO]:
    """Everything written to this process's stdout and stderr (file descriptors 1 and 2, so child
    processes too) goes to ``log_file``; yields a stream to the terminal for the progress lines."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    with open(log_file, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            terminal.close()


def stage_line(stage: str, note: str, instances: list[dict]) -> str:
    """``  ingest_stage            ok      31.2 s  land, parse, bronze + quarantine (49 task instances)``;
    the worst state of the stage's task instances is shown."""
    states = [i["state"] for i in instances]
    worst = next((s for s in ("failed", "upstream_failed", "removed") if s in states), "success")
    starts = [i["start_date"] for i in instances if i["start_date"]]
    ends = [i["end_date"] for i in instances if i["end_date"]]
    seconds = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    ran = sum(s != "skipped" for s in states)
    count = f" ({ran} task instances)" if ran > 1 else ""
    return f"  {stage:<22} {MARK[worst]:<8} {seconds:6.1f} s  {note}{count}"


def stages_of(dag) -> dict[str, tuple[str, str]]:
    """Each task's stage (its task group, or itself at the top level) and the stage's description."""
    stages = {}
    for task in dag.tasks:
        group = task.task_group
        if group is not None and group.group_id:
            stages[task.task_id] = (group.group_id, group.tooltip)
        else:
            stages[task.task_id] = (task.task_id, task.task_display_name if task.task_display_name != task.task_id else "")
    return stages


class TaskProgress(threading.Thread):
    """Polls Airflow's metadata DB for the newest run of ``dag`` started after ``since`` and writes
    a line for each stage once all its task instances have finished."""

    def __init__(self, dag, since: dt.datetime, out: TextIO, every: float = 1.0):
        super().__init__(daemon=True)
        self.dag_id, self.stages = dag.dag_id, stages_of(dag)
        self.notes = dict(self.stages.values())  # stage -> its description
        self.since, self.out, self.every = since, out, every
        self.done: set[str] = set()
        self.skipped: list[str] = []
        self.stopped = threading.Event()

    def poll(self) -> None:
        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            run = session.scalars(select(DagRun).where(DagRun.dag_id == self.dag_id, DagRun.start_date >= self.since)
                                  .order_by(DagRun.start_date.desc()).limit(1)).first()
            if run is None:
                return
            rows = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == self.dag_id,
                                                              TaskInstance.run_id == run.run_id)).all()
            stages: dict[str, list[dict]] = {}
            for ti in rows:
                stage = self.stages.get(ti.task_id, (ti.task_id, ""))[0]
                stages.setdefault(stage, []).append(
                    {"state": str(ti.state) if ti.state else None, "start_date": ti.start_date, "end_date": ti.end_date})
        latest = dt.datetime.max.replace(tzinfo=dt.UTC)
        for stage, instances in sorted(stages.items(), key=lambda kv: max(i["end_date"] or latest for i in kv[1])):
            if stage not in self.done and all(i["state"] in FINISHED for i in instances):
                self.done.add(stage)
                if all(i["state"] == "skipped" for i in instances):
                    self.skipped.append(stage)  # stages not chosen, or nothing to do: one line at the end
                else:
                    self.out.write(stage_line(stage, self.notes.get(stage, ""), instances) + "\n")

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            with contextlib.suppress(Exception):  # a busy SQLite file: the next poll reads it
                self.poll()

    def stop(self) -> None:
        """The last lines, once the run is over."""
        self.stopped.set()
        self.join(timeout=10)
        with contextlib.suppress(Exception):
            self.poll()
        if self.skipped:
            self.out.write(f"  skipped: {', '.join(self.skipped)}\n")
