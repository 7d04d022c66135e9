"""The model search: its plan, its spec, each family fitted, exported and compressed, determinism.

Fast: small synthetic series (a daily cycle, a slow level and noise), a throwaway MLflow store.
"""

from __future__ import annotations

import mlflow
import numpy as np
import onnx
import pandas as pd
import pytest
from cityfactory.compression import gate
from cityfactory.compression.onnx_export import run as ort_run
from cityfactory.compression.variants import build_and_measure
from cityfactory.config.scenarios import ScenarioError, get_scenario
from cityfactory.search import results
from cityfactory.search.plan import (
    BUDGET_CAP,
    TRIALS_CEILING,
    plan_batches,
    trial_budget,
)
from cityfactory.search.trials import run_batch
from cityfactory.tasktypes import load_model_spec, task_type_of
from cityfactory.tasktypes.base import Combination
from cityfactory.tasktypes.forecast import data, edge, ensemble, families, trees
from cityfactory.tasktypes.forecast.metrics import edge_scores
from cityfactory.tasktypes.forecast.spec import ForecastSpec

TRAFFIC = load_model_spec(get_scenario("traffic_flow").model_spec)
HOURS = 6


def _spec(**search) -> ForecastSpec:
    """A small spec over the synthetic frame: 3 numeric inputs, a 6-hour window, hour of day."""
    window = [f"lag_{h}h" for h in range(HOURS, 0, -1)]
    raw = {
        "task_type": "forecast", "name": "synthetic", "registered_model": "test.synthetic", "description": "d", "intended_use": "u",
        "limitations": "l", "card_template": "model_card.md",
        "data": {"target": "target", "target_label": "level", "unit": "u", "time_column": "target_at",
                 "usable": "usable", "numeric": ["lag_1h", "lag_24h", "temp"], "one_hot": {"hour_of_day": {"range": [0, 23]}},
                 "window": {"level": window}},
        "split": {"test_days": 20, "validation_days": 20},
        "architecture": {"type": "residual_mlp", "residual_of": "lag_1h", "hidden": [16], "output_scale": 10.0},
        "training": {"seed": 1, "epochs": 6, "patience": 3, "batch_size": 128, "learning_rate": 0.01, "weight_decay": 0.0},
        "baselines": {"persistence": "lag_1h", "linear_autoregression": {"lags": ["lag_1h", "lag_24h"]}},
        "gate": {"metric": "rmse", "min_improvement_over_linear": 0.0, "champion_tolerance": 0.02},
    }
    if search:
        raw["search"] = search
    return ForecastSpec.model_validate(raw)


SEARCH = {
    "seed": 3, "trials": 6, "trials_per_batch": 2, "pruner": {"startup_trials": 1, "warmup_steps": 2},
    "families": {
        "residual_mlp": {"fixed": {"epochs": 6, "patience": 3, "batch_size": 128},
                         "ranges": {"hidden": {"choices": ["16", "32-16"]}, "learning_rate": {"low": 0.002, "high": 0.02, "log": True}}},
        "recurrent": {"fixed": {"epochs": 4, "patience": 2, "batch_size": 128},
                      "ranges": {"hidden": {"choices": [8, 16]}, "context": {"choices": ["16", ""]}}},
        "lightgbm": {"fixed": {"n_estimators": 200, "early_stopping": 20},
                     "ranges": {"num_leaves": {"low": 4, "high": 31, "log": True}, "learning_rate": {"low": 0.05, "high": 0.2}}},
    },
}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """120 days of an hourly level: a daily cycle, a drifting base and noise; lags from the series."""
    rng = np.random.default_rng(0)
    times = pd.date_range("2024-01-01", periods=120 * 24, freq="h")
    base = 100 + np.cumsum(rng.normal(0, 0.5, len(times)))
    level = base + 30 * np.sin(2 * np.pi * times.hour / 24) + rng.normal(0, 3, len(times))
    series = pd.Series(level, index=times)
    out = pd.DataFrame({"target_at": times, "target": level, "hour_of_day": times.hour,
                        "temp": rng.normal(10, 5, len(times)), "lag_24h": series.shift(24).to_numpy()})
    for h in range(1, HOURS + 1):
        out[f"lag_{h}h"] = series.shift(h).to_numpy()
    out["usable"] = out.notna().all(axis=1)
    return out


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    """A throwaway MLflow store and a parent run for the trials; MLflow's process-wide tracking URI
    is put back after (the modules after this one read their own registry)."""
    previous = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("search-test", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment) as parent:
        pass
    yield parent.info.run_id, experiment
    mlflow.set_tracking_uri(previous)


