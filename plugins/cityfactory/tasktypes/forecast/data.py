"""Training data: the gold feature table split in time, and the model's input matrix."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from cityfactory.tasktypes.base import Examples, digest
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
    gaps: pd.DataFrame  # before the test rows, with target and latest value but a missing input (time order)
    gap_ends: list[int]  # how many of them precede the validation window, then each earlier window


def with_gaps(frame: pd.DataFrame, data: DataSpec, latest: str | None) -> pd.Series:
    """Rows that are not usable but have the target and the ``latest`` value (the input a
    forecast is the change from), when ``data.train_with_gaps`` asks for them."""
    if not data.train_with_gaps or latest is None:
        return pd.Series(False, index=frame.index)
    return ~frame[data.usable].astype(bool) & frame[data.target].notna() & frame[latest].notna()


def split_by_time(frame: pd.DataFrame, data: DataSpec, split: SplitSpec, latest: str | None = None) -> Split:
    """Chronological split anchored at the end of the history (so time shifting does not move it):
    test = the last ``test_days`` days, validation = the ``validation_days`` before, train = earlier;
    with ``folds`` > 1, the windows of ``validation_days`` before that are earlier origins, each
    trained on the rows before it. Only usable rows (target and inputs present) are kept, apart
    from the training rows with gaps (``with_gaps``), kept aside."""
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
    gappy = frame[with_gaps(frame, data, latest)].sort_values(data.time_column, kind="stable")
    gappy = gappy[gappy[data.time_column] < test_start]
    gap_times = gappy[data.time_column].to_numpy()
    parts = Split(usable[t < validation_start], usable[(t >= validation_start) & (t < test_start)],
                  usable[t >= test_start], test_start, end, folds,
                  [f"{start.date()} .. {(start + window - pd.Timedelta(days=1)).date()}" for start in starts],
                  gappy, [int(gap_times.searchsorted(s.to_datetime64())) for s in [validation_start, *starts]])
    for name in ("train", "validation", "test"):
        if getattr(parts, name).empty:
            raise ValueError(f"the {name} split is empty: history {times.min()} .. {times.max()} is too short for {split}")
    for (train_end, validation_end), span in zip(folds, parts.fold_spans):
        if train_end == 0 or validation_end == train_end:
            raise ValueError(f"the validation fold {span} or the rows before it are empty: history {times.min()} .. "
                             f"{times.max()} is too short for {split.folds} folds of {split.validation_days} days")
    return parts


@dataclass
class ForecastExamples(Examples):
    """Examples with the training rows that have gaps (``with_gaps``), for the families that
    tolerate missing inputs; each training window takes those before it, like its usable rows."""

    x_gaps: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.float32))
    y_gaps: np.ndarray = field(default_factory=lambda: np.empty(0))
    gap_ends: list[int] = field(default_factory=list)  # this training window's, then each earlier fold's

    def training_rows(self, with_gaps: bool) -> tuple[np.ndarray, np.ndarray]:
        """The training rows, and before them those with gaps when the family tolerates them."""
        if not with_gaps or not self.gap_ends or not self.gap_ends[0]:
            return self.x_train, self.y_train
        end = self.gap_ends[0]
        return np.concatenate([self.x_gaps[:end], self.x_train]), np.concatenate([self.y_gaps[:end], self.y_train])

    def seen_rows(self, with_gaps: bool) -> tuple[np.ndarray, np.ndarray]:
        """What a refit trains on: training and validation rows, and every row with gaps before them."""
        if not with_gaps or not len(self.y_gaps):
            return self.x_seen, self.y_seen
        return np.concatenate([self.x_gaps, self.x_seen]), np.concatenate([self.y_gaps, self.y_seen])

    def fingerprint(self) -> dict[str, str]:
        """The rows with gaps are part of what was seen (none: the same hash as without them)."""
        if not len(self.y_gaps):
            return super().fingerprint()
        return {**super().fingerprint(), "seen": digest(self.x_seen, self.y_seen, self.x_gaps, self.y_gaps)}

    def earlier_folds(self) -> Iterator[ForecastExamples]:
        for fold, end in zip(super().earlier_folds(), self.gap_ends[1:]):
            yield replace(fold, gap_ends=[end])


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
    blocks = [frame[data.numeric].to_numpy(dtype=np.float32, na_value=np.nan)]
    for column, encoding in data.one_hot.items():
        blocks.append(one_hot(frame[column], encoding.categories))
    blocks.append(frame[data.flags].to_numpy(dtype=np.float32).reshape(len(frame), len(data.flags)))
    blocks.append(frame[data.window_extras].to_numpy(dtype=np.float32, na_value=np.nan)
                  .reshape(len(frame), len(data.window_extras)))
    return np.hstack(blocks)


def latest_rows(frame: pd.DataFrame, data: DataSpec, per_series: int) -> pd.DataFrame:
    """The most recent usable rows of every series (or of the one series), in (time, series) order."""
    usable = frame[frame[data.usable].astype(bool)].sort_values(
        [data.time_column, *([data.series] if data.series else [])], kind="stable")
    recent = usable.groupby(data.series, sort=False).tail(per_series) if data.series else usable.tail(per_series)
    return recent
