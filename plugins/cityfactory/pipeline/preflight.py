"""One check of a whole scenario before any run: its YAML, model spec, fleet, expectation suites,
dbt selection and dataset pins, and how they fit together. Every problem names its file and key,
so a typo is found in seconds rather than hours into a run (``python -m cityfactory.cli validate``).
"""

from __future__ import annotations

import contextlib
import difflib
import json
from pathlib import Path
from urllib.parse import urlsplit

from cityfactory.config.scenarios import (
    Scenario,
    ScenarioError,
    load_scenario,
    scan_scenarios,
)
from cityfactory.pipeline.parse_memo import Verdict, memoised_verdict
from cityfactory.settings import get_settings
from cityfactory.transform.dbt import DbtListError, ModelListing

BRONZE_EXTRAS = {"_source_file", "_line", "dt"}


def validate_scenario(path: Path, check_dbt: bool = True, dbt: ModelListing | None = None) -> list[str]:
    """Every problem found with the scenario in ``path`` and what it refers to (empty: all good);
    ``dbt``: a listing shared with other scenarios' checks (one parse of the dbt project for all)."""
    try:
        scenario = load_scenario(path)
    except ScenarioError as exc:
        return [str(exc)]
    pins = _dataset_problems(scenario, path)
    problems = (_domain_problems(scenario, path) + _spec_problems(scenario) + _fleet_problems(scenario)
                + _suite_problems(scenario) + pins)
    if not pins:
        problems += _source_problems(scenario, path)
    if check_dbt:
        problems += _dbt_problems(scenario, path, dbt or ModelListing())
    return problems


def validate_scenarios(paths: list[Path], check_dbt: bool = True) -> dict[str, list[str]]:
    """Each named scenario whole, and what no scenario can see alone: a registered-model name or an
    edge node's address that it shares with another scenario (of any file in the folder)."""
    dbt = ModelListing() if check_dbt else None
    problems = {path.stem: validate_scenario(path, check_dbt, dbt) if path.exists() else [f"{path}: no such scenario file"]
                for path in paths}
    everyone = {s.name: s for s in scan_scenarios(get_settings().scenarios_dir)[0]}
    for path in paths:
        with contextlib.suppress(ScenarioError):
            everyone[path.stem] = load_scenario(path)
    for name, clashes in _shared_problems(everyone).items():
        if name in problems:
            problems[name] += clashes
    return problems


def _shared_problems(scenarios: dict[str, Scenario]) -> dict[str, list[str]]:
    """Scenario name -> its clashes with others: one registered model (versions and the champion
    would mix) or one edge node address (the second fleet could not start)."""
    from cityfactory.edge.fleet import load_fleet
    from cityfactory.tasktypes import load_model_spec

    settings = get_settings()
    models: dict[str, list[str]] = {}
    addresses: dict[tuple, list[tuple[str, str]]] = {}
    for name, scenario in scenarios.items():
        with contextlib.suppress(ScenarioError):
            models.setdefault(load_model_spec(scenario.model_spec).registered_model, []).append(name)
        with contextlib.suppress(ScenarioError):
            for node in load_fleet(scenario.rollout.fleet).nodes:
                url = urlsplit(node.url)
                addresses.setdefault((url.hostname, url.port), []).append((name, node.id))
    clashes: dict[str, list[str]] = {}
    for model, users in models.items():
        for name in users if len(users) > 1 else []:
            others = ", ".join(u for u in users if u != name)
            clashes.setdefault(name, []).append(
                f"{settings.models_dir / scenarios[name].model_spec}.yaml: key 'registered_model': {model!r} is also "
                f"the registered model of {others} (give each scenario its own name)")
    for (host, port), nodes in addresses.items():
        for name, node in nodes if len(nodes) > 1 else []:
            others = ", ".join(f"node {n} of {s}" for s, n in nodes if (s, n) != (name, node))
            clashes.setdefault(name, []).append(
                f"{settings.fleets_dir / scenarios[name].rollout.fleet}.yaml: key 'nodes' (node {node}): {host}:{port} "
                f"is also the address of {others} (give it a free port)")
    return clashes


def usable_scenarios(directory: Path) -> Verdict:
    """What the DAG files build: scenarios whose YAML, model spec and fleet load (cheap checks, no
    heavy imports, fit for parse time), and file name -> problems for the others; remembered
    until one of those files changes (``parse_memo``)."""
    return memoised_verdict(directory, lambda: _verdict(directory))


def _verdict(directory: Path) -> Verdict:
    valid, broken = scan_scenarios(directory)
    usable = []
    for scenario in valid:
        problems = (_domain_problems(scenario, directory / f"{scenario.name}.yaml") + _spec_problems(scenario)
                    + _fleet_file_problems(scenario))
        if problems:
            broken[f"{scenario.name}.yaml"] = "; ".join(problems)
        else:
            usable.append(scenario)
    return usable, broken


def _domain_problems(scenario: Scenario, path: Path) -> list[str]:
    """The scenario's department is one of the city's (``dags/domains.yaml``)."""
    from cityfactory.config.domains import load_domains

    try:
        domains = load_domains()
    except ScenarioError as exc:
        return [f"{exc} (scenario key 'domain')"]
    problem = domains.problem(scenario.domain, path, get_settings().domains_file)
    return [problem] if problem else []


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
    from cityfactory.quality.gates import (
        ON_FAIL,
        QualityGateError,
        is_row_level,
        load_suite,
        on_fail,
    )

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
            action = on_fail(expectation)
            if action not in ON_FAIL:
                problems.append(f"{path}: key 'expectations.{index}.meta.on_fail': {action!r} is none of {', '.join(ON_FAIL)}")
            elif action == "quarantine" and (key == "bronze_suite" or not is_row_level(expectation["type"])):
                problems.append(f"{path}: key 'expectations.{index}.meta.on_fail': quarantine sets rows aside, so it is "
                                f"for the features suite's row-level expectations (expect_column_values_..., ...); "
                                f"{expectation['type']} in the {key} cannot (use stop)")
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
            if (actual := sha256_file(local)) != spec.sha256:
                problems.append(f"{path}: key 'source.files.{index}.sha256': {local} has sha256 {actual}, the pin says "
                                f"{spec.sha256} (pin the file you mean to use, or restore that file)")
        elif not spec.url:
            problems.append(f"{path}: key 'source.files.{index}': {local} not found and no 'url' to download it from")
    return problems


