"""What a task needs to know about its run (scenario, lake, ledger), and Airflow's states of the
run's other tasks, folded to one per task."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cityfactory.config.scenarios import Scenario
from cityfactory.governance.ledger import Kind, RunLedger, timed_entry
from cityfactory.run_calendar import (
    ParamsError,
    batches,
    form_days,
    resolve_days,
    with_missed_days,
)
from cityfactory.storage.lake import Lake, open_lake
from cityfactory.storage.parquet import partition_days


@dataclass
class RunContext:
    scenario: Scenario
    lake: Lake
    run_id: str
    task_id: str
    map_index: int = -1
    try_number: int = 1

    @classmethod
    def current(cls, scenario: Scenario) -> RunContext:
        """Built from the running Airflow task's context."""
        from airflow.sdk import get_current_context

        context = get_current_context()
        ti = context["ti"]
        map_index = getattr(ti, "map_index", None)
        return cls(scenario, open_lake(), context["run_id"], ti.task_id, -1 if map_index is None else map_index,
                   ti.try_number or 1)

    @property
    def ledger(self) -> RunLedger:
        return RunLedger(self.lake, self.scenario.name, self.run_id)

    def entry(self, kind: Kind) -> timed_entry:
        """``with ctx.entry(kind) as e:`` records this try's ledger entry on exit, even on failure,
        and attaches its inputs and outputs to the task's OpenLineage run."""
        from cityfactory.governance.openlineage import emit_task_lineage

        return timed_entry(self.ledger, self.task_id, kind, self.map_index, self.try_number, on_record=emit_task_lineage)


# worst first: the state a mapped task shows is the worst of its instances
_SEVERITY = ["failed", "upstream_failed", "up_for_retry", "running", "queued", "scheduled", None, "skipped", "removed", "success"]


def fold_task_states(states: dict[str, str | None], task_ids: list[str]) -> dict[str, str | None]:
    """Airflow names mapped instances ``<task>_<index>``; fold them to one state per task."""
    folded: dict[str, str | None] = {}
    for key, state in states.items():
        task = key if key in task_ids else re.sub(r"_\d+$", "", key)
        state = state if state in _SEVERITY else None
        if task not in folded or _SEVERITY.index(state) < _SEVERITY.index(folded[task]):
            folded[task] = state
    return {t: folded.get(t) for t in task_ids}


def task_states(task_ids: list[str]) -> dict[str, str | None]:
    """The state of each of ``task_ids`` in the current run (the current try of each instance: a
    task that failed once and passed on retry is a success; mapped instances folded worst-first)."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    ti, dag_run = context["ti"], context["dag_run"]
    states = ti.get_task_states(dag_id=dag_run.dag_id, run_ids=[dag_run.run_id], task_ids=task_ids).get(dag_run.run_id, {})
    return fold_task_states({k: str(v) if v else None for k, v in states.items()}, task_ids)


def teardown_scope_states() -> dict[str, str | None]:
    """For the running teardown: the state of every task between its setups and itself (Airflow
    starts a teardown only once they are all done, whatever its direct upstream)."""
    from airflow.sdk import get_current_context

    task = get_current_context()["task"]
    before = task.get_flat_relative_ids(upstream=True)
    setups = [t for t in task.upstream_list if t.is_setup]
    scope = set().union(*(before & s.get_flat_relative_ids(upstream=False) for s in setups))
    return task_states(sorted(scope | (task.upstream_task_ids - {s.task_id for s in setups})))


def failed_tasks() -> list[str]:
    """The tasks of the current run, other than the running one, that ended failed."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    others = sorted(set(context["dag"].task_ids) - {context["task"].task_id})
    return [task for task, state in task_states(others).items() if state in ("failed", "upstream_failed")]


def plan_run(ctx: RunContext, params: dict, interval_start, interval_end) -> list[list[str]]:
    """Record the run's days and stages in the ledger; bad form values fail without retries. A
    nightly run (no days on the form) also takes the days missed since the last one ingested."""
    from airflow.sdk.exceptions import AirflowFailException

    with ctx.entry(Kind.RUN_PLANNED) as entry:
        entry.details["params"] = dict(params)
        try:
            days = resolve_days(params, interval_start, interval_end, ctx.scenario.timezone)
        except ParamsError as exc:
            raise AirflowFailException(str(exc)) from exc
        if form_days(params) is None:
            before = [d for d in partition_days(ctx.lake, "bronze", ctx.scenario.name) if d < days[0]]
            days = with_missed_days(days, before[-1] if before else None, ctx.scenario.ingestion.catch_up_days)
        entry.counts["days"] = len(days)
        entry.details.update(first_day=days[0].isoformat(), last_day=days[-1].isoformat())
    return batches(days, ctx.scenario.ingestion.days_per_batch)
