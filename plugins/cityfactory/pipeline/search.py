"""The search as Airflow tasks see it: plan the batches, then one mapped task per batch."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowSkipException

from cityfactory.governance.ledger import Artifact, Kind
from cityfactory.monitoring import level_shift
from cityfactory.pipeline.context import RunContext
from cityfactory.pipeline.train_stage import RunFacts, start_train_run
from cityfactory.search.plan import Batch, plan_batches, trial_budget
from cityfactory.storage.gold import read_gold
from cityfactory.tasktypes import load_model_spec, spec_digest, task_type_of
from cityfactory.training import registry


def examples_gold(ctx: RunContext, gold: dict):
    """The gold rows a model learns and is judged from: the export without the days the monitor
    flagged as faulty (a sensor's level shift); and those days."""
    faulty = level_shift.faulty_days(ctx.lake, ctx.scenario.name)
    spec = load_model_spec(ctx.scenario.model_spec)
    frame = read_gold(ctx.lake, ctx.scenario.name, gold["sha256"])
    return (level_shift.without_faulty_days(frame, task_type_of(spec).time_column(spec), ctx.scenario.timezone, faulty),
            sorted(faulty))


def run_facts(ctx: RunContext, gold: dict, batches: list[list[str]], excluded_days: list[str]) -> RunFacts:
    scenario = ctx.scenario
    return RunFacts(
        scenario=scenario.name, dag_id=scenario.dag_id, airflow_run_id=ctx.run_id,
        data_interval=f"{batches[0][0]}..{batches[-1][-1]}", features_uri=gold["uri"],
        features_sha256=gold["sha256"], risk_level=scenario.governance.risk_level, owners=scenario.governance.owners,
        feature_definition=gold["definition_digest"],
        data_source=scenario.source.dataset or scenario.source.package or scenario.source.kind,
        data_licence=scenario.source.licence or "not stated", data_citation=(scenario.source.citation or "").strip(),
        excluded_days=excluded_days, zone=scenario.timezone,
    )


def plan_search(ctx: RunContext, gold: dict, batches: list[list[str]], decision: dict | None,
                requested_trials: int | None) -> list[dict]:
    """The train run in MLflow and the batches of trials; skipped when the retraining decision says
    no, or when a version was already trained on these very inputs."""
    spec = load_model_spec(ctx.scenario.model_spec)
    if decision is not None and not decision["retrain"]:
        raise AirflowSkipException(decision["summary"])
    registry.use_experiment(ctx.scenario.name)
    budget = trial_budget(spec, requested_trials)
    excluded = sorted(level_shift.faulty_days(ctx.lake, ctx.scenario.name))
    inputs = {"feature_digest": gold["sha256"], "spec_digest": spec_digest(spec), "code_version": registry.code_version(),
              "search_budget": str(budget), "excluded_days": level_shift.excluded_digest(excluded)}
    with ctx.entry(Kind.SEARCH_PLANNED) as entry:
        entry.inputs.append(Artifact(gold["uri"], gold["sha256"], gold["rows"], "gold"))
        if same := registry.version_with_inputs(spec.registered_model, inputs):
            entry.status = "skipped"
            entry.details.update(registered_model=spec.registered_model, same_inputs_as=same,
                                 reason=f"version {same} was trained on these very inputs (features "
                                        f"{inputs['feature_digest'][:12]}, spec {inputs['spec_digest'][:12]}, "
                                        f"code {inputs['code_version']}, {budget} search trials): nothing new to register")
        else:
            run_id, experiment_id = start_train_run(run_facts(ctx, gold, batches, excluded))
            planned = [{**b.as_dict(), "run_id": run_id, "experiment_id": experiment_id, "budget": budget}
                       for b in plan_batches(spec, budget)]
            entry.outputs.append(Artifact(f"runs:/{run_id}", "", None, "mlflow_run"))
            entry.counts = {"trials": budget, "batches": len(planned)}
            entry.details.update(trials=budget, batches=[f"{b['family']} {b['index']}: {b['trials']}" for b in planned],
                                 excluded_days=excluded,
                                 seed=spec.search.seed if spec.search else spec.training.seed,
                                 timeout_minutes=spec.search.timeout_minutes if spec.search else None)
    if same:
        raise AirflowSkipException(entry.details["reason"])
    return planned


def run_trials(ctx: RunContext, gold: dict, batch: dict) -> list[dict]:
    """One batch of the search's trials, each a child run of the train run."""
    from cityfactory.search.trials import run_batch

    spec = load_model_spec(ctx.scenario.model_spec)
    registry.use_experiment(ctx.scenario.name)
    plan = Batch(**{k: batch[k] for k in Batch.__dataclass_fields__})
    with ctx.entry(Kind.SEARCH_TRIALS) as entry:
        entry.inputs.append(Artifact(gold["uri"], gold["sha256"], gold["rows"], "gold"))
        found = run_batch(spec, examples_gold(ctx, gold)[0], plan, batch["run_id"], batch["experiment_id"])
        entry.outputs.append(Artifact(f"runs:/{batch['run_id']}", "", None, "mlflow_run"))  # the trials are its children
        entry.counts = {"trials": len(found), "pruned": sum(t["state"] != "complete" for t in found)}
        entry.details.update(family=plan.family, batch=plan.index, seed=plan.seed, trial_runs=[t["run_id"] for t in found],
                             seconds=round(sum(t["seconds"] for t in found), 1),
                             best=min((t["value"] for t in found if t["state"] == "complete"), default=None))
    return found
