"""``new-scenario NAME --from FILE...``: sample files in, every file of a working scenario out.

The sample data decides the kind: CSV files are profiled as a table, a folder as images; the kind
of model whose ``drafts_from`` is that profile drafts the files (``TaskType.draft``). Nothing that
exists is overwritten; the new scenario is validated whole (dbt included) before the command ends.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cityfactory.profiling.drafts import Draft, DraftRequest, ScaffoldError
from cityfactory.profiling.tables import profile_table
from cityfactory.scaffold.ports import free_ports
from cityfactory.settings import get_settings
from cityfactory.storage.lake import sha256_file

NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Scaffolded:
    name: str
    kind: str
    written: list[Path]
    notes: tuple[str, ...]
    problems: list[str]  # what validate says of the new scenario (empty: ready to run)


def new_scenario(name: str, sources: list[Path], target: str | None = None, timezone: str | None = None,
                 series: str | None = None, domain: str | None = None, check_dbt: bool = True) -> Scaffolded:
    """Draft, write and validate scenario ``name`` from ``sources`` (CSV files, or one image folder)."""
    from cityfactory.config.domains import load_domains
    from cityfactory.pipeline.preflight import validate_scenarios
    from cityfactory.tasktypes import task_types

    if not NAME.match(name):
        raise ScaffoldError(f"{name!r}: a scenario name is lower case letters, digits and _, starting with a letter")
    settings = get_settings()
    departments = list(load_domains().domains)
    if domain is not None and domain not in departments:
        raise ScaffoldError(f"--domain {domain!r}: not a department of {settings.domains_file} "
                            f"(one of: {', '.join(departments)})")
    folder, files = _dataset(sources, settings.data_dir)
    profile = _profile(sources, files, series)
    kind = next((k for k in task_types().values() if k.drafts_from and isinstance(profile, k.drafts_from)), None)
    if kind is None:
        raise ScaffoldError(f"no kind of model drafts scenarios from {type(profile).__name__}")
    request = DraftRequest(dataset=folder.relative_to(_absolute(settings.data_dir)).as_posix(), timezone=timezone,
                           target=target, domain=domain or departments[0],
                           pins={f.relative_to(folder).as_posix(): sha256_file(f) for f in files})
    draft = kind.draft(name, profile, request)
    written = _write(name, draft, settings, folder)
    problems = validate_scenarios([settings.scenarios_dir / f"{name}.yaml"], check_dbt=check_dbt)[name]
    notes = (*draft.notes, *([] if domain else [f"domain: {departments[0]} (pass --domain: one of {', '.join(departments)})"]))
    return Scaffolded(name, kind.name, written, notes, problems)


def _absolute(path: Path) -> Path:
    """An absolute path that keeps links (a dataset linked into the data folder stays in it)."""
    return Path(os.path.abspath(path))


def _dataset(sources: list[Path], data_dir: Path) -> tuple[Path, list[Path]]:
    """The data folder the sources lie in (under the data directory) and the files to pin."""
    resolved, data_dir = [_absolute(p) for p in sources], _absolute(data_dir)
    for path in resolved:
        if not path.exists():
            raise ScaffoldError(f"{path}: no such file or folder")
    folder = resolved[0] if resolved[0].is_dir() else resolved[0].parent
    if len(resolved) > 1 and (resolved[0].is_dir() or any(p.parent != folder for p in resolved)):
        raise ScaffoldError("give CSV files of one folder, or one image folder")
    if not folder.is_relative_to(data_dir) or folder == data_dir:
        raise ScaffoldError(f"{folder}: a scenario's data lives in a folder of the data directory {data_dir} "
                            "(CITYFACTORY_DATA_DIR): move or link it there, then scaffold from there")
    return folder, [] if resolved[0].is_dir() else resolved


def _profile(sources: list[Path], files: list[Path], series: str | None):
    if files:
        return profile_table(files, series=series)
    from cityfactory.profiling.image_folders import profile_image_folder

    return profile_image_folder(_absolute(sources[0]))


def _write(name: str, draft: Draft, settings, folder: Path) -> list[Path]:
    """Place the draft's files and a fleet (and any file it adds to the data folder, such as an
    image index); refuse before writing anything if one exists."""
    import yaml

    targets = {
        settings.scenarios_dir / f"{name}.yaml": draft.scenario,
        settings.models_dir / f"{name}.yaml": draft.model_spec,
        **{settings.expectations_dir / f"{suite}.json": text for suite, text in draft.suites.items()},
        **{settings.dbt_dir / "models" / path: text for path, text in draft.dbt_models.items()},
    }
    fleet = settings.fleets_dir / f"{name}.yaml"
    data = {folder / n: content for n, content in draft.dataset_files.items()}
    existing = [p for p in [*targets, fleet, *data] if p.exists()]
    if existing:
        raise ScaffoldError(f"scenario {name!r} exists already: {', '.join(str(p) for p in existing)}")
    series = list(draft.series) or [None, None]
    ports = free_ports(len(series), settings.fleets_dir)
    nodes = [{"id": f"{name}-{i}", **({"series": s} if s else {}), "district": "unassigned",
              "url": f"http://127.0.0.1:{port}"} for i, (s, port) in enumerate(zip(series, ports, strict=True), 1)]
    targets[fleet] = (f"# Edge nodes for {name}: {'one per series' if draft.series else 'two that serve every row'}, "
                      "drafted by new-scenario on free loopback ports\n# (decide: districts, and the nodes' real "
                      "addresses in production).\n" + yaml.safe_dump({"nodes": nodes}, sort_keys=False))
    for path, content in data.items():
        path.write_bytes(content)
    for path, text in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return [*targets, *data]
