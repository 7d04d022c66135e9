"""The linear baseline every forecaster is gated against: least squares on the lags plus one
indicator per season (a combination of calendar values), fitted per series or pooled."""

from __future__ import annotations

import numpy as np
import pandas as pd
from cityfactory.tasktypes.forecast.baselines import baseline_predictions
from cityfactory.tasktypes.forecast.spec import BaselineSpec


def _hours(series: str, weeks: int, rng: np.random.Generator, slope: float) -> pd.DataFrame:
    """Hourly rows whose target is ``slope`` x the lag plus an offset for each hour of the week."""
    at = pd.date_range("2024-01-01", periods=weeks * 168, freq="h")
    frame = pd.DataFrame({"station": series, "day_of_week": at.dayofweek + 1, "hour_of_day": at.hour,
                          "lag_1h": rng.normal(500, 100, len(at))})
    offset = 10.0 * frame["day_of_week"] + 100.0 * frame["hour_of_day"] + (7 if series == "b" else 0)
    return frame.assign(target=slope * frame["lag_1h"] + offset)


def _spec(fit: str) -> BaselineSpec:
    return BaselineSpec.model_validate({"persistence": "lag_1h", "fit": fit, "linear_autoregression": {
        "lags": ["lag_1h"], "seasonal": ["day_of_week", "hour_of_day"]}})


def test_one_indicator_per_hour_of_the_week_recovers_a_seasonal_linear_series_exactly_per_series():
    rng = np.random.default_rng(3)
    a, b = _hours("a", 5, rng, 0.6), _hours("b", 5, rng, 0.2)
    frame = pd.concat([a, b], ignore_index=True)
    train, test = frame[frame.index % 10 != 0], frame[frame.index % 10 == 0]

    out = baseline_predictions(train, test, _spec("per_series"), "target", "station")

    np.testing.assert_allclose(out["linear_autoregression"], test["target"], atol=1e-6)
    np.testing.assert_array_equal(out["persistence"], test["lag_1h"])
    pooled = baseline_predictions(train, test, _spec("pooled"), "target", "station")["linear_autoregression"]
    assert np.sqrt(np.mean((pooled - test["target"]) ** 2)) > 1  # two slopes, one fit: not exact


def test_seasons_are_told_apart_day_1_hour_12_is_not_day_11_hour_2():
    """The season key joins the calendar values with a separator: ("1", "12") and ("11", "2")
    would both read "112" without it and share an indicator."""
    rows = pd.DataFrame({"day_of_week": [1, 11] * 50, "hour_of_day": [12, 2] * 50, "lag_1h": 0.0})
    train = rows.assign(target=np.where(rows["day_of_week"] == 1, 100.0, -100.0))

    out = baseline_predictions(train, train.head(2), _spec("pooled"), "target")

    np.testing.assert_allclose(out["linear_autoregression"], [100.0, -100.0], atol=1e-6)
