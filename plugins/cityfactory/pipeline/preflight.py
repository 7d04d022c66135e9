"""One check of a whole scenario before any run: its YAML, model spec, fleet, expectation suites,
dbt selection and dataset pins, and how they fit together. Every problem names its file and key,
so a typo is found in seconds rather than hours into a run (``python -m cityfactory.cli validate``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cityfactory.config.scenarios import (
    Scenario,
    ScenarioError,
    load_scenario,
    scan_scenarios,
)
from cityfactory.settings import REPO_ROOT, get_settings

BRONZE_EXTRAS = {"_source_file", "_line", "dt"}


def validate_scenario(path: Path, check_dbt: bool = True) -> list[str]:
    """Every problem found with the scenario in ``path`` and what it refers to (empty: all good)."""
    try:
        scenario = load_scenario(path)
    except ScenarioError as exc:
        return [str(exc)]
    problems = _spec_problems(scenario) + _fleet_problems(scenario) + _suite_problems(scenario)
    problems += _dataset_problems(scenario, path)
    if check_dbt:
        problems += _dbt_problems(scenario, path)
    return problems


def usable_scenarios(directory: Path) -> tuple[list[Scenario], dict[str, str]]:
    """What the DAG files build: scenarios whose YAML, model spec and fleet load (cheap checks, no
    heavy imports, fit for parse time), and file name -> problems for the others."""
    valid, broken = scan_scenarios(directory)
    usable = []
    for scenario in valid:
        problems = _spec_problems(scenario) + _fleet_file_problems(scenario)
        if problems:
            broken[f"{scenario.name}.yaml"] = "; ".join(problems)
        else:
            usable.append(scenario)
    return usable, broken


def _fleet_file_problems(scenario: Scenario) -> list[str]:
    from cityfactory.edge.fleet import load_fleet

    try:
        load_fleet(scenario.rollout.fleet)
    except ScenarioError as exc:
        return [f"{exc} (scenario key 'rollout.fleet')"]
    return []


def _spec_problems(scenario: Scenario) -> list[str]:
    from cityfactory.tasktypes import load_model_spec, task_type_of

    try:
        spec = load_model_spec(scenario.model_spec)
    except ScenarioError as exc:
        return [f"{exc} (scenario key 'model_spec')"]
    path = get_settings().models_dir / f"{scenario.model_spec}.yaml"
    problems = task_type_of(spec).spec_problems(spec, bool(scenario.schema_.series), path)
    if not (path.parent / spec.card_template).exists():
        problems.append(f"{path}: key 'card_template': {spec.card_template} not found in {path.parent}")
    return problems


def _fleet_problems(scenario: Scenario) -> list[str]:
    from cityfactory.edge.fleet import load_fleet
    from cityfactory.rollout.controller import stage_targets

    try:
        fleet = load_fleet(scenario.rollout.fleet)
    except ScenarioError as exc:
        return [f"{exc} (scenario key 'rollout.fleet')"]
    empty = [s.name for s, nodes in zip(scenario.rollout.stages, stage_targets(fleet, scenario.rollout)) if not nodes]
    if empty:
        return [(f"{get_settings().fleets_dir / scenario.rollout.fleet}.yaml: stage(s) {', '.join(empty)} would add no "
                 f"node ({len(fleet.nodes)} nodes in the fleet)")]
    return []


def _bronze_columns(scenario: Scenario) -> set[str]:
    """What a bronze suite may name: the image manifest's columns, or the schema's rows'."""
    from cityfactory.ingestion.image_drops import manifest_columns
    from cityfactory.ingestion.parsing import bronze_schema

    if scenario.source.format == "images":
        return set(manifest_columns(scenario))
    return set(bronze_schema(scenario.schema_).names)


def _suite_problems(scenario: Scenario) -> list[str]:
    from cityfactory.quality.gates import QualityGateError, load_suite

    problems = []
    bronze = _bronze_columns(scenario) | BRONZE_EXTRAS
    for key, name in (("bronze_suite", scenario.quality.bronze_suite), ("features_suite", scenario.quality.features_suite)):
        try:
            suite = load_suite(name)
        except QualityGateError as exc:
            problems.append(f"{exc} (scenario key 'quality.{key}')")
            continue
        path = get_settings().expectations_dir / f"{name}.json"
        for index, expectation in enumerate(suite.get("expectations", [])):
            if not isinstance(expectation, dict) or not str(expectation.get("type", "")).startswith("expect_"):
                problems.append(f"{path}: key 'expectations.{index}': needs a 'type' expect_... and 'kwargs'")
                continue
            column = expectation.get("kwargs", {}).get("column")
            if key == "bronze_suite" and column and column not in bronze:
                problems.append(f"{path}: key 'expectations.{index}.kwargs.column': {column!r} is not a bronze column")
    return problems


def _dataset_problems(scenario: Scenario, path: Path) -> list[str]:
    from cityfactory.ingestion.datasets import DatasetError, package_file
    from cityfactory.storage.lake import sha256_file

    source = scenario.source
    problems = []
    for index, spec in enumerate(source.files):
        if source.package:
            try:
                package_file(source.package, spec)
            except (DatasetError, OSError) as exc:
                problems.append(f"{path}: key 'source.files.{index}': {exc}")
            continue
        local = get_settings().data_dir / (source.dataset or "") / spec.name
        if local.exists():
            if sha256_file(local) != spec.sha256:
                problems.append(f"{path}: key 'source.files.{index}.sha256': {local} does not match its pin")
        elif not spec.url:
            problems.append(f"{path}: key 'source.files.{index}': {local} not found and no 'url' to download it from")
    return problems


def _dbt_problems(scenario: Scenario, path: Path) -> list[str]:
    """The selection must name models, the features model among them (``dbt ls``, no database)."""
    dbt = Path(sys.executable).parent / "dbt"
    target = get_settings().home / "dbt" / "validate"
    command = [str(dbt), "ls", "--project-dir", str(REPO_ROOT / "dbt"), "--profiles-dir", str(REPO_ROOT / "dbt"),
               "--target-path", str(target), "--log-path", str(target / "logs"), "--quiet", "--output", "json",
               "--resource-type", "model", "--select", scenario.transform.dbt_select,
               "--vars", json.dumps({"lake_root": "/nonexistent", "scenario": scenario.name})]
    process = subprocess.run(command, capture_output=True, text=True, check=False,
                             env={"DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "PATH": str(dbt.parent), "HOME": str(Path.home())})
    if process.returncode != 0:
        return [(f"{path}: key 'transform.dbt_select': dbt could not list {scenario.transform.dbt_select!r}: "
                 f"{(process.stdout + process.stderr).strip()[-500:]}")]
    models = [json.loads(line)["name"] for line in process.stdout.splitlines() if line.startswith("{")]
    if not models:
        return [(f"{path}: key 'transform.dbt_select': {scenario.transform.dbt_select!r} selects no dbt model "
                 "(is the tag on the models?)")]
    if scenario.transform.features_model not in models:
        return [(f"{path}: key 'transform.features_model': {scenario.transform.features_model!r} is not among the "
                 f"selected models ({', '.join(models)})")]
    return []
