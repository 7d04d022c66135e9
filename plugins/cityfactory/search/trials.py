"""One batch of trials: a seeded Optuna study, each trial a child MLflow run of the train run.

Deterministic: the batch's trials run one after the other in one study whose sampler is seeded, and
every fit seeds itself and uses one thread (``tasktypes.epochs.seed_everything``, LightGBM's
``deterministic``), so the same gold rows, spec and budget give the same trials on any worker.

A trial is scored on every validation fold of the examples (rolling origin): the latest window first,
which the pruner watches, then the earlier ones; its value is their mean. A search of one trial has
nothing to rank: that trial is fitted on the latest window alone. Its test score is kept
beside it, never used to choose, only to tell whether validation ranks trials as test would.
"""

from __future__ import annotations

import logging
import statistics
import time

import pandas as pd

from cityfactory.search.plan import Batch
from cityfactory.search.space import suggest
from cityfactory.tasktypes import task_type_of
from cityfactory.tasktypes.spec import ModelSpec

log = logging.getLogger(__name__)


def run_batch(spec: ModelSpec, gold: pd.DataFrame, batch: Batch, parent_run_id: str, experiment_id: str) -> list[dict]:
    """Run the batch's trials (pruning the bad ones early); one record per trial."""
    import mlflow
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search, kind = spec.search, task_type_of(spec)
    metric = kind.search_metric(spec)
    ranges = search.families[batch.family].ranges if search else {}
    fixed = search.families[batch.family].fixed if search else {}
    examples = kind.examples(spec, gold)
    pruned = search is not None and search.families[batch.family].pruned
    pruner = (optuna.pruners.MedianPruner(search.pruner.startup_trials, search.pruner.warmup_steps) if pruned
              else optuna.pruners.NopPruner())
    sampler = optuna.samplers.TPESampler(seed=batch.seed, n_startup_trials=search.random_trials if search else 1)
    direction = "maximize" if kind.metrics[metric].greater_is_better else "minimize"
    study = optuna.create_study(direction=direction, sampler=sampler, pruner=pruner)
    records: list[dict] = []

    def objective(trial: optuna.Trial) -> float:
        hand_set = batch.hand_set_first and trial.number == 0
        params = kind.hand_set(spec)[0] if hand_set else {**fixed, **suggest(trial, ranges)}
        name = f"{batch.family} {batch.index}.{trial.number}" + (" (hand-set)" if hand_set else "")
        curve: list[tuple[int, float]] = []

        def report(step: int, value: float) -> None:
            curve.append((step, value))
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation {metric} {value:.4g} at step {step}")

        tags = {"mlflow.parentRunId": parent_run_id, "family": batch.family, "batch": str(batch.index),
                "trial": str(trial.number), "hand_set": str(hand_set).lower()}
        with mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags) as run:
            mlflow.log_params({"family": batch.family, **params})
            started = time.perf_counter()
            record = {"family": batch.family, "batch": batch.index, "number": trial.number, "params": params,
                      "hand_set": hand_set, "run_id": run.info.run_id}
            try:
                trained = kind.fit(batch.family, spec, params, examples, metric, batch.seed, report)
            except optuna.TrialPruned:
                record.update(state="pruned", value=curve[-1][1], best_step=curve[-1][0])
                for step, value in curve:
                    mlflow.log_metric(f"validation_{metric}", value, step=step)
                finish(record, started)
                raise
            for h in trained.history:
                mlflow.log_metrics({k: v for k, v in h.items() if k != "step"}, step=h["step"])
            folds = [trained] + [kind.fit(batch.family, spec, params, fold, metric, batch.seed)
                                 for fold in (examples.earlier_folds() if batch.ranked else ())]
            values = [best_value(f.history) for f in folds]
            record.update(state="complete", value=statistics.fmean(values), folds=values,
                          best_step=round(statistics.median(f.best_step for f in folds)),
                          test_value=kind.score(spec, examples.y_test, trained.model.predict_array(examples.x_test))[metric])
            mlflow.log_metrics({f"validation_{metric}_fold_{k}": v for k, v in enumerate(values, 1)}
                               | {f"best_step_fold_{k}": f.best_step for k, f in enumerate(folds, 1)}
                               | {f"test_{metric}_not_for_selection": record["test_value"]})
            finish(record, started)
            return record["value"]

    def best_value(history: list[dict]) -> float:
        return (max if direction == "maximize" else min)(h[f"validation_{metric}"] for h in history)

    def finish(record: dict, started: float) -> None:
        record["seconds"] = round(time.perf_counter() - started, 2)
        records.append(record)
        mlflow.log_metrics({f"best_validation_{metric}": record["value"], "best_step": record["best_step"],
                            "fit_seconds": record["seconds"]})
        mlflow.set_tag("trial_state", record["state"])
        done = [r["value"] for r in records if r["state"] == "complete"]
        best_so_far = (max if direction == "maximize" else min)(done) if done else None
        log.info("trial %d/%d %s %d.%d: %s, validation %s %.4g at step %d, %.1f s (batch best %s)",
                 record["number"] + 1, batch.trials, batch.family, batch.index, record["number"], record["state"],
                 metric, record["value"], record["best_step"], record["seconds"],
                 f"{best_so_far:.4g}" if done else "-")

    study.optimize(objective, n_trials=batch.trials, timeout=batch.timeout_seconds)
    if not any(r["state"] == "complete" for r in records):
        log.warning("batch %s %d: every trial was pruned", batch.family, batch.index)
    return records
