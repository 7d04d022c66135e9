"""The pipeline's tasks as a table: which adapter each calls and how Airflow runs it.

Every task of a scenario's DAG has one shape: build the run's context, call one function of a
pipeline adapter (``cityfactory.pipeline.<module>``) with it, the upstream results and the trigger
form's values it needs, return what the adapter returns. Only what differs is written here; the DAG
factory wires the rows into the chain (``scenario_dag.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow.sdk import TriggerRule

from cityfactory.factory.pools import TRAINING_POOL_NAME

# What a free slot goes to when tasks of many scenarios wait for one: ingestion first, training last.
INGESTION_FIRST, DEFAULT_PRIORITY, TRAINING_LAST = 100, 50, 10


@dataclass(frozen=True)
class Step:
    task_id: str
    adapter: str  # "<module>:<function>" in cityfactory.pipeline, called as function(context, *upstream, *extra)
    doc: str
    stage: str | None = None  # the form's stage that must be selected for the task to run (else it skips)
    trigger_rule: TriggerRule = TriggerRule.ALL_SUCCESS
    display_name: str | None = None
    keywords: tuple[str, ...] = ()  # upstream results given by name (``partial``/``expand``), after the positional ones
    extra: tuple[str, ...] = ()  # appended arguments: "params.<field>" (the form) or a key of Airflow's context
    outlet: str | None = None  # the lake layer this task updates, as an Asset of the scenario
    map_index_template: str | None = None
    teardown_retries: bool = False  # retried at least twice whatever the scenario says (it puts things back)
    pool: str | None = None  # an Airflow pool it shares with the other scenarios' tasks (None: the default pool)
    priority: int = DEFAULT_PRIORITY  # absolute: compared across every scenario's DAG


_NONE_FAILED = TriggerRule.NONE_FAILED

STEPS = {step.task_id: step for step in (
    Step("plan", "context:plan_run", "Days this run covers, in batches for the mapped ingest tasks.",
         extra=("params", "data_interval_start", "data_interval_end"), priority=INGESTION_FIRST),
    Step("land", "ingest:land_batch", "The source's job: one file per day into landing/ (here: the dataset replayed).",
         stage="ingest", display_name="Land gateway files", keywords=("days",), priority=INGESTION_FIRST),
    Step("ingest", "ingest:ingest_batch", "Raw kept as it came, parsed to bronze, bad rows to quarantine with reasons.",
         stage="ingest", display_name="Ingest to bronze", keywords=("landed",), priority=INGESTION_FIRST),
    Step("ingest_summary", "ingest:summarize",
         "Totals over all batches; fails on unacceptable input once everything is recorded.",
         stage="ingest", outlet="bronze", priority=INGESTION_FIRST),
    Step("bronze_gate", "quality:bronze_gate",
         "Great Expectations on the run's bronze rows; a failure stops the run before dbt.",
         stage="quality", trigger_rule=_NONE_FAILED, display_name="Gate: bronze"),
    Step("transform", "transform:transform",
         "staging -> intermediate -> marts and their dbt tests, in one dbt invocation, incremental over the "
         "run's days unless the form asks for a full refresh.",
         stage="transform", trigger_rule=_NONE_FAILED, display_name="dbt build", extra=("params.full_refresh",)),
    Step("features_gate", "quality:features_gate", "Great Expectations on the mart rows this run rebuilt.",
         stage="quality", trigger_rule=_NONE_FAILED, display_name="Gate: features"),
    Step("export_gold", "transform:export_gold", "The months this run touched, from the mart to gold/.",
         stage="transform", trigger_rule=_NONE_FAILED, display_name="Export gold features", outlet="gold"),
    Step("monitor", "monitor:monitor",
         "Collect what the edge served, score it on what really happened, measure drift.",
         stage="monitor", trigger_rule=_NONE_FAILED, display_name="Monitor: served vs actual, drift"),
    Step("decide", "monitor:decide_retraining", "The scenario's retraining rules (or the form's choice), with the reason.",
         stage="train", trigger_rule=_NONE_FAILED, display_name="Decide: retrain?", extra=("params.retrain",)),
    Step("plan_search", "search:plan_search",
         "The train run in MLflow and the search's batches of trials (skipped with the reason when the "
         "decision says no or a version has these very inputs).",
         stage="train", display_name="Search: plan the trials", extra=("params.search_trials",)),
    Step("trials", "search:run_trials", "One batch of trials (one family's seeded Optuna study), each a child MLflow run.",
         display_name="Search: trials", keywords=("gold", "batch"), pool=TRAINING_POOL_NAME, priority=TRAINING_LAST,
         map_index_template="{{ task.op_kwargs['batch']['family'] }} {{ task.op_kwargs['batch']['index'] }}"),
    Step("train", "train:train",
         "The best trial refitted and scored once on the test rows; a registered version, the alias gate.",
         display_name="Train the winner, register", pool=TRAINING_POOL_NAME, priority=TRAINING_LAST),
    Step("compress", "compress:compress",
         "The task type's edge variants measured side by side; the smallest within the budget becomes a "
         "signed edge bundle.",
         stage="compress", display_name="Compress and sign bundle", pool=TRAINING_POOL_NAME, priority=TRAINING_LAST),
    Step("rollout_plan", "rollout:plan",
         "Stage targets from the fleet file, what every node and the champion alias hold now, the bake rows. "
         "A run without the compress stage rolls out the registered challenger.",
         stage="rollout", trigger_rule=_NONE_FAILED, display_name="Rollout: plan", extra=("params.stages",)),
    Step("targets", "rollout:targets", "The nodes this stage adds (and, before a human-approved stage, who approved)."),
    Step("deploy", "rollout:deploy", "Fetch, verify and swap in the bundle on one node.", keywords=("plan", "node"),
         map_index_template="{{ task.op_kwargs['node']['id'] }}"),
    Step("gate", "rollout:gate", "Bake: recent real rows through every node; new version vs the old one."),
    Step("promote_champion", "rollout:promote", "champion moves to the version every node now serves.",
         display_name="Promote to champion"),
    Step("rollback", "rollout:roll_back",
         "Whatever happened upstream: if a rollout task ended failed, every touched node, the champion alias "
         "and the version tags go back to where they were.",
         display_name="Roll back on failure", teardown_retries=True),
    Step("governance", "govern:govern",
         "Every run, whatever happened upstream: audit events, lineage and the compliance report.",
         trigger_rule=TriggerRule.ALL_DONE, display_name="Governance: audit, lineage, report"),
)}
