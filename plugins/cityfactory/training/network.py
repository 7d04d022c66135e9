"""The network: a residual MLP that takes raw features and returns the forecast itself.

Input scaling is part of the model (buffers), so an exported ONNX file needs only the feature order.
The MLP predicts the change from one input (the latest count), which is what varies least.
Linear (Gemm) layers and ReLU: the shapes onnxruntime quantizes well.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class ResidualMLP(nn.Module):
    def __init__(self, n_features: int, hidden: list[int], residual_index: int, output_scale: float,
                 mean: np.ndarray, std: np.ndarray):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        self.residual_index = residual_index
        self.output_scale = output_scale
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        scaled = (features - self.mean) / self.std
        change = self.mlp(scaled).squeeze(-1) * self.output_scale
        return features[:, self.residual_index] + change


def scaling(train_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and spread from the training rows (constant features keep spread 1)."""
    mean = train_features.mean(axis=0)
    std = train_features.std(axis=0)
    return mean.astype(np.float32), np.where(std < 1e-6, 1.0, std).astype(np.float32)
