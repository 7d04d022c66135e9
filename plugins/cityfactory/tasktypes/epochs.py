"""What every torch-trained kind shares: deterministic seeding, and the epoch loop that keeps the
epoch with the best validation metric and stops after ``patience`` epochs without a better one."""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass
class Fitted:
    model: torch.nn.Module
    history: list[dict]  # per epoch: epoch, train_loss and the validation metrics (none when refitting)
    best_epoch: int


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # one reduction order: same data + spec -> same model and metrics


def minibatch_epoch(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int,
                    generator: torch.Generator, optimiser, loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    schedule=None) -> float:
    """One pass over the rows in a seeded random order, a step per batch; the mean training loss."""
    model.train()
    order = torch.randperm(len(inputs), generator=generator)
    total = 0.0
    for start in range(0, len(inputs), batch_size):
        batch = order[start : start + batch_size]
        optimiser.zero_grad()
        loss = loss_of(inputs[batch], targets[batch])
        loss.backward()
        optimiser.step()
        if schedule is not None:
            schedule.step()
        total += loss.item() * len(batch)
    return total / len(inputs)


def run_epochs(model: torch.nn.Module, epoch_step: Callable[[int], dict], *, epochs: int, patience: int, metric: str,
               greater_is_better: bool, report: Callable[[int, float], None] | None = None) -> Fitted:
    """``epoch_step(epoch)`` trains one epoch and returns its record (``train_loss`` and, when
    there are validation rows, ``validation_<metric>``); ``report(epoch, value)`` sees every
    epoch's validation value (a search's pruner raises from it). Without validation values it
    trains exactly ``epochs`` epochs (a refit)."""
    history: list[dict] = []
    sign = 1 if greater_is_better else -1
    best = (-float("inf"), epochs, None)
    for epoch in range(1, epochs + 1):
        step = {"epoch": epoch, **epoch_step(epoch)}
        history.append(step)
        log.debug("epoch %d/%d %s", epoch, epochs, " ".join(f"{k} {v:.5g}" for k, v in step.items() if k != "epoch"))
        if f"validation_{metric}" not in step:
            continue
        value = step[f"validation_{metric}"]
        if sign * value > best[0]:
            best = (sign * value, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= patience:
            log.info("early stop: no better validation %s since epoch %d", metric, best[1])
            break
        if report is not None:
            report(epoch, value)
    if best[2] is not None:
        model.load_state_dict(best[2])
    model.eval()
    return Fitted(model, history, best[1])
