"""A forecaster's model spec (``task_type: forecast``): the feature row, the split in time, the
hand-set network, the naive and linear baselines and the gate against them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from cityfactory.tasktypes.spec import STRICT, ModelSpec, check_search


class Strict(BaseModel):
    model_config = STRICT


class Encoding(Strict):
    """A categorical input as one indicator per value: ``values`` listed (strings or numbers), or
    an integer ``range`` [first, last]. A value outside them encodes as all zeros."""

    values: list[str | int] | None = None
    range: tuple[int, int] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value):
        return {"range": value} if isinstance(value, (list, tuple)) else value

    @model_validator(mode="after")
    def _one(self) -> Encoding:
        if (self.values is None) == (self.range is None):
            raise ValueError("give exactly one of 'values' (a list) or 'range' ([first, last])")
        if self.range and self.range[1] < self.range[0]:
            raise ValueError(f"range {list(self.range)} ends before it starts")
        return self

    @property
    def categories(self) -> list:
        return list(self.values) if self.values is not None else list(range(self.range[0], self.range[1] + 1))


class DataSpec(Strict):
    target: str
    target_label: str = Field(description="what the model predicts, in words (plots, bundle manifest)")
    unit: str = Field(description="the target's unit (plots, bundle manifest, metrics)")
    time_column: str
    series: str | None = None  # the column that tells series apart (station, sensor), if several
    usable: str
    # Also train the families that tolerate missing inputs (lightgbm) on the rows whose target and
    # latest value (``architecture.residual_of``) exist but an older input does not (left missing,
    # never filled): many more rows around the history's gaps. Validation and test rows stay usable ones.
    train_with_gaps: bool = False
    numeric: list[str] = Field(min_length=1)
    one_hot: dict[str, Encoding] = {}
    flags: list[str] = []
    # The recent hours as a sequence: per channel, one column per hour, oldest first. Every family
    # gets them as inputs; the recurrent one reads them hour by hour.
    window: dict[str, list[str]] = {}

    @model_validator(mode="after")
    def _window_rectangular(self) -> DataSpec:
        if len({len(columns) for columns in self.window.values()}) > 1:
            raise ValueError("every window channel needs the same number of hours")
        return self

    @property
    def window_extras(self) -> list[str]:
        """Window columns that are not numeric inputs already."""
        return [c for columns in self.window.values() for c in columns if c not in self.numeric]

    @property
    def feature_names(self) -> list[str]:
        """Model input order: numeric, then one-hot blocks, then flags, then the rest of the window."""
        names = list(self.numeric)
        for column, encoding in self.one_hot.items():
            names += [f"{column}={v}" for v in encoding.categories]
        return names + list(self.flags) + self.window_extras

    @property
    def columns(self) -> list[str]:
        """Every gold column the model reads (before encoding)."""
        return [*self.numeric, *self.one_hot, *self.flags, *self.window_extras]


class SplitSpec(Strict):
    """Test = the last ``test_days``; before it, ``folds`` validation windows of ``validation_days``
    each (rolling origin: each trains on every row before it; the search ranks by their mean)."""

    test_days: int = Field(gt=0)
    validation_days: int = Field(gt=0)
    folds: int = Field(1, ge=1, le=12)


class ArchitectureSpec(Strict):
    type: Literal["residual_mlp"]
    residual_of: str
    hidden: list[int] = Field(min_length=1)
    output_scale: float = Field(gt=0)


class TrainingSpec(Strict):
    seed: int
    epochs: int = Field(ge=1)
    patience: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    # A search's chosen model is refitted this many times per member, seed after seed, and their
    # forecasts averaged: a network's test error moves by some 3 % from one seed to the next, and
    # the mean of a few moves far less. 1: one refit, as for a search with one family's trials
    # (a first run's budget of one trial).
    refit_seeds: int = Field(1, ge=1)
    # Up to this many of each family's best trials may be averaged into the model; validation over
    # the folds chooses how many (``ensemble.combine``). Settings that differ err differently, as
    # families do; each more costs a fit per fold and ``refit_seeds`` refits.
    trials_per_family: int = Field(1, ge=1)


# Each family's settings and their defaults (``training/families.py`` builds the models from them).
FAMILY_DEFAULTS = {
    "residual_mlp": {"hidden": "128-64", "epochs": 40, "patience": 8, "batch_size": 256, "learning_rate": 1e-3,
                     "weight_decay": 1e-4},
    "recurrent": {"hidden": 32, "context": "64", "epochs": 30, "patience": 6, "batch_size": 256,
                  "learning_rate": 2e-3, "weight_decay": 1e-4},
    "lightgbm": {"n_estimators": 2000, "early_stopping": 100, "learning_rate": 0.05, "num_leaves": 31,
                 "min_child_samples": 20, "subsample": 0.8, "colsample_bytree": 0.8, "reg_lambda": 1.0},
}


class LinearBaseline(Strict):
    """Least squares on ``lags`` plus one indicator per combination of the ``seasonal`` columns'
    values (two calendar columns, say hour and weekday, give one indicator per hour of the week)."""

    lags: list[str] = Field(min_length=1)
    seasonal: list[str] = []


class BaselineSpec(Strict):
    """Naive baselines (a column carried forward, e.g. the last value: ``persistence``) and a linear
    autoregression, fitted per series or pooled over all series."""

    persistence: str
    naive: dict[str, str] = {}  # more carried-forward columns by name, e.g. same_hour_last_week
    linear_autoregression: LinearBaseline
    fit: Literal["per_series", "pooled"] = "pooled"


METRICS = ("rmse", "mae")  # what the gate and the search may rank by (lower is better)


class GateSpec(Strict):
    metric: Literal[METRICS]
    min_improvement_over_linear: float = Field(ge=0, lt=1)
    champion_tolerance: float = Field(ge=0)
    # Refuse a model worse than persistence on more than this share of the series.
    max_series_worse_than_persistence: float = Field(0.0, ge=0, le=1)


class MetricSpec(Strict):
    # MAPE divides by max(|actual|, floor): near-zero actuals do not explode it.
    mape_floor: float = Field(1.0, gt=0)


class ForecastSpec(ModelSpec):
    task_type: Literal["forecast"]
    data: DataSpec
    split: SplitSpec
    architecture: ArchitectureSpec  # the hand-set model: trained alone when there is no search
    training: TrainingSpec
    baselines: BaselineSpec
    gate: GateSpec
    metrics: MetricSpec = MetricSpec()

    @model_validator(mode="after")
    def _search_fits_the_families(self) -> ForecastSpec:
        search = self.search
        check_search(search, {family: tuple(settings) for family, settings in FAMILY_DEFAULTS.items()}, METRICS,
                     "forecast")
        if search is not None and "recurrent" in search.families and not self.data.window:
            raise ValueError("search.families.recurrent needs data.window (the recent hours, per channel)")
        return self
