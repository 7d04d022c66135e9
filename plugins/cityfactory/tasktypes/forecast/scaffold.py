"""A new scenario of next-hour predictions drafted from a CSV dataset's profile: scenario, model spec, suites
and dbt staging -> intermediate -> marts with docs and tests (``cli new-scenario``).

The draft forecasts one measured column per series and hour from its own lags (1-6 h, a day, a
week), the last day's level and spread, the other readings of the last hour and the calendar. It
runs as written on clean data; what only a human can know is marked "decide:" in the files.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from pathlib import Path
from string import Template

from cityfactory.profiling.drafts import Draft, DraftRequest, ScaffoldError
from cityfactory.profiling.tables import ColumnProfile, TableProfile

TEMPLATES = Path(__file__).parent / "templates"
LAGS = (1, 2, 3, 4, 5, 6, 24, 168)
MAX_NULL_FRACTION = 0.1  # a reading missing more often than this would empty is_complete: left out
MARGIN = 0.25  # bounds from the data, widened by this share of its range either way
# The names the draft gives the columns it makes (the templates spell them the same).
COMPOSED_TIME = "observed_at"  # a row's time composed from several columns, in bronze and staging
TARGET_TIME = "target_at"  # the hour a mart row is about
USABLE = "is_complete"  # a mart row a model may be trained and scored on
MADE_NAMES = (COMPOSED_TIME, TARGET_TIME, USABLE)


def snake(name: str) -> str:
    """A column name as a SQL identifier: 'Flow (veh/h)' -> 'flow_veh_h'."""
    text = re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_") or "column"
    return f"c_{text}" if text[0].isdigit() else text


def nice(value: float, up: bool) -> float:
    """``value`` rounded outwards to two significant digits of its own size."""
    if value == 0:
        return 0.0
    step = 10 ** (math.floor(math.log10(abs(value))) - 1)
    rounded = (math.ceil if up else math.floor)(value / step) * step
    return float(f"{rounded:.10g}")


def bounds(column: ColumnProfile) -> tuple[float, float]:
    """The data's range widened by ``MARGIN``; a quantity never seen below 0 stays at 0 or above."""
    spread = (column.max - column.min) or abs(column.max) or 1.0
    low = column.min - MARGIN * spread
    return (max(0.0, nice(low, up=False)) if column.min >= 0 else nice(low, up=False)), nice(column.max + MARGIN * spread, up=True)


def _number(value: float) -> str:
    return f"{int(value)}" if float(value).is_integer() else f"{value:g}"


def _quoted(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name) else json.dumps(name)


def plain(name: str) -> str:
    """A column name as words that YAML and SQL comments take unquoted ('Flow: in' -> 'Flow in')."""
    return " ".join(re.sub(r"[:#\"'{}\[\],&*!|>%@`]", " ", name).split()) or "the value"


def _fill(template: str, **values) -> str:
    return Template((TEMPLATES / template).read_text()).substitute(values)


class Plan:
    """What the draft reads and makes of a profile: target, series, covariates, feature names."""

    def __init__(self, name: str, profile: TableProfile, target: str | None):
        if profile.time.step != dt.timedelta(hours=1):
            raise ScaffoldError(f"{profile.files[0].name}: readings come every {profile.time.step}, the forecast draft "
                                "is for hourly series (aggregate to hours first)")
        measured = {c.name: c for c in profile.measured() if c.name != profile.series}
        if target is None:
            target = next((c.name for c in measured.values() if c.null_fraction <= 0.5), None)
        if target not in measured:
            raise ScaffoldError(f"--target {target!r}: not a numeric column of {profile.files[0].name} "
                                f"(numeric: {', '.join(measured) or 'none'})")
        self.name, self.profile, self.target = name, profile, measured[target]
        self.t = snake(target)
        self.series = profile.series
        self.s = snake(profile.series) if profile.series else None
        self.covariates = [c for c in measured.values() if c.name != target and c.null_fraction <= MAX_NULL_FRACTION]
        skip = {*profile.time.columns, profile.series, target}
        self.categorical = [c for c in profile.columns.values() if c.type == "string" and c.categories
                            and c.name not in skip and c.null_fraction <= MAX_NULL_FRACTION]
        self.time_column = COMPOSED_TIME if profile.time.composed else profile.time.columns[0]
        names = [snake(c) for c in profile.columns if c not in profile.time.columns or not profile.time.composed]
        if len(set(names)) != len(names):
            raise ScaffoldError(f"{profile.files[0].name}: two columns give the same SQL name once in snake_case; "
                                "rename one in the header")

    @property
    def numeric_features(self) -> list[str]:
        lags = [f"{self.t}_lag_{h}h" for h in (1, 2, 3, 6, 24, 168)]
        return [*lags, f"{self.t}_mean_24h", f"{self.t}_std_24h", *(f"{snake(c.name)}_lag_1h" for c in self.covariates)]

    @property
    def history_days(self) -> int:
        return (self.profile.time.last - self.profile.time.first).days + 1


