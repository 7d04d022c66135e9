"""LightGBM -> ONNX (onnxmltools), and what compressing trees can mean, measured.

The converted ensemble (``ai.onnx.ml`` TreeEnsembleRegressor) predicts the change; two nodes add
the residual input back, so the file keeps the edge contract (``features`` rows in, ``prediction``
out). int8 quantization does not apply to trees: onnxruntime quantizes MatMul/Gemm weights, and
an ensemble has none (its thresholds and leaf values stay float). It is still built and measured,
so the table shows it. Shrinking trees means fewer of them: the first N boosting rounds, the later
rounds adding the least.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cityfactory.compression.onnx_export import (
    INPUT,
    OUTPUT,
    check_parity,
    run,
    session,
)
from cityfactory.compression.variants import Variant, measure
from cityfactory.tasktypes.forecast.metrics import edge_scores

ROUNDS_KEPT = (0.9, 0.75, 0.5)


def export(booster, residual_index: int, n_features: int, path: Path, rounds: int | None = None) -> Path:
    import lightgbm as lgb
    import onnx
    import onnxmltools
    from onnx import TensorProto, helper
    from onnxmltools.convert.common.data_types import FloatTensorType

    if rounds is not None:
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=rounds))
    model = onnxmltools.convert_lightgbm(booster, initial_types=[(INPUT, FloatTensorType([None, n_features]))],
                                         target_opset=15, zipmap=False)  # the highest onnxmltools 1.16 supports
    graph = model.graph
    change = graph.output[0].name
    graph.initializer.extend([helper.make_tensor("residual_index", TensorProto.INT64, [1], [residual_index]),
                              helper.make_tensor("flat", TensorProto.INT64, [1], [-1])])
    graph.node.extend([
        helper.make_node("Gather", [INPUT, "residual_index"], ["residual"], axis=1),
        helper.make_node("Add", [change, "residual"], ["level"]),
        helper.make_node("Reshape", ["level", "flat"], [OUTPUT]),
    ])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [None]))
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def build_and_measure(forecaster, n_features: int, x_test: np.ndarray, y_test: np.ndarray, workdir: Path,
                      parity_tolerance: float) -> tuple[list[Variant], float]:
    """fp32, int8 dynamic (measured: no effect) and the first 90/75/50 % of the rounds, side by side."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    booster, residual = forecaster.model, forecaster.residual_index
    rounds = forecaster.iterations or booster.current_iteration()
    fp32 = export(booster, residual, n_features, workdir / "fp32.onnx", rounds)
    parity = check_parity(run(fp32, x_test), forecaster.predict_array(x_test), parity_tolerance)
    paths = {"onnx_fp32": fp32, "int8_dynamic": workdir / "int8_dynamic.onnx"}
    quantize_dynamic(fp32, paths["int8_dynamic"], weight_type=QuantType.QInt8)
    for share in ROUNDS_KEPT:
        name = f"trees_first_{round(share * 100)}pct"
        paths[name] = export(booster, residual, n_features, workdir / f"{name}.onnx", max(1, int(rounds * share)))
    variants = [measure("lightgbm_native", None, forecaster.predict_array, x_test, y_test, edge_scores)]
    for name, path in paths.items():
        sess = session(path)
        variants.append(measure(name, path, lambda x, s=sess: run(s, x), x_test, y_test, edge_scores))
    return variants, parity
