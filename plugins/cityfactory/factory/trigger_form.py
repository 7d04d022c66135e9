"""The scenario DAGs' trigger requests, checked and completed on Airflow's API server.

Airflow validates each Param on its own, so a rule over two fields (the form's first and last day:
both or neither, in order) cannot live in the form's schema. This ASGI middleware (installed by
``plugins/trigger_form_plugin.py``) checks it on every trigger of a scenario DAG, from the UI form or
the REST API alike, and answers 400 naming the field before any run exists. A valid range becomes
the run's data interval (midnight to midnight on the scenario's clock), so the run page shows the
days the run covers; Airflow's own "Data interval: Manual" must span whole days there too. A
request with neither days, an interval nor a logical date (the REST API allows it) is last night's
run: yesterday on the scenario's clock, as the nightly schedule would cover.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from urllib.parse import unquote
from zoneinfo import ZoneInfo

from cityfactory.run_calendar import EARLIEST, ParamsError, day_bounds, form_days
from cityfactory.security.bearer import bearer_token

TRIGGER = re.compile(r"/api/v2/dags/(?P<dag_id>[^/]+)/dagRuns")


def _instant(value: str, name: str) -> dt.datetime:
    try:
        instant = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ParamsError(f"{name} {value!r} is not an ISO date-time") from None
    if instant.tzinfo is None:
        raise ParamsError(f"{name} {value!r} has no time zone")
    if not EARLIEST <= instant.astimezone(dt.UTC).date() <= dt.date.max - dt.timedelta(days=2):
        raise ParamsError(f"{name} {value!r} is out of range")
    return instant


def _whole_days(start: dt.datetime, end: dt.datetime, zone: str) -> None:
    for name, bound in (("data interval start", start), ("data interval end", end)):
        local = bound.astimezone(ZoneInfo(zone))
        if local.time() != dt.time():
            raise ParamsError(f"{name} is {local:%Y-%m-%d %H:%M} in {zone}: a run covers whole days there, so give "
                              f"midnights {zone}, or leave the data interval on Auto and pick the first and last day")
    if end <= start:
        raise ParamsError("data interval end is not after its start")


def checked_trigger(body: dict, zone: str, now: dt.datetime) -> dict:
    """The trigger request Airflow should get for a scenario DAG whose zone is ``zone``, or a
    ParamsError naming what is wrong."""
    conf = body.get("conf")
    days = form_days(conf if isinstance(conf, dict) else {})  # Airflow itself refuses a conf of the wrong type
    given = body.get("data_interval_start"), body.get("data_interval_end")
    if any(given) and not all(given):
        raise ParamsError("give both data interval start and end, or neither")
    bounds = tuple(_instant(v, n) for v, n in zip(given, ("data_interval_start", "data_interval_end"), strict=True)) if all(given) else None
    if days is None:
        if bounds:
            _whole_days(*bounds, zone)
        if bounds or body.get("logical_date"):
            return body  # with a logical date alone, Airflow infers the interval from the schedule
        # no days, no interval, no logical date (a REST call): last night's run, as the form promises
        yesterday = now.astimezone(ZoneInfo(zone)).date() - dt.timedelta(days=1)
        days = yesterday, yesterday
    wanted = day_bounds(*days, zone)
    if bounds and bounds != wanted:
        raise ParamsError(f"two date ranges: the form's days {days[0]}..{days[1]} and a data interval "
                          f"{bounds[0].isoformat()}..{bounds[1].isoformat()}; leave the data interval on Auto")
    # Airflow uses a given data interval only with a logical date (the form sends "now")
    return {**body, "data_interval_start": wanted[0].isoformat(), "data_interval_end": wanted[1].isoformat(),
            "logical_date": body.get("logical_date") or now.isoformat()}


def scenario_zones() -> dict[str, str]:
    """Each scenario DAG's id and time zone, read now (a scenario added since start counts)."""
    from cityfactory.pipeline.preflight import usable_scenarios
    from cityfactory.settings import get_settings

    return {s.dag_id: s.timezone for s in usable_scenarios(get_settings().scenarios_dir)[0]}


async def _authenticated(scope) -> bool | None:
    """Whether the caller holds a valid Airflow token (bearer header or the UI's cookie), checked as
    Airflow checks it; None for an Authorization header that is not one well-formed bearer token,
    which Airflow might read more leniently than we do: such a request is refused here."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import (
        COOKIE_NAME_JWT_TOKEN,
    )
    from airflow.api_fastapi.core_api.security import resolve_user_from_token
    from fastapi import HTTPException
    from starlette.requests import Request

    request = Request(scope)
    header = request.headers.get("authorization")
    token = bearer_token(header) if header is not None else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    if header is not None and token is None:
        return None
    try:
        await resolve_user_from_token(token)
    except HTTPException:
        return False
    return True


class TriggerFormMiddleware:
    """Pure ASGI: reads an authenticated caller's trigger of a scenario DAG, answers 400 or passes
    the completed body on. The caller is authenticated before any work (no scenario is read for an
    anonymous request): an unauthenticated one gets Airflow's own 401/403; a malformed
    Authorization header, our 401."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        from starlette.responses import JSONResponse

        match = scope["type"] == "http" and scope["method"] == "POST" and TRIGGER.search(scope["path"])
        if not match:
            return await self.app(scope, receive, send)
        authenticated = await _authenticated(scope)
        if authenticated is None:
            refused = JSONResponse({"detail": "Authorization: expected 'Bearer <token>' (one space, one token)"},
                                   status_code=401, headers={"WWW-Authenticate": "Bearer"})
            return await refused(scope, receive, send)
        zone = scenario_zones().get(unquote(match["dag_id"])) if authenticated else None
        if zone is None:
            return await self.app(scope, receive, send)
        raw, more = b"", True
        while more:
            message = await receive()
            raw, more = raw + message.get("body", b""), message.get("more_body", False)
        try:
            body = json.loads(raw)
            data = json.dumps(checked_trigger(body, zone, dt.datetime.now(dt.UTC))).encode() if isinstance(body, dict) else raw
        except (json.JSONDecodeError, RecursionError):
            data = raw  # Airflow answers malformed JSON itself
        except ParamsError as exc:
            return await JSONResponse({"detail": f"{match['dag_id']}: {exc}"}, status_code=400)(scope, receive, send)
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        delivered = False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": data, "more_body": False}

        await self.app({**scope, "headers": [*headers, (b"content-length", str(len(data)).encode())]}, replay, send)
