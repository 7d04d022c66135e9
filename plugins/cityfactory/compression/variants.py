"""Candidate edge models and their measurements, all taken in one run on the same test rows.

What a variant's quality means is the task type's (``score`` maps test targets and predictions to
named metrics); here a PyTorch network of any kind becomes: ONNX fp32; int8 dynamic quantization (with and without ``reduce_range``: on x86 CPUs
without VNNI, u8*s8 products can saturate, and 7-bit weights avoid it); int8 static quantization
(QDQ) calibrated on training windows; magnitude pruning (50 % of each layer's weights, a short
fine-tune with the mask held) followed by int8 dynamic quantization.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cityfactory.compression.onnx_export import check_parity, export, run, session

Score = Callable[[np.ndarray, np.ndarray], dict[str, float]]  # (targets, predictions) -> metric -> value
Loss = Callable[[object, object], object]  # (outputs, targets) -> a torch loss, for the pruned fine-tune


@dataclass
class Variant:
    """One candidate edge model, measured: its quality on the test rows and its latency."""

    name: str
    path: str
    size_bytes: int
    quality: dict[str, float]
    b1_median_ms: float
    b1_p95_ms: float
    b256_median_ms: float
    b256_p95_ms: float

    def row(self) -> dict:
        """One flat record (the ledger, MLflow's table): the quality metrics beside the rest."""
        return {"name": self.name, "path": self.path, "size_bytes": self.size_bytes, **self.quality,
                **{k: getattr(self, k) for k in LATENCIES}}

    @classmethod
    def from_row(cls, row: dict) -> Variant:
        fixed = {"name", "path", "size_bytes", *LATENCIES}
        return cls(row["name"], row["path"], row["size_bytes"], {k: v for k, v in row.items() if k not in fixed},
                   *(row[k] for k in LATENCIES))


LATENCIES = ("b1_median_ms", "b1_p95_ms", "b256_median_ms", "b256_p95_ms")


def _latency(call, batch: np.ndarray, repeats: int) -> tuple[float, float]:
    call(batch)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(batch)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), float(np.percentile(times, 95))


def measure(name: str, path: Path | None, predict, x_test: np.ndarray, y_test: np.ndarray, score: Score,
            repeats: tuple[int, int] = (500, 100)) -> Variant:
    """Quality on every test example; latency at batch 1 and 256, ``repeats`` times each."""
    b1 = _latency(predict, x_test[:1], repeats[0])
    b256 = _latency(predict, x_test[:256], repeats[1])
    return Variant(name, str(path or ""), path.stat().st_size if path else 0, score(y_test, predict(x_test)), *b1, *b256)


class _Calibration:
    """Feeds training windows to the static quantizer."""

    def __init__(self, features: np.ndarray, batch: int = 256):
        self.batches = iter(features[i : i + batch] for i in range(0, len(features), batch))

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {"features": batch.astype(np.float32)}


def _prune_and_finetune(model, x_train: np.ndarray, y_train: np.ndarray, amount: float, epochs: int, loss: Loss):
    import torch
    from torch.nn.utils import prune

    pruned = copy.deepcopy(model)
    linears = [m for m in pruned.modules() if isinstance(m, torch.nn.Linear)]
    for layer in linears:
        prune.l1_unstructured(layer, "weight", amount=amount)
    optimiser = torch.optim.Adam(pruned.parameters(), lr=5e-4)
    inputs, targets = torch.from_numpy(x_train), torch.from_numpy(y_train.astype(np.float32))
    generator = torch.Generator().manual_seed(0)
    pruned.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(inputs), generator=generator).split(256):
            optimiser.zero_grad()
            loss(pruned(inputs[batch]), targets[batch]).backward()
            optimiser.step()
    for layer in linears:
        prune.remove(layer, "weight")
    return pruned.eval()


def build_and_measure(model, x_train, y_train, x_test, y_test, workdir: Path, parity_tolerance: float,
                      score: Score, loss: Loss) -> tuple[list[Variant], float]:
    """Every variant measured side by side; returns them (torch eager first) and the fp32 parity.
    ``loss`` is the training loss the pruned network is fine-tuned with."""
    import torch
    from onnxruntime.quantization import (
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    torch.set_num_threads(1)
    model.eval()

    def torch_predict(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    fp32 = export(model, x_test.shape[1], workdir / "fp32.onnx")
    parity = check_parity(run(fp32, x_test), torch_predict(x_test), parity_tolerance)
    prepared = workdir / "fp32-prepared.onnx"
    quant_pre_process(str(fp32), str(prepared))
    paths = {"onnx_fp32": fp32}
    for reduce_range in (False, True):
        name = "int8_dynamic_reduce_range" if reduce_range else "int8_dynamic"
        paths[name] = workdir / f"{name}.onnx"
        quantize_dynamic(prepared, paths[name], weight_type=QuantType.QInt8, reduce_range=reduce_range)
    paths["int8_static"] = workdir / "int8_static.onnx"
    quantize_static(prepared, paths["int8_static"], _Calibration(x_train[-20_000:]), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True)
    pruned = _prune_and_finetune(model, x_train, y_train, amount=0.5, epochs=2, loss=loss)
    pruned_fp32 = export(pruned, x_test.shape[1], workdir / "pruned50_fp32.onnx")
    paths["pruned50_int8_dynamic"] = workdir / "pruned50_int8_dynamic.onnx"
    quantize_dynamic(pruned_fp32, paths["pruned50_int8_dynamic"], weight_type=QuantType.QInt8)

    variants = [measure("torch_eager_fp32", None, torch_predict, x_test, y_test, score)]
    for name, path in paths.items():
        sess = session(path)
        variants.append(measure(name, path, lambda x, s=sess: run(s, x), x_test, y_test, score))
    return variants, parity
