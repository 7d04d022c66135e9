"""An image classifier at the edge: its variants (ONNX fp32 and int8 static QDQ, per channel,
calibrated on a class-balanced set of training images stored with the model), its contract
(images in, preprocessing declared, class probabilities out), the labelled images a rollout
bakes on, and the requests a camera sends."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from cityfactory.compression import preprocessing
from cityfactory.compression.onnx_export import (
    INPUT,
    OUTPUT,
    check_parity,
    export,
    run,
    session,
)
from cityfactory.compression.variants import Variant, measure
from cityfactory.tasktypes.base import Examples
from cityfactory.tasktypes.image_classification.metrics import class_scores, scores
from cityfactory.tasktypes.image_classification.spec import ImageClassificationSpec

LATENCY_REPEATS = (200, 5)  # batch 1, batch 256: a CNN's batch of 256 takes a good part of a second


def calibration_set(spec: ImageClassificationSpec, examples: Examples) -> tuple[np.ndarray, dict]:
    """``calibration.per_class`` training images of every class, the first by content hash (so the
    set is the same whenever the data is), and its fingerprint: the sha256 of their sorted ids."""
    d = spec.data
    ids = examples.train["sha256"].to_numpy() if "sha256" in examples.train else examples.train[d.image_key].to_numpy()
    chosen = []
    for index in range(len(d.classes)):
        members = np.flatnonzero(examples.y_train == index)
        chosen += sorted(members, key=lambda i: ids[i])[: spec.calibration.per_class]
    chosen = np.asarray(sorted(chosen, key=lambda i: ids[i]), dtype=np.int64)
    images = sorted(str(ids[i]) for i in chosen)
    fingerprint = hashlib.sha256("\n".join(images).encode()).hexdigest()
    counts = {d.classes[k]: int((examples.y_train[chosen] == k).sum()) for k in range(len(d.classes))}
    return chosen, {"calibration": {"fingerprint": fingerprint, "images": images, "per_class": counts,
                                    "method": "int8 static QDQ, per-channel weights, MinMax calibration"}}


class _Calibration:
    def __init__(self, images: np.ndarray, batch: int = 16):
        self.batches = iter(images[i : i + batch] for i in range(0, len(images), batch))

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {INPUT: batch.astype(np.float32)}


def quality(spec: ImageClassificationSpec):
    classes = spec.data.classes

    def score(actual: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
        found = {k: 100 * v for k, v in scores(actual, probabilities, len(classes)).items()}  # in points
        per = class_scores(actual, probabilities, classes)
        return {**found, **{f"recall_{name}": 100 * per[name]["recall"] for name in classes}}

    return score


def compress(spec: ImageClassificationSpec, classifier, examples: Examples, workdir: Path,
             parity_tolerance: float) -> tuple[list[Variant], float]:
    """torch eager, ONNX fp32 and int8 static QDQ, each measured on the test images (accuracy,
    macro-F1, each class's recall, in points) and for latency at batch 1 and 256."""
    import torch
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    torch.set_num_threads(1)
    model = classifier.model.eval()
    x_test, y_test = examples.x_test, examples.y_test

    def torch_predict(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    fp32 = export(model, x_test.shape[1:], workdir / "fp32.onnx")
    parity = check_parity(run(fp32, x_test[:64]), torch_predict(x_test[:64]), parity_tolerance)
    prepared = workdir / "fp32-prepared.onnx"
    quant_pre_process(str(fp32), str(prepared))
    chosen, _ = calibration_set(spec, examples)
    int8 = workdir / "int8_static_qdq.onnx"
    quantize_static(prepared, int8, _Calibration(examples.x_train[chosen]), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    reduce_range=True,  # 7-bit weights: x86 CPUs without VNNI saturate u8 x s8 products
                    calibrate_method=CalibrationMethod.MinMax)
    score = quality(spec)
    variants = [measure("torch_eager_fp32", None, torch_predict, x_test, y_test, score, LATENCY_REPEATS)]
    for name, path in {"onnx_fp32": fp32, "int8_static_qdq": int8}.items():
        sess = session(path)
        variants.append(measure(name, path, lambda x, s=sess: run(s, x), x_test, y_test, score, LATENCY_REPEATS))
    return variants, parity


def contract(spec: ImageClassificationSpec, classifier) -> dict:
    d = spec.data
    return {
        "inputs": [{"name": INPUT, "shape": [-1, d.channels, d.size, d.size], "dtype": "float32"}],
        "outputs": [{"name": OUTPUT, "shape": [-1, len(d.classes)], "dtype": "float32", "classes": d.classes,
                     "label": "class probabilities", "target": d.label, "unit": "probability"}],
        "preprocessing": preprocessing.contract(d.mode, d.size),
    }


def _png(key: str, lake) -> str:
    return base64.b64encode(lake.get_bytes(key)).decode()


def bake_rows(spec: ImageClassificationSpec, frame: pd.DataFrame, per_group: int) -> dict:
    """The latest labelled images of every camera, as base64 PNG, with their class indices."""
    from cityfactory.storage.lake import open_lake

    d = spec.data
    usable = frame[frame[d.usable].astype(bool)].sort_values([d.time_column, d.image_key], kind="stable")
    recent = usable.groupby(d.series, sort=False).tail(per_group) if d.series else usable.tail(per_group)
    lake = open_lake()
    classes = pd.Index(d.classes)
    return {"images": [_png(k, lake) for k in recent[d.image_key]],
            "actuals": classes.get_indexer(recent[d.label]).tolist(),
            "from": str(recent[d.time_column].min()), "to": str(recent[d.time_column].max())}


def bake_request(bake: dict, start: int, stop: int) -> dict:
    """Bake images start..stop as one multipart request, purpose ``bake``."""
    files = [("image", (f"bake-{i}.png", base64.b64decode(bake["images"][i]), "image/png"))
             for i in range(start, min(stop, len(bake["images"])))]
    return {"files": files, "data": {"purpose": "bake"}}


def error_rate(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Share of bake images whose most probable class is not the inspector's."""
    return float(np.mean(np.asarray(predicted).argmax(axis=1) != np.asarray(actual).astype(np.int64)))


def requests(spec: ImageClassificationSpec, frame: pd.DataFrame, batch: int) -> Iterator[dict]:
    """Every image of the rows in capture order, per camera, ``batch`` at a time, as a camera
    sends them: multipart PNGs keyed by camera and capture time."""
    import json

    from cityfactory.storage.lake import open_lake

    d = spec.data
    lake = open_lake()
    frame = frame.sort_values([d.time_column, d.image_key], kind="stable")
    for series, rows in (frame.groupby(d.series) if d.series else [(None, frame)]):
        for offset in range(0, len(rows), batch):
            part = rows.iloc[offset : offset + batch]
            times = pd.to_datetime(part[d.time_column], utc=True)
            keys = [{"series": None if series is None else str(series), "predicted_for": t.isoformat()} for t in times]
            files = [("image", (f"{i}.png", lake.get_bytes(k), "image/png")) for i, k in enumerate(part[d.image_key])]
            yield {"series": None if series is None else str(series), "count": len(part),
                   "http": {"files": files, "data": {"keys": json.dumps(keys), "purpose": "serve"}}}
