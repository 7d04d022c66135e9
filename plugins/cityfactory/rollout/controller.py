"""Staged rollout of a signed bundle across a fleet, gated on measured health, with rollback.

Stages come from the scenario (e.g. canary 1 node -> district 50 % -> city 100 %, cumulative).
After each stage's deploys, a bake drives recent real feature rows through every node for the
stage's bake time and compares the nodes on the new version with those still on the old one:
error rate, p95 latency, and accuracy against the actuals. Missing or errored telemetry fails the
gate. A failed gate (or deploy) rolls back every node the rollout touched.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import httpx
import numpy as np

from cityfactory.config.scenarios import Rollout
from cityfactory.edge.fleet import Fleet, Node

BakeError = Callable[[np.ndarray, np.ndarray], float]
BakeRequest = Callable[[int, int], dict]  # (start, stop) -> httpx keyword arguments of that request  # (predicted, actuals) -> error, lower is better


class RolloutError(RuntimeError):
    """A deploy or gate failed; the message names the nodes and the measured values."""


def stage_targets(fleet: Fleet, rollout: Rollout) -> list[list[Node]]:
    """The nodes each stage adds (cumulative stages, fleet-file order)."""
    total, done, targets = len(fleet.nodes), 0, []
    for stage in rollout.stages:
        upto = min(total, stage.nodes if stage.nodes is not None else math.ceil(stage.fraction * total))
        targets.append(list(fleet.nodes[done:upto]))
        done = max(done, upto)
    return targets


class NodeClient:
    def __init__(self, node: Node, token: str, timeout: float = 30):
        self.node = node
        self.headers = {"Authorization": f"Bearer {token}"}
        self.timeout = timeout

    def status(self) -> dict:
        response = httpx.get(f"{self.node.url}/admin/status", headers=self.headers, timeout=self.timeout)
        response.raise_for_status()
        return response.json()

    def deploy(self, bundle_uri: str) -> dict:
        response = httpx.post(f"{self.node.url}/admin/deploy", json={"uri": bundle_uri}, headers=self.headers,
                              timeout=self.timeout)
        if response.status_code != 200:
            raise RolloutError(f"node {self.node.id}: deploy refused ({response.status_code}): {response.text}")
        return response.json()

    def rollback(self, scenario: str, target_version: str | None) -> dict:
        """Back to ``target_version`` with an order signed for this node (a node refuses to go to a
        lower version on anything less)."""
        from cityfactory.edge.orders import sign_rollback

        order = sign_rollback(self.node.id, scenario, target_version)
        response = httpx.post(f"{self.node.url}/admin/rollback", json={"order": order}, headers=self.headers,
                              timeout=self.timeout)
        response.raise_for_status()
        return response.json()


def snapshot(fleet: Fleet, token: str) -> dict[str, str | None]:
    """What each node serves before the rollout (None: nothing, or unreachable)."""
    versions = {}
    for node in fleet.nodes:
        try:
            versions[node.id] = NodeClient(node, token, timeout=5).status()["model_version"]
        except httpx.HTTPError:
            versions[node.id] = None
    return versions


@dataclass
class Telemetry:
    node: str
    version: str | None
    requests: int
    errors: int
    p95_ms: float | None
    error: float | None  # the task type's bake error over every row, lower is better

    @property
    def error_rate(self) -> float:
        return 1.0 if self.requests == 0 else self.errors / self.requests


def bake(nodes: list[Node], request: BakeRequest, actuals: np.ndarray, seconds: float, error: BakeError,
         token: str, batch: int = 24) -> list[Telemetry]:
    """Drive the bake examples through every node (in batches, round and round) for ``seconds``;
    ``request(start, stop)`` is the HTTP request of examples start..stop as the task type sends
    them; each node's answers are judged by ``error(predicted, actuals)``. The admin ``token``
    exempts the bake from the nodes' per-client rate limit."""
    telemetry = {n.id: {"latencies": [], "errors": 0, "predicted": {}, "version": None} for n in nodes}
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=5, headers={"Authorization": f"Bearer {token}"}) as session:
        first_pass = True
        while first_pass or time.monotonic() < deadline:
            for start in range(0, len(actuals), batch):
                for node in nodes:
                    record = telemetry[node.id]
                    started = time.perf_counter()
                    try:
                        response = session.post(f"{node.url}/predict", **request(start, start + batch))
                        response.raise_for_status()
                        body = response.json()
                    except (httpx.HTTPError, ValueError):
                        record["errors"] += 1
                        continue
                    record["latencies"].append((time.perf_counter() - started) * 1000)
                    record["version"] = body["model_version"]
                    record["predicted"][start] = np.asarray(body["predictions"])
            first_pass = False
    results = []
    for node in nodes:
        record = telemetry[node.id]
        requests = len(record["latencies"]) + record["errors"]
        found = None
        if len(record["predicted"]) * batch >= len(actuals):  # every row answered at least once
            predicted = np.concatenate([record["predicted"][s] for s in sorted(record["predicted"])])[: len(actuals)]
            found = error(predicted, actuals)
        p95 = float(np.percentile(record["latencies"], 95)) if record["latencies"] else None
        results.append(Telemetry(node.id, record["version"], requests, record["errors"], p95, found))
    return results


