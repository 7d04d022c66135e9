"""A tiny model search end to end through the DAG: trials as mapped tasks and child MLflow runs,
the model refitted, registered, compressed into a signed bundle, rolled out and served.

The spec is the repo's traffic_flow spec with the recurrent family left out of the search (its
fits are the slowest; the component tests take it through ONNX, int8 and the mean), so the residual
MLP and LightGBM compete. Their mean beats the winner alone on the validation folds (the search is
seeded: every run finds the same), so the model that goes to the edge is one ONNX graph of trees
and a network.
"""

from __future__ import annotations

import json
import shutil

import httpx
import mlflow
import pytest
import yaml
from cityfactory.config.scenarios import get_scenario
from cityfactory.governance.ledger import RunLedger
from cityfactory.governance.summary import format_training
from cityfactory.ingestion import replay
from cityfactory.storage.lake import open_lake
from cityfactory.tasktypes import load_model_spec
from support import REPO, write_fleet


@pytest.fixture(scope="module")
def searched(airflow_db, tmp_path_factory):
    from cityfactory.edge.fleet import LocalFleet, load_fleet
    from cityfactory.factory.scenario_dag import build_scenario_dag
    from cityfactory.tasktypes import load_model_spec
    from cityfactory.training import registry

    previous = mlflow.get_tracking_uri()
    home = tmp_path_factory.mktemp("search")
    models = home / "models"
    shutil.copytree(REPO / "models", models)
    spec = yaml.safe_load((models / "traffic_flow.yaml").read_text())
    del spec["search"]["families"]["recurrent"]
    (models / "traffic_flow.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CITYFACTORY_MODELS_DIR", str(models))
        mp.setenv("CITYFACTORY_SEARCH_TRIALS", "3")  # this deployment's cap, which the form's number cannot pass
        mp.setenv("CITYFACTORY_LAKE_URI", (home / "lake").as_uri())
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
        mp.setenv("CITYFACTORY_FLEETS_DIR", str(write_fleet(home / "fleets", "traffic_flow", 3)))
        scenario = get_scenario("traffic_flow")
        start, end = replay.history_interval(scenario)
        with LocalFleet.for_scenario(scenario):
            run = build_scenario_dag(scenario).test(run_conf={
                "data_interval_start": str(start), "data_interval_end": str(end), "retrain": "auto",
                "full_refresh": False, "search_trials": 3})
            ledger = RunLedger(open_lake(), "traffic_flow", run.run_id)
            registry.use_experiment("traffic_flow")
            fleet = load_fleet(scenario.rollout.fleet)
            served = [httpx.get(f"{node.url}/healthz", timeout=10).json() for node in fleet.nodes]
            width = len(load_model_spec(scenario.model_spec).data.feature_names)
            answer = httpx.post(f"{fleet.nodes[0].url}/predict", json={"rows": [[1000.0] * width] * 2}, timeout=10)
            assert answer.status_code == 200, answer.text
            yield run, ledger, mlflow.MlflowClient(), served
    mlflow.set_tracking_uri(previous)


def test_the_trials_ran_as_mapped_tasks_and_child_runs(searched):
    run, ledger, client, _ = searched
    assert run.state == "success"
    entries = ledger.entries()
    [planned] = [e for e in entries if e["task_id"] == "plan_search"]
    assert planned["details"]["trials"] == 3 and planned["counts"]["batches"] == 2
    batches = sorted((e["details"]["family"], e["counts"]["trials"]) for e in entries if e["task_id"] == "trials")
    assert batches == [("lightgbm", 1), ("residual_mlp", 2)]  # 3 trials shared out, one mapped task per batch

    [train] = [e for e in entries if e["task_id"] == "train"]
    parent = next(a["uri"] for a in train["outputs"] if a["kind"] == "mlflow_run").removeprefix("runs:/")
    experiment = client.get_run(parent).info.experiment_id
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(c.data.tags["family"] for c in children) == ["lightgbm", "residual_mlp", "residual_mlp"]
    for child in children:
        assert child.data.params["family"] == child.data.tags["family"]
        assert child.data.tags["trial_state"] in ("complete", "pruned")
        assert client.get_metric_history(child.info.run_id, "validation_rmse"), "every trial logs its curve"
    search = mlflow.artifacts.load_dict(f"runs:/{parent}/search/trials.json")
    complete = [t for t in search["trials"] if t["state"] == "complete"]
    winner = min(complete, key=lambda t: t["value"])
    params = client.get_run(parent).data.params
    chosen = train["details"]["search"]
    members = chosen["members"]
    averaged = dict.fromkeys((m["family"], m["run_id"]) for m in search["members"])
    assert members[0] == winner["family"] and set(members) <= {"lightgbm", "residual_mlp"}, members
    assert len(averaged) > 1, "the mean of the trials beat the winner alone on these rows"
    mean = " + ".join(members)
    depth = max(sum(family == f for f, _ in averaged) for family in members)  # each family's best `depth` trials
    name = mean if depth == 1 else f"{mean} top {depth}"
    assert chosen["combinations"][name] < chosen["combinations"][winner["family"]], "kept for beating it"
    assert params["family"] == train["details"]["family"] == mean and chosen["chosen"] == name
    assert params["winner_trial"] == f"{winner['family']} {winner['batch']}.{winner['number']}"
    assert search["members"][0]["run_id"] == winner["run_id"]
    assert {a.path for a in client.list_artifacts(parent, "plots")} >= {"plots/search.png", "plots/loss_curve.png"}
    version = client.get_model_version("cityfactory.traffic_flow", str(train["counts"]["version"]))
    seeds = load_model_spec(get_scenario("traffic_flow").model_spec).training.refit_seeds
    assert seeds > 1 and params["refit_seeds"] == str(seeds)
    assert version.tags["search_budget"] == "3"
    best = "best trial" if depth == 1 else f"best {depth} trials"
    assert f"the mean of {mean} (each family's {best}, each refitted with {seeds} seeds and averaged)" in version.description
    summary = format_training(entries)
    assert f"model search: the mean of {name} (validation" in summary


def test_the_winner_went_through_the_bundle_and_the_rollout(searched):
    _, ledger, _, served = searched
    current = {e["task_id"]: e for e in ledger.current()}
    version = str(current["train"]["counts"]["version"])
    family = current["train"]["details"]["family"]
    assert current["compress"]["status"] == "success"
    manifest = json.loads(open_lake().get_bytes(f"bundles/traffic_flow/{version}/manifest.json"))
    assert manifest["family"] == family and manifest["model_version"] == version
    names = {v["name"] for v in current["compress"]["details"]["variants"]}
    assert {"ensemble_native", "onnx_fp32", "int8_dynamic"} <= names, "the members' mean, then one graph of them"
    assert current["promote_champion"]["status"] == "success"
    assert {node["model_version"] for node in served} == {version}
    report = open_lake().get_bytes(f"{ledger.prefix}/report.html").decode()
    assert "Model search" in report and "validation score per trial" in report
