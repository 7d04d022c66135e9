"""The rollout stage as Airflow tasks see it: plan, deploy per node (mapped), bake + gate per
stage, promote to ``champion``; and, as the teardown, put back everything a failed rollout touched.

Whether the rollout failed is read from Airflow's own states of the rollout tasks (their current
tries), so a deploy that failed once and passed on its retry is a success; what failed and why
comes from the latest try of each task instance in the ledger.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import httpx
import numpy as np
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from cityfactory.edge.fleet import Node, edge_token, load_fleet
from cityfactory.governance.ledger import Artifact, Kind, of_kind
from cityfactory.pipeline.context import RunContext, teardown_scope_states
from cityfactory.rollout import controller
from cityfactory.storage.gold import read_gold
from cityfactory.storage.lake import join_key
from cityfactory.tasktypes import load_model_spec, task_type_of
from cityfactory.training import registry

FAILED_STATES = ("failed", "upstream_failed")


class RollbackIncomplete(RuntimeError):
    """Some node, or the registry, is not back where it was: the task fails and is retried."""


def _registered_model(ctx: RunContext) -> str:
    registry.use_experiment(ctx.scenario.name)
    return load_model_spec(ctx.scenario.model_spec).registered_model


def _challenger_bundle(ctx: RunContext) -> dict:
    """A run that does not compress rolls out the registered challenger's signed bundle."""
    model = _registered_model(ctx)
    version = registry.alias_version(model, registry.CHALLENGER)
    if version is None:
        raise AirflowFailException(f"nothing to roll out: {model} has no challenger (run the train and compress stages)")
    return {"version": version, "bundle_uri": ctx.lake.uri_for(join_key("bundles", ctx.scenario.name, version))}


def plan(ctx: RunContext, compressed: dict | None, gold: dict | None, stages: list[str]) -> dict:
    """Stage targets, what every node and the ``champion`` alias hold now, and the bake rows."""
    scenario, rollout = ctx.scenario, ctx.scenario.rollout
    if compressed is None:
        if "compress" in stages:
            raise AirflowSkipException("this run made no bundle (its model is no challenger): nothing to roll out")
        compressed = _challenger_bundle(ctx)
    spec = load_model_spec(scenario.model_spec)
    fleet = load_fleet(rollout.fleet)
    with ctx.entry(Kind.ROLLOUT_PLANNED) as entry:
        frame = read_gold(ctx.lake, scenario.name, gold["sha256"] if gold else None)
        bake = task_type_of(spec).bake_rows(spec, frame, rollout.bake_rows)  # the latest rows of every series
        stored = ctx.lake.put_bytes(join_key(ctx.ledger.prefix, "rollout", "bake_rows.json"), json.dumps(bake).encode())
        before = controller.snapshot(fleet, edge_token(ctx.scenario.rollout.fleet))
        champion = registry.alias_version(_registered_model(ctx), registry.CHAMPION)
        targets = controller.stage_targets(fleet, rollout)
        entry.inputs.append(Artifact(compressed["bundle_uri"], "", None, "bundle"))
        entry.outputs.append(Artifact.of(stored, len(bake["actuals"]), "bake_rows"))
        entry.details.update(version=compressed["version"], before=before, previous_champion=champion,
                             stages=[{"name": s.name, "nodes": [n.id for n in t]} for s, t in zip(rollout.stages, targets)])
    return {"bundle_uri": compressed["bundle_uri"], "version": compressed["version"], "before": before,
            "previous_champion": champion, "bake_key": stored.uri.removeprefix(ctx.lake.uri + "/"),
            # a list, not a mapping: XCom in PostgreSQL (JSONB) does not keep a mapping's key order
            "stages": [{"name": s.name, "nodes": [n.model_dump() for n in t]} for s, t in zip(rollout.stages, targets)]}


def _stage_nodes(plan: dict, stage: str) -> list[dict]:
    return next(s["nodes"] for s in plan["stages"] if s["name"] == stage)


def targets(ctx: RunContext, plan: dict, stage: str, approval: dict | None) -> list[dict]:
    """The nodes a stage adds; records the human approval that let it start, if it needed one."""
    with ctx.entry(Kind.STAGE_STARTED) as entry:
        entry.details.update(stage=stage, nodes=[n["id"] for n in _stage_nodes(plan, stage)])
        if approval is not None:
            entry.details["approval"] = approval
    return _stage_nodes(plan, stage)


def deploy(ctx: RunContext, plan: dict, node: dict) -> dict:
    """A node that refuses the bundle fails the task at once; one that cannot be reached fails this
    try (the retry deploys again: a node already on the version accepts it unchanged)."""
    target = Node(**node)
    with ctx.entry(Kind.DEPLOYED) as entry:
        entry.details.update(node=target.id, url=target.url, version=plan["version"])
        entry.inputs.append(Artifact(plan["bundle_uri"], "", None, "bundle"))
        client = controller.NodeClient(target, edge_token(ctx.scenario.rollout.fleet))
        try:
            client.deploy(plan["bundle_uri"])
            serving = client.status()["model_version"]
        except controller.RolloutError as exc:
            raise AirflowFailException(f"deploy of version {plan['version']} to {target.id} failed: {exc}") from exc
        except httpx.HTTPError as exc:
            raise RuntimeError(f"deploy of version {plan['version']} to {target.id}: {target.url} unreachable: {exc}") from exc
        if serving != plan["version"]:
            raise AirflowFailException(f"{target.id} serves {serving} after deploying {plan['version']}")
        entry.outputs.append(Artifact(f"{target.url}#model={serving}", "", None, "edge_node",
                                     label=f"{target.id} ({target.district}) v{serving}"))
    return {"node": target.id, "serving": serving}


