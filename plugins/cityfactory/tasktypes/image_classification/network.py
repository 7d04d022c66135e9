"""The CNN families, small enough to train on a city's CPUs.

Both take (n, channels, size, size) images in [0, 1], resize them to their own ``input_size``
inside the graph (so the edge feeds one size whatever the family), normalise them per image, and
answer class probabilities (softmax inside the graph too: the node returns what the model says).

- ``plain_cnn``: blocks of 3x3 convolution, batch norm, ReLU and 2x2 max pooling, widths doubling;
- ``separable_cnn``: the same blocks with depthwise-separable convolutions (MobileNet's), about a
  ninth of the multiplications for the same width.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn
from torch.nn import functional as F


def _block(family: str, inputs: int, outputs: int) -> nn.Sequential:
    if family == "separable_cnn" and inputs > 3:
        convolution = [nn.Conv2d(inputs, inputs, 3, padding=1, groups=inputs, bias=False),
                       nn.Conv2d(inputs, outputs, 1, bias=False)]
    else:
        convolution = [nn.Conv2d(inputs, outputs, 3, padding=1, bias=False)]
    return nn.Sequential(*convolution, nn.BatchNorm2d(outputs), nn.ReLU(), nn.MaxPool2d(2))


class ImageNet(nn.Module):
    def __init__(self, family: str, channels: int, classes: int, input_size: int, width: int, blocks: int,
                 dropout: float):
        super().__init__()
        self.family, self.input_size = family, input_size
        widths = [channels] + [min(width * 2**i, 256) for i in range(blocks)]
        self.features = nn.Sequential(*(_block(family, a, b) for a, b in pairwise(widths)))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(widths[-1], classes))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.input_size:
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                                   align_corners=False, antialias=False)
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        std = images.std(dim=(1, 2, 3), keepdim=True) + 1e-3
        pooled = self.features((images - mean) / std).mean(dim=(2, 3), keepdim=True)
        return self.head(pooled)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(images), dim=1)
