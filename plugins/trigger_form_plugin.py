"""Airflow 3 plugin: a scenario DAG's trigger form says what is wrong with its dates before a run
exists, and a run's data interval is the days it covers (``cityfactory.factory.trigger_form``).
"""

from __future__ import annotations

from typing import ClassVar

from airflow.plugins_manager import AirflowPlugin
from cityfactory.factory.trigger_form import TriggerFormMiddleware


class TriggerFormPlugin(AirflowPlugin):
    name = "cityfactory_trigger_form"
    fastapi_root_middlewares: ClassVar[list[dict]] = [
        {"middleware": TriggerFormMiddleware, "args": [], "kwargs": {}, "name": "Scenario trigger form dates"},
    ]
