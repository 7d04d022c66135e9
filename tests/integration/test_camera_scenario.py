"""The camera scenario through the whole DAG on a small subset of ELPV (five days of the line):
images land and are kept once, the gates pass, a CNN is searched, registered with accuracy,
macro-F1 and the int8 comparison, a signed bundle rolls out to two real edge nodes that bake on
labelled images; then the cameras' images are served, the inspectors' labels arrive, and the
next run's monitor scores what the edge said against them. Governance covers it all."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml
from cityfactory.config.scenarios import get_scenario
from cityfactory.edge.consumers import serve_days
from cityfactory.edge.fleet import LocalFleet
from cityfactory.governance.ledger import RunLedger
from cityfactory.ingestion import replay
from cityfactory.storage.lake import open_lake
from support import REPO, free_ports

DAYS = 4


def _small_spec(directory):
    """The shipped spec with a network and budget that fit a test (two trials of a few epochs)."""
    directory.mkdir(parents=True, exist_ok=True)
    for other in (REPO / "models").iterdir():
        (directory / other.name).write_bytes(other.read_bytes())
    spec = yaml.safe_load((REPO / "models" / "solar_cells.yaml").read_text())
    spec["architecture"].update(input_size=48, width=8, blocks=3)
    spec["training"].update(epochs=4, patience=4)
    spec["search"].update(trials=2, trials_per_batch=1)
    # a few epochs on 480 images need not beat HOG features; the mechanics are what this test is about
    spec["gate"].update(must_beat=["majority"], min_class_recall=0.0)
    for family in spec["search"]["families"].values():
        family["fixed"].update(epochs=4, patience=4, blocks=3)
        family["ranges"].update(input_size={"choices": [48, 64]}, width={"choices": [8]})
    (directory / "solar_cells.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return directory


def _fleet(directory):
    directory.mkdir(parents=True, exist_ok=True)
    for other in (REPO / "dags" / "fleets").glob("*.yaml"):
        (directory / other.name).write_bytes(other.read_bytes())
    fleet = yaml.safe_load((REPO / "dags" / "fleets" / "solar_cells.yaml").read_text())
    for node, port in zip(fleet["nodes"], free_ports(len(fleet["nodes"]))):
        node["url"] = f"http://127.0.0.1:{port}"
    fleet["logging"] = {"past_hours": 24 * 90}  # the replayed inspectors ask about captures of the history's days
    (directory / "solar_cells.yaml").write_text(yaml.safe_dump(fleet))
    return directory


@pytest.fixture(scope="module")
def camera_runs(airflow_db, tmp_path_factory):
    import mlflow
    from airflow.dag_processing.dagbag import DagBag

    home = tmp_path_factory.mktemp("camera")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CITYFACTORY_LAKE_URI", (home / "lake").as_uri())
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
        mp.setenv("CITYFACTORY_MODELS_DIR", str(_small_spec(home / "models")))
        mp.setenv("CITYFACTORY_FLEETS_DIR", str(_fleet(home / "fleets")))
        mp.setenv("CITYFACTORY_SEARCH_TRIALS", "2")
        scenario = get_scenario("solar_cells")
        first, _ = replay.history_interval(scenario)
        last = first + dt.timedelta(days=DAYS - 1)
        dag = DagBag(dag_folder=str(REPO / "dags")).get_dag("solar_cells")
        with LocalFleet.for_scenario(scenario):
            run = dag.test(run_conf={"data_interval_start": str(first), "data_interval_end": str(last)})
            answered = serve_days(scenario, last - dt.timedelta(days=1), last - dt.timedelta(days=1))
            nightly = dag.test(run_conf={"data_interval_start": str(last + dt.timedelta(days=1)),
                                         "data_interval_end": str(last + dt.timedelta(days=1)),
                                         "stages": ["ingest", "quality", "transform", "monitor"]})
            lake = open_lake()
            yield ({e["task_id"]: e for e in RunLedger(lake, "solar_cells", run.run_id).entries()}, run,
                   {e["task_id"]: e for e in RunLedger(lake, "solar_cells", nightly.run_id).entries()}, nightly,
                   answered, mlflow.MlflowClient(), lake)


def test_the_run_makes_registers_compresses_and_rolls_out_a_classifier(camera_runs):
    entries, run, _, _, _, client, lake = camera_runs
    assert run.state == "success", {t: e["status"] for t, e in entries.items()}
    ingest = entries["ingest_summary"]["counts"]
    assert ingest["rows_in"] == ingest["rows_bronze"] + ingest["rows_quarantined"] and ingest["rows_bronze"] > 400
    assert len(lake.list("images/solar_cells")) == (DAYS + 1) * 120  # kept once each (the nightly run added a day)

    trained = entries["train"]["details"]
    assert trained["task_type"] == "image_classification" and trained["gate_metric"] == "accuracy"
    [version] = client.search_model_versions("name='cityfactory.solar_cells'")
    tags = version.tags
    assert {"test_accuracy", "test_macro_f1", "compression_variant", "data_licence"} <= set(tags)
    assert tags["data_licence"] == "CC BY-NC-SA 4.0"
    metrics = client.get_run(version.run_id).data.metrics
    assert {"compression_int8_static_qdq_accuracy", "compression_onnx_fp32_accuracy", "test_macro_f1",
            "classical_test_accuracy", "majority_test_accuracy"} <= set(metrics)
    artifacts = {a.path for a in client.list_artifacts(version.run_id, "plots")}
    assert {"plots/confusion_matrix.png", "plots/worst_mistakes.png"} <= artifacts
    text = Path(client.download_artifacts(version.run_id, "model_card.md")).read_text()
    assert "CC BY-NC-SA 4.0" in text and "## Edge variant" in text and "fingerprint" in text

    manifest = entries["compress"]["details"]
    assert manifest["facts"]["calibration"]["fingerprint"] and manifest["choice"]
    gates = [e for t, e in entries.items() if t.startswith("rollout") and "gate" in t]
    assert entries["promote_champion"]["status"] == "success" or gates


def test_the_edge_serves_images_and_the_next_run_scores_them_against_the_labels(camera_runs):
    _, _, nightly_entries, nightly, answered, _, _ = camera_runs
    assert nightly.state == "success", {t: e["status"] for t, e in nightly_entries.items()}
    assert sum(answered.values()) == 120 and len(answered) == 2  # each camera's images to its own node
    monitored = nightly_entries["monitor"]
    [evaluation] = monitored["details"]["evaluations"]
    assert evaluation["metric"] == "error_rate" and evaluation["scored_rows"] == 120
    [version] = evaluation["versions"]
    assert 0 <= version["live"] <= 1 and version["offline"] is not None
    assert {s["series"] for s in version["series"]} == {"el-cam-1", "el-cam-2"}
    assert 0.5 <= version["confidence"]["mean"] <= 1


def test_governance_reports_the_camera_run(camera_runs):
    entries, _, _, _, _, _, lake = camera_runs
    governed = entries["governance"]
    assert governed["status"] == "success"
    [report] = [a["uri"] for a in governed["outputs"] if a["uri"].endswith("report.json")]
    data = json.loads(lake.get_bytes(report.split("/lake/", 1)[1]))
    assert data["scenario"]["data_licence"] == "CC BY-NC-SA 4.0"
    assert data["compression"]["calibration"]["fingerprint"]
    assert any(g.startswith("class_") for g in data["model"]["metrics_by_series"])
