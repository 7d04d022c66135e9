"""A forecaster's live accuracy: what the edge served for a day, against what really happened.

Served rows (purpose ``serve``, keyed by series and target hour) are joined with the feature
mart's actuals of the same hours. Each version is scored beside the accuracy it showed offline
(its test rows, from the registry) and beside the naive baselines on the very same hours, per
series and per node. Rows whose actual has not arrived are counted, not scored.
"""

from __future__ import annotations

import pandas as pd

from cityfactory.tasktypes.forecast.metrics import scores
from cityfactory.tasktypes.forecast.spec import ForecastSpec


def join_actuals(served: pd.DataFrame, actuals: pd.DataFrame, spec: ForecastSpec) -> pd.DataFrame:
    """Served rows with the actual and the baselines' predictions of their hour (and series)."""
    d, b = spec.data, spec.baselines
    columns = {d.time_column: "predicted_for", d.target: "actual", b.persistence: "persistence",
               **{column: name for name, column in b.naive.items()}}
    if d.series:
        columns[d.series] = "series"
    truth = actuals[list(columns)].rename(columns=columns)
    truth["predicted_for"] = pd.to_datetime(truth["predicted_for"], utc=True)
    served = served.assign(predicted_for=pd.to_datetime(served["predicted_for"], utc=True))
    on = ["predicted_for", "series"] if d.series else ["predicted_for"]
    if d.series:
        truth["series"] = truth["series"].astype(str)
    joined = served.drop(columns=[c for c in ("series",) if not d.series and c in served]).merge(truth, on=on, how="left")
    return joined


def _score(frame: pd.DataFrame, baselines: list[str], floor: float) -> dict:
    scored = {"rows": len(frame), "model": scores(frame["actual"], frame["prediction"], floor)}
    for name in baselines:
        usable = frame[name].notna()
        scored[name] = scores(frame.loc[usable, "actual"], frame.loc[usable, name], floor) if usable.any() else None
    return scored


def evaluate_day(day: str, served: pd.DataFrame, actuals: pd.DataFrame, spec: ForecastSpec, offline: dict) -> dict:
    """One day's live accuracy per version (overall, per series, per node); ``offline`` maps a
    version to ``{"metrics": {...}, "by_series": {series: {...}}}`` from its training run."""
    metric, floor = spec.gate.metric, spec.metrics.mape_floor
    baselines = ["persistence", *spec.baselines.naive]
    joined = join_actuals(served, actuals, spec)
    scored = joined[joined["actual"].notna()]
    versions = []
    for version, rows in scored.groupby("model_version"):
        known = offline.get(str(version), {})
        overall = _score(rows, baselines, floor)
        offline_value = known.get("metrics", {}).get(metric)
        live_value = overall["model"][metric]
        series = []
        if "series" in rows and spec.data.series:
            for name, part in rows.groupby("series"):
                s = _score(part, ["persistence"], floor)
                series.append({"series": str(name), "rows": s["rows"], "live": s["model"][metric],
                               "offline": known.get("by_series", {}).get(str(name), {}).get(metric),
                               "persistence": (s["persistence"] or {}).get(metric)})
        nodes = [{"node": str(n), "rows": len(part), "live": scores(part["actual"], part["prediction"], floor)[metric]}
                 for n, part in rows.groupby("node")]
        versions.append({"version": str(version), "rows": overall["rows"], "live": live_value, "offline": offline_value,
                         "ratio": live_value / offline_value if offline_value else None,
                         "baselines": {n: (overall[n] or {}).get(metric) for n in baselines},
                         "series": series, "nodes": nodes})
    return {"day": day, "metric": metric, "served_rows": len(joined), "scored_rows": len(scored),
            "awaiting_actuals": int(len(joined) - len(scored)), "versions": versions}