def draft_forecaster(name: str, profile: TableProfile, request: DraftRequest) -> Draft:
    """Every file of a scenario ``name`` of this kind over ``profile``'s files."""
    plan = Plan(name, profile, request.target)
    models = {
        f"staging/{name}/_{name}__sources.yml": _fill("sources.yml", name=name, time_column=plan.time_column),
        f"staging/{name}/stg_{name}__observations.sql": _staging_sql(plan),
        f"staging/{name}/stg_{name}__observations.yml": _staging_yml(plan),
        f"intermediate/{name}/int_{name}__hourly.sql": _intermediate_sql(plan),
        f"intermediate/{name}/int_{name}__hourly.yml": _fill("intermediate.yml", **_words(plan)),
        f"marts/{name}/{name}_features.sql": _mart_sql(plan),
        f"marts/{name}/{name}_features.yml": _mart_yml(plan),
    }
    notes = [*profile.notes, f"target: {plan.target.name} (pass --target to forecast another column)"]
    if request.timezone is None:
        notes.append("timezone: UTC (pass --timezone if the files are written on a local wall clock)")
    return Draft(
        scenario=_scenario(plan, request),
        model_spec=_model_spec(plan),
        suites={f"{name}_bronze": _bronze_suite(plan), f"{name}_features": _features_suite(plan)},
        dbt_models=models,
        series=profile.series_values,
        notes=tuple(notes),
    )


def _words(plan: Plan) -> dict[str, str]:
    """Pieces of text the templates share."""
    s = plan.s
    return {
        "name": plan.name, "t": plan.t, "target": plain(plan.target.name),
        "per_series": f" per {s}" if s else "", "per_series_row": f" and {s}" if s else "",
        "partition": f"partition by {s} " if s else "", "partition_prefix": f"{s}, " if s else "",
        "key_prefix": f"{s}, " if s else "",
        "series_doc": (f"      - name: {s}\n        description: The series ({plan.series} in the files).\n"
                       "        data_tests: [not_null]\n") if s else "",
    }


def _scenario(plan: Plan, request: DraftRequest) -> str:
    profile, time, timezone = plan.profile, plan.profile.time, request.timezone
    if time.composed:
        event_time = (f"{{name: {COMPOSED_TIME}, from: [{', '.join(_quoted(c) for c in time.columns)}], "
                      f"format: {json.dumps(time.format)}}}")
    else:
        event_time = _quoted(time.columns[0])
    columns = []
    for column in profile.columns.values():
        if column.name in profile.row_numbers:
            continue
        fields = [f"type: {column.type}"]
        if column.type in ("int", "float") and column.name not in time.columns:
            low, high = bounds(column)
            fields += [f"min: {_number(low)}", f"max: {_number(high)}"]
        if column.format:
            fields.append(f"format: {json.dumps(column.format)}")
        if column.null_fraction > 0:
            fields.append("nullable: true")
        if column.name == profile.series:
            fields.append("description: The series")
        columns.append(f"    {_quoted(column.name)}: {{{', '.join(fields)}}}")
    key = [_quoted(plan.time_column), *([_quoted(profile.series)] if profile.series else [])]
    return _fill(
        "scenario.yaml", **_words(plan), sources=", ".join(p.name for p in profile.files),
        schedule=request.schedule, dataset=request.dataset, domain=request.domain,
        files="\n".join(f"    - {{name: {_quoted(n)}, sha256: {sha}}}" for n, sha in request.pins.items()),
        delimiter=profile.delimiter.replace("\t", "\\t"), decimal=profile.decimal,
        null_values=json.dumps(list(profile.null_values)),
        null_note="   # decide: " + "; ".join(profile.notes) if profile.notes else "",
        event_time=event_time, series_line=f"  series: {_quoted(profile.series)}\n" if profile.series else "",
        ignored=(f"  ignored_columns: [{', '.join(json.dumps(c) for c in profile.row_numbers)}]   # line numbers\n"
                 if profile.row_numbers else ""),
        key=", ".join(key), timezone=timezone or "UTC",
        timezone_note="" if timezone else "   # decide: the zone of the wall clock the files are written in",
        columns="\n".join(columns), order_by=", ".join([TARGET_TIME, *([plan.s] if plan.s else [])]),
        parity=_number(nice(max((plan.target.typical_change or 1.0) / 100, 1e-3), up=True)),
        unit=f"{plain(plan.target.name)} units")