def _arrays(spec, frame):
    parts = data.split_by_time(frame, spec.data, spec.split)
    xs = [data.features(p, spec.data) for p in (parts.train, parts.validation, parts.test)]
    ys = [p[spec.data.target].to_numpy(float) for p in (parts.train, parts.validation, parts.test)]
    return xs, ys, parts


# --- the plan -----------------------------------------------------------------------------------

def test_the_budget_is_shared_over_the_families_in_batches(monkeypatch):
    monkeypatch.delenv(BUDGET_CAP, raising=False)
    spec = _spec(**{**SEARCH, "trials": 7})
    batches = plan_batches(spec, trial_budget(spec))
    assert [(b.family, b.index, b.trials) for b in batches] == [
        ("residual_mlp", 0, 2), ("residual_mlp", 1, 1), ("recurrent", 0, 2), ("lightgbm", 0, 2)]
    assert [b.hand_set_first for b in batches] == [True, False, False, False]
    assert len({b.seed for b in batches}) == len(batches)  # every batch its own seeded study
    assert plan_batches(spec, 7) == batches  # a plan is a function of the spec and the budget


def test_the_budget_comes_from_the_form_else_the_spec_capped_by_the_environment(monkeypatch):
    spec = _spec(**SEARCH)
    monkeypatch.delenv(BUDGET_CAP, raising=False)
    assert trial_budget(spec) == 6 and trial_budget(spec, 2) == 2
    assert trial_budget(spec, 10**12) == TRIALS_CEILING  # the API's 1e12 trials: the ceiling, not the worker's memory
    monkeypatch.setenv(BUDGET_CAP, "1")
    assert trial_budget(spec) == 1 and trial_budget(spec, 5) == 1  # the form cannot pass this deployment's cap
    [only] = plan_batches(spec, 1)
    assert (only.family, only.trials, only.hand_set_first) == ("residual_mlp", 1, True)  # the hand-set model alone
    [alone] = plan_batches(_spec(), 1)  # a spec without a search trains its hand-set model
    assert alone.hand_set_first and alone.trials == 1


@pytest.mark.parametrize(("change", "words"), [
    ({"families": {"xgboost": {}}}, "search.families.xgboost"),
    ({"families": {"lightgbm": {"ranges": {"num_leaves": {"low": 31, "high": 4}}}}}, "high 4.0 is below low 31.0"),
    ({"families": {"lightgbm": {"ranges": {"learning_rate": {"low": 0, "high": 1, "log": True}}}}}, "a log range needs low > 0"),
    ({"families": {"lightgbm": {"ranges": {"num_leaves": {"low": 4}}}}}, "give either 'choices'"),
    ({"trials": 0}, "search.trials"),
    ({"families": {"lightgbm": {"fixed": {"learnig_rate": 0.1}}}}, "learnig_rate is no lightgbm setting"),
])
def test_a_malformed_search_is_refused_naming_the_key(tmp_path, change, words):
    import yaml

    raw = _spec(**SEARCH).model_dump(mode="json", exclude_none=True)
    raw["search"] = {**raw["search"], **change}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ScenarioError, match="bad.yaml") as error:
        load_model_spec("bad", tmp_path)
    assert words in str(error.value)


def test_the_repo_specs_declare_a_search_over_all_three_families():
    for name in ("traffic_flow", "air_quality"):
        spec = load_model_spec(get_scenario(name).model_spec)
        assert set(spec.search.families) == {"residual_mlp", "recurrent", "lightgbm"}
        assert spec.data.window and all(c in spec.data.feature_names for cols in spec.data.window.values() for c in cols)


# --- the families -------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["residual_mlp", "recurrent", "lightgbm"])
def test_every_family_learns_refits_and_survives_the_registry(family, frame, tracking):
    spec = _spec(**SEARCH)
    (x_train, x_val, x_test), (y_train, y_val, y_test), parts = _arrays(spec, frame)
    params = {**SEARCH["families"][family]["fixed"]}
    trained = families.fit(family, spec, params, x_train, y_train, x_val, y_val, "rmse", seed=5)
    persistence = np.sqrt(np.mean((parts.test["lag_1h"].to_numpy() - y_test) ** 2))
    model = np.sqrt(np.mean((trained.forecaster.predict_array(x_test) - y_test) ** 2))
    assert model < 0.9 * persistence, f"{family}: {model:.2f} vs persistence {persistence:.2f}"
    assert trained.history and 1 <= trained.best_step <= max(h["step"] for h in trained.history)

    x_seen, y_seen = np.vstack([x_train, x_val]), np.concatenate([y_train, y_val])
    one = families.refit(family, spec, params, trained.best_step, x_seen, y_seen, seed=5)
    two = families.refit(family, spec, params, trained.best_step, x_seen, y_seen, seed=5)
    assert (one.predict_array(x_test) == two.predict_array(x_test)).all(), "same settings and seed, same model"

    _, experiment = tracking
    with mlflow.start_run(experiment_id=experiment):
        info = one.log_model(name="model", input_example=x_test[:3])
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    assert np.allclose(loaded.predict(x_test), one.predict_array(x_test))
    assert loaded.unwrap_python_model().family == family


