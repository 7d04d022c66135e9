"""Airflow 3 plugin: each scenario run's compliance report one click from the run in the UI.

A FastAPI app on the api-server serves the reports (``cityfactory.governance.report_app``, every
request checked by Airflow's auth manager); external views put it as a "Compliance report" tab on
every DAG run and task instance page. The plugin loader reads only this file (the library folder
is in ``.airflowignore``).
"""

from __future__ import annotations

from typing import ClassVar

from airflow.plugins_manager import AirflowPlugin
from cityfactory.governance.report_app import URL_PREFIX, create_app

REPORT = f"{URL_PREFIX}/reports/{{DAG_ID}}/{{RUN_ID}}"


class ComplianceReportPlugin(AirflowPlugin):
    name = "cityfactory_compliance_report"
    fastapi_apps: ClassVar[list[dict]] = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "City AI Factory compliance reports"}]
    external_views: ClassVar[list[dict]] = [
        {"name": "Compliance report", "href": REPORT, "destination": "dag_run", "url_route": "compliance_report"},
        {"name": "Compliance report", "href": REPORT, "destination": "task_instance", "url_route": "compliance_report_ti"},
    ]