def _model_spec(plan: Plan) -> str:
    profile = plan.profile
    one_hot = [f"    {snake(c.name)}_lag_1h: {{values: {json.dumps(list(c.categories))}}}" for c in plan.categorical]
    if plan.s:
        one_hot.append(f"    {plan.s}: {{values: {json.dumps(list(profile.series_values))}}}")
    days = plan.history_days
    spread = (plan.target.max - plan.target.min) or 1.0
    return _fill(
        "model_spec.yaml", **_words(plan), target_label=plain(plan.target.name), unit="",
        history=f"{days} days", series_limit=f" of {len(profile.series_values)} series" if plan.s else "",
        series_line=f"  series: {plan.s}\n" if plan.s else "",
        numeric="\n".join(f"    - {f}" for f in plan.numeric_features), one_hot="\n".join(one_hot),
        test_days=max(7, min(365, days // 5)), validation_days=max(7, min(90, days // 6)),
        output_scale=_number(nice(max(plan.target.typical_change or 0, spread / 1000), up=True)),
        fit="per_series" if plan.s else "pooled",
        worse_than_persistence="0.34" if plan.s else "0.0",
        mape_floor=_number(nice(max(spread / 100, 1e-3), up=True)))


def _staging_sql(plan: Plan) -> str:
    columns = [c for c in plan.profile.columns if not (plan.profile.time.composed and c in plan.profile.time.columns)
               and c != plan.time_column and c not in plan.profile.row_numbers]
    renamed = ",\n".join(f"        {json.dumps(c)} as {snake(c)}" for c in columns)
    return _fill("staging.sql", **_words(plan), row_grain=f"{plan.s} and hour" if plan.s else "hour",
                 time_quoted=json.dumps(plan.time_column), renamed=renamed)


def _staging_yml(plan: Plan) -> str:
    lines = []
    for column in plan.profile.columns.values():
        if (column.name == plan.time_column or column.name in plan.profile.row_numbers
                or (plan.profile.time.composed and column.name in plan.profile.time.columns)):
            continue
        lines.append(f"      - name: {snake(column.name)}\n        description: {json.dumps(f'{column.name} in the files.')}")
        if column.name == plan.series:
            lines.append("        data_tests: [not_null]")
    return _fill("staging.yml", **_words(plan), row_grain=f"{plan.s} and hour" if plan.s else "hour",
                 key_columns=", ".join([*([plan.s] if plan.s else []), COMPOSED_TIME]), columns="\n".join(lines))


def _readings(plan: Plan) -> list[str]:
    return [snake(c.name) for c in [plan.target, *plan.covariates, *plan.categorical]]


def _intermediate_sql(plan: Plan) -> str:
    s = plan.s
    return _fill(
        "intermediate.sql", **_words(plan),
        spine_series=f"        {s},\n" if s else "", spine_group=f"    group by {s}\n" if s else "",
        joined_series=f"        spine.{s},\n" if s else "",
        readings=",\n".join(f"        observations.{r}" for r in _readings(plan)),
        join_on=(f"observations.{s} = spine.{s}\n        and " if s else "") + f"observations.{COMPOSED_TIME} = spine.hour_at")


def _mart_sql(plan: Plan) -> str:
    t = plan.t
    lags = "\n".join(f"        lag({t}, {h}) over by_hour as {t}_lag_{h}h," for h in LAGS)
    covariates = "\n".join(f"        lag({snake(c.name)}, 1) over by_hour as {snake(c.name)}_lag_1h,"
                           for c in [*plan.covariates, *plan.categorical])
    required = [f"target_{t}", *(f"{t}_lag_{h}h" for h in LAGS), *plan.numeric_features]
    complete = "\n        and ".join(f"{c} is not null" for c in dict.fromkeys(required))
    return _fill("mart.sql", **_words(plan), lags=lags, covariates=covariates,
                 complete=f"    {complete}\n        and observed_hours_24h >= 18",
                 series_select=f"        {plan.s},\n" if plan.s else "",
                 unique_key=", ".join(f"'{c}'" for c in [*([plan.s] if plan.s else []), TARGET_TIME]))


def _mart_yml(plan: Plan) -> str:
    t = plan.t
    lines = [f"      - name: {t}_lag_{h}h\n        description: {plain(plan.target.name)} {h} hour{'s' if h > 1 else ''} "
             "before the target." for h in LAGS]
    for column in [*plan.covariates, *plan.categorical]:
        lines.append(f"      - name: {snake(column.name)}_lag_1h\n        description: "
                     f"{json.dumps(f'{column.name} one hour before the target.')}")
    low, high = bounds(plan.target)
    return _fill("mart.yml", **_words(plan), unit=f"{plain(plan.target.name)} units", low=_number(low), high=_number(high),
                 features="\n".join(lines))


def _suite(name: str, notes: str, expectations: list[dict]) -> str:
    lines = ",\n".join(f"    {json.dumps(e)}" for e in expectations)
    return f'{{\n  "name": "{name}",\n  "meta": {{"notes": {json.dumps(notes)}}},\n  "expectations": [\n{lines}\n  ]\n}}\n'


def _bronze_suite(plan: Plan) -> str:
    profile = plan.profile
    key = [plan.time_column, *([profile.series] if profile.series else [])]
    expectations = [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}},
        *({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": c}} for c in key),
        {"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": key}},
    ]
    for column in [plan.target, *plan.covariates]:
        low, high = bounds(column)
        expectations.append({"type": "expect_column_values_to_be_between",
                             "kwargs": {"column": column.name, "min_value": low, "max_value": high}})
    present = round(max(0.0, 1 - plan.target.null_fraction - 0.1), 2)
    expectations.append({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": plan.target.name,
                         "mostly": present}, "meta": {"why": "more missing than the history ever was: an outage"}})
    return _suite(f"{plan.name}_bronze", "Gate between ingestion and dbt, drafted by new-scenario: bounds are the "
                  "history's range widened by a quarter of it (decide: physical bounds of the sensors).", expectations)


def _features_suite(plan: Plan) -> str:
    t = plan.t
    low, high = bounds(plan.target)
    stuck = max(24, math.ceil(1.5 * (plan.target.longest_repeat or 1)))
    expectations = [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 24}},
        {"type": "expect_compound_columns_to_be_unique",
         "kwargs": {"column_list": [*([plan.s] if plan.s else []), TARGET_TIME]}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": TARGET_TIME}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": f"target_{t}", "min_value": low,
                                                                   "max_value": high}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": f"{t}_repeat_hours", "max_value": stuck},
         "meta": {"on_fail": "quarantine", "why": f"a sensor stuck on one value: the history's longest run was "
                                                  f"{plan.target.longest_repeat} hours"}},
        {"type": "expect_column_mean_to_be_between", "kwargs": {"column": USABLE, "min_value": 0.5,
                                                                  "max_value": 1.0},
         "meta": {"why": "too few complete rows to train or score on"}},
    ]
    return _suite(f"{plan.name}_features", "Gate between the dbt feature mart and training, drafted by new-scenario "
                  "from the history (decide: the bounds).", expectations)
