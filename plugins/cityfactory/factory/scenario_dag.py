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
from cityfactory.factory.steps import DEFAULT_PRIORITY, STEPS, Step
from cityfactory.pipeline.stages import RETRAIN_CHOICES, STAGES
from cityfactory.search.plan import TRIALS_CEILING

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

# How long after a nightly time a DAG's first scheduled run is still created (see the timetable).
FIRST_NIGHT_GRACE = dt.timedelta(minutes=2)


def pipeline_task(scenario: Scenario, step: Step):
    """A TaskFlow task from a row of the step table: the run's context, then the upstream results
    (positional, then the named ones), then the step's extra values, handed to its adapter
    (imported when the task runs: parsing stays light)."""
    module, function = step.adapter.split(":")

    def call(*upstream, **context):
        import importlib

        from cityfactory.pipeline.context import RunContext

        adapter = getattr(importlib.import_module(f"cityfactory.pipeline.{module}"), function)
        extra = [context["params"][name.removeprefix("params.")] if name.startswith("params.") else context[name]
                 for name in step.extra]
        named = [context[name] for name in step.keywords]
        return adapter(RunContext.current(scenario), *upstream, *named, *extra)

    call.__name__, call.__doc__ = step.task_id, step.doc
    options = {"task_id": step.task_id, "trigger_rule": step.trigger_rule, "doc_md": step.doc,
               "priority_weight": step.priority}
    if step.display_name:
        options["task_display_name"] = step.display_name
    if step.map_index_template:
        options["map_index_template"] = step.map_index_template
    if step.outlet:
        # "x-": Airflow's prefix for a scheme no provider handles (it looks for no normaliser: parsing
        # does not load every provider's metadata, some 50-170 ms)
        options["outlets"] = [Asset(name=f"{scenario.name}_{step.outlet}",
                                    uri=f"x-cityfactory://lake/{step.outlet}/{scenario.name}")]
    if step.pool:
        options["pool"] = step.pool
    if step.teardown_retries:
        options["retries"] = max(2, scenario.retries.retries)
    built = task(**options)(call)
    return task.run_if(stage_selected(step.stage))(built) if step.stage else built


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
        # no start date and a short run_immediately: a DAG unpaused well after its nightly time waits
        # for the next night instead of running the last one at once (run_immediately=False runs it
        # within a tenth of the period). Not zero: the dag-processor recomputes the next run at every
        # parse, and a parse in the instant between the nightly time and the scheduler creating the
        # run would move a DAG's first night to the next (seen: parsed 0.5 s after, night skipped)
        schedule=CronTriggerTimetable(scenario.schedule, timezone=scenario.timezone, interval=dt.timedelta(days=1),
                                      run_immediately=FIRST_NIGHT_GRACE),
        catchup=False,
        # a bulk range is one run with the form's dates (batches mapped), not one Backfill run per night
        allowed_run_types=["scheduled", "manual"],  # Airflow makes them DagRunType values
        max_active_runs=1,  # partitions are rewritten whole; one writer per scenario
        tags=["cityfactory", f"domain:{scenario.domain}", *scenario.tags],
        default_args={"retries": scenario.retries.retries, "retry_delay": dt.timedelta(seconds=scenario.retries.delay_seconds),
                      "owner": ", ".join(scenario.governance.owners),
                      # priorities compare across every scenario's DAG (``steps.py``), not along one chain
                      "weight_rule": "absolute", "priority_weight": DEFAULT_PRIORITY},
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
                maximum=TRIALS_CEILING,
                title="Model search: trials (optional)",
                description="The search's budget in trials for this run. Empty = the model spec's budget. Never "
                            "more than this deployment's cap (CITYFACTORY_SEARCH_TRIALS), whatever is asked here.",
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
        step = {task_id: pipeline_task(scenario, row) for task_id, row in STEPS.items()}
        plan, land, ingest, ingest_summary = step["plan"], step["land"], step["ingest"], step["ingest_summary"]
        bronze_gate, transform, features_gate, export_gold = (step[t] for t in ("bronze_gate", "transform",
                                                                                  "features_gate", "export_gold"))
        monitor, decide, plan_search, trials, train = (step[t] for t in ("monitor", "decide", "plan_search",
                                                                          "trials", "train"))
        compress, rollout_plan, targets, deploy, gate = (step[t] for t in ("compress", "rollout_plan", "targets",
                                                                            "deploy", "gate"))
        promote_champion, rollback, governance = step["promote_champion"], step["rollback"], step["governance"]

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
