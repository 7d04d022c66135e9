"""A sensor's level shift, caught within a night or two: the Page-Hinkley test (river's) over the
hourly residuals of the target against the task type's seasonal reference, standardized by the
residuals of the weeks the champion was trained on (median and MAD: the residuals are heavy-tailed,
one odd hour can be 80 times its reference; standardized values are clipped at ``CLIP``).

A model that reads the last hour follows a level shift at once, so its live error barely
moves and drift grows slowly; the target against the same hour a week before drops at once. The
days the shift covers are *faulty*: kept in ``monitoring/<scenario>/faulty_days.json`` and left
out of every later training.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from cityfactory.storage.lake import Lake, join_key

REFERENCE_DAYS = 28  # the champion's last weeks of training data: what "normal" residuals look like
CLIP = 5.0  # standard deviations: one hour never weighs more


@dataclass(frozen=True)
class LevelShift:
    detected_on: str | None = None  # the day whose rows set the alarm off
    faulty_days: list[str] = field(default_factory=list)  # from the shift's onset, while it lasts
    change: float | None = None  # the faulty days' mean residual (e.g. -0.35: 35 % below the reference)

    def as_dict(self) -> dict:
        return asdict(self)


def detect(reference: np.ndarray, recent: pd.DataFrame, threshold: float, delta: float) -> LevelShift:
    """``reference``: residuals of normal weeks; ``recent``: ``day`` and ``residual`` per hour, in
    time order. Page-Hinkley over the standardized residuals (the reference first, so the test
    knows normal); at an alarm, the faulty days run from the first day of the alarm's side (each
    day's mean beyond ``delta`` standard deviations) to the last such day in a row."""
    from river.drift import PageHinkley

    reference = reference[np.isfinite(reference)]
    recent = recent[np.isfinite(recent["residual"])]
    if len(reference) < 24 or recent.empty:
        return LevelShift()
    center = float(np.median(reference))
    scale = 1.4826 * float(np.median(np.abs(reference - center))) or float(np.std(reference)) or 1.0
    test = PageHinkley(min_instances=len(reference), delta=delta, threshold=threshold)
    for value in np.clip((reference - center) / scale, -CLIP, CLIP):
        test.update(float(value))
    standardized = np.clip((recent["residual"].to_numpy() - center) / scale, -CLIP, CLIP)
    alarm = None
    for position, value in enumerate(standardized):
        test.update(float(value))
        if test.drift_detected:
            alarm = position
            break
    if alarm is None:
        return LevelShift()
    days = recent["day"].to_numpy()
    by_day = pd.Series(standardized).groupby(days, sort=True).mean()
    side = np.sign(by_day[days[alarm]])
    beyond = [day for day, mean in by_day.items() if np.sign(mean) == side and abs(mean) > delta]
    detected = days[alarm]
    onset = detected
    for day in reversed([d for d in by_day.index if d < detected]):  # back to where it began
        if day not in beyond:
            break
        onset = day
    faulty = []
    for day in (d for d in by_day.index if d >= onset):  # forward while it lasts
        if day not in beyond:
            break
        faulty.append(str(day))
    change = float(recent["residual"][np.isin(days.astype(str), faulty)].mean()) if faulty else None
    return LevelShift(str(detected), faulty, change)


def _key(scenario: str) -> str:
    return join_key("monitoring", scenario, "faulty_days.json")


def faulty_days(lake: Lake, scenario: str) -> dict[str, dict]:
    """Every day flagged so far: day -> what flagged it."""
    key = _key(scenario)
    return json.loads(lake.get_bytes(key)) if lake.exists(key) else {}


def record(lake: Lake, scenario: str, shift: LevelShift, run_id: str) -> dict[str, dict]:
    """Adds the shift's days to the scenario's faulty days (kept: a later retraining leaves them out
    too); all of them, or nothing when this shift has none (a quiet night reads nothing)."""
    if not shift.faulty_days:
        return {}
    known = faulty_days(lake, scenario)
    for day in shift.faulty_days:
        known.setdefault(day, {"detected_on": shift.detected_on, "change": shift.change, "run_id": run_id})
    lake.put_bytes(_key(scenario), json.dumps(dict(sorted(known.items()))).encode())
    return known


def excluded_digest(days: list[str]) -> str:
    """A registry tag naming the days a training left out: "none", or their count and digest."""
    import hashlib

    return f"{len(days)} days, sha256 {hashlib.sha256(','.join(days).encode()).hexdigest()[:12]}" if days else "none"


def without_faulty_days(frame: pd.DataFrame, time_column: str, zone: str, faulty: dict[str, dict]) -> pd.DataFrame:
    """The rows whose time falls on none of the faulty days (in the scenario's zone)."""
    if not faulty or frame.empty:
        return frame
    local = pd.to_datetime(frame[time_column], utc=True).dt.tz_convert(zone).dt.date
    return frame[~local.isin({dt.date.fromisoformat(d) for d in faulty}).to_numpy()]
