"""The train stage: gold features -> a tracked, registered and gated model version.

It knows no kind of model: examples, the refit, scores, baselines, the gate, figures and card
values come from the spec's task type."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cityfactory.config.scenarios import Drift
from cityfactory.monitoring.drift import reference_profile
from cityfactory.monitoring.level_shift import excluded_digest
from cityfactory.numbers import side_by_side
from cityfactory.search import results
from cityfactory.search.plan import plan_batches, trial_budget
from cityfactory.search.trials import run_batch
from cityfactory.tasktypes import spec_digest, task_type_of
from cityfactory.tasktypes.base import Combination
from cityfactory.tasktypes.spec import ModelSpec
from cityfactory.training import registry, report

log = logging.getLogger(__name__)


@dataclass
class RunFacts:
    """Where the training data came from and which pipeline run asked for it (becomes tags)."""

    scenario: str
    dag_id: str
    airflow_run_id: str
    data_interval: str
    features_uri: str
    features_sha256: str
    risk_level: str = ""
    owners: list[str] = field(default_factory=list)
    feature_definition: str = ""  # digest of the dbt models' SQL that made the features
    data_source: str = ""  # the dataset, its licence and citation (the data card)
    data_licence: str = ""
    data_citation: str = ""
    excluded_days: list[str] = field(default_factory=list)  # faulty days left out (monitoring.level_shift)
    zone: str = "UTC"  # the scenario's clock: the days the monitor and the ledger speak of


@dataclass
class Outcome:
    mlflow_run_id: str
    version: str
    alias: str | None
    reason: str
    metrics: dict[str, dict[str, float]]
    metrics_by_series: dict[str, dict[str, dict[str, float]]]
    champion_version: str | None
    fit_seconds: float
    train_rows: int
    family: str = ""
    trials: int = 0
    gate_metric: str = ""
    headline_figure: str | None = None  # the task type's first figure, an artifact of the MLflow run
    fingerprint: dict[str, str] = field(default_factory=dict)  # sha256 of the seen and the test examples
    rank_correlation: float | None = None  # validation vs test ranks of the search's trials (Spearman)
    members: list[str] = field(default_factory=list)  # the families averaged into the model (one: the winner)
    combinations: dict[str, float] = field(default_factory=dict)  # validation score of each mean compared
    chosen: str = ""  # the combination kept, by its name in ``combinations``


def champion_inputs(spec: ModelSpec, version: str) -> list[int] | None:
    """Where the champion's inputs sit in this spec's input row (a spec may have added inputs
    since); None if it reads one this spec no longer makes: then it cannot be scored."""
    ours_in_order = task_type_of(spec).input_names(spec)
    names = registry.feature_names(spec.registered_model, version) or ours_in_order
    ours = {name: i for i, name in enumerate(ours_in_order)}
    if missing := [n for n in names if n not in ours]:
        log.warning("champion version %s reads %s, which this spec no longer makes: not scored beside it",
                    version, ", ".join(missing[:5]))
        return None
    return [ours[n] for n in names]


def start_train_run(facts: RunFacts) -> tuple[str, str]:
    """The train run (the search's trials are its children): its id and experiment id."""
    import mlflow

    tags = {
        "scenario": facts.scenario, "dag_id": facts.dag_id, "airflow_run_id": facts.airflow_run_id,
        "data_interval": facts.data_interval, "code_version": registry.code_version(),
        "features_sha256": facts.features_sha256,
    }
    registry.use_experiment(facts.scenario)
    with mlflow.start_run(run_name=f"{facts.scenario} {facts.airflow_run_id}", tags=tags) as run:
        return run.info.run_id, run.info.experiment_id


def search_in_process(spec: ModelSpec, gold: pd.DataFrame, budget: int, run_id: str, experiment_id: str) -> list[dict]:
    """Every batch of the search, one after the other (the DAG maps them over workers instead)."""
    return [t for batch in plan_batches(spec, budget) for t in run_batch(spec, gold, batch, run_id, experiment_id)]


def train_and_register(spec: ModelSpec, gold: pd.DataFrame, facts: RunFacts, drift: Drift | None = None,
                       trials: list[dict] | None = None, run_id: str | None = None, budget: int | None = None) -> Outcome:
    """Refit the search's winner on training + validation rows, score it once on the test rows
    beside the baselines and the champion, log to MLflow, register, tag (the inputs, so an
    identical run is recognised) and decide the alias. Without ``trials`` the search runs here.
    The training rows' drift profile goes with the version for the monitor."""
    import mlflow
    from mlflow.models import infer_signature

    kind = task_type_of(spec)
    budget = budget or trial_budget(spec)
    if run_id is None:
        run_id, experiment_id = start_train_run(facts)
        trials = search_in_process(spec, gold, budget, run_id, experiment_id)
    metric = kind.search_metric(spec)
    greater = kind.metrics[metric].greater_is_better
    best = results.winner(trials, greater)
    examples = kind.examples(spec, gold)
    seen = examples.seen  # the refit's rows
    x_seen, x_test = examples.x_seen, examples.x_test
    fingerprint = examples.fingerprint()
    seed = spec.search.seed if spec.search else kind.hand_set(spec)[1]
    started = time.perf_counter()
    combination = kind.combine(spec, examples, results.family_rankings(trials, greater), metric, seed)
    log.info("refitting %s (winner: trial %s.%s, validation %.4g) on %d rows; testing on %d", combination.family,
             best["batch"], best["number"], best["value"], len(x_seen), len(x_test))
    model = kind.refit_combination(spec, combination, examples, seed)
    fit_seconds = time.perf_counter() - started
    predicted = model.predict_array(x_test)

    registry.use_experiment(facts.scenario)
    champion, champion_version = registry.champion_model(spec.registered_model)
    champion_predicted, without_champion = None, "no champion yet"
    if champion is not None:
        if (columns := champion_inputs(spec, champion_version)) is not None:
            champion_predicted = np.asarray(champion.predict(x_test[:, columns]), dtype=float)
        else:
            without_champion = (f"champion {champion_version} not comparable (it reads features this spec "
                                "no longer makes)")
    judged = kind.judge(spec, examples, predicted, champion_predicted, without_champion)
    metrics, by_group, decision = judged.metrics, judged.by_group, judged.decision
    gate_metric = kind.gate_metric(spec)

    found = results.importances(trials, spec.search, greater)
    correlation = results.rank_correlation(trials)
    time_column = kind.time_column(spec)
    with mlflow.start_run(run_id=run_id) as run:
        mlflow.log_params({
            "model_name": spec.name, "task_type": spec.task_type, "family": combination.family,
            "refit_seeds": combination.refits, **{f"param_{k}": v for k, v in best["params"].items()},
            "best_step": best["best_step"], "winner_trial": f"{best['family']} {best['batch']}.{best['number']}",
            "search_trials": len(trials), "search_metric": metric,
            "n_features": len(kind.input_names(spec)), "train_rows": len(examples.train),
            "validation_rows": len(examples.validation), "refit_rows": len(x_seen), "test_rows": len(x_test),
            "test_start": str(examples.test_start.date()), **examples.split,
            "seen_sha256": fingerprint["seen"], "test_sha256": fingerprint["test"],
        })
        if correlation is not None:
            mlflow.log_metric("search_rank_correlation_validation_test", correlation)
        mlflow.log_metrics({f"best_validation_{metric}": best["value"],
                            "search_trials_pruned": sum(t["state"] != "complete" for t in trials),
                            "search_trial_seconds": sum(t["seconds"] for t in trials)})
        mlflow.log_dict({"metric": metric, "winner": best, "trials": results.ordered(trials), "importances": found,
                         "members": combination.members, "combinations_by_validation": combination.validation},
                        "search/trials.json")
        mlflow.log_metrics({f"validation_{metric}_{name.replace(' + ', '_and_')}": value
                            for name, value in combination.validation.items()})
        mlflow.log_text(results.table(trials, metric), "search/trials.md")
        pictures = {"plots/search.png": results.figure(trials, metric, kind.unit(spec), found,
                                                       kind.metrics[metric].greater_is_better)}
        mlflow.log_metric("fit_seconds", fit_seconds)
        for name, values in metrics.items():
            prefix = "test" if name == "model" else f"{name}_test"
            mlflow.log_metrics({f"{prefix}_{k}": v for k, v in values.items()})
        dataset = mlflow.data.from_pandas(gold, source=facts.features_uri, name=f"{facts.scenario}_features",
                                          targets=kind.target(spec))
        mlflow.log_input(dataset, context="training", tags={"sha256": facts.features_sha256})
        figures = kind.figures(spec, examples, judged, facts.scenario)
        pictures.update(figures)
        pictures["plots/loss_curve.png"] = report.loss_figure(mlflow.MlflowClient(), best["run_id"], metric,
                                                              best["best_step"])
        _log_and_close(pictures)
        for name, m in by_group.items():
            mlflow.log_metrics({f"series_{name}_test_{k}": v for k, v in m["model"].items()})
        mlflow.log_dict({"feature_names": kind.input_names(spec), "target": kind.target(spec), "unit": kind.unit(spec),
                         "metrics": metrics, "metrics_by_series": by_group, "split": examples.spans,
                         "daily_test_scores": kind.daily_test_scores(spec, examples, predicted, facts.zone)},
                        "model_summary.json")
        signature = infer_signature(x_test[:5], predicted[:5])
        info = model.log_model(name="model", signature=signature, input_example=x_test[:5],
                               registered_model_name=spec.registered_model)
        version = str(info.registered_model_version)
        card = report.model_card(
            spec.card_template, name=spec.name, version=version, description=spec.description.strip(),
            scenario=facts.scenario, registered_model=spec.registered_model, run_id=run.info.run_id,
            data_interval=facts.data_interval, features_uri=facts.features_uri, features_sha256=facts.features_sha256,
            code_version=registry.code_version(), risk_level=facts.risk_level, owners=", ".join(facts.owners),
            train_rows=len(examples.train), train_span=examples.spans["train"],
            validation_rows=len(examples.validation), validation_span=examples.spans["validation"],
            test_rows=len(x_test), test_span=examples.spans["test"], **examples.split,
            intended_use=spec.intended_use.strip(), limitations=spec.limitations.strip(),
            gate_decision=f"{decision.alias or 'no alias'}: {decision.reason}",
            model_kind=model_kind(combination, best, len(trials), metric),
            data_source=facts.data_source, data_licence=facts.data_licence, data_citation=facts.data_citation,
            **kind.card_values(spec, judged),
        )
        mlflow.log_text(card, "model_card.md")
        drift = drift or Drift()
        mlflow.log_dict(reference_profile(seen, kind.drift_columns(spec), time_column, drift.window_days, drift.bins,
                                          drift.min_psi), registry.DRIFT_REFERENCE)
        mlflow.set_tag("gate_decision", decision.alias or "rejected")

    client = mlflow.MlflowClient()
    version_tags = {
        "data_interval": facts.data_interval, "feature_digest": facts.features_sha256, "code_version": registry.code_version(),
        "airflow_run_id": facts.airflow_run_id, "gate_decision": decision.alias or "rejected", "gate_reason": decision.reason,
        "spec_digest": spec_digest(spec), "search_budget": str(budget), "feature_definition": facts.feature_definition,
        "features_to": str(pd.to_datetime(gold[time_column].max(), utc=True).tz_convert(facts.zone).date()),  # a local day
        "task_type": spec.task_type,
        "seen_sha256": fingerprint["seen"], "test_sha256": fingerprint["test"],
        "excluded_days": excluded_digest(facts.excluded_days),  # one of the inputs a same-inputs check compares
        **({"data_licence": facts.data_licence} if facts.data_licence else {}),
        **{f"test_{k}": f"{v:.3f}" for k, v in metrics["model"].items()},
    }
    for key, value in version_tags.items():
        client.set_model_version_tag(spec.registered_model, version, key, value)
    client.update_registered_model(spec.registered_model, description=spec.description.strip())
    client.update_model_version(spec.registered_model, version, description=version_description(
        spec, facts, decision, metrics, len(x_seen), model_kind(combination, best, len(trials), metric), gate_metric))
    if decision.alias:
        client.set_registered_model_alias(spec.registered_model, decision.alias, version)
    log.info("registered %s version %s: %s", spec.registered_model, version, decision.reason)
    return Outcome(run.info.run_id, version, decision.alias, decision.reason, metrics, by_group,
                   champion_version, fit_seconds, len(x_seen), combination.family, len(trials), gate_metric,
                   next(iter(figures), None), fingerprint, correlation, combination.families,
                   combination.validation, combination.name)


def _log_and_close(pictures: dict) -> None:
    """Each figure into the MLflow run, then closed (pyplot keeps every open figure alive)."""
    import matplotlib.pyplot as plt
    import mlflow

    for path, figure in pictures.items():
        mlflow.log_figure(figure, path)
        plt.close(figure)


def model_kind(combination: Combination, best: dict, trials: int, metric: str) -> str:
    """What the model is, in words: the search's winner, or the mean of several families' best."""
    winner = (f"the best of {trials} search trials by validation {metric} (trial {best['batch']}.{best['number']}"
              f"{', the hand-set model' if best['hand_set'] else ''})")
    bag = f", each refitted with {combination.refits} seeds and averaged" if combination.refits > 1 else ""
    if len(combination.trials) == 1:
        return f"{best['family']}: {winner}{bag}"
    scores = combination.validation
    trials = "best trial" if combination.depth == 1 else f"best {combination.depth} trials"
    return (f"the mean of {combination.family} (each family's {trials}{bag}), as it scored validation {metric} "
            f"{scores[combination.name]:.4g} against {scores[best['family']]:.4g} for {best['family']} alone, "
            f"{winner}")


def version_description(spec, facts: RunFacts, decision, metrics: dict, train_rows: int, what: str,
                        metric: str) -> str:
    """What the registry shows beside a version: what it is, the gate's decision and why, and its
    test scores beside the baselines (same rows)."""
    kind = task_type_of(spec)
    better = kind.metrics[metric].greater_is_better
    ranked = sorted(metrics.items(), key=lambda kv: kv[1][metric], reverse=better)
    scores = ", ".join(f"{name} {text}" for (name, _), text in zip(ranked, side_by_side(m[metric] for _, m in ranked)))
    return (f"{kind.describe(spec)} for scenario {facts.scenario}: {what}, trained on {train_rows:,} rows of "
            f"{facts.data_interval} (features sha256 {facts.features_sha256[:12]}, Airflow run {facts.airflow_run_id}).\n\n"
            f"Registry gate: {decision.alias or 'rejected'} - {decision.reason}.\n\n"
            f"Test {kind.metrics[metric].label} on the same examples: {scores}.")
