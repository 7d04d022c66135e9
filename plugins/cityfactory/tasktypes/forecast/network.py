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


class GRUCell(nn.Module):
    """A GRU step from Linear layers: exports to plain MatMul/Sigmoid/Tanh ONNX that quantizes and
    prunes like the MLP (torch's fused GRU exports to one opaque op)."""

    def __init__(self, inputs: int, hidden: int):
        super().__init__()
        self.gates = nn.Linear(inputs + hidden, 2 * hidden)
        self.candidate = nn.Linear(inputs + hidden, hidden)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        update, reset = torch.sigmoid(self.gates(torch.cat([x, h], dim=-1))).chunk(2, dim=-1)
        new = torch.tanh(self.candidate(torch.cat([x, reset * h], dim=-1)))
        return (1 - update) * new + update * h


class RecurrentNet(nn.Module):
    """A GRU over the window of recent hours (``window``: hours x channels of feature indices, oldest
    first), its last state joined with an MLP of the other inputs; predicts the change from one
    input like the residual MLP. Input is the same flat feature row, so the edge sees no difference."""

    def __init__(self, n_features: int, window: list[list[int]], hidden: int, context: list[int],
                 residual_index: int, output_scale: float, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("window", torch.as_tensor(window, dtype=torch.long))
        others = sorted(set(range(n_features)) - {i for hour in window for i in hour})
        self.register_buffer("others", torch.as_tensor(others, dtype=torch.long))
        self.cell = GRUCell(len(window[0]), hidden)
        layers: list[nn.Module] = []
        width = len(others)
        for size in context:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.context = nn.Sequential(*layers)
        self.head = nn.Linear(hidden + width, 1)
        self.hidden, self.residual_index, self.output_scale = hidden, residual_index, output_scale
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        scaled = (features - self.mean) / self.std
        h = torch.zeros(features.shape[0], self.hidden, dtype=features.dtype)
        for hour in range(self.window.shape[0]):  # unrolled: a fixed, short window
            h = self.cell(scaled[:, self.window[hour]], h)
        joined = torch.cat([h, self.context(scaled[:, self.others])], dim=-1)
        return features[:, self.residual_index] + self.head(joined).squeeze(-1) * self.output_scale