def test_the_recurrent_model_reads_the_window_hour_by_hour(frame):
    spec = _spec(**SEARCH)
    (x_train, x_val, _), (y_train, y_val, _), _ = _arrays(spec, frame)
    net = families.fit("recurrent", spec, SEARCH["families"]["recurrent"]["fixed"], x_train, y_train, x_val, y_val,
                       "rmse", seed=1).forecaster.model
    names = spec.data.feature_names
    assert [names[i] for [i] in net.window.tolist()] == spec.data.window["level"]  # oldest first
    shuffled = x_val.copy()
    columns = net.window.flatten().tolist()
    shuffled[:, columns] = shuffled[:, columns[::-1]]  # the same values, the hours reversed
    assert not np.allclose(families.Forecaster("recurrent", {}, net, 0).predict_array(shuffled),
                           families.Forecaster("recurrent", {}, net, 0).predict_array(x_val))


def test_a_window_needs_the_same_hours_per_channel_and_the_recurrent_family_one():
    raw = _spec(**SEARCH).model_dump(mode="json", exclude_none=True)
    raw["data"]["window"]["other"] = ["lag_1h"]
    with pytest.raises(ValueError, match="same number of hours"):
        ForecastSpec.model_validate(raw)
    raw["data"]["window"] = {}
    with pytest.raises(ValueError, match="recurrent needs data.window"):
        ForecastSpec.model_validate(raw)


# --- compression for every family ---------------------------------------------------------------

def test_the_recurrent_model_goes_through_onnx_int8_and_pruning(frame, tmp_path):
    import torch

    spec = _spec(**SEARCH)
    (x_train, x_val, x_test), (y_train, y_val, y_test), _ = _arrays(spec, frame)
    forecaster = families.fit("recurrent", spec, SEARCH["families"]["recurrent"]["fixed"], x_train, y_train, x_val, y_val,
                              "rmse", seed=1).forecaster
    variants, parity = build_and_measure(forecaster.model, x_train, y_train, x_test[:500], y_test[:500], tmp_path,
                                         parity_tolerance=0.01, score=edge_scores,
                                         loss=lambda out, target: torch.nn.functional.mse_loss(out / 10.0, target / 10.0))
    by_name = {v.name: v for v in variants}
    assert parity < 0.01
    assert by_name["int8_dynamic"].size_bytes < by_name["onnx_fp32"].size_bytes
    assert gate.choose(variants, "mae", 0.25).size_bytes < by_name["onnx_fp32"].size_bytes


def test_trees_export_to_onnx_with_the_residual_added_back(frame, tmp_path):
    spec = _spec(**SEARCH)
    (x_train, x_val, x_test), (y_train, y_val, y_test), _ = _arrays(spec, frame)
    forecaster = families.fit("lightgbm", spec, SEARCH["families"]["lightgbm"]["fixed"], x_train, y_train, x_val, y_val,
                              "rmse", seed=1).forecaster
    path = trees.export(forecaster.model, forecaster.residual_index, x_test.shape[1], tmp_path / "t.onnx",
                        forecaster.iterations)
    assert np.abs(ort_run(path, x_test) - forecaster.predict_array(x_test)).max() < 0.01  # float32 thresholds
    variants, parity = trees.build_and_measure(forecaster, x_test.shape[1], x_test, y_test, tmp_path, 0.01)
    assert parity < 0.01
    by_name = {v.name: v for v in variants}
    # int8 does not touch an ensemble: measured, same size; fewer rounds is what shrinks trees
    assert by_name["int8_dynamic"].size_bytes >= by_name["onnx_fp32"].size_bytes * 0.95
    assert by_name["trees_first_50pct"].size_bytes < 0.6 * by_name["onnx_fp32"].size_bytes
    assert gate.choose(variants, "mae", 1.0).name.startswith("trees_first_")
    assert variants[0].name == "lightgbm_native" and "vs eager" in gate.table(variants, "mae")


# --- a batch of trials --------------------------------------------------------------------------