@dataclass
class Verdict:
    passed: bool
    reasons: list[str]
    new: list[dict]
    old: list[dict]
    reference_error: float | None
    error_label: str = "error"


def judge(telemetry: list[Telemetry], version: str, rollout: Rollout, reference_error: float | None,
          error_label: str = "error") -> Verdict:
    """Gate the nodes on ``version`` against the others (or, once none are left, the reference the
    old version measured at an earlier stage; on a first rollout there is no old version)."""
    new = [t for t in telemetry if t.version == version]
    old = [t for t in telemetry if t.version != version and t.error is not None]
    if old:
        reference_error = statistics.mean(t.error for t in old)
    reasons = []
    for t in telemetry:  # every baked node serves either version: missing telemetry is a failure
        if t.requests == 0 or t.error is None:
            reasons.append(f"{t.node}: no usable telemetry ({t.errors} failed requests)")
            continue
        if t.error_rate > rollout.max_error_rate:
            reasons.append(f"{t.node}: error rate {t.error_rate:.1%} > {rollout.max_error_rate:.1%}")
        if t.p95_ms is not None and t.p95_ms > rollout.max_p95_ms:
            reasons.append(f"{t.node}: p95 latency {t.p95_ms:.1f} ms > {rollout.max_p95_ms} ms")
        if t.version == version and reference_error is not None and t.error > reference_error * rollout.max_error_ratio:
            reasons.append(f"{t.node}: {error_label} {t.error:.1f} > {rollout.max_error_ratio} x reference "
                           f"{reference_error:.1f}")
    if not new:
        reasons.append(f"no node answered with version {version}")
    return Verdict(not reasons, reasons, [asdict(t) for t in new], [asdict(t) for t in old], reference_error, error_label)


def roll_back(fleet: Fleet, token: str, before: dict[str, str | None], scenario: str) -> list[dict]:
    """Every node not serving what it served before the rollout goes back to exactly that version
    (a signed order); each is re-checked. Repeating it changes nothing."""
    outcome = []
    for node in fleet.nodes:
        client = NodeClient(node, token, timeout=10)
        try:
            current = client.status()["model_version"]
            if current != before.get(node.id):
                client.rollback(scenario, before.get(node.id))
                current = client.status()["model_version"]
            outcome.append({"node": node.id, "serving": current, "restored": current == before.get(node.id)})
        except httpx.HTTPError as exc:
            outcome.append({"node": node.id, "serving": None, "restored": False, "error": f"unreachable: {exc}"})
    return outcome
