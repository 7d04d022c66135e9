"""The train stage on the whole real history: MLflow run, registry, alias gate, determinism."""

from __future__ import annotations

import mlflow
import pytest
from cityfactory.config.scenarios import get_scenario
from cityfactory.pipeline.train_stage import RunFacts, train_and_register
from cityfactory.storage.gold import read_gold
from cityfactory.storage.lake import open_lake
from cityfactory.tasktypes import load_model_spec
from cityfactory.tasktypes.forecast import data
from cityfactory.tasktypes.forecast.families import fit_hand_set
from cityfactory.tasktypes.forecast.gate import decide
from cityfactory.tasktypes.forecast.task import ForecastTask

TRAFFIC = get_scenario("traffic_flow")
SPEC = load_model_spec(TRAFFIC.model_spec)


def test_run_trains_logs_and_registers(history_run):
    run, entries, client = history_run
    assert run.state == "success"
    train = entries["train"]
    [mlflow_run] = [a["uri"].removeprefix("runs:/") for a in train["outputs"] if a["kind"] == "mlflow_run"]
    logged = client.get_run(mlflow_run)
    metrics, params, tags = logged.data.metrics, logged.data.params, logged.data.tags

    for name in ("persistence", "same_hour_last_week", "linear_autoregression"):
        assert {f"{name}_test_mae", f"{name}_test_rmse", f"{name}_test_mape"} <= set(metrics)
    assert 250 < metrics["linear_autoregression_test_rmse"] < 290, "the reference linear model is ~271"
    assert metrics["persistence_test_rmse"] > 700
    assert metrics["test_rmse"] < metrics["linear_autoregression_test_rmse"] * (1 - SPEC.gate.min_improvement_over_linear)
    assert int(params["test_rows"]) > 8000 and params["test_days"] == "365"
    # the suite's search is one trial, the hand-set model: a child run with its curves; then refitted
    [trial] = client.search_runs([logged.info.experiment_id], f"tags.mlflow.parentRunId = '{mlflow_run}'")
    assert trial.data.tags["hand_set"] == "true" and params["family"] == "residual_mlp"
    best = int(trial.data.metrics["best_step_fold_1"])  # the curve is the latest fold's
    assert len(client.get_metric_history(trial.info.run_id, "validation_rmse")) == min(best + SPEC.training.patience,
                                                                                         SPEC.training.epochs)
    # one trial has nothing to rank: fitted on the latest window alone, whose best step the refit takes
    assert "validation_rmse_fold_1" in trial.data.metrics and "validation_rmse_fold_2" not in trial.data.metrics
    assert params["best_step"] == str(best) and params["refit_seeds"] == "1"
    tags_of_version = client.get_model_version(SPEC.registered_model, train["counts"]["version"]).tags
    assert params["seen_sha256"] == tags_of_version["seen_sha256"] == train["details"]["fingerprint"]["seen"]
    assert tags_of_version["excluded_days"] == "none"
    assert int(params["refit_rows"]) == int(params["train_rows"]) + int(params["validation_rows"])

    assert tags["scenario"] == "traffic_flow" and tags["dag_id"] == "traffic_flow"
    assert tags["airflow_run_id"] == run.run_id and tags["code_version"]
    gold = entries["export_gold"]["outputs"][0]
    assert tags["features_sha256"] == gold["sha256"]
    assert tags["data_interval"] == f"{entries['plan']['details']['first_day']}..{entries['plan']['details']['last_day']}"
    [dataset] = logged.inputs.dataset_inputs
    assert dataset.dataset.source.find(gold["uri"]) >= 0 and dataset.dataset.digest

    artifacts = {a.path for a in client.list_artifacts(mlflow_run)} | {a.path for a in client.list_artifacts(mlflow_run, "plots")}
    artifacts |= {a.path for a in client.list_artifacts(mlflow_run, "search")}
    assert {"model_card.md", "model_summary.json", "plots/forecast_test_week.png", "plots/loss_curve.png",
            "plots/search.png", "search/trials.json", "search/trials.md"} <= artifacts
    daily = mlflow.artifacts.load_dict(f"runs:/{mlflow_run}/model_summary.json")["daily_test_scores"]
    assert 360 <= len(daily) <= 366 and sum(d["rows"] for d in daily) == int(params["test_rows"])  # each test day once
    pooled = ForecastTask.metrics["rmse"].pool([d["value"] for d in daily], [d["rows"] for d in daily])
    assert pooled == pytest.approx(metrics["test_rmse"], rel=1e-4)  # the days pool back to the test RMSE
    card = mlflow.artifacts.load_text(f"runs:/{mlflow_run}/model_card.md")
    assert "| linear_autoregression |" in card and "challenger" in card

    version = client.get_model_version(SPEC.registered_model, train["counts"]["version"])
    assert version.run_id == mlflow_run
    assert version.tags["feature_digest"] == gold["sha256"] and version.tags["gate_decision"] == "challenger"
    assert "Registry gate: challenger - test rmse" in version.description and "linear_autoregression" in version.description
    experiment = client.get_experiment(logged.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # opens in the model-training view
    assert float(version.tags["test_rmse"]) == pytest.approx(metrics["test_rmse"], abs=1e-3)
    assert train["details"]["alias"] == "challenger" and train["details"]["reason"].endswith("no champion yet")
    # the run rolled it out: champion now, and no longer also challenger
    assert entries["promote_champion"]["details"]["champion"] == str(version.version)
    assert "challenger" not in version.aliases
    model = mlflow.pyfunc.load_model(f"models:/{SPEC.registered_model}/{version.version}")
    assert model.metadata.get_input_schema().inputs[0].shape == (-1, len(SPEC.data.feature_names))


def _gold(entries):
    return read_gold(open_lake(), "traffic_flow", entries["export_gold"]["outputs"][0]["sha256"])


def test_gate_refuses_a_worse_model_and_keeps_the_champion(history_run):
    _, entries, client = history_run
    first = entries["train"]["counts"]["version"]
    client.set_registered_model_alias(SPEC.registered_model, "champion", str(first))  # as a rollout would
    weak = SPEC.model_copy(update={"training": SPEC.training.model_copy(update={"epochs": 1}),
                                   "architecture": SPEC.architecture.model_copy(update={"hidden": [2]})})
    gold = entries["export_gold"]["outputs"][0]
    facts = RunFacts("traffic_flow", "traffic_flow", "manual__forced_worse", "test", gold["uri"], gold["sha256"])
    outcome = train_and_register(weak, _gold(entries), facts)

    assert outcome.alias is None
    assert "does not beat the linear baseline" in outcome.reason
    assert outcome.champion_version == str(first) and "champion" in outcome.metrics
    assert str(client.get_model_version_by_alias(SPEC.registered_model, "champion").version) == str(first)
    assert "challenger" not in client.get_model_version(SPEC.registered_model, outcome.version).aliases
    assert client.get_model_version(SPEC.registered_model, outcome.version).tags["gate_reason"] == outcome.reason


def test_same_data_and_spec_give_the_same_model(history_run):
    _, entries, _ = history_run
    short = SPEC.model_copy(update={"training": SPEC.training.model_copy(update={"epochs": 3})})
    parts = data.split_by_time(_gold(entries), short.data, short.split)
    x_train, x_val = data.features(parts.train, short.data), data.features(parts.validation, short.data)
    y_train, y_val = parts.train["target_volume"].to_numpy(float), parts.validation["target_volume"].to_numpy(float)
    one, two = fit_hand_set(short, x_train, y_train, x_val, y_val), fit_hand_set(short, x_train, y_train, x_val, y_val)
    assert one.history == two.history
    assert (one.forecaster.predict_array(x_val) == two.forecaster.predict_array(x_val)).all()


@pytest.mark.parametrize(
    ("candidate", "champion", "alias", "words"),
    [
        (230.0, None, "challenger", "no champion yet"),
        (260.0, None, None, "does not beat the linear baseline"),
        (230.0, 220.0, None, "worse than the champion's 220 "),
        (230.0, 226.0, "challenger", "champion 226"),
    ],
)
def test_alias_decision(candidate, champion, alias, words):
    decision = decide("rmse", candidate, 272.0, champion, 0.05, 0.02)
    assert decision.alias == alias and words in decision.reason
