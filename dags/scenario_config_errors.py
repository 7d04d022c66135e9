"""
### Broken scenario files, shown where people look: Airflow's import errors

`scenario_pipelines.py` builds the scenarios that validate; this file raises an import error
naming every scenario whose file, model spec or fleet does not load (file and key), so a typo is seen at once in the UI
instead of hours into a run, while the valid scenarios keep their DAGs. No DAG is defined here.
"""

from __future__ import annotations

from cityfactory.config.scenarios import ScenarioError
from cityfactory.pipeline.preflight import usable_scenarios
from cityfactory.settings import get_settings

_, _broken = usable_scenarios(get_settings().scenarios_dir)
if _broken:
    raise ScenarioError(f"{len(_broken)} scenario file(s) not loaded: " + " | ".join(_broken.values()))
