"""The rollout stage as Airflow tasks see it: plan, deploy per node (mapped), bake + gate per
stage, promote to ``champion``, and roll back everything touched if anything failed."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from cityfactory.edge.fleet import Node, edge_token, load_fleet
from cityfactory.governance.ledger import Artifact
from cityfactory.rollout import controller
from cityfactory.runs import RunContext
from cityfactory.storage.lake import join_key
from cityfactory.storage.parquet import read_table
from cityfactory.training import data, registry
from cityfactory.training.spec import load_model_spec

ROLLOUT_TASKS = ("rollout_plan", "_targets", "_deploy", "_gate", "promote_champion")


def plan(ctx: RunContext, compressed: dict, gold: dict) -> dict:
    """Stage targets, what every node serves now, and the bake rows (stored in the lake)."""
    scenario, rollout = ctx.scenario, ctx.scenario.rollout
    spec = load_model_spec(scenario.model_spec)
    fleet = load_fleet(rollout.fleet)
    with ctx.entry() as entry:
        frame = read_table(ctx.lake, gold["key"]).to_pandas()
        recent = data.latest_rows(frame, spec.data, rollout.bake_rows)  # the latest rows of every series
        bake = {"features": data.features(recent, spec.data).tolist(), "actuals": recent[spec.data.target].tolist(),
                "from": str(recent[spec.data.time_column].min()), "to": str(recent[spec.data.time_column].max())}
        stored = ctx.lake.put_bytes(join_key(ctx.ledger.prefix, "rollout", "bake_rows.json"), json.dumps(bake).encode())
        before = controller.snapshot(fleet, edge_token())
        targets = controller.stage_targets(fleet, rollout)
        entry.inputs.append(Artifact(compressed["bundle_uri"], "", None, "bundle"))
        entry.outputs.append(Artifact.of(stored, len(recent), "bake_rows"))
        entry.details.update(before=before, stages={s.name: [n.id for n in t] for s, t in zip(rollout.stages, targets)})
    return {"bundle_uri": compressed["bundle_uri"], "version": compressed["version"], "before": before,
            "bake_key": stored.uri.removeprefix(ctx.lake.uri + "/"),
            "stages": {s.name: [n.model_dump() for n in t] for s, t in zip(rollout.stages, targets)}}


def targets(ctx: RunContext, plan: dict, stage: str, approval: dict | None) -> list[dict]:
    """The nodes a stage adds; records the human approval that let it start, if it needed one."""
    with ctx.entry() as entry:
        entry.details.update(stage=stage, nodes=[n["id"] for n in plan["stages"][stage]])
        if approval is not None:
            entry.details["approval"] = approval
    return plan["stages"][stage]


def deploy(ctx: RunContext, plan: dict, node: dict) -> dict:
    target = Node(**node)
    with ctx.entry() as entry:
        entry.details.update(node=target.id, url=target.url, version=plan["version"])
        entry.inputs.append(Artifact(plan["bundle_uri"], "", None, "bundle"))
        try:
            controller.NodeClient(target, edge_token()).deploy(plan["bundle_uri"])
            serving = controller.NodeClient(target, edge_token()).status()["model_version"]
        except Exception as exc:  # refused, unreachable, dead: the gate and rollback take it from here
            raise AirflowFailException(f"deploy of version {plan['version']} to {target.id} failed: {exc}") from exc
        if serving != plan["version"]:
            raise AirflowFailException(f"{target.id} serves {serving} after deploying {plan['version']}")
        entry.outputs.append(Artifact(f"{target.url}#model={serving}", "", None, "edge_node"))
    return {"node": target.id, "serving": serving}


def gate(ctx: RunContext, plan: dict, stage: str) -> dict:
    rollout = ctx.scenario.rollout
    fleet = load_fleet(rollout.fleet)
    bake = json.loads(ctx.lake.get_bytes(plan["bake_key"]))
    deployed = {n["id"] for name in list(plan["stages"])[: list(plan["stages"]).index(stage) + 1] for n in plan["stages"][name]}
    baked = [n for n in fleet.nodes if n.id in deployed or plan["before"].get(n.id)]  # new, or serving the old
    with ctx.entry() as entry:
        telemetry = controller.bake(baked, np.asarray(bake["features"], dtype=np.float32),
                                    np.asarray(bake["actuals"], dtype=float), rollout.bake_seconds)
        # once every node is on the new version, compare with what the old one measured earlier
        earlier = [e["details"]["verdict"]["reference_mae"] for e in ctx.ledger.entries()
                   if e["task_id"].endswith("_gate") and e["details"].get("verdict")]
        verdict = controller.judge(telemetry, plan["version"], rollout, earlier[-1] if earlier else None)
        entry.details.update(stage=stage, verdict=asdict(verdict))
        entry.counts = {"nodes_new": len(verdict.new), "nodes_old": len(verdict.old)}
        if not verdict.passed:
            raise AirflowFailException(f"rollout gate {stage} failed: " + "; ".join(verdict.reasons))
    return {"stage": stage, "passed": True}


def promote(ctx: RunContext, plan: dict) -> dict:
    import mlflow

    spec = load_model_spec(ctx.scenario.model_spec)
    registry.use_experiment(ctx.scenario.name)
    client = mlflow.MlflowClient()
    with ctx.entry() as entry:
        previous = registry.alias_version(spec.registered_model, registry.CHAMPION)
        client.set_registered_model_alias(spec.registered_model, registry.CHAMPION, plan["version"])
        client.set_model_version_tag(spec.registered_model, plan["version"], "rollout_state", "complete")
        entry.inputs.append(Artifact(f"models:/{spec.registered_model}/{plan['version']}", "", None, "model_version"))
        entry.outputs.append(Artifact(f"models:/{spec.registered_model}@{registry.CHAMPION}", "", None, "model_alias"))
        entry.details.update(champion=plan["version"], previous_champion=previous)
    return {"champion": plan["version"]}


def roll_back_if_failed(ctx: RunContext, plan: dict | None) -> None:
    """Runs whatever happened upstream; if a rollout task failed, rolls every touched node back,
    checks each, tags the version with the reason, and fails (so the run fails)."""
    failed = [e for e in ctx.ledger.entries() if e["status"] == "failed" and any(t in e["task_id"] for t in ROLLOUT_TASKS)]
    if not failed:
        raise AirflowSkipException("no rollout task failed: nothing to roll back")
    if plan is None:
        raise AirflowFailException("the rollout failed before it had a plan: " + failed[0]["details"].get("error", ""))
    fleet = load_fleet(ctx.scenario.rollout.fleet)
    reason = "; ".join(f"{e['task_id']}: {e['details'].get('error', 'failed')}" for e in failed)
    with ctx.entry() as entry:
        outcome = controller.roll_back(fleet, edge_token(), plan["before"], ctx.scenario.name)
        entry.details.update(reason=reason, nodes=outcome)
        import mlflow

        spec = load_model_spec(ctx.scenario.model_spec)
        registry.use_experiment(ctx.scenario.name)
        client = mlflow.MlflowClient()
        client.set_model_version_tag(spec.registered_model, plan["version"], "rollout_state", "rolled_back")
        client.set_model_version_tag(spec.registered_model, plan["version"], "rollout_failure", reason[:4000])
        not_restored = [o for o in outcome if not o["restored"]]
    restored = f"{len(outcome) - len(not_restored)} of {len(outcome)} nodes restored"
    if not_restored:
        restored += f"; NOT restored: {not_restored}"
    raise AirflowFailException(f"rollout of version {plan['version']} failed and was rolled back ({restored}): {reason}")
