"""A scenario's fleet of edge nodes (``dags/fleets/<scenario>.yaml``), and running it locally.

The embedded default runs every node whose URL is on loopback as a local process; ``make run``
starts them for the run and stops them after, ``make ui`` keeps them up.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from typing import Literal, Self
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field

from cityfactory.edge.prediction_log import KeyWindow
from cityfactory.settings import REPO_ROOT, get_settings


class Node(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    district: str
    url: str
    series: str | None = None  # the series (station, sensor) this node serves, if it serves one


class NodeLimits(BaseModel):
    """What a node accepts per request (413 beyond): body bytes, rows or images, pixels an image;
    and per client (429 beyond): predict requests a second on average, and at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_body_bytes: int = Field(1 << 20, ge=1)
    max_rows: int = Field(4096, ge=1)
    max_pixels: int = Field(16_000_000, ge=1)
    requests_per_second: float = Field(100, gt=0)
    burst: int = Field(200, ge=1)


class PredictionLogging(BaseModel):
    """What a node logs of what it served, for the monitor: only the requests of holders of the
    scenario's consumer token (``consumers: token``) or everyone's (``anyone``); a row's target time
    between ``past_hours`` before and ``ahead_hours`` after the moment it is served (the consumers'
    look-back, the model's horizon, clock skew); at most ``max_bytes`` waiting to be collected."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    consumers: Literal["token", "anyone"] = "token"
    past_hours: float = Field(48, gt=0, le=24 * 366)
    ahead_hours: float = Field(48, ge=0, le=24 * 366)
    max_bytes: int = Field(256 << 20, ge=1 << 16)

    @property
    def window(self) -> KeyWindow:
        return KeyWindow(self.past_hours, self.ahead_hours)


class Fleet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    nodes: list[Node] = Field(min_length=1)
    limits: NodeLimits = NodeLimits()
    logging: PredictionLogging = PredictionLogging()


def load_fleet(name: str) -> Fleet:
    """``dags/fleets/<name>.yaml`` (or ``$CITYFACTORY_FLEETS_DIR``); errors name the file and key."""
    from cityfactory.config.yaml_files import ScenarioError, load_validated

    path = get_settings().fleets_dir / f"{name}.yaml"
    fleet = load_validated(path, Fleet.model_validate)
    ids = [n.id for n in fleet.nodes]
    if len(set(ids)) != len(ids):
        raise ScenarioError(f"{path}: key 'nodes': node ids repeat")
    return fleet


def token_connection(fleet: str) -> str:
    """The Airflow connection whose password is the fleet's admin token."""
    return f"cityfactory_edge_{fleet}"


def edge_token(fleet: str) -> str:
    """Fleet ``fleet``'s admin token, which every other fleet's nodes refuse: the password of the
    Airflow connection ``cityfactory_edge_<fleet>``, else one generated once for the fleet into the
    git-ignored keys folder (the embedded default)."""
    from cityfactory.security.keys import airflow_connection_password, get_secret

    return (airflow_connection_password(token_connection(fleet))
            or base64.urlsafe_b64encode(get_secret(f"edge-admin-{fleet}")).decode())


def rotate_edge_token(fleet: str) -> int:
    """A new admin token for every node of ``fleet`` (each authorises the change with the old one;
    the models keep serving), then kept where the old one was: the Airflow connection, or the
    generated key. All or none: if a node does not take it, the nodes that did go back to the old
    one and the old one stays. Returns the nodes rotated."""
    import secrets

    from cityfactory.security.keys import airflow_connection_password, replace_secret

    old, new = edge_token(fleet), base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    in_connection = airflow_connection_password(token_connection(fleet)) is not None
    nodes, done = load_fleet(fleet).nodes, []
    try:
        for node in nodes:
            _post_token(node.url, old, new)
            done.append(node)
    except OSError as exc:
        stuck = []
        for node in done:
            try:
                _post_token(node.url, new, old)
            except OSError:
                stuck.append(node.id)
        back = (f"the {len(done)} that had taken it are back on the old one" if not stuck else
                f"{', '.join(stuck)} could not be put back and hold the new token: rotate again once they answer")
        raise RuntimeError(f"fleet {fleet}: node {nodes[len(done)].id} did not take the new token ({exc}); {back}") from exc
    if in_connection:
        _store_in_connection(token_connection(fleet), new)
    else:
        replace_secret(f"edge-admin-{fleet}", base64.urlsafe_b64decode(new))
    return len(done)


