"""Training data: the gold feature table split in time, and the model's input matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cityfactory.training.spec import DataSpec, SplitSpec


@dataclass
class Split:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    test_start: pd.Timestamp
    end: pd.Timestamp


def split_by_time(frame: pd.DataFrame, data: DataSpec, split: SplitSpec) -> Split:
    """Chronological split anchored at the end of the history (so time shifting does not move it):
    test = the last ``test_days`` days, validation = the ``validation_days`` before, train = earlier.
    Only usable rows (target and inputs present) are kept."""
    times = frame[data.time_column]
    end = times.max().normalize() + pd.Timedelta(days=1)
    test_start = end - pd.Timedelta(days=split.test_days)
    validation_start = test_start - pd.Timedelta(days=split.validation_days)
    usable = frame[frame[data.usable].astype(bool)]
    t = usable[data.time_column]
    parts = Split(
        usable[t < validation_start], usable[(t >= validation_start) & (t < test_start)], usable[t >= test_start],
        test_start, end,
    )
    for name in ("train", "validation", "test"):
        if getattr(parts, name).empty:
            raise ValueError(f"the {name} split is empty: history {times.min()} .. {times.max()} is too short for {split}")
    return parts


def features(frame: pd.DataFrame, data: DataSpec) -> np.ndarray:
    """Raw (unscaled) model inputs in ``data.feature_names`` order; scaling lives in the model."""
    blocks = [frame[data.numeric].to_numpy(dtype=np.float32)]
    for column, (first, last) in data.one_hot.items():
        values = frame[column].to_numpy(dtype=np.int64) - first
        block = np.zeros((len(frame), last - first + 1), dtype=np.float32)
        block[np.arange(len(frame)), values] = 1.0
        blocks.append(block)
    blocks.append(frame[data.flags].to_numpy(dtype=np.float32).reshape(len(frame), -1))
    return np.hstack(blocks)
