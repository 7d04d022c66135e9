"""The level-shift test: caught within two nights, quiet on noise and on one holiday, its days
named and left out of training."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from cityfactory.config.scenarios import LevelShiftTest, RetrainWhen
from cityfactory.monitoring import level_shift
from cityfactory.monitoring.decision import Evidence, decide
from cityfactory.storage.lake import LocalLake

TEST = LevelShiftTest()
FIRST = dt.date(2026, 11, 1)


def _residuals(rng, days: int) -> np.ndarray:
    """Hourly residuals against last week as traffic has them: mostly within +-10 %, heavy tails."""
    return 0.09 * rng.standard_t(3, size=24 * days)


def _recent(values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"day": [FIRST + dt.timedelta(days=i // 24) for i in range(len(values))], "residual": values})


@pytest.mark.parametrize("seed", range(5))
def test_a_35_percent_drop_is_caught_within_two_nights_from_its_first_day(seed):
    rng = np.random.default_rng(seed)
    recent = _residuals(rng, 10)
    recent[24 * 4:] -= 0.35  # from the fifth day on
    found = level_shift.detect(_residuals(rng, 28), _recent(recent), TEST.threshold, TEST.delta)
    onset = FIRST + dt.timedelta(days=4)
    assert found.detected_on in (str(onset), str(onset + dt.timedelta(days=1))), "the first or the second night"
    assert found.faulty_days[0] == str(onset) and found.faulty_days[-1] == str(FIRST + dt.timedelta(days=9))
    assert found.change == pytest.approx(-0.35, abs=0.05)


@pytest.mark.parametrize("seed", range(5))
def test_noise_and_one_holiday_raise_no_alarm(seed):
    rng = np.random.default_rng(seed)
    recent = _residuals(rng, 21)
    recent[24 * 10 : 24 * 11] -= 0.3  # a holiday: one day 30 % below the same day a week before
    assert level_shift.detect(_residuals(rng, 28), _recent(recent), TEST.threshold, TEST.delta) == level_shift.LevelShift()


def test_too_little_reference_decides_nothing():
    rng = np.random.default_rng(0)
    assert level_shift.detect(_residuals(rng, 0), _recent(_residuals(rng, 3) - 0.5), TEST.threshold,
                              TEST.delta) == level_shift.LevelShift()


def test_faulty_days_are_kept_and_their_rows_left_out(tmp_path):
    lake = LocalLake(tmp_path)
    shift = level_shift.LevelShift("2026-11-06", ["2026-11-05", "2026-11-06"], -0.35)
    level_shift.record(lake, "s", shift, "run-1")
    level_shift.record(lake, "s", level_shift.LevelShift(), "run-2")  # a quiet night forgets nothing
    known = level_shift.faulty_days(lake, "s")
    assert sorted(known) == ["2026-11-05", "2026-11-06"] and known["2026-11-05"]["run_id"] == "run-1"
    # rows at 23:30 local on the 4th and 00:30 local on the 5th (UTC-6): the day is the scenario's
    frame = pd.DataFrame({"t": pd.to_datetime(["2026-11-05T05:30Z", "2026-11-05T06:30Z", "2026-11-07T12:00Z"])})
    kept = level_shift.without_faulty_days(frame, "t", "America/Chicago", known)
    assert kept["t"].dt.day.tolist() == [5, 7]
    assert level_shift.excluded_digest([]) == "none" and level_shift.excluded_digest(sorted(known)).startswith("2 days")


def test_the_decision_retrains_on_a_level_shift_and_says_which_days():
    evidence = Evidence("auto", "3", {"spec_digest": "s", "code_version": "c", "feature_definition": "f",
                                      "features_to": "2026-11-01"},
                        {"spec_digest": "s", "code_version": "c", "feature_definition": "f"}, dt.date(2026, 11, 7),
                        level_shift={"detected_on": "2026-11-06", "faulty_days": ["2026-11-05", "2026-11-06"],
                                     "change": -0.35})
    decision = decide(evidence, RetrainWhen())
    assert decision.retrain and decision.reasons[0]["code"] == "level_shift"
    assert "-35% " in decision.reasons[0]["text"] and "since 2026-11-05" in decision.reasons[0]["text"]
    assert not decide(evidence, RetrainWhen(on_level_shift=False)).retrain
