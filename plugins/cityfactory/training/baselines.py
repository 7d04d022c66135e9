"""Baselines scored on the same test rows as the learned model."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cityfactory.training.spec import BaselineSpec, LinearBaseline


def _linear_design(frame: pd.DataFrame, spec: LinearBaseline) -> np.ndarray:
    columns = [frame[spec.lags].to_numpy(dtype=float)]
    if spec.hour_of_week:
        hour_of_week = (frame["day_of_week"].to_numpy() - 1) * 24 + frame["hour_of_day"].to_numpy()
        dummies = np.zeros((len(frame), 168))
        dummies[np.arange(len(frame)), hour_of_week] = 1.0
        columns.append(dummies)
    return np.hstack(columns)


def baseline_predictions(train: pd.DataFrame, test: pd.DataFrame, spec: BaselineSpec, target: str) -> dict[str, np.ndarray]:
    """Persistence, same hour last week, and a least-squares autoregression (lags plus, if asked,
    hour-of-week dummies from ``hour_of_day``/``day_of_week``) fitted on the training rows."""
    design = _linear_design(train, spec.linear_autoregression)
    weights, *_ = np.linalg.lstsq(design, train[target].to_numpy(dtype=float), rcond=None)
    return {
        "persistence": test[spec.persistence].to_numpy(dtype=float),
        "same_hour_last_week": test[spec.same_hour_last_week].to_numpy(dtype=float),
        "linear_autoregression": _linear_design(test, spec.linear_autoregression) @ weights,
    }
