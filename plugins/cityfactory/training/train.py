"""Deterministic training with early stopping on validation RMSE; one log line per epoch."""

from __future__ import annotations

import copy
import logging
import random
from dataclasses import dataclass

import numpy as np
import torch

from cityfactory.training.network import ResidualMLP, scaling
from cityfactory.training.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass
class Fitted:
    model: ResidualMLP
    history: list[dict]  # epoch, train_loss, validation_rmse
    best_epoch: int


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # same reduction order every run: same data + spec -> same metrics


def predict(model: ResidualMLP, features: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(features)).numpy()


def fit(spec: ModelSpec, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> Fitted:
    seed_everything(spec.training.seed)
    arch, hyper = spec.architecture, spec.training
    mean, std = scaling(x_train)
    model = ResidualMLP(x_train.shape[1], arch.hidden, spec.data.feature_names.index(arch.residual_of),
                        arch.output_scale, mean, std)
    optimiser = torch.optim.AdamW(model.parameters(), lr=hyper.learning_rate, weight_decay=hyper.weight_decay)
    inputs, targets = torch.from_numpy(x_train), torch.from_numpy(y_train.astype(np.float32))
    generator = torch.Generator().manual_seed(hyper.seed)
    history: list[dict] = []
    best = (float("inf"), 0, copy.deepcopy(model.state_dict()))
    for epoch in range(1, hyper.epochs + 1):
        model.train()
        order = torch.randperm(len(inputs), generator=generator)
        total = 0.0
        for start in range(0, len(inputs), hyper.batch_size):
            batch = order[start : start + hyper.batch_size]
            optimiser.zero_grad()
            # loss on the scaled change, so its size does not depend on the level of the series
            loss = torch.nn.functional.mse_loss(
                model(inputs[batch]) / arch.output_scale, targets[batch] / arch.output_scale
            )
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        validation_rmse = float(np.sqrt(np.mean((predict(model, x_val) - y_val) ** 2)))
        history.append({"epoch": epoch, "train_loss": total / len(inputs), "validation_rmse": validation_rmse})
        log.info("epoch %d/%d train_loss %.5f validation_rmse %.1f", epoch, hyper.epochs, total / len(inputs), validation_rmse)
        if validation_rmse < best[0]:
            best = (validation_rmse, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= hyper.patience:
            log.info("early stop: no better validation RMSE since epoch %d", best[1])
            break
    model.load_state_dict(best[2])
    model.eval()
    return Fitted(model, history, best[1])
