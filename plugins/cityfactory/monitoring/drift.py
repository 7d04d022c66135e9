"""Data drift per feature: the population stability index (PSI) of a recent window against the
rows a model was trained on.

The reference profile is made once, when a version is trained (bin edges at the training rows'
quantiles, their shares, and a threshold per feature), and kept with the version in MLflow, so a
nightly check costs only the recent window. The threshold comes from the data: the PSI that 95 %
of the full same-length windows inside the training period stayed under (a seasonal feature such
as temperature moves a lot within a normal year; a week's lagged counts hardly do), and never
below the configured floor (0.1, the usual "some shift" mark). Missing values are a bin of their own.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

EPSILON = 1e-4  # a share of zero would make the index infinite


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares of ``values`` per bin (inner edges ``edges``), plus a last bin for missing values."""
    present = values[~np.isnan(values)]
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1).astype(float)
    counts = np.append(counts, np.isnan(values).sum())
    return counts / max(len(values), 1)


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """sum((current - reference) * ln(current / reference)) over the bins."""
    p, q = np.clip(reference, EPSILON, None), np.clip(current, EPSILON, None)
    return float(np.sum((q - p) * np.log(q / p)))


def reference_profile(frame: pd.DataFrame, features: list[str], time_column: str, window_days: int,
                      bins: int, min_psi: float) -> dict:
    """What the monitor needs of the training rows, per numeric feature."""
    times = pd.to_datetime(frame[time_column])
    window = ((times - times.min()).dt.days // window_days).to_numpy()
    sizes = np.bincount(window)
    full = np.flatnonzero(sizes >= 0.9 * sizes.max())  # windows not cut by a gap in the history
    profile = {}
    for name in features:
        values = frame[name].to_numpy(dtype=float)
        present = values[~np.isnan(values)]
        edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])) if len(present) else np.array([])
        shares = _shares(values, edges)
        inside = [psi(shares, _shares(values[window == w], edges)) for w in full]
        usual = float(np.quantile(inside, 0.95)) if inside else 0.0
        profile[name] = {"edges": edges.tolist(), "shares": shares.tolist(), "training_windows_q95": usual,
                         "threshold": max(min_psi, usual)}
    return {"window_days": window_days, "rows": len(frame), "full_windows": len(full), "features": profile}


def drift_table(profile: dict, recent: pd.DataFrame) -> list[dict]:
    """Each profiled feature's PSI on ``recent`` against its threshold, worst first."""
    rows = []
    for name, p in profile["features"].items():
        if name not in recent:
            continue
        value = psi(np.asarray(p["shares"]), _shares(recent[name].to_numpy(dtype=float), np.asarray(p["edges"])))
        rows.append({"feature": name, "psi": round(value, 4), "threshold": round(p["threshold"], 4),
                     "drifted": value > p["threshold"]})
    return sorted(rows, key=lambda r: r["psi"] / r["threshold"], reverse=True)
