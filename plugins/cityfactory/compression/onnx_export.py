"""Torch -> ONNX, one self-contained file, checked for parity with onnxruntime.

We use torch's default (dynamo, ``torch.export``-based) exporter: it is the maintained path in
torch 2.13 (the TorchScript exporter is deprecated), onnxscript is installed, and for our Gemm/ReLU
network it emits a plain graph (Sub, Div, Gemm, Relu, ..., Add) that onnxruntime's quantizers
handle. ``external_data=False`` keeps the weights inside the one file a bundle carries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

INPUT, OUTPUT = "features", "prediction"


class ParityError(RuntimeError):
    """onnxruntime's outputs differ from torch's beyond the stated tolerance."""


def export(model, input_shape: int | tuple[int, ...], path: Path) -> Path:
    """``model`` as ONNX for inputs of (batch, *input_shape): a feature row's width, or an image's
    (channels, height, width)."""
    import torch

    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    example = (torch.rand((2, *shape), dtype=torch.float32),)
    torch.onnx.export(model, example, str(path), input_names=[INPUT], output_names=[OUTPUT], dynamo=True,
                      external_data=False, opset_version=18, dynamic_shapes=({0: torch.export.Dim("batch")},))
    return path


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(path_or_session, features: np.ndarray) -> np.ndarray:
    sess = session(path_or_session) if isinstance(path_or_session, Path) else path_or_session
    return sess.run([OUTPUT], {INPUT: features.astype(np.float32)})[0]


def check_parity(onnx_out: np.ndarray, torch_out: np.ndarray, tolerance: float) -> float:
    """Largest absolute difference (in the target's unit); raises if it exceeds ``tolerance``."""
    worst = float(np.max(np.abs(onnx_out - torch_out)))
    if worst > tolerance:
        raise ParityError(f"onnxruntime fp32 differs from torch by up to {worst:.4f} (tolerance {tolerance})")
    return worst
