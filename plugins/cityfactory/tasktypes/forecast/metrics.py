"""Forecast errors, the same way for every model and baseline, pooled and per series."""

from __future__ import annotations

import numpy as np


def scores(actual, predicted, mape_floor: float = 1.0) -> dict[str, float]:
    """MAE, RMSE, MAPE (each error over max(|actual|, floor), so near-zero actuals do not
    dominate) and sMAPE (bounded, symmetric)."""
    actual, predicted = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    error = predicted - actual
    spread = np.abs(actual) + np.abs(predicted)
    symmetric = np.divide(2 * np.abs(error), spread, out=np.zeros_like(spread), where=spread > 0)
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mape": float(np.mean(np.abs(error) / np.maximum(np.abs(actual), mape_floor)) * 100),
        "smape": float(np.mean(symmetric) * 100),
    }


def scores_by_series(series, actual, predictions: dict[str, np.ndarray], mape_floor: float = 1.0) -> dict[str, dict]:
    """{series value: {model name: scores}} for every series present in ``series``."""
    series = np.asarray(series)
    out = {}
    for value in sorted(set(series.tolist()), key=str):
        rows = series == value
        out[str(value)] = {name: scores(np.asarray(actual)[rows], values[rows], mape_floor) for name, values in predictions.items()}
    return out


def edge_scores(actual, predicted) -> dict[str, float]:
    """What a compressed variant is measured by: MAE (its budget) and RMSE."""
    found = scores(actual, predicted)
    return {"mae": found["mae"], "rmse": found["rmse"]}
