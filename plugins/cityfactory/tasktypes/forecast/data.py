"""Training data: the gold feature table split in time, and the model's input matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cityfactory.tasktypes.forecast.spec import DataSpec, SplitSpec


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


def one_hot(values: pd.Series, categories: list) -> np.ndarray:
    """One indicator column per category; a value outside them is all zeros."""
    index = pd.Index(categories)
    positions = index.get_indexer(values.to_numpy())
    block = np.zeros((len(values), len(categories)), dtype=np.float32)
    known = positions >= 0
    block[np.flatnonzero(known), positions[known]] = 1.0
    return block


def features(frame: pd.DataFrame, data: DataSpec) -> np.ndarray:
    """Raw (unscaled) model inputs in ``data.feature_names`` order; scaling lives in the model."""
    blocks = [frame[data.numeric].to_numpy(dtype=np.float32)]
    for column, encoding in data.one_hot.items():
        blocks.append(one_hot(frame[column], encoding.categories))
    blocks.append(frame[data.flags].to_numpy(dtype=np.float32).reshape(len(frame), -1))
    blocks.append(frame[data.window_extras].to_numpy(dtype=np.float32).reshape(len(frame), -1))
    return np.hstack(blocks)


def latest_rows(frame: pd.DataFrame, data: DataSpec, per_series: int) -> pd.DataFrame:
    """The most recent usable rows of every series (or of the one series), in (time, series) order."""
    usable = frame[frame[data.usable].astype(bool)].sort_values(
        [data.time_column, *([data.series] if data.series else [])], kind="stable")
    recent = usable.groupby(data.series, sort=False).tail(per_series) if data.series else usable.tail(per_series)
    return recent
