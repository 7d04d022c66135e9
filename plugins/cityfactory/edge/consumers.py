"""The city's consumers, replayed: each hour of some days asked of the edge fleet as live traffic.

In a deployment, signal controllers and dashboards ask the nodes every hour. In the embedded
stack nobody does, so this replays them from the feature mart: the rows of the given days, keyed
by series and target hour, sent to the node that serves the series (or spread over the fleet)
with purpose ``serve`` and the scenario's consumer token (without it a node answers but does not
log). The nodes log what they answered; the next run's monitor collects it.
The demo and the maintenance tests use it; it is not part of a pipeline run.
"""

from __future__ import annotations

import datetime as dt
import itertools

import httpx

from cityfactory.config.scenarios import Scenario
from cityfactory.edge.fleet import consumer_token, load_fleet
from cityfactory.tasktypes import load_model_spec, task_type_of
from cityfactory.transform.dbt import read_days


def serve_days(scenario: Scenario, first: dt.date, last: dt.date, batch: int = 24) -> dict[str, int]:
    """Ask the fleet for every usable mart row of ``first``..``last`` (as the task type makes
    requests of them); rows answered per node."""
    spec = load_model_spec(scenario.model_spec)
    fleet = load_fleet(scenario.rollout.fleet)
    spread = itertools.cycle(fleet.nodes)
    answered: dict[str, int] = {}
    with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {consumer_token(scenario.name)}"}) as client:
        for request in task_type_of(spec).edge_requests(spec, read_days(scenario, first, last), batch):
            series = request["series"]
            target = next((n for n in fleet.nodes if series is not None and n.series == series), None) or next(spread)
            response = client.post(f"{target.url}/predict", **request["http"])
            response.raise_for_status()
            answered[target.id] = answered.get(target.id, 0) + request["count"]
    return answered
