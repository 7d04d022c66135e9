"""
### City AI Factory: one pipeline DAG per scenario

Each valid YAML file in `dags/scenarios/` (or `$CITYFACTORY_SCENARIOS_DIR`) becomes a DAG with the same id, built by
`cityfactory.factory.scenario_dag` (see its docs for the stages). A scenario whose file, model spec or fleet does not
load is left out here and reported by `scenario_config_errors.py` as an import error naming
it, so the other scenarios keep running. Check a scenario before it lands with
`python -m cityfactory.cli validate NAME`.
"""

from __future__ import annotations

from airflow.sdk import get_parsing_context
from cityfactory.factory.scenario_dag import build_scenario_dag
from cityfactory.pipeline.preflight import usable_scenarios
from cityfactory.settings import get_settings

_requested = get_parsing_context().dag_id
_scenarios, _broken = usable_scenarios(get_settings().scenarios_dir)
for _scenario in _scenarios:
    if _requested is None or _requested == _scenario.dag_id:
        build_scenario_dag(_scenario)
