"""Staged rollout across real edge node processes, run through the DAG's own graph (dag.test):
success; a bad model caught at canary; a deploy that fails once and passes on its retry; a failure
after promotion; a rollback that is itself retried. In every outcome the ``champion`` alias, the
version tags and what the fleet serves agree."""

from __future__ import annotations

import contextlib
import json

import mlflow
import numpy as np
import pytest
import yaml
from cityfactory.compression import bundle
from cityfactory.compression.onnx_export import export
from cityfactory.config.scenarios import get_scenario
from cityfactory.edge.fleet import LocalFleet, edge_token, load_fleet
from cityfactory.factory.scenario_dag import build_scenario_dag
from cityfactory.governance.ledger import Kind, RunLedger, of_kind
from cityfactory.rollout import controller
from cityfactory.storage.lake import open_lake
from cityfactory.tasktypes import load_model_spec
from cityfactory.tasktypes.forecast.families import load_network
from cityfactory.training import registry
from support import FaultyProxy, write_fleet

TRAFFIC = get_scenario("traffic_flow")
SPEC = load_model_spec(TRAFFIC.model_spec)
MODEL = SPEC.registered_model


def test_full_rollout_in_the_dag(history_run):
    _, entries, client = history_run
    version = str(entries["train"]["counts"]["version"])
    for stage in ("canary", "district", "city"):
        assert entries[f"{stage}_gate"]["status"] == "success"
        assert entries[f"{stage}_gate"]["details"]["verdict"]["passed"] is True
    assert entries["promote_champion"]["details"]["champion"] == version
    assert "rollback" not in entries  # skipped: nothing failed
    fleet = load_fleet("traffic_flow")
    assert set(controller.snapshot(fleet, edge_token("traffic_flow")).values()) == {version}
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert str(champion.version) == version and "challenger" not in champion.aliases
    assert champion.tags["rollout_state"] == "complete"
    assert champion.tags["serving_nodes"].split(",") == sorted(n.id for n in fleet.nodes)


def _new_version(tmp_path, good: str, bias: float) -> str:
    """A registered, signed challenger: the good model with its output shifted by ``bias`` x 1000."""
    model = load_network(SPEC, f"models:/{MODEL}/{good}")
    registry.use_experiment("traffic_flow")
    with mlflow.start_run(run_name=f"trained model shifted by {bias * 1000:+.0f}"):
        model.mlp[-1].bias.data += bias
        example = np.zeros((2, len(SPEC.data.feature_names)), dtype=np.float32)
        info = mlflow.pytorch.log_model(model, name="model", input_example=example, registered_model_name=MODEL)
    version = str(info.registered_model_version)
    onnx = export(model, len(SPEC.data.feature_names), tmp_path / f"v{version}.onnx").read_bytes()
    manifest = bundle.verify(bundle.read(open_lake(), f"bundles/traffic_flow/{good}"), bundle.public_key_pem())
    facts = {k: v for k, v in manifest.items() if k not in ("files", "created_at", "signing_key_id")}
    bundle.write(open_lake(), "traffic_flow", version, bundle.build({"model.onnx": onnx}, {**facts, "model_version": version}))
    mlflow.MlflowClient().set_registered_model_alias(MODEL, "challenger", version)
    return version


@contextlib.contextmanager
def proxied_fleet(tmp_path, monkeypatch, name: str, serving: str, size: int = 3):
    """``size`` edge node processes serving ``serving``, each behind a :class:`FaultyProxy`; the
    fleet file the DAG reads names the proxies. Yields the proxies by node id."""
    real_dir = write_fleet(tmp_path / "real-fleets", name, size)
    monkeypatch.setenv("CITYFACTORY_FLEETS_DIR", str(real_dir))
    real = load_fleet(name)
    with LocalFleet(real, "traffic_flow", MODEL, edge_token(name)):
        for node in real.nodes:
            controller.NodeClient(node, edge_token(name)).deploy(open_lake().uri_for(f"bundles/traffic_flow/{serving}"))
        proxies = {node.id: FaultyProxy(node.url) for node in real.nodes}
        try:
            proxied_dir = write_fleet(tmp_path / "fleets", name, 0)
            nodes = [{**node.model_dump(exclude_none=True), "url": proxies[node.id].url} for node in real.nodes]
            (proxied_dir / f"{name}.yaml").write_text(yaml.safe_dump({"nodes": nodes}))
            monkeypatch.setenv("CITYFACTORY_FLEETS_DIR", str(proxied_dir))
            yield proxies
        finally:
            for proxy in proxies.values():
                proxy.close()


def _rollout_run(fleet: str):
    """A rollout-only run (the registered challenger) of traffic_flow on ``fleet``, retries 1 s apart.
    These runs are about faults, not speed: the latency budget is wide (a busy machine's p95
    through the Python proxy can pass 100 ms), so only the faults a test injects fail a gate."""
    rollout = TRAFFIC.rollout.model_copy(update={"fleet": fleet, "bake_seconds": 0.5, "max_p95_ms": 2000})
    retries = TRAFFIC.retries.model_copy(update={"delay_seconds": 1})
    scenario = TRAFFIC.model_copy(update={"rollout": rollout, "retries": retries})
    run = build_scenario_dag(scenario).test(run_conf={"stages": ["rollout"]})
    ledger = RunLedger(open_lake(), "traffic_flow", run.run_id)
    report = json.loads(open_lake().get_bytes(f"{ledger.prefix}/report.json"))
    return run, ledger, report


