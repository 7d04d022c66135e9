"""Whether a run retrains: the scenario's declared rules over the monitor's evidence and the
champion's registry tags. Pure, so every rule is unit-tested; the trigger form can force it."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from cityfactory.config.scenarios import RetrainWhen


class Reason(StrEnum):
    NO_CHAMPION = "no_champion"
    FORCED = "forced"
    FEATURES_CHANGED = "features_changed"
    SPEC_CHANGED = "spec_changed"
    CODE_CHANGED = "code_changed"
    LIVE_ERROR = "live_error"
    DRIFT = "drift"
    MODEL_AGE = "model_age"
    LEVEL_SHIFT = "level_shift"


@dataclass
class Evidence:
    """What the decision looks at."""

    choice: str                        # the form's "auto", "always" or "never"
    champion: str | None               # the champion version, if any
    champion_tags: dict[str, str]      # its registry tags
    current: dict[str, str]            # feature_definition ("" if not built), spec_digest, code_version now
    last_day: dt.date                  # the run's last day
    live_ratio: float | None = None    # the champion's live / offline metric, pooled over its latest days
    live_days: int = 0                 # how many evaluated days that pooled
    live_usual: float | None = None    # the ratio its test days' windows of as many days reached (the quantile)
    drifted: list[str] = field(default_factory=list)
    level_shift: dict = field(default_factory=dict)  # monitoring.level_shift.LevelShift, as a dict


@dataclass
class Decision:
    retrain: bool
    reasons: list[dict]
    summary: str

    def as_dict(self) -> dict:
        return asdict(self)


def _age_days(tags: dict[str, str], last_day: dt.date) -> int | None:
    trained_to = tags.get("features_to")
    return (last_day - dt.date.fromisoformat(trained_to)).days if trained_to else None


def decide(evidence: Evidence, rules: RetrainWhen) -> Decision:
    e, found = evidence, []

    def because(reason: Reason, text: str) -> None:
        found.append({"code": str(reason), "text": text})

    if e.champion is None:
        because(Reason.NO_CHAMPION, "there is no champion yet")
    else:
        tags = e.champion_tags
        if rules.on_feature_change and e.current["feature_definition"] and \
                tags.get("feature_definition") != e.current["feature_definition"]:
            because(Reason.FEATURES_CHANGED, f"the feature definition changed since version {e.champion} "
                                             f"({(tags.get('feature_definition') or 'unknown')[:12]} -> {e.current['feature_definition'][:12]})")
        if rules.on_feature_change and tags.get("spec_digest") != e.current["spec_digest"]:
            because(Reason.SPEC_CHANGED, f"the model spec changed since version {e.champion}")
        if rules.on_code_change and tags.get("code_version") != e.current["code_version"]:
            because(Reason.CODE_CHANGED, f"the code version changed ({tags.get('code_version')} -> {e.current['code_version']})")
        limit = max(1 + rules.live_error_margin, e.live_usual or 0)
        if e.live_days >= rules.live_error_days and e.live_ratio is not None and e.live_ratio > limit:
            usual = (f"; its test days' {rules.live_error_days}-day windows reached x{e.live_usual:.2f}"
                     if e.live_usual and e.live_usual > 1 + rules.live_error_margin else "")
            because(Reason.LIVE_ERROR, f"live error x{e.live_ratio:.2f} the offline estimate over the latest {e.live_days} "
                                       f"evaluated days (at most x{limit:.2f}{usual})")
        if len(e.drifted) >= rules.drifted_features:
            because(Reason.DRIFT, f"{len(e.drifted)} features drift ({', '.join(e.drifted[:6])}); "
                                  f"the rule is {rules.drifted_features}")
        shift = e.level_shift
        if rules.on_level_shift and shift.get("faulty_days"):
            because(Reason.LEVEL_SHIFT, f"a level shift of {shift['change']:+.0%} against the seasonal reference since "
                                        f"{shift['faulty_days'][0]} (caught on {shift['detected_on']}); its "
                                        f"{len(shift['faulty_days'])} day(s) are left out of training")
        age = _age_days(e.champion_tags, e.last_day)
        if rules.max_model_age_days and age is not None and age > rules.max_model_age_days:
            because(Reason.MODEL_AGE, f"version {e.champion}'s data ends {age} days before this run's last day "
                                      f"(at most {rules.max_model_age_days})")
    if e.choice == "always":
        return Decision(True, [{"code": str(Reason.FORCED), "text": "forced from the trigger form"}, *found],
                        "retrain: forced from the trigger form")
    if e.choice == "never":
        return Decision(False, found, "no retraining: the trigger form said never" +
                        (f" (the rules would have: {found[0]['text']})" if found else ""))
    if found:
        return Decision(True, found, "retrain: " + "; ".join(r["text"] for r in found))
    quiet = [f"champion {e.champion} holds"]
    if e.live_ratio is not None:
        usual = f" (its test days reached x{e.live_usual:.2f})" if e.live_usual else ""
        quiet.append(f"live/offline x{e.live_ratio:.2f} over {e.live_days} day(s){usual}")
    quiet.append(f"{len(e.drifted)} feature(s) drift")
    return Decision(False, [], "no retraining: " + ", ".join(quiet))
