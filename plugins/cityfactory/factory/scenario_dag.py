"""Build one scenario's pipeline DAG from its typed configuration (the DAG file stays thin)."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import (
    Asset,
    CronTriggerTimetable,
    Param,
    TaskGroup,
    TriggerRule,
    dag,
    task,
)

from cityfactory.config.scenarios import Scenario
from cityfactory.pipeline.stages import RETRAIN_CHOICES, STAGES

PIPELINE_DOC = """
### City AI Factory: one pipeline DAG per scenario

Each YAML file in `dags/scenarios/` becomes a DAG with the same id. The scheduled nightly run
ingests the previous day; a manual run from the trigger form can name a date range (bulk history:
calendar days in the scenario's zone, both or neither, which become the run's data interval) and
choose which stages to run. Unpaused, the DAG waits for its next scheduled time (no catch-up).

- **ingest**, per batch of days (dynamic task mapping): the source lands gateway files in
  `landing/`, ingestion copies them unchanged to `raw/`, parses them to the scenario's schema and
  writes `bronze/` Parquet partitions and `quarantine/` rows with reasons;
- **quality**: a Great Expectations gate on the run's bronze rows, and one on the feature mart;
- **transform**: `dbt build` (staging -> intermediate -> marts, with tests) on DuckDB, incremental
  over the run's days (a full refresh on request), then the months it touched exported to `gold/`;
- **monitor**: what the edge nodes served is collected into `predictions/` and scored against the
  actuals that arrived, beside the champion's offline accuracy and the baselines; drift of every
  feature against the training rows; then the **retraining decision** by the scenario's rules
  (or forced from this form), with its reason;
- **train** (only when the decision says so): a model search within the spec's budget (Optuna,
  over the families the spec's task type offers), batches of trials as mapped tasks, each trial a
  child run in MLflow; the winner refitted, tracked (params, curves, metrics beside baselines, plots,
  the search's picture, model card), registered unless a version already has these very inputs,
  and given the `challenger` alias if it passes its task type's gate (baselines and the current
  `champion`, on the same test rows);
- **compress**: the challenger exported to ONNX (parity-checked), int8 / pruned variants measured
  side by side, the smallest within the accuracy budget signed into an edge bundle in `bundles/`;
- **rollout**: stage by stage (from the scenario) to the fleet's edge nodes, each stage gated on a
  bake of recent real rows; a passing last stage makes the version `champion`, any failure rolls
  every touched node back.

A failed gate or dbt test stops the run there. Every task records what it read and wrote in the
run ledger under `governance/<scenario>/<run_id>/`; the **governance** task runs last whatever
happened upstream and writes the run's audit events, lineage and compliance report there (and a
`watcher` task keeps a failed run failed).

Built by `cityfactory.factory.scenario_dag` from `dags/scenarios/<name>.yaml`; task bodies call the
library and import heavy modules only when they run.
"""


def stage_selected(stage: str):
    """A ``run_if`` condition: the run's ``stages`` param includes ``stage``."""
    return lambda context: stage in context["params"]["stages"]


def tasks_that_may_still_run(dag, leaving_out: set[str]) -> list:
    """What a task with trigger rule ``all_done`` must follow directly to start after every other
    task: a failure marks everything after it done at once, so it would start while some task
    still runs beside that chain. Those are the mapped tasks (instances run side by side), the tasks
    with a parallel branch (neither before nor after some other task) and the DAG's ends; a task on
    the single chain is done before its successors are. Setups are left out (Airflow allows only
    ``all_success`` tasks right after one); their teardown waits for them."""
    tasks = [t for t in dag.tasks if t.task_id not in leaving_out]
    ids = {t.task_id for t in tasks}
    chosen = []
    for t in tasks:
        related = t.get_flat_relative_ids(upstream=True) | t.get_flat_relative_ids(upstream=False) | {t.task_id}
        if not t.is_setup and (t.is_mapped or not ids <= related or not t.downstream_task_ids & ids):
            chosen.append(t)
    return chosen


