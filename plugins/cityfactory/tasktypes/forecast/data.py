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
    folds: list[tuple[int, int]]  # the earlier validation windows in train + validation rows (Examples.folds)
    fold_spans: list[str]


def split_by_time(frame: pd.DataFrame, data: DataSpec, split: SplitSpec) -> Split:
    """Chronological split anchored at the end of the history (so time shifting does not move it):
    test = the last ``test_days`` days, validation = the ``validation_days`` before, train = earlier;
    with ``folds`` > 1, the windows of ``validation_days`` before that are earlier origins, each
    trained on the rows before it. Only usable rows (target and inputs present) are kept."""
    times = frame[data.time_column]
    end = times.max().normalize() + pd.Timedelta(days=1)
    test_start = end - pd.Timedelta(days=split.test_days)
    window = pd.Timedelta(days=split.validation_days)
    validation_start = test_start - window
    usable = frame[frame[data.usable].astype(bool)].sort_values(data.time_column, kind="stable")
    t = usable[data.time_column]
    seen = t[t < test_start].to_numpy()
    starts = [validation_start - k * window for k in range(1, split.folds)]
    folds = [(int(seen.searchsorted(start.to_datetime64())), int(seen.searchsorted((start + window).to_datetime64())))
             for start in starts]
    parts = Split(usable[t < validation_start], usable[(t >= validation_start) & (t < test_start)],
                  usable[t >= test_start], test_start, end, folds,
                  [f"{start.date()} .. {(start + window - pd.Timedelta(days=1)).date()}" for start in starts])
    for name in ("train", "validation", "test"):
        if getattr(parts, name).empty:
            raise ValueError(f"the {name} split is empty: history {times.min()} .. {times.max()} is too short for {split}")
    for (train_end, validation_end), span in zip(folds, parts.fold_spans):
        if train_end == 0 or validation_end == train_end:
            raise ValueError(f"the validation fold {span} or the rows before it are empty: history {times.min()} .. "
                             f"{times.max()} is too short for {split.folds} folds of {split.validation_days} days")
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