def test_a_family_that_is_not_pruned_runs_every_trial_to_its_end(frame, tracking):
    """Trees compared at round 10: the slow learning rates look worst and are stopped, unless the
    family says ``pruned: false``."""
    trees_only = {**SEARCH, "trials": 6, "trials_per_batch": 6, "random_trials": 6,
                  "pruner": {"startup_trials": 1, "warmup_steps": 0},
                  "families": {"lightgbm": {"fixed": {"n_estimators": 60, "early_stopping": 20},
                                            "ranges": {"learning_rate": {"low": 0.002, "high": 0.3, "log": True}}}}}
    states = {}
    for pruned in (True, False):
        spec = _spec(**{**trees_only, "families": {"lightgbm": {**trees_only["families"]["lightgbm"], "pruned": pruned}}})
        [batch] = plan_batches(spec, 6)
        states[pruned] = [t["state"] for t in run_batch(spec, frame, batch, *tracking)]
    assert "pruned" in states[True]
    assert states[False] == ["complete"] * 6


def test_a_batch_is_deterministic_prunes_and_logs_every_trial_as_a_child_run(frame, tracking):
    parent, experiment = tracking
    spec = _spec(**{**SEARCH, "trials_per_batch": 4})
    [mlp] = [b for b in plan_batches(spec, 4) if b.family == "residual_mlp"]
    first = run_batch(spec, frame, mlp, parent, experiment)
    second = run_batch(spec, frame, mlp, parent, experiment)
    strip = lambda trials: [{k: v for k, v in t.items() if k not in ("run_id", "seconds")} for t in trials]
    assert strip(first) == strip(second), "same seed and budget, same trials"
    assert first[0]["hand_set"] and first[0]["params"]["hidden"] == "16"
    assert {t["state"] for t in first} <= {"complete", "pruned"}

    children = mlflow.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'", output_format="list")
    assert len(children) == 2 * len(first)
    child = mlflow.MlflowClient().get_run(first[0]["run_id"])
    assert child.data.tags["family"] == "residual_mlp" and child.data.params["hidden"] == "16"
    assert "best_validation_rmse" in child.data.metrics
    assert len(mlflow.MlflowClient().get_metric_history(child.info.run_id, "validation_rmse")) >= first[0]["best_step"]


def test_the_winner_is_the_best_completed_trial_and_the_picture_draws(tmp_path):
    trials = [
        {"family": "residual_mlp", "batch": 0, "number": 0, "state": "complete", "value": 5.0, "best_step": 3,
         "seconds": 1.0, "hand_set": True, "params": {"hidden": "16"}},
        {"family": "lightgbm", "batch": 0, "number": 0, "state": "pruned", "value": 1.0, "best_step": 10,
         "seconds": 1.0, "hand_set": False, "params": {"num_leaves": 8, "learning_rate": 0.1}},
        {"family": "lightgbm", "batch": 0, "number": 1, "state": "complete", "value": 4.0, "best_step": 40,
         "seconds": 1.0, "hand_set": False, "params": {"num_leaves": 16, "learning_rate": 0.05}},
    ]
    assert results.winner(trials)["value"] == 4.0  # a pruned trial's last value is no result
    with pytest.raises(ValueError, match="no trial of the search completed"):
        results.winner([trials[1]])
    figure = results.figure(trials, "rmse", "u", {"lightgbm": {"num_leaves": 0.7, "learning_rate": 0.3}})
    figure.savefig(tmp_path / "search.png")
    assert (tmp_path / "search.png").stat().st_size > 10_000
    assert "| lightgbm | 0.1 | complete | 4.000 |" in results.table(trials, "rmse")


def test_a_time_budget_stops_a_batch_after_the_trial_that_crosses_it(frame, tracking):
    parent, experiment = tracking
    spec = _spec(**{**SEARCH, "trials_per_batch": 4, "timeout_minutes": 0.0001})
    [trees_batch] = [b for b in plan_batches(spec, 12) if b.family == "lightgbm"]
    assert trees_batch.trials == 4 and trees_batch.timeout_seconds == pytest.approx(0.006)
    assert len(run_batch(spec, frame, trees_batch, parent, experiment)) == 1


# --- rolling-origin validation -----------------------------------------------------------------

def test_folds_are_consecutive_windows_each_trained_on_what_came_before(frame):
    spec = _spec()
    spec = spec.model_copy(update={"split": spec.split.model_copy(update={"folds": 3})})
    examples = task_type_of(spec).examples(spec, frame)
    folds = list(examples.earlier_folds())
    assert len(folds) == 2 and [len(f.y_validation) for f in folds] == [20 * 24] * 2
    seen_times = examples.seen[spec.data.time_column].to_numpy()
    (train_end, validation_end), _ = examples.folds
    assert validation_end == len(examples.train), "the latest earlier fold ends where validation begins"
    assert seen_times[train_end - 1] < seen_times[train_end], "a fold trains only on rows before its window"
    assert (folds[0].x_validation == examples.x_seen[train_end:validation_end]).all()
    assert set(examples.spans) >= {"validation fold 2", "validation fold 3"}

    too_many = spec.model_copy(update={"split": spec.split.model_copy(update={"folds": 12})})
    with pytest.raises(ValueError, match="too short for 12 folds of 20 days"):
        data.split_by_time(frame, too_many.data, too_many.split)