def gate(ctx: RunContext, plan: dict, stage: str) -> dict:
    rollout = ctx.scenario.rollout
    fleet = load_fleet(rollout.fleet)
    bake = json.loads(ctx.lake.get_bytes(plan["bake_key"]))
    names = [s["name"] for s in plan["stages"]]
    deployed = {n["id"] for s in plan["stages"][: names.index(stage) + 1] for n in s["nodes"]}
    baked = [n for n in fleet.nodes if n.id in deployed or plan["before"].get(n.id)]  # new, or serving the old
    kind = task_type_of(load_model_spec(ctx.scenario.model_spec))
    with ctx.entry(Kind.ROLLOUT_GATE) as entry:
        telemetry = controller.bake(baked, lambda start, stop: kind.bake_request(bake, start, stop),
                                    np.asarray(bake["actuals"], dtype=float), rollout.bake_seconds, kind.bake_error,
                                    edge_token(ctx.scenario.rollout.fleet))
        # once every node is on the new version, compare with what the old one measured earlier
        earlier = [e["details"]["verdict"]["reference_error"] for e in of_kind(ctx.ledger.current(), Kind.ROLLOUT_GATE)
                   if e["details"].get("verdict") and e["details"]["stage"] != stage]
        verdict = controller.judge(telemetry, plan["version"], rollout, earlier[-1] if earlier else None,
                                   kind.bake_metric.label)
        entry.details.update(stage=stage, verdict=asdict(verdict))
        entry.counts = {"nodes_new": len(verdict.new), "nodes_old": len(verdict.old)}
        if not verdict.passed:
            raise AirflowFailException(f"rollout gate {stage} failed: " + "; ".join(verdict.reasons))
    return {"stage": stage, "passed": True}


def promote(ctx: RunContext, plan: dict) -> dict:
    """``champion`` moves to the version every node now serves; the champion it replaces is the
    one the plan saw (a retry after the alias moved must not call the new version its own predecessor)."""
    model = _registered_model(ctx)
    with ctx.entry(Kind.PROMOTED) as entry:
        entry.inputs.append(Artifact(f"models:/{model}/{plan['version']}", "", None, "model_version"))
        serving = controller.snapshot(load_fleet(ctx.scenario.rollout.fleet), edge_token(ctx.scenario.rollout.fleet))
        registry.promote(model, plan["version"], plan["previous_champion"],
                         sorted(n for n, v in serving.items() if v == plan["version"]))
        entry.outputs.append(Artifact(f"models:/{model}@{registry.CHAMPION}", "", None, "model_alias"))
        entry.details.update(champion=plan["version"], previous_champion=plan["previous_champion"])
    return {"champion": plan["version"]}


def roll_back_if_failed(ctx: RunContext, plan: dict | None, rollout_states: dict[str, str | None]) -> dict:
    """If a rollout task ended failed (its current try), every node goes back to what it served
    before, ``champion`` back to the version it was on, and the tags say so. Succeeds when all of
    that holds; fails (and is retried) when something is not back yet. Repeating it changes nothing."""
    failed = sorted(task for task, state in rollout_states.items() if state in FAILED_STATES)
    if not failed:
        raise AirflowSkipException("no rollout task failed: nothing to roll back")
    if plan is None:
        raise AirflowFailException(f"the rollout failed before it had a plan ({', '.join(failed)})")
    current = ctx.ledger.current()
    errors = [f"{e['task_id']}: {e['details'].get('error', 'failed')}" for e in current
              if e["task_id"] in failed and e["status"] == "failed"]
    reason = "; ".join(errors) or f"{', '.join(failed)} failed (see their logs)"
    fleet = load_fleet(ctx.scenario.rollout.fleet)
    model = _registered_model(ctx)
    with ctx.entry(Kind.ROLLED_BACK) as entry:
        entry.details["reason"] = reason
        outcome = controller.roll_back(fleet, edge_token(ctx.scenario.rollout.fleet), plan["before"], ctx.scenario.name)
        entry.details["nodes"] = outcome
        serving: dict[str, list[str]] = {}
        for node in outcome:
            serving.setdefault(node["serving"], []).append(node["node"])
        champion = registry.reinstate(model, plan["version"], plan["previous_champion"], reason, serving)
        entry.details["champion"] = champion
        not_restored = [o["node"] for o in outcome if not o["restored"]]
        entry.counts = {"nodes_restored": len(outcome) - len(not_restored), "nodes_not_restored": len(not_restored)}
        if not_restored:
            raise RollbackIncomplete(f"rollback of version {plan['version']}: {', '.join(not_restored)} not restored "
                                     f"({len(outcome) - len(not_restored)} of {len(outcome)} nodes are)")
    return {"version": plan["version"], "champion": champion, "nodes": len(outcome), "reason": reason}


def roll_back(ctx: RunContext, plan: dict | None = None) -> dict:
    """The rollout's teardown: Airflow's states of every task between the plan and it decide."""
    return roll_back_if_failed(ctx, plan, teardown_scope_states())
