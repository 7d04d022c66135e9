"""Deterministic network training with early stopping on a validation metric (epochs logged at debug level)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from cityfactory.tasktypes.epochs import Fitted, minibatch_epoch, run_epochs
from cityfactory.tasktypes.forecast.metrics import scores


def predict(model: torch.nn.Module, features: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(features)).numpy()


def fit_network(model: torch.nn.Module, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None,
                y_val: np.ndarray | None, *, epochs: int, patience: int, batch_size: int, learning_rate: float,
                weight_decay: float, seed: int, scale: float, metric: str = "rmse",
                report: Callable[[int, float], None] | None = None) -> Fitted:
    """AdamW on the scaled change; keeps the epoch with the best validation ``metric`` and stops
    after ``patience`` epochs without a better one. ``report(epoch, value)`` sees every epoch's
    validation value (a search's pruner raises from it). Without validation rows it trains exactly
    ``epochs`` epochs (a refit)."""
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    inputs, targets = torch.from_numpy(x_train), torch.from_numpy(y_train.astype(np.float32))
    generator = torch.Generator().manual_seed(seed)

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # on the scaled change, so its size does not depend on the level of the series
        return torch.nn.functional.mse_loss(model(x) / scale, y / scale)

    def epoch_step(epoch: int) -> dict:
        step = {"train_loss": minibatch_epoch(model, inputs, targets, batch_size, generator, optimiser, loss_of)}
        if x_val is not None:
            step.update({f"validation_{k}": v for k, v in scores(y_val, predict(model, x_val)).items() if k in ("rmse", "mae")})
        return step

    return run_epochs(model, epoch_step, epochs=epochs, patience=patience, metric=metric, greater_is_better=False,
                      report=report)
