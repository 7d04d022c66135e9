"""
### City AI Factory: daily governance maintenance

- **verify_audit**: walks the whole hash-chained audit trail and its signed checkpoints; fails
  naming the first broken entry if anything was edited, removed, reordered or appended unsealed.
- **retention** (one mapped task per scenario): deletes `raw/`, `quarantine/` and `bronze/` day
  partitions older than the scenario's `governance.retention_days`, and records every deleted
  partition in the audit trail. It is a *dry run* (lists, deletes nothing) unless the deployment
  sets `CITYFACTORY_RETENTION_ENFORCED=true`; the trigger form can untick it for one run.
- **summary**: whatever happened above, writes `governance/_maintenance/<run_id>/summary.json`,
  then fails the run if the trail is broken or a scenario's retention did not run.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronTriggerTimetable, Param, TriggerRule, dag, task
from cityfactory.pipeline.preflight import usable_scenarios
from cityfactory.settings import get_settings


@dag(
    dag_id="governance_maintenance",
    dag_display_name="Governance: audit check and retention",
    doc_md=__doc__,
    # unpaused: waits for the next 05:00 (timedelta(0): not even a run missed minutes ago)
    schedule=CronTriggerTimetable("0 5 * * *", timezone="UTC", run_immediately=dt.timedelta(0)),
    catchup=False,
    max_active_runs=1,
    tags=["cityfactory", "governance"],
    params={"dry_run": Param(not get_settings().retention_enforced, type="boolean", title="Dry run",
                             description="List what retention would delete; delete nothing. Scheduled runs delete only "
                                         "where CITYFACTORY_RETENTION_ENFORCED=true.")},
)
def governance_maintenance():
    @task(retries=0)
    def verify_audit(dag_run=None) -> dict:
        from cityfactory.governance.maintenance import verify_trail

        return verify_trail(dag_run.run_id)

    @task(map_index_template="{{ task.op_kwargs['scenario'] }}")
    def retention(scenario: str, params=None, dag_run=None) -> dict:
        from cityfactory.governance.maintenance import enforce_retention

        return enforce_retention(scenario, dag_run.run_after.date(), dag_run.run_id, bool(params["dry_run"]))

    @task(trigger_rule=TriggerRule.ALL_DONE, retries=0)
    def summary(scenarios: list[str], dag_run=None) -> dict:
        """Written whatever happened; fails the run if the trail is broken or a retention failed."""
        from cityfactory.governance.maintenance import write_summary

        return write_summary(dag_run.run_id, scenarios)

    names = [s.name for s in usable_scenarios(get_settings().scenarios_dir)[0]]
    checked = verify_audit()
    cleaned = retention.expand(scenario=names)
    checked >> cleaned  # delete nothing while the trail does not verify
    [checked, cleaned] >> summary(names)


governance_maintenance()
