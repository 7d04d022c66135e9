"""An image classifier's live accuracy: what the edge answered for a day's images, against the
inspectors' labels once their feed arrived.

Served rows (purpose ``serve``) carry the image's sha256; the examples mart holds each image's
sha256 and, a day or so later, its label. Each version is scored by its error rate (the share of
images whose class was not the inspector's) beside the error rate it showed offline on its test
images, per camera and per node, with its answers' confidence. Images whose label has not arrived
are counted, not scored.
"""

from __future__ import annotations

import pandas as pd

from cityfactory.tasktypes.image_classification.spec import ImageClassificationSpec

LOW_CONFIDENCE = 0.6


def _rate(frame: pd.DataFrame) -> float:
    return float((frame["label"] != frame["actual"]).mean())


def _majority_rate(frame: pd.DataFrame) -> float:
    """The error rate of always answering the day's most common true class (what a model must beat)."""
    return _rate(frame.assign(label=frame["actual"].mode().iloc[0]))


def evaluate_day(day: str, served: pd.DataFrame, actuals: pd.DataFrame, spec: ImageClassificationSpec,
                 offline: dict) -> dict:
    d = spec.data
    truth = actuals[["sha256", d.label]].rename(columns={"sha256": "input_sha256", d.label: "actual"})
    joined = served.merge(truth.drop_duplicates("input_sha256"), on="input_sha256", how="left")
    scored = joined[joined["actual"].notna()]
    versions = []
    for version, rows in scored.groupby("model_version"):
        known = offline.get(str(version), {}).get("metrics", {})
        offline_error = known.get("error_rate")
        live = _rate(rows)
        series = [{"series": str(name), "rows": len(part), "live": _rate(part), "offline": offline_error,
                   "majority": _majority_rate(part)} for name, part in rows.groupby("series")]
        nodes = [{"node": str(n), "rows": len(part), "live": _rate(part)} for n, part in rows.groupby("node")]
        confidence = rows["confidence"].astype(float)
        versions.append({"version": str(version), "rows": len(rows), "live": live, "offline": offline_error,
                         "ratio": live / offline_error if offline_error else None,
                         "baselines": {"majority": _majority_rate(rows)},
                         "confidence": {"mean": float(confidence.mean()),
                                        "low_share": float((confidence < LOW_CONFIDENCE).mean())},
                         "series": series, "nodes": nodes})
    return {"day": day, "metric": "error_rate", "served_rows": len(joined), "scored_rows": len(scored),
            "awaiting_actuals": int(len(joined) - len(scored)), "versions": versions}