def _post_token(url: str, current: str, new: str) -> None:
    import json
    import urllib.request

    request = urllib.request.Request(f"{url.rstrip('/')}/admin/token", data=json.dumps({"token": new}).encode(),
                                     headers={"Authorization": f"Bearer {current}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10):
        pass


def _store_in_connection(conn_id: str, token: str) -> None:
    """The new token as the connection's password, in Airflow's metastore."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    with create_session() as session:
        connection = session.query(Connection).filter(Connection.conn_id == conn_id).one()
        connection.password = token


def consumer_token(scenario: str) -> str:
    """The token the scenario's consumers send for their requests to count in monitoring: env, Airflow
    Variable, or generated once."""
    if token := os.environ.get("CITYFACTORY_CONSUMER_TOKEN"):
        return token
    from cityfactory.security.keys import get_secret

    return base64.urlsafe_b64encode(get_secret(f"consumer-{scenario}")).decode()


def bundle_base(scenario: str) -> str:
    """The fleet's bundle folder: the only place its nodes load bundles from."""
    return get_settings().lake_uri.rstrip("/") + f"/bundles/{scenario}/"


class LocalFleet:
    """``with LocalFleet(fleet, scenario, registered_model, token):`` runs the loopback nodes as
    processes for the block, each pinned to the scenario, its registered model and its bundle
    folder, and taking the fleet's admin token."""

    def __init__(self, fleet: Fleet, scenario: str, registered_model: str, token: str):
        self.fleet, self.scenario, self.token = fleet, scenario, token
        self.pin = ["--scenario", scenario, "--registered-model", registered_model, "--bundle-base", bundle_base(scenario)]
        self.processes: list[subprocess.Popen] = []
        limits, logging = fleet.limits, fleet.logging
        self.limits = ["--max-body-bytes", str(limits.max_body_bytes), "--max-rows", str(limits.max_rows),
                       "--max-pixels", str(limits.max_pixels), "--rate", str(limits.requests_per_second),
                       "--burst", str(limits.burst), "--key-past-hours", str(logging.past_hours),
                       "--key-ahead-hours", str(logging.ahead_hours), "--log-max-bytes", str(logging.max_bytes)]

    @classmethod
    def for_scenario(cls, scenario) -> LocalFleet:
        """The scenario's fleet file, pinned to the scenario and its model spec's registered model."""
        from cityfactory.tasktypes import load_model_spec

        return cls(load_fleet(scenario.rollout.fleet), scenario.name, load_model_spec(scenario.model_spec).registered_model,
                   edge_token(scenario.rollout.fleet))

    def __enter__(self) -> Self:
        from cityfactory.security.signing import public_key_pem

        home = get_settings().home
        public = home / "keys" / "signing-public.pem"
        public.parent.mkdir(parents=True, exist_ok=True)
        public.write_bytes(public_key_pem())
        (home / "logs").mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CITYFACTORY_EDGE_TOKEN": self.token, "PYTHONPATH": str(REPO_ROOT / "plugins")}
        if self.fleet.logging.consumers == "token":
            env["CITYFACTORY_CONSUMER_TOKEN"] = consumer_token(self.scenario)
        else:
            env.pop("CITYFACTORY_CONSUMER_TOKEN", None)
        for node in self.fleet.nodes:
            address = urlparse(node.url)
            if address.hostname not in ("127.0.0.1", "localhost"):
                continue
            with open(home / "logs" / f"edge-{node.id}.log", "ab") as log:
                self.processes.append(subprocess.Popen(
                    [sys.executable, "-m", "cityfactory.edge", "serve", "--port", str(address.port),
                     "--node-id", node.id, "--public-key", str(public), *self.pin, "--state-dir", str(home / "edge-state"),
                     "--prediction-log", str(home / "edge-predictions"), *self.limits],
                    env=env, stdout=log, stderr=subprocess.STDOUT))
        for node in self.fleet.nodes:
            _wait(urlparse(node.url).port)
        return self

    def __exit__(self, *exc) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=20)


def _wait(port: int, timeout: float = 60) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"edge node on port {port} did not start")
