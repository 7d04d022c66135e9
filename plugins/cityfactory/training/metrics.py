"""Forecast errors, the same way for every model and baseline."""

from __future__ import annotations

import numpy as np


def scores(actual, predicted) -> dict[str, float]:
    actual, predicted = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    error = predicted - actual
    nonzero = actual != 0  # MAPE is undefined where nothing drove by
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mape": float(np.mean(np.abs(error[nonzero] / actual[nonzero])) * 100),
    }
