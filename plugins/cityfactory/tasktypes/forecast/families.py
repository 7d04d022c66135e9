"""The model families a search draws from, behind one interface.

Every family reads the same flat feature row (``DataSpec.feature_names``) and predicts the target
itself as the change from one input (``architecture.residual_of``, the latest value), so the edge
contract, the baselines and the gates are the same whichever family wins:

- ``residual_mlp``: the MLP of ``network.ResidualMLP``;
- ``recurrent``: a GRU over the window of recent hours (``data.window``) beside an MLP of the rest;
- ``lightgbm``: gradient-boosted trees on the change; with ``data.train_with_gaps``, also on the
  training rows where an older input is missing (``TOLERATE_GAPS``).

``fit`` trains on the training rows with early stopping on the validation rows, reporting each
step's validation score (the search prunes from it); ``refit`` trains the chosen settings again on
training and validation rows for the number of steps that ``fit`` found best.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow.pyfunc
import numpy as np

from cityfactory.tasktypes.forecast.spec import FAMILY_DEFAULTS, ForecastSpec
from cityfactory.tasktypes.pickled_model import PickledStateModel

Report = Callable[[int, float], None]
TOLERATE_GAPS = frozenset({"lightgbm"})  # trees route a missing input (NaN) down a learned side; networks cannot

def widths(value) -> list[int]:
    """Layer widths from a list or from the spec's spelling ``"128-64"`` (``""``: no layer)."""
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(v) for v in str(value).split("-") if v.strip()]


def hand_set_params(spec: ForecastSpec) -> dict:
    """The spec's hand-set model as residual_mlp settings: the reference trial of every search."""
    t = spec.training
    return {"hidden": "-".join(str(w) for w in spec.architecture.hidden), "epochs": t.epochs, "patience": t.patience,
            "batch_size": t.batch_size, "learning_rate": t.learning_rate, "weight_decay": t.weight_decay}


class Forecaster(PickledStateModel):
    """A fitted model of any family as an MLflow pyfunc: ``predict`` takes feature rows and returns
    the target (the champion is scored this way whatever its family). Logged as code
    (``forecaster_model.py``) with the fitted state as an artifact, so MLflow pickles no code."""

    code_file, state_file, code_dir = "forecaster_model.py", "forecaster.pkl", Path(__file__).parent

    def __init__(self, family: str = "", params: dict | None = None, model=None, residual_index: int = 0,
                 iterations: int | None = None, members: list[Forecaster] | None = None):
        self.family, self.params, self.model = family, params or {}, model
        self.residual_index, self.iterations = residual_index, iterations
        self.members = members or []  # an ensemble (``ensemble.py``): their mean forecast, no model of its own

    def predict_array(self, features: np.ndarray) -> np.ndarray:
        if self.members:
            return np.mean([m.predict_array(features) for m in self.members], axis=0).astype(np.float32)
        if self.family == "lightgbm":
            change = self.model.predict(features, num_iteration=self.iterations)
            return (features[:, self.residual_index] + change).astype(np.float32)
        from cityfactory.tasktypes.forecast.fitting import predict

        return predict(self.model, features)


@dataclass
class Trained:
    forecaster: Forecaster
    history: list[dict]  # per step: step, validation_rmse, validation_mae (and train_loss for networks)
    best_step: int


def _network(family: str, spec: ForecastSpec, params: dict, x_train: np.ndarray):
    from cityfactory.tasktypes.forecast.network import (
        RecurrentNet,
        ResidualMLP,
        scaling,
    )

    names = spec.data.feature_names
    mean, std = scaling(x_train)
    residual, scale = names.index(spec.architecture.residual_of), spec.architecture.output_scale
    if family == "residual_mlp":
        return ResidualMLP(len(names), widths(params["hidden"]), residual, scale, mean, std)
    window = [list(hour) for hour in zip(*([names.index(c) for c in cols] for cols in spec.data.window.values()))]
    return RecurrentNet(len(names), window, int(params["hidden"]), widths(params["context"]), residual, scale, mean, std)


def _fit_network(family, spec, params, x_train, y_train, x_val, y_val, metric, seed, report, epochs=None):
    from cityfactory.tasktypes.epochs import seed_everything
    from cityfactory.tasktypes.forecast.fitting import fit_network

    seed_everything(seed)
    fitted = fit_network(_network(family, spec, params, x_train), x_train, y_train, x_val, y_val,
                         epochs=int(epochs or params["epochs"]), patience=int(params["patience"]),
                         batch_size=int(params["batch_size"]), learning_rate=float(params["learning_rate"]),
                         weight_decay=float(params["weight_decay"]), seed=seed,
                         scale=spec.architecture.output_scale, metric=metric, report=report)
    history = [{"step": h.pop("epoch"), **h} for h in fitted.history]
    residual = spec.data.feature_names.index(spec.architecture.residual_of)
    return Trained(Forecaster(family, params, fitted.model, residual), history, fitted.best_epoch)


