"""A forecaster's registry gate: beat the linear baseline by a margin, persistence on (nearly)
every series, and stay within a tolerance of the champion on the same rows."""

from __future__ import annotations

from cityfactory.numbers import side_by_side
from cityfactory.tasktypes.base import GateDecision
from cityfactory.training.registry import CHALLENGER


def decide(metric: str, candidate: float, linear: float, champion: float | None,
           min_improvement: float, tolerance: float, worse_series: list[str] | None = None,
           series_count: int = 0, max_worse_share: float = 0.0,
           without_champion: str = "no champion yet") -> GateDecision:
    """``challenger`` if the candidate beats the linear baseline by the margin, is worse than
    persistence on no more than ``max_worse_share`` of the series, and is not worse than the
    champion (scored on the same rows) by more than the tolerance."""
    worse_series = worse_series or []
    if series_count and len(worse_series) > max_worse_share * series_count:
        return GateDecision(None, f"test {metric} is worse than persistence on {len(worse_series)} of {series_count} "
                                  f"series ({', '.join(worse_series[:5])}); at most {max_worse_share:.0%} allowed")
    needed = linear * (1 - min_improvement)
    model, base, bar, best = side_by_side([candidate, linear, needed, linear if champion is None else champion])
    if candidate > needed:
        return GateDecision(None, f"test {metric} {model} does not beat the linear baseline {base} by "
                                  f"{min_improvement:.0%} (needs <= {bar})")
    if champion is not None and candidate > champion * (1 + tolerance):
        return GateDecision(None, f"test {metric} {model} is worse than the champion's {best} "
                                  f"on the same rows by more than {tolerance:.0%}")
    against = without_champion if champion is None else f"champion {best}"
    return GateDecision(CHALLENGER, f"test {metric} {model} beats the linear baseline {base} "
                                    f"by {1 - candidate / linear:.1%}; {against}")
