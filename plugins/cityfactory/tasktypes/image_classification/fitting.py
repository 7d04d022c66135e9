"""Deterministic CNN training: class-weighted cross-entropy, the spec's augmentation, early
stopping on a validation metric reported each epoch (a search's pruner raises from it)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F

from cityfactory.tasktypes.epochs import Fitted, minibatch_epoch, run_epochs
from cityfactory.tasktypes.image_classification.metrics import scores
from cityfactory.tasktypes.image_classification.spec import Augmentation

PREDICT_BATCH = 256


def probabilities(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        parts = [model(torch.from_numpy(images[i : i + PREDICT_BATCH])).numpy()
                 for i in range(0, len(images), PREDICT_BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def augment(images: torch.Tensor, augmentation: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """Each image of the batch changed by its own draw (flips, quarter turns, brightness, contrast)."""
    n = len(images)

    def draw(p: float = 0.5) -> torch.Tensor:
        return torch.rand(n, generator=generator) < p

    if augmentation.hflip:
        flip = draw()
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    if augmentation.vflip:
        flip = draw()
        images = torch.where(flip[:, None, None, None], images.flip(-2), images)
    if augmentation.rot90:
        turns = torch.randint(0, 4, (n,), generator=generator)
        images = torch.stack([torch.rot90(image, int(k), dims=(-2, -1)) for image, k in zip(images, turns)])
    if augmentation.contrast:
        factor = 1 + (torch.rand(n, generator=generator) * 2 - 1) * augmentation.contrast
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = (images - mean) * factor[:, None, None, None] + mean
    if augmentation.brightness:
        shift = (torch.rand(n, generator=generator) * 2 - 1) * augmentation.brightness
        images = images + shift[:, None, None, None]
    return images.clamp(0, 1)


def class_weights(labels: np.ndarray, classes: int, how: str) -> torch.Tensor:
    """'balanced': each class weighs n / (classes * its count), as scikit-learn's."""
    if how == "none":
        return torch.ones(classes)
    counts = np.bincount(labels, minlength=classes).astype(np.float32)
    return torch.from_numpy(len(labels) / (classes * np.maximum(counts, 1)))


def fit_network(model, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None, *,
                epochs: int, patience: int, batch_size: int, learning_rate: float, weight_decay: float, seed: int,
                augmentation: Augmentation, weighting: str, metric: str = "accuracy",
                report: Callable[[int, float], None] | None = None) -> Fitted:
    """AdamW with a cosine schedule; keeps the epoch with the best validation ``metric`` (higher is
    better) and stops after ``patience`` epochs without a better one. Without validation images
    it trains exactly ``epochs`` epochs (a refit)."""
    classes = model.head[-1].out_features
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    steps = epochs * -(-len(x_train) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=learning_rate, total_steps=max(steps, 1),
                                                   pct_start=0.2)
    weights = class_weights(y_train, classes, weighting)
    inputs, targets = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(seed)

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model.logits(augment(x, augmentation, generator)), y, weight=weights)

    def epoch_step(epoch: int) -> dict:
        step = {"train_loss": minibatch_epoch(model, inputs, targets, batch_size, generator, optimiser, loss_of,
                                              schedule)}
        if x_val is not None:
            found = scores(y_val, probabilities(model, x_val), classes)
            step.update({f"validation_{k}": found[k] for k in ("accuracy", "macro_f1", "balanced_accuracy")})
        return step

    return run_epochs(model, epoch_step, epochs=epochs, patience=patience, metric=metric, greater_is_better=True,
                      report=report)