def _lightgbm_params(params: dict, seed: int) -> dict:
    return {"objective": "regression", "learning_rate": float(params["learning_rate"]),
            "num_leaves": int(params["num_leaves"]), "min_child_samples": int(params["min_child_samples"]),
            "subsample": float(params["subsample"]), "subsample_freq": 1,
            "colsample_bytree": float(params["colsample_bytree"]), "reg_lambda": float(params["reg_lambda"]),
            "seed": seed, "deterministic": True, "force_row_wise": True, "num_threads": 1, "verbosity": -1}


def float32_splits(booster):
    """The same trees with every split threshold moved down to the nearest float32 at or below it.
    Inputs are float32, so ``x <= t`` and ``x <= float32_down(t)`` decide alike for every input;
    an ONNX ensemble stores float32 thresholds, and with these it decides as LightGBM does
    (rounding to the nearest float32 instead flips rows that sit on a rounded threshold)."""
    import re

    import lightgbm as lgb

    def down(match: re.Match) -> str:
        exact = np.array(match.group(1).split(), dtype=np.float64)
        single = exact.astype(np.float32)
        single = np.where(single.astype(np.float64) > exact, np.nextafter(single, np.float32(-np.inf)), single)
        return "threshold=" + " ".join(repr(float(v)) for v in single)

    text = re.sub(r"^threshold=(.*)$", down, booster.model_to_string(), flags=re.MULTILINE)
    return lgb.Booster(model_str=re.sub(r"^tree_sizes=.*\n", "", text, flags=re.MULTILINE))  # sizes changed: parsed in order


def _fit_trees(spec, params, x_train, y_train, x_val, y_val, metric, seed, report, rounds=None):
    import lightgbm as lgb

    residual = spec.data.feature_names.index(spec.architecture.residual_of)
    change = lambda x, y: y - x[:, residual]
    train = lgb.Dataset(x_train, change(x_train, y_train), free_raw_data=False)
    if x_val is None:
        booster = lgb.train(_lightgbm_params(params, seed), train, num_boost_round=int(rounds))
        return Trained(Forecaster("lightgbm", params, float32_splits(booster), residual), [], int(rounds))
    valid = lgb.Dataset(x_val, change(x_val, y_val), reference=train)
    history: list[dict] = []

    def record(env):  # the change's validation scores are the level's; every 10 rounds, for the pruner
        step = env.iteration + 1
        if step % 10:
            return
        found = {name: value for _, name, value, _ in env.evaluation_result_list}
        history.append({"step": step, "validation_rmse": float(np.sqrt(found["l2"])), "validation_mae": float(found["l1"])})
        if report is not None:
            report(step, history[-1][f"validation_{metric}"])

    order = ["l2", "l1"] if metric == "rmse" else ["l1", "l2"]  # early stopping on the first
    booster = lgb.train({**_lightgbm_params(params, seed), "metric": order}, train,
                        num_boost_round=int(params["n_estimators"]), valid_sets=[valid],
                        callbacks=[lgb.early_stopping(int(params["early_stopping"]), first_metric_only=True,
                                                      verbose=False), record])
    best = booster.best_iteration or booster.current_iteration()
    return Trained(Forecaster("lightgbm", params, float32_splits(booster), residual, best), history, best)


def fit(family: str, spec: ForecastSpec, params: dict, x_train, y_train, x_val, y_val, metric: str, seed: int,
        report: Report | None = None) -> Trained:
    params = {**FAMILY_DEFAULTS[family], **params}
    if family == "lightgbm":
        return _fit_trees(spec, params, x_train, y_train, x_val, y_val, metric, seed, report)
    return _fit_network(family, spec, params, x_train, y_train, x_val, y_val, metric, seed, report)


def fit_hand_set(spec: ForecastSpec, x_train, y_train, x_val, y_val) -> Trained:
    """The spec's hand-set model (``architecture`` + ``training``), as the search's first trial trains it."""
    return fit("residual_mlp", spec, hand_set_params(spec), x_train, y_train, x_val, y_val, "rmse", spec.training.seed)


def refit(family: str, spec: ForecastSpec, params: dict, steps: int, x, y, seed: int) -> Forecaster:
    """The chosen settings trained again on ``x`` (training + validation rows) for ``steps``."""
    params = {**FAMILY_DEFAULTS[family], **params}
    if family == "lightgbm":
        return _fit_trees(spec, params, x, y, None, None, "rmse", seed, None, rounds=steps).forecaster
    return _fit_network(family, spec, params, x, y, None, None, "rmse", seed, None, epochs=steps).forecaster


def load_network(spec: ForecastSpec, uri: str):
    """A registered version's network (``models:/name/version``): a network family's, or a version
    logged as a plain PyTorch model (the ``pytorch`` flavour), whose weights go into our module."""
    from cityfactory.tasktypes.forecast.network import ResidualMLP

    loaded = mlflow.pyfunc.load_model(uri)
    if "pytorch" not in loaded.metadata.flavors:
        return loaded.unwrap_python_model().model.eval()
    from mlflow import pytorch

    state = pytorch.load_model(uri).state_dict()
    arch, names = spec.architecture, spec.data.feature_names
    model = ResidualMLP(len(names), arch.hidden, names.index(arch.residual_of), arch.output_scale,
                        state["mean"].numpy(), state["std"].numpy())
    model.load_state_dict(state)
    return model.eval()
