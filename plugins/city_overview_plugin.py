"""Airflow 3 plugin: "City at a glance" in the UI's navigation, every scenario the logged-in person
may see, by department (``cityfactory.webviews.overview_app``: Airflow's auth manager decides
which). The plugin loader reads only this file (the library folder is in ``.airflowignore``).
"""

from __future__ import annotations

from typing import ClassVar

from airflow.plugins_manager import AirflowPlugin
from cityfactory.webviews.overview_app import URL_PREFIX, create_app


class CityOverviewPlugin(AirflowPlugin):
    name = "cityfactory_city_overview"
    fastapi_apps: ClassVar[list[dict]] = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "City AI Factory overview"}]
    external_views: ClassVar[list[dict]] = [
        {"name": "City at a glance", "href": f"{URL_PREFIX}/", "destination": "nav", "url_route": "city_overview"},
    ]
