"""Staged rollout across real edge node processes: success, a bad model caught at canary, a node
killed mid-rollout; every failure rolls back every touched node."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from airflow.sdk.exceptions import AirflowFailException
from cityfactory.compression import bundle
from cityfactory.compression.onnx_export import export
from cityfactory.compression.stage import load_torch_model
from cityfactory.config.scenarios import get_scenario
from cityfactory.edge.fleet import LocalFleet, edge_token, load_fleet
from cityfactory.governance import report
from cityfactory.governance.ledger import RunLedger
from cityfactory.rollout import controller, tasks
from cityfactory.runs import RunContext
from cityfactory.storage.lake import open_lake
from cityfactory.training import registry
from cityfactory.training.spec import load_model_spec
from support import write_fleet

pytestmark = pytest.mark.slow
TRAFFIC = get_scenario("traffic_flow")
SPEC = load_model_spec(TRAFFIC.model_spec)


def test_full_rollout_in_the_dag(history_run):
    _, entries, client = history_run
    version = str(entries["train"]["counts"]["version"])
    for stage in ("canary", "district", "city"):
        assert entries[f"{stage}_gate"]["status"] == "success"
        assert entries[f"{stage}_gate"]["details"]["verdict"]["passed"] is True
    assert entries["promote_champion"]["details"]["champion"] == version
    assert str(client.get_model_version_by_alias(SPEC.registered_model, "champion").version) == version
    assert set(controller.snapshot(load_fleet("traffic_flow"), edge_token()).values()) == {version}
    assert "rollback" not in entries  # skipped: nothing failed


def _new_version(tmp_path, entries, bias: float) -> str:
    """A registered, signed version of the trained model, its output shifted by ``bias`` x 1000."""
    good = str(entries["train"]["counts"]["version"])
    model = load_torch_model(SPEC, good)
    registry.use_experiment("traffic_flow")
    with mlflow.start_run(run_name=f"trained model shifted by {bias * 1000:+.0f}"):
        model.mlp[-1].bias.data += bias
        example = np.zeros((2, len(SPEC.data.feature_names)), dtype=np.float32)
        info = mlflow.pytorch.log_model(model, name="model", input_example=example,
                                        registered_model_name=SPEC.registered_model)
    version = str(info.registered_model_version)
    onnx = export(model, len(SPEC.data.feature_names), tmp_path / f"v{version}.onnx").read_bytes()
    manifest = bundle.verify(bundle.read(open_lake(), f"bundles/traffic_flow/{good}"), bundle.public_key_pem())
    facts = {k: v for k, v in manifest.items() if k not in ("files", "created_at", "signing_key_id")}
    bundle.write(open_lake(), "traffic_flow", version, bundle.build({"model.onnx": onnx}, {**facts, "model_version": version}))
    return version


def _rollout(scenario, version: str, run_id: str, before_kill=None):
    """The DAG's rollout tasks, in the DAG's order, on one scenario (raises what the DAG would)."""
    lake = open_lake()

    def ctx(task_id):
        return RunContext(scenario, lake, run_id, task_id)

    gold = {"key": "gold/traffic_flow/traffic_flow_features.parquet"}
    plan = tasks.plan(ctx("rollout_plan"), {"bundle_uri": lake.uri_for(f"bundles/traffic_flow/{version}"), "version": version}, gold)
    try:
        for stage in scenario.rollout.stages:
            if before_kill and stage.name == before_kill[0]:
                before_kill[1]()
            for node in tasks.targets(ctx(f"{stage.name}_targets"), plan, stage.name, None):
                tasks.deploy(ctx(f"{stage.name}_deploy"), plan, node)
            tasks.gate(ctx(f"{stage.name}_gate"), plan, stage.name)
        tasks.promote(ctx("promote_champion"), plan)
    except AirflowFailException:
        pass
    return plan, lambda: tasks.roll_back_if_failed(ctx("rollback"), plan)


def test_a_bad_model_fails_at_canary_and_is_rolled_back_everywhere(history_run, tmp_path):
    _, entries, client = history_run
    good = str(entries["train"]["counts"]["version"])
    bad = _new_version(tmp_path, entries, bias=0.5)  # 500 vehicles/hour off: fails the accuracy gate
    _, roll_back = _rollout(TRAFFIC, bad, "manual__bad_model")
    with pytest.raises(AirflowFailException, match=f"rollout of version {bad} failed and was rolled back \\(6 of 6"):
        roll_back()
    ledger = {e["task_id"]: e for e in RunLedger(open_lake(), "traffic_flow", "manual__bad_model").entries()}
    assert ledger["canary_gate"]["status"] == "failed"
    assert "MAE" in ledger["canary_gate"]["details"]["error"] and "x reference" in ledger["canary_gate"]["details"]["error"]
    assert "district_deploy" not in ledger, "the rollout stopped at canary"
    assert all(n["restored"] for n in ledger["rollback"]["details"]["nodes"])
    assert set(controller.snapshot(load_fleet("traffic_flow"), edge_token()).values()) == {good}
    tags = client.get_model_version(SPEC.registered_model, bad).tags
    assert tags["rollout_state"] == "rolled_back" and "canary_gate" in tags["rollout_failure"]
    assert str(client.get_model_version_by_alias(SPEC.registered_model, "champion").version) == good
    # the compliance report of such a run tells the story
    entries = RunLedger(open_lake(), "traffic_flow", "manual__bad_model").entries()
    run = {"run_id": "manual__bad_model", "run_type": "manual", "triggered_by": "test", "conf": {}, "code_version": "test"}
    audit_state = {"first_seq": None, "last_seq": None, "verified": True, "verified_entries": 0, "error": None}
    facts = report.assemble(TRAFFIC, entries, run, {e["task_id"]: e["status"] for e in entries}, audit_state)
    assert facts["outcome"]["stopped_at"] == "canary_gate" and "MAE" in facts["outcome"]["reason"]
    assert [g["passed"] for g in facts["rollout"]["gates"]] == [False] and facts["rollout"]["champion"] is None
    assert len(facts["rollout"]["rollback"]["nodes"]) == 6
    edge = next(c for c in facts["controls"] if c["id"] == "EDGE-2")
    assert edge["status"] == "passed" and "rolled back, every touched node restored" in edge["evidence"]
    assert "rolled back" in report.render_html(facts, "<svg></svg>")


def test_a_node_killed_mid_rollout_rolls_everything_back(history_run, tmp_path, monkeypatch):
    _, entries, _ = history_run
    good = str(entries["train"]["counts"]["version"])
    monkeypatch.setenv("CITYFACTORY_FLEETS_DIR", str(write_fleet(tmp_path / "fleets", "small", 3)))
    rollout = TRAFFIC.rollout.model_copy(update={"fleet": "small"})
    scenario = TRAFFIC.model_copy(update={"rollout": rollout})
    fleet = load_fleet("small")
    with LocalFleet(fleet, "traffic_flow", "cityfactory.traffic_flow") as local:
        for node in fleet.nodes:  # the fleet serves the good version
            controller.NodeClient(node, edge_token()).deploy(open_lake().uri_for(f"bundles/traffic_flow/{good}"))
        new = _new_version(tmp_path, entries, bias=0.0)  # as good as the old one: only the dead node fails
        _, roll_back = _rollout(scenario, new, "manual__node_killed",
                                before_kill=("city", lambda: local.processes[2].kill()))
        with pytest.raises(AirflowFailException, match="2 of 3 nodes restored; NOT restored"):
            roll_back()
        ledger = RunLedger(open_lake(), "traffic_flow", "manual__node_killed").entries()
        failed = [e for e in ledger if e["status"] == "failed"]
        assert [e["task_id"] for e in failed] == ["city_deploy"] and "small-3" in failed[0]["details"]["error"]
        [back] = [e for e in ledger if e["task_id"] == "rollback"]
        assert {n["node"]: n["restored"] for n in back["details"]["nodes"]} == {"small-1": True, "small-2": True, "small-3": False}
        assert [n["serving"] for n in back["details"]["nodes"][:2]] == [good, good]
