"""Pick the smallest compressed variant whose accuracy loss is within the scenario's budget."""

from __future__ import annotations

from cityfactory.compression.variants import Variant


class CompressionGateError(RuntimeError):
    """No variant fits the budget; the message carries the table."""


def table(variants: list[Variant]) -> str:
    reference = next(v for v in variants if v.name == "onnx_fp32")
    eager = variants[0]  # the model in its own framework (torch eager, LightGBM native)
    lines = [(f"{'variant':<26} {'bytes':>8} {'x smaller':>9} {'MAE':>7} {'dMAE%':>6} {'RMSE':>7} "
              f"{'b1 med ms':>9} {'b1 p95':>7} {'vs eager':>8} {'b256 med':>8} {'b256 p95':>8}")]
    for v in variants:
        smaller = f"{reference.size_bytes / v.size_bytes:.2f}" if v.size_bytes else "-"
        lines.append(
            f"{v.name:<26} {v.size_bytes:>8} {smaller:>9} {v.mae:>7.2f} {100 * (v.mae / reference.mae - 1):>6.2f} "
            f"{v.rmse:>7.2f} {v.b1_median_ms:>9.4f} {v.b1_p95_ms:>7.4f} {v.b1_median_ms / eager.b1_median_ms:>8.2f} "
            f"{v.b256_median_ms:>8.3f} {v.b256_p95_ms:>8.3f}"
        )
    return "\n".join(lines)


def choose(variants: list[Variant], max_mae_increase: float) -> Variant:
    """Among the compressed variants (smaller than the fp32 reference), the smallest that fits."""
    reference = next(v for v in variants if v.name == "onnx_fp32")
    compressed = [v for v in variants if v.size_bytes and v.size_bytes < reference.size_bytes]
    fitting = [v for v in compressed if v.mae <= reference.mae * (1 + max_mae_increase)]
    if not fitting:
        raise CompressionGateError(
            f"no variant keeps test MAE within {max_mae_increase:.2%} of fp32 ({reference.mae:.2f}):\n{table(variants)}"
        )
    return min(fitting, key=lambda v: (v.size_bytes, v.mae))
