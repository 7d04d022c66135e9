"""Maintenance logic, fast: drift (PSI and its data-derived thresholds), live accuracy, the
retraining decision (the collector's reading of a node's log segments: test_hostile_predictions)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from cityfactory.config.scenarios import RetrainWhen, get_scenario
from cityfactory.monitoring import live
from cityfactory.monitoring.decision import Evidence, Reason, decide
from cityfactory.monitoring.drift import drift_table, psi, reference_profile
from cityfactory.tasktypes import load_model_spec
from cityfactory.tasktypes.forecast import live as forecast_live
from cityfactory.tasktypes.forecast.task import ForecastTask

SPEC = load_model_spec(get_scenario("traffic_flow").model_spec)
RULES = RetrainWhen(live_error_margin=0.25, live_error_days=3, drifted_features=2, max_model_age_days=60)
NOW = {"feature_definition": "f1", "spec_digest": "s1", "code_version": "c1"}
TAGS = {"feature_definition": "f1", "spec_digest": "s1", "code_version": "c1", "features_to": "2026-11-01"}


def _hourly(days: int, seed: int = 0, start="2024-01-01") -> pd.DataFrame:
    """A year-like series: a daily cycle of counts and a seasonal temperature."""
    rng = np.random.default_rng(seed)
    times = pd.date_range(start, periods=days * 24, freq="h")
    hour, doy = times.hour.to_numpy(), times.dayofyear.to_numpy()
    counts = 2500 + 2000 * np.sin((hour - 6) / 24 * 2 * np.pi) + rng.normal(0, 200, len(times))
    temp = 10 + 15 * np.sin((doy - 100) / 365 * 2 * np.pi) + rng.normal(0, 2, len(times))
    return pd.DataFrame({"at": times, "count": counts, "temp": temp})


def test_psi_is_zero_for_the_same_shares_and_grows_with_the_shift():
    shares = np.array([0.25, 0.25, 0.25, 0.25, 0.0])
    assert psi(shares, shares) == pytest.approx(0.0)
    assert psi(shares, np.array([0.4, 0.3, 0.2, 0.1, 0.0])) < psi(shares, np.array([0.7, 0.2, 0.1, 0.0, 0.0]))


def test_thresholds_come_from_the_data_a_seasonal_feature_tolerates_its_season_a_level_shift_is_caught():
    year = _hourly(365)
    profile = reference_profile(year, ["count", "temp"], "at", 7, 10, 0.1)
    features = profile["features"]
    # a week of temperature is narrow against a year of it: its threshold is far above the floor
    assert features["temp"]["threshold"] > 1.0 > features["count"]["threshold"] >= 0.1
    normal_week = _hourly(7, seed=1, start="2025-03-01")
    assert not any(r["drifted"] for r in drift_table(profile, normal_week))
    biased = normal_week.assign(count=normal_week["count"] * 1.6)  # a sensor reading 60 % high
    table = {r["feature"]: r for r in drift_table(profile, biased)}
    assert table["count"]["drifted"] and not table["temp"]["drifted"]
    dead = normal_week.assign(count=np.nan)  # a dead sensor: missing values are a bin of their own
    assert {r["feature"]: r for r in drift_table(profile, dead)}["count"]["drifted"]


def _served(version="3", shift=0.0, series=None):
    hours = pd.date_range("2026-11-20", periods=24, freq="h", tz="UTC")
    return pd.DataFrame({"series": series, "predicted_for": hours, "node": ["a", "b"] * 12, "model_version": version,
                         "prediction": 1000.0 + shift, "purpose": "serve"})


def _actuals(missing_last: int = 0):
    hours = pd.date_range("2026-11-20", periods=24, freq="h")
    actual = np.full(24, 1100.0)
    if missing_last:
        actual[-missing_last:] = np.nan
    return pd.DataFrame({"target_at": hours, "target_volume": actual, "volume_lag_1h": 900.0, "volume_lag_168h": 1050.0})


def test_a_day_is_scored_per_version_and_node_beside_offline_and_the_baselines_on_the_same_hours():
    served = pd.concat([_served(), _served().assign(purpose="bake")])  # health checks are not consumers
    day = forecast_live.evaluate_day("2026-11-20", live.served_rows(served), _actuals(missing_last=4), SPEC,
                            {"3": {"metrics": {"rmse": 50.0}}})
    assert day["served_rows"] == 24 and day["scored_rows"] == 20 and day["awaiting_actuals"] == 4
    [version] = day["versions"]
    assert version["live"] == pytest.approx(100.0) and version["ratio"] == pytest.approx(2.0)
    assert version["baselines"] == {"persistence": pytest.approx(200.0), "same_hour_last_week": pytest.approx(50.0)}
    assert {n["node"]: n["rows"] for n in version["nodes"]} == {"a": 10, "b": 10}


def test_live_error_is_pooled_over_the_latest_days_of_the_version():
    day = {"metric": "rmse"}
    evaluations = [{**day, "day": f"2026-11-{d}", "versions": [{"version": "3", "rows": 24, "live": live_value, "offline": 100.0}]}
                   for d, live_value in ((10, 500.0), (11, 100.0), (12, 100.0), (13, 160.0))]
    ratio, days = live.pooled_ratio(evaluations, "3", 3, ForecastTask.metrics)
    assert days == 3 and ratio == pytest.approx(np.sqrt((100**2 + 100**2 + 160**2) / 3) / 100)  # the old 500 is out
    assert live.pooled_ratio(evaluations, "4", 3, ForecastTask.metrics) == (None, 0)


def test_the_usual_ratio_is_what_the_test_days_windows_reached():
    rmse = ForecastTask.metrics["rmse"]
    daily = [{"day": f"2026-01-{d:02d}", "value": value, "rows": 24}
             for d, value in enumerate([100.0] * 16 + [200.0, 200.0] + [100.0] * 2, start=1)]
    ratios = sorted(np.sqrt(np.mean(np.square(window))) / 100 for window in
                    (np.array([d["value"] for d in daily[i:i + 3]]) for i in range(len(daily) - 2)))
    assert live.usual_ratio(daily[::-1], 3, rmse, 100.0, 0.95) == pytest.approx(ratios[-1])  # 18 windows: the highest
    assert live.usual_ratio(daily, 3, rmse, 100.0, 0.5) == pytest.approx(1.0)
    assert live.usual_ratio(daily[:2], 3, rmse, 100.0, 0.95) is None and live.usual_ratio(daily, 3, rmse, None, 0.95) is None


def test_a_week_as_hard_as_the_test_days_usually_were_is_no_reason_to_retrain():
    calm = decide(_evidence(live_ratio=1.3, live_days=3, live_usual=1.4), RULES)
    assert not calm.retrain and "its test days reached x1.40" in calm.summary
    worse = decide(_evidence(live_ratio=1.5, live_days=3, live_usual=1.4), RULES)
    assert worse.retrain and "at most x1.40; its test days' 3-day windows reached x1.40" in worse.reasons[0]["text"]
    steady = decide(_evidence(live_ratio=1.3, live_days=3, live_usual=1.05), RULES)  # the margin still holds
    assert steady.retrain and "(at most x1.25)" in steady.reasons[0]["text"]


def _evidence(**changes) -> Evidence:
    return Evidence(**{"choice": "auto", "champion": "3", "champion_tags": TAGS, "current": NOW,
                       "last_day": dt.date(2026, 11, 20), **changes})


@pytest.mark.parametrize(("changes", "reason"), [
    ({"champion": None, "champion_tags": {}}, Reason.NO_CHAMPION),
    ({"current": {**NOW, "feature_definition": "f2"}}, Reason.FEATURES_CHANGED),
    ({"current": {**NOW, "spec_digest": "s2"}}, Reason.SPEC_CHANGED),
    ({"current": {**NOW, "code_version": "c2"}}, Reason.CODE_CHANGED),
    ({"live_ratio": 1.4, "live_days": 3}, Reason.LIVE_ERROR),
    ({"drifted": ["a", "b"]}, Reason.DRIFT),
    ({"last_day": dt.date(2027, 1, 15)}, Reason.MODEL_AGE),
])
def test_each_rule_retrains_with_its_reason(changes, reason):
    decision = decide(_evidence(**changes), RULES)
    assert decision.retrain and [r["code"] for r in decision.reasons] == [reason]


@pytest.mark.parametrize("changes", [
    {}, {"live_ratio": 1.4, "live_days": 2},  # too few days to judge
    {"live_ratio": 1.2, "live_days": 3}, {"drifted": ["a"]}, {"last_day": dt.date(2026, 12, 31)},
    {"current": {**NOW, "feature_definition": ""}},  # the mart was not built in this run: no claim
])
def test_a_quiet_champion_is_kept_and_the_report_says_why(changes):
    decision = decide(_evidence(**changes), RULES)
    assert not decision.retrain and decision.summary.startswith("no retraining: champion 3 holds")


def test_the_form_overrules_the_rules_both_ways():
    assert decide(_evidence(choice="always"), RULES).reasons[0]["code"] == Reason.FORCED
    kept = decide(_evidence(choice="never", drifted=["a", "b", "c"]), RULES)
    assert not kept.retrain and "the rules would have" in kept.summary and kept.reasons


def test_the_rules_can_be_switched_off():
    rules = RULES.model_copy(update={"on_code_change": False, "max_model_age_days": None})
    assert not decide(_evidence(current={**NOW, "code_version": "c2"}, last_day=dt.date(2030, 1, 1)), rules).retrain
