"""The city's consumers, replayed: each hour of some days asked of the edge fleet as live traffic.

In a deployment, signal controllers and dashboards ask the nodes every hour. In the embedded
stack nobody does, so this replays them from the feature mart: the rows of the given days, keyed
by series and target hour, sent to the node that serves the series (or spread over the fleet)
with purpose ``serve``. The nodes log what they answered; the next run's monitor collects it.
The demo and the maintenance tests use it; it is not part of a pipeline run.
"""

from __future__ import annotations

import datetime as dt
import itertools

import httpx

from cityfactory.config.scenarios import Scenario
from cityfactory.edge.fleet import load_fleet
from cityfactory.training import data
from cityfactory.training.spec import load_model_spec
from cityfactory.transform.dbt import read_days


def serve_days(scenario: Scenario, first: dt.date, last: dt.date, batch: int = 24) -> dict[str, int]:
    """Ask the fleet for every usable mart row of ``first``..``last``; rows answered per node."""
    spec = load_model_spec(scenario.model_spec)
    frame = read_days(scenario, first, last)
    frame = frame[frame[spec.data.usable].astype(bool)].sort_values(spec.data.time_column)
    fleet = load_fleet(scenario.rollout.fleet)
    spread = itertools.cycle(fleet.nodes)
    answered: dict[str, int] = {}
    groups = frame.groupby(spec.data.series) if spec.data.series else [(None, frame)]
    with httpx.Client(timeout=30) as client:
        for series, rows in groups:
            node = next((n for n in fleet.nodes if series is not None and n.series == str(series)), None)
            for offset in range(0, len(rows), batch):
                part = rows.iloc[offset : offset + batch]
                target = node or next(spread)
                times = part[spec.data.time_column].dt.tz_localize("UTC") if part[spec.data.time_column].dt.tz is None \
                    else part[spec.data.time_column]
                keys = [{"series": None if series is None else str(series), "predicted_for": t.isoformat()} for t in times]
                response = client.post(f"{target.url}/predict", json={
                    "rows": data.features(part, spec.data).tolist(), "keys": keys, "purpose": "serve"})
                response.raise_for_status()
                answered[target.id] = answered.get(target.id, 0) + len(part)
    return answered
