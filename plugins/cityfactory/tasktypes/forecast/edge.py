"""A forecaster at the edge: its variants, its contract (a flat feature row in, one number out),
the rows a rollout bakes on, and the requests a consumer sends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from cityfactory.compression import variants
from cityfactory.compression.onnx_export import INPUT, OUTPUT
from cityfactory.tasktypes.forecast import data, ensemble, trees
from cityfactory.tasktypes.forecast.metrics import edge_scores
from cityfactory.tasktypes.forecast.spec import ForecastSpec


def compress(spec: ForecastSpec, forecaster, x_train, y_train, x_test, y_test, workdir: Path,
             parity_tolerance: float) -> tuple[list[variants.Variant], float]:
    """Trees shrink by rounds (int8 has nothing to quantise in them); networks by int8 and pruning,
    the pruned one fine-tuned on the scaled change as it was trained."""
    if forecaster.members:
        return ensemble.build_and_measure(forecaster, len(spec.data.feature_names), x_test, y_test, workdir,
                                          parity_tolerance)
    if forecaster.family == "lightgbm":
        return trees.build_and_measure(forecaster, len(spec.data.feature_names), x_test, y_test, workdir, parity_tolerance)
    scale = spec.architecture.output_scale

    def loss(outputs, targets):
        import torch

        return torch.nn.functional.mse_loss(outputs / scale, targets / scale)

    return variants.build_and_measure(forecaster.model, x_train, y_train, x_test, y_test, workdir, parity_tolerance,
                                      edge_scores, loss)


def contract(spec: ForecastSpec, forecaster) -> dict:
    """The manifest's inputs, outputs, feature order and where scaling happens."""
    d = spec.data
    return {
        "inputs": [{"name": INPUT, "shape": [-1, len(d.feature_names)], "dtype": "float32"}],
        "outputs": [{"name": OUTPUT, "shape": [-1], "dtype": "float32", "target": d.target, "label": d.target_label,
                     "unit": d.unit}],
        "feature_order": d.feature_names,
        "scaling": scaling(forecaster),
    }


def scaling(forecaster) -> dict:
    """Where the inputs are scaled: inside the graph, by each network's training mean and spread."""
    if forecaster.members:
        return {"applied_inside_model": True, "members": [{"family": m.family, **scaling(m)} for m in forecaster.members]}
    if forecaster.family == "lightgbm":
        return {"applied_inside_model": True, "none_needed": "trees split on raw values"}
    return {"applied_inside_model": True, "mean": forecaster.model.mean.numpy().tolist(),
            "std": forecaster.model.std.numpy().tolist()}


def bake_rows(spec: ForecastSpec, frame: pd.DataFrame, per_series: int) -> dict:
    recent = data.latest_rows(frame, spec.data, per_series)
    return {"features": data.features(recent, spec.data).tolist(), "actuals": recent[spec.data.target].tolist(),
            "from": str(recent[spec.data.time_column].min()), "to": str(recent[spec.data.time_column].max())}


def mean_absolute_error(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(predicted) - np.asarray(actual))))


def requests(spec: ForecastSpec, frame: pd.DataFrame, batch: int) -> Iterator[dict]:
    """The usable rows in time order, per series, ``batch`` at a time, keyed by series and target
    hour: each with its series, row count and HTTP request (httpx keyword arguments)."""
    d = spec.data
    frame = frame[frame[d.usable].astype(bool)].sort_values(d.time_column)
    for series, rows in (frame.groupby(d.series) if d.series else [(None, frame)]):
        for offset in range(0, len(rows), batch):
            part = rows.iloc[offset : offset + batch]
            times = part[d.time_column]
            times = times.dt.tz_localize("UTC") if times.dt.tz is None else times
            series_key = None if series is None else str(series)
            keys = [{"series": series_key, "predicted_for": t.isoformat()} for t in times]
            yield {"series": series_key, "count": len(part),
                   "http": {"json": {"rows": data.features(part, d).tolist(), "keys": keys, "purpose": "serve"}}}


def bake_request(bake: dict, start: int, stop: int) -> dict:
    """A bake request of rows start..stop: JSON feature rows, purpose ``bake``."""
    return {"json": {"rows": bake["features"][start:stop], "purpose": "bake"}}