def test_a_trial_is_the_mean_of_its_folds_and_keeps_its_test_score_aside(frame, tracking):
    parent, experiment = tracking
    spec = _spec(**{**SEARCH, "trials_per_batch": 2})
    spec = spec.model_copy(update={"split": spec.split.model_copy(update={"folds": 3})})
    [trees_batch] = [b for b in plan_batches(spec, 6) if b.family == "lightgbm"]
    found = run_batch(spec, frame, trees_batch, parent, experiment)
    for trial in (t for t in found if t["state"] == "complete"):
        assert len(trial["folds"]) == 3 and trial["value"] == pytest.approx(np.mean(trial["folds"]))
        assert trial["test_value"] > 0
        logged = mlflow.MlflowClient().get_run(trial["run_id"]).data.metrics
        assert {"validation_rmse_fold_1", "validation_rmse_fold_3", "test_rmse_not_for_selection"} <= set(logged)

    # a search of one trial has nothing to rank: its trial is fitted once, on the latest window
    [first_run] = plan_batches(spec, 1)
    assert not first_run.ranked and all(b.ranked for b in plan_batches(spec, 2))
    [alone] = run_batch(spec, frame, first_run, parent, experiment)
    assert len(alone["folds"]) == 1 and alone["value"] == alone["folds"][0]


def test_rank_correlation_of_validation_and_test():
    def trial(value, test, state="complete"):
        return {"state": state, "value": value, "test_value": test}

    agreeing = [trial(1, 10), trial(2, 20), trial(3, 30), trial(4, 5, "pruned")]
    assert results.rank_correlation(agreeing) == pytest.approx(1.0)
    assert results.rank_correlation([trial(1, 30), trial(2, 20), trial(3, 10)]) == pytest.approx(-1.0)
    assert results.rank_correlation(agreeing[:2]) is None, "under 3 scored trials"
    assert results.rank_correlation([trial(1, 1), trial(1, 2), trial(1, 3)]) is None, "no spread"