def _source_problems(scenario: Scenario, path: Path) -> list[str]:
    """A replayed CSV dataset against the files that read it: every declared column in each file's
    header, spelled the same (case and all); every series in the data known to the model spec (if
    it names them) and served by a node of the fleet (or by one that serves all)."""
    from cityfactory.ingestion import replay

    source = scenario.source
    if source.kind != "csv_replay":
        return []
    problems = []
    declared = list(scenario.schema_.columns)
    for index, spec in enumerate(source.files):
        local = get_settings().data_dir / source.dataset / spec.name
        if not local.exists():
            continue  # downloaded on first use, checked by the run's first task
        header = replay.read_header(local, source.csv.delimiter, source.csv.quote_char)
        for column in (c for c in declared if c not in header):
            problems.append(f"{path}: key 'schema.columns.{column}': {spec.name} (source.files.{index}) has no column "
                            f"{column!r}; {_header_fix(column, header)}")
    series = scenario.schema_.series
    if problems or not series:
        return problems
    seen = sorted({value for f in replay.load_dataset(scenario) for value in f.table[series].unique().to_pylist() if value})
    return _series_problems(scenario, seen)


def _header_fix(column: str, header: list[str]) -> str:
    if spelled := [h for h in header if h.casefold() == column.casefold()]:
        return f"the file spells it {spelled[0]!r} (names are case-sensitive)"
    close = difflib.get_close_matches(column, header, 1)
    return f"the header has {', '.join(header[:30])}" + (f"; did you mean {close[0]!r}?" if close else "")


def _series_problems(scenario: Scenario, seen: list[str]) -> list[str]:
    from cityfactory.edge.fleet import load_fleet
    from cityfactory.tasktypes import load_model_spec, task_type_of

    settings = get_settings()
    problems = []
    with contextlib.suppress(ScenarioError):  # a spec or fleet that does not load is reported already
        spec = load_model_spec(scenario.model_spec)
        known = task_type_of(spec).series_categories(spec)
        if known is not None and (unknown := [s for s in seen if s not in {str(k) for k in known}]):
            problems.append(f"{settings.models_dir / scenario.model_spec}.yaml: the series {', '.join(unknown)} are in "
                            f"the data's {scenario.schema_.series!r} column but not among the spec's categories for it "
                            "(the model would see them as unknown, all zeros): add them to its one-hot values")
    served: set[str | None] = {None}  # a fleet that does not load is reported already
    with contextlib.suppress(ScenarioError):
        served = {n.series for n in load_fleet(scenario.rollout.fleet).nodes}
    if None not in served and (unserved := [s for s in seen if s not in served]):
        problems.append(f"{settings.fleets_dir / scenario.rollout.fleet}.yaml: key 'nodes': no node serves the series "
                        f"{', '.join(unserved)} (add a node with 'series:' each, or one without 'series' to serve all)")
    return problems


def _dbt_problems(scenario: Scenario, path: Path, dbt: ModelListing) -> list[str]:
    """The selection must name models, the features model among them (dbt's listing, no database)."""
    try:
        models = dbt.models(scenario.transform.dbt_select)
    except DbtListError as exc:
        return [f"{path}: key 'transform.dbt_select': dbt could not list {scenario.transform.dbt_select!r}: {str(exc)[-500:]}"]
    if not models:
        return [(f"{path}: key 'transform.dbt_select': {scenario.transform.dbt_select!r} selects no dbt model "
                 "(is the tag on the models?)")]
    if scenario.transform.features_model not in models:
        return [(f"{path}: key 'transform.features_model': {scenario.transform.features_model!r} is not among the "
                 f"selected models ({', '.join(models)})")]
    return _feature_problems(scenario, _documented_columns(dbt.manifest_path, scenario.transform.features_model))


def _documented_columns(manifest: Path, model: str) -> tuple[Path, list[str]]:
    """The feature mart's yml file and the columns it documents, from the manifest dbt just wrote."""
    nodes = json.loads(manifest.read_text())["nodes"].values()
    node = next(n for n in nodes if n["resource_type"] == "model" and n["name"] == model)
    yml = get_settings().dbt_dir / (node.get("patch_path") or f"x://{node['original_file_path']}").split("://", 1)[1]
    return yml, list(node["columns"])


def _feature_problems(scenario: Scenario, mart: tuple[Path, list[str]]) -> list[str]:
    """Every column the model spec reads is one the feature mart documents (dbt's manifest)."""
    from cityfactory.tasktypes import load_model_spec, task_type_of

    yml, documented = mart
    spec = load_model_spec(scenario.model_spec)
    path = get_settings().models_dir / f"{scenario.model_spec}.yaml"
    problems = []
    for key, column in task_type_of(spec).mart_columns(spec).items():
        if column not in documented:
            close = difflib.get_close_matches(column, documented, 1)
            fix = f"did you mean {close[0]!r}?" if close else f"add it to the mart's SQL and document it in {yml}"
            problems.append(f"{path}: key '{key}': {column!r} is not a column of the feature mart "
                            f"{scenario.transform.features_model} (as documented in {yml}); {fix}")
    return problems
