"""A city of many scenarios made from the shipped ones, for the benchmarks: each a copy of a shipped
scenario under its own name, registered model, fleet (its own loopback ports), schedule and
department tag; they share the shipped dbt models, suites and datasets."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from support import REPO

DEPARTMENTS = ("transport", "environment", "work_safety", "public_security", "city_management", "governance")
FIRST_PORT = 20000


def write_city(root: Path, count: int, change=lambda config: None, bases: tuple[str, ...] = ()) -> dict[str, Path]:
    """``count`` scenarios under ``root``, copies of the shipped ``bases`` in turn (all when empty),
    each scenario's config passed through ``change(config)`` last; returns the folders by settings
    name (SCENARIOS, MODELS, FLEETS)."""
    folders = {name: root / name.lower() for name in ("SCENARIOS", "MODELS", "FLEETS")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    for card in (REPO / "models").glob("*.md"):
        (folders["MODELS"] / card.name).write_bytes(card.read_bytes())
    shipped = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "dags" / "scenarios").glob("*.yaml"))
               if not bases or p.stem in bases]
    port = FIRST_PORT
    for i in range(count):
        base = shipped[i % len(shipped)]
        name = f"{base['name']}_{i:02d}"
        scenario = copy.deepcopy(base)
        scenario.update(name=name, model_spec=name, schedule=f"{(7 * i) % 60} {1 + i % 5} * * *",
                        tags=[*base.get("tags", []), DEPARTMENTS[i % len(DEPARTMENTS)]])
        scenario["rollout"]["fleet"] = name
        change(scenario)
        spec = yaml.safe_load((REPO / "models" / f"{base['model_spec']}.yaml").read_text())
        spec.update(name=f"{spec['name']}_{i:02d}", registered_model=f"cityfactory.{name}")
        fleet = yaml.safe_load((REPO / "dags" / "fleets" / f"{base['rollout']['fleet']}.yaml").read_text())
        for node in fleet["nodes"]:
            node.update(id=f"{name}-{node['id']}", url=f"http://127.0.0.1:{port}")
            port += 1
        (folders["SCENARIOS"] / f"{name}.yaml").write_text(yaml.safe_dump(scenario, sort_keys=False))
        (folders["MODELS"] / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        (folders["FLEETS"] / f"{name}.yaml").write_text(yaml.safe_dump(fleet, sort_keys=False))
    return folders


def dag_shapes(dags: dict) -> dict:
    """dag_id -> (timetable, trigger form, task count): what ``bare_copies`` rebuilds, picklable, so
    Airflow's share can be measured in an interpreter that never ran our code."""
    return {dag_id: (original.timetable, original.params, len(original.tasks)) for dag_id, original in dags.items()}


def bare_copies(shapes: dict) -> int:
    """Airflow's own share of building DAGs of these ``shapes`` (``dag_shapes``): each rebuilt with
    the same schedule (a scheduled DAG's params are validated) and trigger form, and as many tasks,
    plain TaskFlow tasks in a chain, none of our code. Returns the tasks made."""
    return sum(len(_bare(f"bare_{dag_id}", *shape).tasks) for dag_id, shape in shapes.items())


def _bare(dag_id: str, timetable, params, count: int):
    from airflow.sdk import dag, task

    @dag(dag_id=dag_id, schedule=timetable, params=copy.deepcopy(params))
    def bare():
        previous = None
        for i in range(count):
            current = task(task_id=f"t{i}")(lambda: None)()
            if previous is not None:
                previous >> current
            previous = current

    return bare()
