"""Pick the smallest compressed variant whose loss of quality is within the scenario's budget.

Quality is measured by the task type's compression metric (which direction is better is part of
it): a variant may lose at most ``max_loss`` of the fp32 reference's value.
"""

from __future__ import annotations

from cityfactory.compression.variants import Variant


class CompressionGateError(RuntimeError):
    """No variant fits the budget; the message carries the table."""


def loss(value: float, reference: float, greater_is_better: bool) -> float:
    """How much worse ``value`` is than ``reference``, as a share of it (negative: better)."""
    return (reference - value) / reference if greater_is_better else value / reference - 1


def table(variants: list[Variant], metric: str, greater_is_better: bool = False) -> str:
    reference = next(v for v in variants if v.name == "onnx_fp32")
    eager = variants[0]  # the model in its own framework (torch eager, LightGBM native)
    others = [k for k in reference.quality if k != metric]
    label = metric.upper()
    lines = [(f"{'variant':<26} {'bytes':>8} {'x smaller':>9} {label:>7} {'d' + label + '%':>6} "
              + "".join(f"{k.upper():>8}" for k in others)
              + f" {'b1 med ms':>9} {'b1 p95':>7} {'vs eager':>8} {'b256 med':>8} {'b256 p95':>8}")]
    for v in variants:
        smaller = f"{reference.size_bytes / v.size_bytes:.2f}" if v.size_bytes else "-"
        worse = 100 * loss(v.quality[metric], reference.quality[metric], greater_is_better)
        lines.append(
            f"{v.name:<26} {v.size_bytes:>8} {smaller:>9} {v.quality[metric]:>7.2f} {worse:>6.2f} "
            + "".join(f"{v.quality[k]:>8.2f}" for k in others)
            + f" {v.b1_median_ms:>9.4f} {v.b1_p95_ms:>7.4f} {v.b1_median_ms / eager.b1_median_ms:>8.2f} "
            f"{v.b256_median_ms:>8.3f} {v.b256_p95_ms:>8.3f}"
        )
    return "\n".join(lines)


def refusals(variants: list[Variant], metric: str, max_loss: float, greater_is_better: bool = False,
             also: tuple[str, ...] = (), must_be_faster: bool = False) -> dict[str, str]:
    """Why each compressed variant (smaller than the fp32 reference) may not ship, by name: a loss
    over budget on ``metric`` or on any of ``also`` (e.g. every class's recall), or, with
    ``must_be_faster``, a batch-1 median latency no better than fp32's. Fitting ones are absent."""
    reference = next(v for v in variants if v.name == "onnx_fp32")
    refused = {}
    for v in variants:
        if not v.size_bytes or v.size_bytes >= reference.size_bytes:
            continue
        over = [f"{k} {100 * loss(v.quality[k], reference.quality[k], greater_is_better):.2f} % worse"
                for k in (metric, *also) if loss(v.quality[k], reference.quality[k], greater_is_better) > max_loss]
        if over:
            refused[v.name] = f"{', '.join(over)} than fp32 (budget {max_loss:.2%})"
        elif must_be_faster and v.b1_median_ms >= reference.b1_median_ms:
            refused[v.name] = (f"not faster than fp32 at batch 1 ({v.b1_median_ms:.3f} ms vs "
                               f"{reference.b1_median_ms:.3f} ms)")
    return refused


def choose(variants: list[Variant], metric: str, max_loss: float, greater_is_better: bool = False, *,
           also: tuple[str, ...] = (), must_be_faster: bool = False, fallback: bool = False) -> Variant:
    """Among the compressed variants (smaller than the fp32 reference), the smallest that fits
    (see ``refusals``). If none does: the fp32 reference with ``fallback``, else an error."""
    reference = next(v for v in variants if v.name == "onnx_fp32")
    refused = refusals(variants, metric, max_loss, greater_is_better, also, must_be_faster)
    fitting = [v for v in variants if v.size_bytes and v.size_bytes < reference.size_bytes and v.name not in refused]
    if not fitting and fallback:
        return reference
    if not fitting:
        raise CompressionGateError(
            f"no variant keeps test {metric.upper()} within {max_loss:.2%} of fp32 "
            f"({reference.quality[metric]:.2f}):\n{table(variants, metric, greater_is_better)}"
        )
    return min(fitting, key=lambda v: (v.size_bytes, loss(v.quality[metric], reference.quality[metric], greater_is_better)))