def test_two_workers_find_the_same_trials_and_winner_as_one(frame, tracking):
    """The batches spread over two worker processes (as over two Celery workers) or run one after the
    other in this one: the same trials, scores and winner."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    parent, experiment = tracking
    spec = _spec(**SEARCH)
    spec = spec.model_copy(update={"split": spec.split.model_copy(update={"folds": 2})})
    batches = plan_batches(spec, 6)
    alone = [t for b in batches for t in run_batch(spec, frame, b, parent, experiment)]
    n = len(batches)
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        spread = [t for found in pool.map(run_batch, [spec] * n, [frame] * n, batches, [parent] * n, [experiment] * n)
                  for t in found]
    strip = lambda trials: [{k: v for k, v in t.items() if k not in ("run_id", "seconds")} for t in trials]
    assert strip(spread) == strip(alone)
    assert results.winner(spread)["params"] == results.winner(alone)["params"]


# --- the mean of the families' best trials ------------------------------------------------------
# Chosen on validation folds only when it beats the winner alone, refitted, exported as one ONNX
# graph and logged as one MLflow model.

ENSEMBLE_FOLDS = 2


def _leader(family: str, value: float, **params) -> dict:
    return {"family": family, "batch": 0, "number": 0, "state": "complete", "value": value, "best_step": 0,
            "hand_set": False, "run_id": f"{family}-{value}", "params": params, "seconds": 1.0}


@pytest.fixture(scope="module")
def fold_spec():
    spec = _spec(**SEARCH)
    return spec.model_copy(update={"split": spec.split.model_copy(update={"folds": ENSEMBLE_FOLDS})})


@pytest.fixture(scope="module")
def fold_examples(fold_spec, frame):
    return task_type_of(fold_spec).examples(fold_spec, frame)


def test_each_familys_trials_rank_best_first_with_the_winners_family_first():
    trials = [_leader("residual_mlp", 5.0), _leader("residual_mlp", 3.0), _leader("lightgbm", 4.0),
              {**_leader("recurrent", 1.0), "state": "pruned"}]
    ranked = lambda rankings: [[(t["family"], t["value"]) for t in r] for r in rankings]
    assert ranked(results.family_rankings(trials)) == [[("residual_mlp", 3.0), ("residual_mlp", 5.0)], [("lightgbm", 4.0)]]
    assert ranked(results.family_rankings(trials, greater_is_better=True)) == [
        [("residual_mlp", 5.0), ("residual_mlp", 3.0)], [("lightgbm", 4.0)]]


def test_the_mean_is_kept_only_where_it_beats_the_winner_on_every_folds_mean(fold_spec, fold_examples):
    kind = task_type_of(fold_spec)
    mlp = _leader("residual_mlp", 1.0, **SEARCH["families"]["residual_mlp"]["fixed"])
    trees = _leader("lightgbm", 2.0, **SEARCH["families"]["lightgbm"]["fixed"])
    chosen = kind.combine(fold_spec, fold_examples, [[mlp], [trees]], "rmse", seed=1)
    assert set(chosen.validation) == {"residual_mlp", "residual_mlp + lightgbm"}

    # the scores are the folds' mean, recomputed here from the same fits: never the test rows
    folds = [fold_examples, *fold_examples.earlier_folds()]
    assert len(folds) == ENSEMBLE_FOLDS
    fits = [[kind.fit(t["family"], fold_spec, t["params"], f, "rmse", 1).model.predict_array(f.x_validation) for f in folds]
            for t in (mlp, trees)]
    rmse = lambda f, p: float(np.sqrt(np.mean((p - f.y_validation) ** 2)))
    alone = np.mean([rmse(f, fits[0][k]) for k, f in enumerate(folds)])
    mean = np.mean([rmse(f, (fits[0][k] + fits[1][k]) / 2) for k, f in enumerate(folds)])
    assert chosen.validation == pytest.approx({"residual_mlp": alone, "residual_mlp + lightgbm": mean})
    assert mean < alone and chosen.family == "residual_mlp + lightgbm", "two families err differently: their mean wins"

    # a member that only spoils the mean (one tree of a tiny step: close to persistence) is left out
    spoiler = _leader("lightgbm", 9.0, n_estimators=1, early_stopping=1, learning_rate=0.001)
    kept = kind.combine(fold_spec, fold_examples, [[mlp], [spoiler]], "rmse", seed=1)
    assert kept.validation["residual_mlp + lightgbm"] > kept.validation["residual_mlp"]
    assert kept.members == [{**mlp, "refit_seed": 1}] and kept.family == "residual_mlp"
    assert kind.combine(fold_spec, fold_examples, [[mlp]], "rmse", seed=1) == Combination([mlp]), "one family: nothing to fit"


def test_candidates_hold_the_winner_and_go_deeper_in_each_family_once():
    a1, a2, b1 = _leader("residual_mlp", 1.0), _leader("residual_mlp", 2.0), _leader("lightgbm", 3.0)
    a2["run_id"] = "second"
    names = lambda depth: [c.name for c in ensemble.candidates([[a1, a2], [b1]], depth)]
    assert names(1) == ["residual_mlp", "residual_mlp + lightgbm"]
    assert names(2) == names(1) + ["residual_mlp top 2", "residual_mlp + lightgbm top 2"]
    assert names(3) == names(2), "a family with fewer trials gives what it has; each set of trials once"
    deeper = ensemble.candidates([[a1, a2], [b1]], 2)[-1]
    assert deeper.members == [a1, a2, b1] and deeper.depth == 2 and deeper.families == ["residual_mlp", "lightgbm"]


def test_a_familys_best_few_trials_join_only_where_validation_says_so(fold_spec, fold_examples):
    deep = fold_spec.model_copy(update={"training": fold_spec.training.model_copy(
        update={"trials_per_family": 2, "refit_seeds": 2})})
    kind = task_type_of(deep)
    fixed = SEARCH["families"]["residual_mlp"]["fixed"]
    mlp = _leader("residual_mlp", 1.0, **fixed, hidden="32-16", learning_rate=0.01)
    other = {**_leader("residual_mlp", 1.5, **fixed, hidden="16", learning_rate=0.004), "run_id": "other"}
    spoiler = _leader("lightgbm", 9.0, n_estimators=1, early_stopping=1, learning_rate=0.001)
    chosen = kind.combine(deep, fold_examples, [[mlp, other], [spoiler]], "rmse", seed=1)
    assert list(chosen.validation) == ["residual_mlp", "residual_mlp + lightgbm", "residual_mlp top 2",
                                       "residual_mlp + lightgbm top 2"]

    # the same folds' mean, recomputed: the best strictly, the shallower on a tie; never the test rows
    folds = [fold_examples, *fold_examples.earlier_folds()]
    fits = {t["run_id"]: [kind.fit(t["family"], deep, t["params"], f, "rmse", 1).model.predict_array(f.x_validation)
                          for f in folds] for t in (mlp, other, spoiler)}
    score = lambda members: np.mean([np.sqrt(np.mean((np.mean([fits[t["run_id"]][k] for t in members], axis=0)
                                                      - f.y_validation) ** 2)) for k, f in enumerate(folds)])
    expected = {"residual_mlp": score([mlp]), "residual_mlp + lightgbm": score([mlp, spoiler]),
                "residual_mlp top 2": score([mlp, other]), "residual_mlp + lightgbm top 2": score([mlp, other, spoiler])}
    assert chosen.validation == pytest.approx(expected)
    assert chosen.name == min(expected, key=expected.get)
    assert chosen.refits == 2 and len(chosen.members) == 2 * len(chosen.trials)

    # told it is better, the deeper mean is what is refitted: every trial, seed after seed
    two = Combination(ensemble.bagged([mlp, other], 2, 1), {"residual_mlp top 2": 0.0})
    bag = ensemble.refit(deep, two, fold_examples, seed=1)
    assert [(m.family, m.params) for m in bag.members] == [("residual_mlp", {**families.FAMILY_DEFAULTS["residual_mlp"], **t["params"]})
                                                           for t in (mlp, mlp, other, other)]
    assert len(bag.params) == 2, "each trial's settings once, by its run"


def test_a_bag_refits_each_chosen_trial_seed_after_seed_and_averages_them(fold_spec, fold_examples):
    bagging = fold_spec.model_copy(update={"training": fold_spec.training.model_copy(update={"refit_seeds": 3})})
    kind = task_type_of(bagging)
    mlp = {**_leader("residual_mlp", 1.0, **SEARCH["families"]["residual_mlp"]["fixed"]), "best_step": 3}
    spoiler = _leader("lightgbm", 9.0, n_estimators=1, early_stopping=1, learning_rate=0.001)
    chosen = kind.combine(bagging, fold_examples, [[mlp], [spoiler]], "rmse", seed=1)
    assert [(m["family"], m["refit_seed"]) for m in chosen.members] == [("residual_mlp", 1), ("residual_mlp", 2),
                                                                        ("residual_mlp", 3)]
    assert chosen.family == "residual_mlp" and chosen.families == ["residual_mlp"] and chosen.refits == 3

    x, y, x_test = fold_examples.x_seen, fold_examples.y_seen, fold_examples.x_test
    bag = ensemble.refit(bagging, chosen, fold_examples, seed=1)
    alone = [families.refit("residual_mlp", bagging, mlp["params"], 3, x, y, seed).predict_array(x_test) for seed in (1, 2, 3)]
    assert not np.allclose(alone[0], alone[1]), "the seeds make different networks"
    assert np.allclose(bag.predict_array(x_test), np.mean(alone, axis=0), atol=1e-3), "the bag is their mean"
    assert kind.combine(bagging, fold_examples, [[mlp]], "rmse", seed=1).members == [mlp], "a one-trial run refits once"


@pytest.fixture(scope="module")
def averaged(fold_spec, fold_examples):
    members = [_leader(family, 1.0, **SEARCH["families"][family]["fixed"]) for family in ("residual_mlp", "lightgbm", "recurrent")]
    for member, steps in zip(members, (4, 60, 3)):
        member["best_step"] = steps
    return ensemble.refit(fold_spec, Combination(members), fold_examples, seed=1)


@pytest.fixture(scope="module")
def gappy(fold_spec, frame):
    """The frame with holes in older inputs (a missing weather hour in 7, a lost day of lag_24h),
    and the spec that lets the trees train on those rows."""
    holes = frame.copy()
    holes.loc[::7, "temp"] = np.nan
    holes.loc[1000:1047, "lag_24h"] = np.nan
    holes["usable"] = holes.notna().all(axis=1)
    spec = fold_spec.model_copy(update={"data": fold_spec.data.model_copy(update={"train_with_gaps": True})})
    return spec, holes


def test_trees_also_learn_from_rows_with_gaps_before_each_window_never_after(fold_spec, gappy, tmp_path):
    spec, holes = gappy
    kind = task_type_of(spec)
    examples = kind.examples(spec, holes)
    strict = kind.examples(fold_spec, holes)
    assert examples.split["rows_with_gaps"] > 0 and strict.split["rows_with_gaps"] == 0
    assert np.isnan(examples.x_gaps).any(axis=1).all(), "each row with gaps keeps its missing input missing"
    for part in (examples.x_validation, examples.x_test, examples.x_train):
        assert not np.isnan(part).any(), "validation, test and the networks' rows stay complete"

    # each window trains on the gap rows before it, counted here from the frame
    times = holes.loc[~holes["usable"] & holes["target"].notna() & holes["lag_1h"].notna(), "target_at"]
    for fold in [examples, *examples.earlier_folds()]:
        x, _ = fold.training_rows(with_gaps=True)
        first_validated = holes.loc[holes["usable"], "target_at"].iloc[len(fold.x_train)]
        assert len(x) == len(fold.x_train) + int((times < first_validated).sum())
        assert fold.training_rows(with_gaps=False)[0] is fold.x_train

    params = SEARCH["families"]["lightgbm"]["fixed"]
    trees_fit = kind.fit("lightgbm", spec, params, examples, "rmse", 1)
    assert not np.allclose(trees_fit.model.predict_array(examples.x_test),
                           kind.fit("lightgbm", fold_spec, params, strict, "rmse", 1).model.predict_array(examples.x_test))
    mlp = {"epochs": 2, "patience": 2, "batch_size": 128, "hidden": "16", "learning_rate": 0.01, "weight_decay": 0.0}
    assert np.array_equal(kind.fit("residual_mlp", spec, mlp, examples, "rmse", 1).model.predict_array(examples.x_test),
                          kind.fit("residual_mlp", fold_spec, mlp, strict, "rmse", 1).model.predict_array(examples.x_test))
    assert examples.fingerprint()["seen"] != strict.fingerprint()["seen"], "the rows with gaps are part of what was seen"

    # the refit takes every gap row before the test rows; its trees export with the same forecasts
    leader = {"run_id": "t", "family": "lightgbm", "params": params, "best_step": trees_fit.best_step}
    refitted = ensemble.refit(spec, Combination([leader]), examples, seed=1)
    x_seen, y_seen = examples.seen_rows(with_gaps=True)
    assert len(x_seen) == len(examples.x_seen) + len(times[times < examples.test_start])
    alone = families.refit("lightgbm", spec, params, trees_fit.best_step, x_seen, y_seen, 1)
    assert np.array_equal(refitted.predict_array(examples.x_test), alone.predict_array(examples.x_test))
    path = trees.export(refitted.model, refitted.residual_index, examples.x_test.shape[1], tmp_path / "t.onnx",
                        refitted.iterations)
    assert np.allclose(ort_run(path, examples.x_test), refitted.predict_array(examples.x_test), atol=1e-3)


def test_the_refitted_mean_is_one_graph_at_the_edge_with_int8_beside_it(fold_spec, fold_examples, averaged, tmp_path):
    x_test, y_test = fold_examples.x_test, fold_examples.y_test
    assert [m.family for m in averaged.members] == ["residual_mlp", "lightgbm", "recurrent"]
    assert np.allclose(averaged.predict_array(x_test), np.mean([m.predict_array(x_test) for m in averaged.members], axis=0))

    variants, parity = edge.compress(fold_spec, averaged, fold_examples.x_train, fold_examples.y_train, x_test, y_test,
                                     tmp_path, 0.01)
    assert parity < 0.01
    graph = onnx.load(str(tmp_path / "fp32.onnx"))
    assert [i.name for i in graph.graph.input] == ["features"] and [o.name for o in graph.graph.output] == ["prediction"]
    assert graph.graph.node[-1].op_type == "Mean" and len(graph.graph.node[-1].input) == 3
    assert {o.domain for o in graph.opset_import} >= {"", "ai.onnx.ml"}, "the trees' operators beside the networks'"
    assert np.abs(ort_run(tmp_path / "fp32.onnx", x_test) - averaged.predict_array(x_test)).max() < 0.01
    by_name = {v.name: v for v in variants}
    assert variants[0].name == "ensemble_native"
    assert by_name["int8_dynamic"].size_bytes < by_name["onnx_fp32"].size_bytes, "the networks' weights quantised"
    assert gate.choose(variants, "mae", 0.25).size_bytes < by_name["onnx_fp32"].size_bytes

    contract = edge.contract(fold_spec, averaged)
    members = contract["scaling"]["members"]
    assert [m["family"] for m in members] == ["residual_mlp", "lightgbm", "recurrent"]
    assert len(members[0]["mean"]) == len(fold_spec.data.feature_names)


def test_the_mean_survives_the_registry_as_one_model(fold_examples, averaged, tracking):
    _, experiment = tracking
    with mlflow.start_run(experiment_id=experiment):
        info = averaged.log_model(name="model", input_example=fold_examples.x_test[:3])
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    assert np.allclose(loaded.predict(fold_examples.x_test), averaged.predict_array(fold_examples.x_test))
    assert loaded.unwrap_python_model().family == "residual_mlp + lightgbm + recurrent"
