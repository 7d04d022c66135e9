"""The run calendar: which days a run covers, from the trigger form or the data interval.

The run's days come from the trigger form (``data_interval_start``/``data_interval_end``, both
inclusive, for a bulk run of history) or, by default, from the run's data interval (the nightly run
ingests the previous day, and the days missed since the last one ingested: see ``with_missed_days``).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

EARLIEST = dt.date(1970, 1, 2)  # no city sensor's day lies before the Unix epoch (and every zone can convert it)


class ParamsError(ValueError):
    """Trigger-form values that do not make a valid run; the message names the field."""


def form_days(params: dict) -> tuple[dt.date, dt.date] | None:
    """The trigger form's first and last day (inclusive), or None: both or neither, in order."""
    start, end = params.get("data_interval_start"), params.get("data_interval_end")
    if not (start or end):
        return None
    if not (start and end):
        raise ParamsError("give both the first day (data_interval_start) and the last day (data_interval_end), or neither")
    try:
        first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    except (TypeError, ValueError) as exc:
        raise ParamsError(f"data_interval_start/end must be YYYY-MM-DD dates: {exc}") from None
    if last < first:
        raise ParamsError(f"the last day (data_interval_end) {last} is before the first day (data_interval_start) {first}")
    if first < EARLIEST:
        raise ParamsError(f"the first day (data_interval_start) {first} is before {EARLIEST}: no data can lie there")
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    if last > tomorrow:
        raise ParamsError(f"the last day (data_interval_end) {last} is in the future: nothing has landed for it yet")
    return first, last


def day_bounds(first: dt.date, last: dt.date, zone: str) -> tuple[dt.datetime, dt.datetime]:
    """The data interval of whole days ``first``..``last`` on the zone's clock, in UTC."""
    def midnight(day: dt.date) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(), ZoneInfo(zone)).astimezone(dt.UTC)

    return midnight(first), midnight(last + dt.timedelta(days=1))


def resolve_days(params: dict, interval_start: dt.datetime | None, interval_end: dt.datetime | None,
                 zone: str = "UTC") -> list[dt.date]:
    """The run's days: the form's dates, or the data interval's days on the scenario's clock."""
    if days := form_days(params):
        first, last = days
    else:
        if interval_start is None or interval_end is None:
            raise ParamsError("this run has no data interval; give data_interval_start and data_interval_end")
        first = interval_start.astimezone(ZoneInfo(zone)).date()
        last = max(interval_end.astimezone(ZoneInfo(zone)).date() - dt.timedelta(days=1), first)
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def with_missed_days(days: list[dt.date], last_ingested: dt.date | None, limit: int) -> list[dt.date]:
    """A nightly run's days, from the day after the last one ingested before them (a night that did
    not run, a history ending days before yesterday): a hole in the lake would fail the features
    gate of every later night. At most ``limit`` days back; nothing ingested yet, nothing added."""
    if last_ingested is None or last_ingested >= days[0] - dt.timedelta(days=1):
        return days
    first = max(last_ingested + dt.timedelta(days=1), days[0] - dt.timedelta(days=limit))
    return [first + dt.timedelta(days=i) for i in range((days[0] - first).days)] + days


def batches(days: list[dt.date], size: int) -> list[list[str]]:
    """Consecutive runs of at most ``size`` days, as ISO strings (what mapped tasks receive)."""
    iso = [d.isoformat() for d in days]
    return [iso[i : i + size] for i in range(0, len(iso), size)]
