"""Live accuracy across days: the rows consumers were served, and a version's live metric pooled
over its latest evaluated days (each day scored by the task type, ``evaluate_served``)."""

from __future__ import annotations

import math

import pandas as pd

from cityfactory.tasktypes.base import Metric


def served_rows(predictions: pd.DataFrame | None) -> pd.DataFrame:
    """The rows consumers were served (not rollout health checks), with their key."""
    if predictions is None or predictions.empty:
        return pd.DataFrame(columns=["series", "predicted_for", "node", "model_version", "prediction"])
    keep = (predictions["purpose"] == "serve") & predictions["predicted_for"].notna()
    return predictions[keep]


def pooled_ratio(evaluations: list[dict], version: str, days: int, metrics: dict[str, Metric]) -> tuple[float | None, int]:
    """``version``'s live metric pooled over its latest ``days`` evaluated days (rows weighted; a
    day's 24 rows alone are too few to judge), divided by its offline metric; and how many days
    were pooled. (None, 0) if it has no evaluated day or no offline metric. The days pool the way
    their metric does (``metrics``: the task type's table)."""
    mine = [(e["metric"], v) for e in sorted(evaluations, key=lambda e: e["day"], reverse=True)
            for v in e["versions"] if v["version"] == version and v["rows"]][:days]
    if not mine or not mine[0][1]["offline"]:
        return None, 0
    live = metrics[mine[0][0]].pool([v["live"] for _, v in mine], [v["rows"] for _, v in mine])
    return live / mine[0][1]["offline"], len(mine)


def usual_ratio(daily: list[dict], days: int, metric: Metric, offline: float, quantile: float) -> float | None:
    """How far above ``offline`` the metric went, pooled over ``days`` consecutive test days, at
    ``quantile`` of every such window (``daily``: ``day``, ``value``, ``rows`` per test day): a week
    the model finds hard is no fault, only an error worse than its own test days usually saw. None
    without a window's worth of test days."""
    ordered = sorted(daily, key=lambda d: d["day"])
    windows = [ordered[i:i + days] for i in range(len(ordered) - days + 1)]
    if not windows or not offline:
        return None
    ratios = sorted(metric.pool([d["value"] for d in w], [d["rows"] for d in w]) / offline for w in windows)
    return ratios[min(len(ratios) - 1, math.ceil(quantile * len(ratios)) - 1)]