def _assert_agreement(fleet: str, champion: str) -> None:
    """The alias, the tags and the fleet tell one story."""
    client = mlflow.MlflowClient()
    assert registry.alias_version(MODEL, "champion") == champion
    assert set(controller.snapshot(load_fleet(fleet), edge_token(fleet)).values()) == {champion}
    complete = [str(v.version) for v in client.search_model_versions(f"name='{MODEL}'") if v.tags.get("rollout_state") == "complete"]
    assert complete == [champion], f"versions tagged complete: {complete}"
    challenger = registry.alias_version(MODEL, "challenger")
    assert challenger != champion


def test_a_bad_model_fails_at_canary_and_the_rollback_is_retried(history_run, tmp_path, monkeypatch):
    good = registry.alias_version(MODEL, "champion")
    with proxied_fleet(tmp_path, monkeypatch, "bad", good) as proxies:
        bad = _new_version(tmp_path, good, bias=0.5)  # 500 vehicles/hour off: fails the accuracy gate
        proxies["bad-1"].fail("/admin/rollback", 1)  # the canary cannot be reached for the first rollback order
        run, ledger, report = _rollout_run("bad")
        assert run.state == "failed"
        current = {e["task_id"]: e for e in ledger.current()}
        assert current["canary_gate"]["status"] == "failed" and "x reference" in current["canary_gate"]["details"]["error"]
        assert "district_deploy" not in current, "the rollout stopped at canary"
        tries = [(e["try_number"], e["status"]) for e in of_kind(ledger.entries(), Kind.ROLLED_BACK)]
        assert tries == [(1, "failed"), (2, "success")] and proxies["bad-1"].dropped == ["/admin/rollback"]
        assert all(n["restored"] for n in current["rollback"]["details"]["nodes"])
        _assert_agreement("bad", good)
        tags = mlflow.MlflowClient().get_model_version(MODEL, bad).tags
        assert tags["rollout_state"] == "rolled_back" and "canary_gate" in tags["rollout_failure"]
    # the compliance report tells the story
    assert report["outcome"]["stopped_at"] == "canary_gate" and "MAE" in report["outcome"]["reason"]
    assert [g["passed"] for g in report["rollout"]["gates"]] == [False] and report["rollout"]["champion"] is None
    assert report["rollout"]["rollback"]["champion"] == good and len(report["rollout"]["rollback"]["nodes"]) == 3
    edge = next(c for c in report["controls"] if c["id"] == "EDGE-2")
    assert edge["status"] == "passed" and "rolled back, every touched node restored" in edge["evidence"]


def test_a_deploy_that_fails_once_and_passes_on_retry_completes_the_rollout(history_run, tmp_path, monkeypatch):
    good = registry.alias_version(MODEL, "champion")
    with proxied_fleet(tmp_path, monkeypatch, "flaky", good) as proxies:
        new = _new_version(tmp_path, good, bias=0.0)  # as good as the champion
        proxies["flaky-2"].fail("/admin/deploy", 1)  # district's first node drops the first deploy
        run, ledger, report = _rollout_run("flaky")
        assert run.state == "success", report["outcome"]
        deploys = [(e["details"]["node"], e["try_number"], e["status"]) for e in of_kind(ledger.entries(), Kind.DEPLOYED)]
        assert ("flaky-2", 1, "failed") in deploys and ("flaky-2", 2, "success") in deploys
        assert not of_kind(ledger.entries(), Kind.ROLLED_BACK), "a retried deploy must not roll back a good rollout"
        _assert_agreement("flaky", new)
        assert mlflow.MlflowClient().get_model_version(MODEL, good).tags["rollout_state"] == "superseded"
    assert report["outcome"]["state"] == "success" and report["rollout"]["champion"] == new


def test_a_failure_after_promotion_puts_the_champion_back(history_run, tmp_path, monkeypatch):
    good = registry.alias_version(MODEL, "champion")
    tag = mlflow.MlflowClient.set_model_version_tag

    def registry_hiccup(self, name, version, key, value):  # the alias moved, then the registry fails
        if key == registry.SERVING_NODES and str(version) == new:
            raise mlflow.exceptions.MlflowException("registry unavailable")
        return tag(self, name, version, key, value)

    with proxied_fleet(tmp_path, monkeypatch, "late", good):
        new = _new_version(tmp_path, good, bias=0.0)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(mlflow.MlflowClient, "set_model_version_tag", registry_hiccup)
            run, ledger, report = _rollout_run("late")
        assert run.state == "failed"
        promotions = [(e["try_number"], e["status"]) for e in of_kind(ledger.entries(), Kind.PROMOTED)]
        assert promotions == [(1, "failed"), (2, "failed")]
        [back] = of_kind(ledger.current(), Kind.ROLLED_BACK)
        assert back["status"] == "success" and back["details"]["champion"] == good
        assert "promote_champion" in back["details"]["reason"]
        _assert_agreement("late", good)
        assert mlflow.MlflowClient().get_model_version(MODEL, new).tags["rollout_state"] == "rolled_back"
    assert report["outcome"]["stopped_at"] == "promote_champion" and report["rollout"]["champion"] is None