def build_scenario_dag(scenario: Scenario):
    """One scenario's pipeline DAG: stages grouped (ingest, quality and transform, train and
    compress, one group per rollout stage, governance) so the graph reads as the chain."""
    @dag(
        dag_id=scenario.dag_id,
        dag_display_name=f"Scenario: {scenario.name}",
        description=scenario.description.strip(),
        doc_md=PIPELINE_DOC,
        # no start date and run_immediately=timedelta(0): a DAG unpaused after its nightly time waits
        # for the next night instead of running the last one at once (Airflow's catch-up of the
        # latest missed run; run_immediately=False still runs it within a tenth of the period)
        schedule=CronTriggerTimetable(scenario.schedule, timezone=scenario.timezone, interval=dt.timedelta(days=1),
                                      run_immediately=dt.timedelta(0)),
        catchup=False,
        # a bulk range is one run with the form's dates (batches mapped), not one Backfill run per night
        allowed_run_types=["scheduled", "manual"],  # Airflow makes them DagRunType values
        max_active_runs=1,  # partitions are rewritten whole; one writer per scenario
        tags=["cityfactory", *scenario.tags],
        default_args={"retries": scenario.retries.retries, "retry_delay": dt.timedelta(seconds=scenario.retries.delay_seconds),
                      "owner": ", ".join(scenario.governance.owners)},
        params={
            "data_interval_start": Param(
                None,
                type=["null", "string"],
                format="date",
                title=f"First day, {scenario.timezone} (optional)",
                description=f"For a bulk run of history: the first day to ingest, a calendar day in {scenario.timezone}. "
                            "Empty = yesterday there. Give both days or neither; they become the run's data interval.",
            ),
            "data_interval_end": Param(
                None,
                type=["null", "string"],
                format="date",
                title=f"Last day, {scenario.timezone} (optional, inclusive)",
                description="The last day to ingest, inclusive. Give both days or neither.",
            ),
            "retrain": Param(
                "auto",
                type="string",
                enum=RETRAIN_CHOICES,
                title="Retrain",
                description="auto: the scenario's rules decide (no champion, changed features or code, live error "
                            "above the offline estimate, drift, model age); always / never: overrule them.",
            ),
            "search_trials": Param(
                None,
                type=["null", "integer"],
                minimum=1,
                title="Model search: trials (optional)",
                description="The search's budget in trials for this run. Empty = the model spec's budget.",
            ),
            "full_refresh": Param(
                False,
                type="boolean",
                title="Rebuild every dbt model from all history",
                description="Off: incremental models rebuild only this run's days (and the days whose features reach them).",
            ),
            "stages": Param(
                list(STAGES),
                type="array",
                items={"type": "string", "enum": list(STAGES)},
                examples=list(STAGES),  # an array with examples is a multi-select in the trigger form
                uniqueItems=True,
                minItems=1,
                title="Stages to run",
                description="All are selected; remove a stage to skip it in this run.",
            ),
        },
    )
    def scenario_pipeline():
        @task
        def plan(params=None, data_interval_start=None, data_interval_end=None) -> list[list[str]]:
            """Days this run covers, in batches for the mapped ingest tasks."""
            from cityfactory.pipeline.context import RunContext, plan_run

            return plan_run(RunContext.current(scenario), params, data_interval_start, data_interval_end)

        @task.run_if(stage_selected("ingest"))
        @task(task_display_name="Land gateway files")
        def land(days: list[str]) -> dict:
            """The source's job: one file per day into landing/ (here: the dataset replayed)."""
            from cityfactory.pipeline.context import RunContext
            from cityfactory.pipeline.ingest import land_batch

            return land_batch(RunContext.current(scenario), days)

        @task.run_if(stage_selected("ingest"))
        @task(task_display_name="Ingest to bronze")
        def ingest(landed: dict) -> dict:
            from cityfactory.pipeline.context import RunContext
            from cityfactory.pipeline.ingest import ingest_batch

            return ingest_batch(RunContext.current(scenario), landed["days"])

        @task.run_if(stage_selected("ingest"))
        @task(outlets=[Asset(name=f"{scenario.name}_bronze", uri=f"cityfactory://lake/bronze/{scenario.name}")])
        def ingest_summary(results: list[dict]) -> dict:
            """Totals over all batches; fails on unacceptable input once everything is recorded."""
            from cityfactory.pipeline.context import RunContext
            from cityfactory.pipeline.ingest import summarize

            return summarize(RunContext.current(scenario), list(results[:]))  # one slice fetch

        @task.run_if(stage_selected("quality"))
        @task(trigger_rule=TriggerRule.NONE_FAILED, task_display_name="Gate: bronze")
        def bronze_gate(batches: list[list[str]]) -> dict:
            """Great Expectations on the run's bronze rows; a failure stops the run before dbt."""
            from cityfactory.pipeline.context import RunContext
            from cityfactory.pipeline.quality import bronze_gate

            return bronze_gate(RunContext.current(scenario), batches)

        @task.run_if(stage_selected("transform"))
        @task(trigger_rule=TriggerRule.NONE_FAILED, task_display_name="dbt build")
        def transform(batches: list[list[str]], params=None) -> dict:
            """staging -> intermediate -> marts and their dbt tests, in one dbt invocation,
            incremental over the run's days unless the form asks for a full refresh."""
            from cityfactory.pipeline.context import RunContext
            from cityfactory.pipeline.transform import transform

            return transform(RunContext.current(scenario), batches, params["full_refresh"])

        @task.run_if(stage_selected("quality"))
        @task(trigger_rule=TriggerRule.NONE_FAILED, task_display_name="Gate: features")
        def features_gate(built: dict | None) -> dict:
            """Great Expectations on the mart rows this run rebuilt."""
            from cityfactory.pipeline.context import RunContext
            from cityfactory.pipeline.quality import features_gate

            return features_gate(RunContext.current(scenario), built)

        @task.run_if(stage_selected("transform"))
        @task(
            trigger_rule=TriggerRule.NONE_FAILED,
            task_display_name="Export gold features",
            outlets=[Asset(name=f"{scenario.name}_features", uri=f"cityfactory://lake/gold/{scenario.name}")],
        )
        def export_gold(built: dict) -> dict:
            from cityfactory.pipeline.context import RunContext
            from cityfactory.pipeline.transform import export_gold

            return export_gold(RunContext.current(scenario), built)

        @task.run_if(stage_selected("monitor"))
        @task(trigger_rule=TriggerRule.NONE_FAILED, task_display_name="Monitor: served vs actual, drift")
        def monitor(batches: list[list[str]]) -> dict:
            """Collect what the edge served, score it on the actuals that arrived, measure drift."""
            from cityfactory.pipeline.context import RunContext
            from cityfactory.pipeline.monitor import monitor

            return monitor(RunContext.current(scenario), batches)

        @task.run_if(stage_selected("train"))
        @task(trigger_rule=TriggerRule.NONE_FAILED, task_display_name="Decide: retrain?")
        def decide(monitored: dict | None, gold: dict | None, batches: list[list[str]], params=None) -> dict:
            """The scenario's retraining rules (or the form's choice), with the reason."""
            from cityfactory.pipeline.context import RunContext
            from cityfactory.pipeline.monitor import decide_retraining

            return decide_retraining(RunContext.current(scenario), monitored, gold, params["retrain"], batches)

        @task.run_if(stage_selected("train"))
        @task(task_display_name="Search: plan the trials")
        def plan_search(gold: dict, batches: list[list[str]], decision: dict, params=None) -> list[dict]:
            """The train run in MLflow and the search's batches of trials (skipped with the reason
            when the decision says no or a version has these very inputs)."""
            from cityfactory.pipeline.context import RunContext
            from cityfactory.pipeline.search import plan_search

            return plan_search(RunContext.current(scenario), gold, batches, decision, params["search_trials"])

        @task(map_index_template="{{ task.op_kwargs['batch']['family'] }} {{ task.op_kwargs['batch']['index'] }}",
              task_display_name="Search: trials")
        def trials(gold: dict, batch: dict) -> list[dict]:
            """One batch of trials (one family's seeded Optuna study), each a child MLflow run."""
            from cityfactory.pipeline.context import RunContext
            from cityfactory.pipeline.search import run_trials

            return run_trials(RunContext.current(scenario), gold, batch)

        @task(task_display_name="Train the winner, register")
        def train(gold: dict, batches: list[list[str]], planned: list[dict], found: list[list[dict]]) -> dict:
            """The best trial refitted and scored once on the test rows; a registered version, the alias gate."""
            from cityfactory.pipeline.context import RunContext
            from cityfactory.pipeline.train import train

            return train(RunContext.current(scenario), gold, batches, planned, list(found))

        @task.run_if(stage_selected("compress"))
        @task(task_display_name="Compress and sign bundle")
        def compress(trained: dict, gold: dict) -> dict:
            """ONNX fp32 / int8 / pruned variants measured side by side; the smallest within the
            accuracy budget becomes a signed edge bundle."""
            from cityfactory.pipeline.compress import compress
            from cityfactory.pipeline.context import RunContext

            return compress(RunContext.current(scenario), trained, gold)

        @task.run_if(stage_selected("rollout"))
        @task(trigger_rule=TriggerRule.NONE_FAILED, task_display_name="Rollout: plan")
        def rollout_plan(compressed: dict | None, gold: dict | None, params=None) -> dict:
            """Stage targets from the fleet file, what every node and the champion alias hold now,
            the bake rows. A run without the compress stage rolls out the registered challenger."""
            from cityfactory.pipeline.context import RunContext
            from cityfactory.pipeline.rollout import plan

            return plan(RunContext.current(scenario), compressed, gold, params["stages"])

        @task
        def targets(plan: dict, stage: str, approval: dict | None = None) -> list[dict]:
            """The nodes this stage adds (and, before a human-approved stage, who approved)."""
            from cityfactory.pipeline.context import RunContext
            from cityfactory.pipeline.rollout import targets

            return targets(RunContext.current(scenario), plan, stage, approval)

        @task(map_index_template="{{ task.op_kwargs['node']['id'] }}")
        def deploy(plan: dict, node: dict) -> dict:
            """Fetch, verify and swap in the bundle on one node."""
            from cityfactory.pipeline.context import RunContext
            from cityfactory.pipeline.rollout import deploy

            return deploy(RunContext.current(scenario), plan, node)

        @task
        def gate(plan: dict, stage: str) -> dict:
            """Bake: recent real rows through every node; new version vs the old one."""
            from cityfactory.pipeline.context import RunContext
            from cityfactory.pipeline.rollout import gate

            return gate(RunContext.current(scenario), plan, stage)

        @task(task_display_name="Promote to champion")
        def promote_champion(plan: dict) -> dict:
            from cityfactory.pipeline.context import RunContext
            from cityfactory.pipeline.rollout import promote

            return promote(RunContext.current(scenario), plan)

        @task(task_display_name="Roll back on failure", retries=max(2, scenario.retries.retries))
        def rollback(plan: dict | None = None) -> dict:
            """Whatever happened upstream: if a rollout task ended failed, every touched node, the
            champion alias and the version tags go back to where they were."""
            from cityfactory.pipeline.context import RunContext, teardown_scope_states
            from cityfactory.pipeline.rollout import roll_back_if_failed

            return roll_back_if_failed(RunContext.current(scenario), plan, teardown_scope_states())

        batches = plan()
        with TaskGroup("ingest_stage", tooltip="land, parse, bronze + quarantine", prefix_group_id=False):
            summary = ingest_summary(ingest.expand(landed=land.expand(days=batches)))
        with TaskGroup("quality_and_transform", tooltip="gates around dbt, gold export", prefix_group_id=False):
            built = transform(batches)
            gold = export_gold(built)
            summary >> bronze_gate(batches) >> built >> features_gate(built) >> gold
        with TaskGroup("monitor_and_decide", tooltip="served vs actual, drift, retrain or not", prefix_group_id=False):
            monitored = monitor(batches)
            gold >> monitored
            decision = decide(monitored, gold, batches)
        with TaskGroup("train_and_compress", tooltip="model search, MLflow run, registry gate, signed bundle", prefix_group_id=False):
            search_batches = plan_search(gold, batches, decision)
            found = trials.partial(gold=gold).expand(batch=search_batches)
            compressed = compress(train(gold, batches, search_batches, found), gold)
        planned = rollout_plan(compressed, gold)
        previous = planned
        for index, stage in enumerate(scenario.rollout.stages):
            with TaskGroup(f"rollout_{stage.name}", tooltip=f"deploy to {stage.name}, bake, gate", prefix_group_id=False):
                approval = None
                if index == len(scenario.rollout.stages) - 1 and scenario.governance.human_approval_final_stage:
                    from airflow.providers.standard.operators.hitl import (
                        ApprovalOperator,
                    )

                    approve = ApprovalOperator(
                        task_id=f"approve_{stage.name}", subject=f"Roll {scenario.name} out to {stage.name}?",
                        body="Earlier stages passed their health gates; see their results in the run's ledger.",
                    )
                    previous >> approve
                    previous, approval = approve, approve.output
                nodes = targets.override(task_id=f"{stage.name}_targets")(planned, stage.name, approval)
                previous >> nodes
                deployed = deploy.override(task_id=f"{stage.name}_deploy").partial(plan=planned).expand(node=nodes)
                checked = gate.override(task_id=f"{stage.name}_gate")(planned, stage.name)
                deployed >> checked
            previous = checked
        promoted = promote_champion(planned)
        previous >> promoted
        # a teardown: runs once every rollout task between the plan and it is done, whatever happened,
        # and does not decide the run's state
        promoted >> rollback(planned).as_teardown(setups=planned)

        @task(trigger_rule=TriggerRule.ALL_DONE, task_display_name="Governance: audit, lineage, report")
        def governance() -> dict:
            """Every run, whatever happened upstream: audit events, lineage and the compliance report."""
            from cityfactory.pipeline.context import RunContext
            from cityfactory.pipeline.govern import govern

            return govern(RunContext.current(scenario))

        @task(trigger_rule=TriggerRule.ALL_DONE, retries=0, task_display_name="Run outcome")
        def watcher() -> None:
            """The run's last task: fails the run if any other task of it failed (governance, which
            always succeeds, would otherwise make a failed run look green)."""
            from airflow.sdk.exceptions import AirflowFailException

            from cityfactory.pipeline.context import failed_tasks

            if failed := failed_tasks():
                raise AirflowFailException(f"failed: {', '.join(failed)}; see the run's compliance report")

        with TaskGroup("governance_stage", tooltip="audit, lineage, compliance report", prefix_group_id=False):
            report = governance()
            report >> watcher()
        for upstream in tasks_that_may_still_run(report.operator.dag, {"governance", "watcher"}):
            upstream >> report.operator

    return scenario_pipeline()
