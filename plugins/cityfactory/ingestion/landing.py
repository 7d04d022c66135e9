"""Where gateway drops land: ``landing/<scenario>/<yyyy-mm-dd>/``, one folder per play-time day."""

from __future__ import annotations

import datetime as dt

from cityfactory.storage.lake import join_key

EPOCH = dt.date(1970, 1, 1)


def landing_prefix(scenario: str, day: dt.date) -> str:
    return join_key("landing", scenario, day.isoformat())
