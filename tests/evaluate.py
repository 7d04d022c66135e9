"""Model quality with the production search budget (``make evaluate``), reproduced.

Each forecaster's whole replayed history runs twice through its DAG (the two at once), each time on
a fresh embedded stack in a fresh interpreter, with the model spec's whole search budget (no
development cap). Printed side by side, on the same test rows (the last 365 days): the project's
model, persistence, the linear autoregression and LightGBM with its default settings (trained on the
training rows, early stopping on validation; where the spec lets trees train on rows with gaps, also
so); the search's validation/test rank correlation; and how
far the second run's test RMSE lies from the first's. A run that does not succeed fails
``make evaluate`` with its reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from support import REPO, embedded_env

SCENARIOS = ("traffic_flow", "air_quality")
REPRODUCED = 0.005  # the second run's test RMSE within 0.5 % of the first's


def fail(message: str) -> None:
    """On stdout, where ``make evaluate`` shows it (its stderr carries the libraries' logs)."""
    print(message, flush=True)
    sys.exit(1)


def one_run(name: str, home: Path) -> dict:
    """The whole history through the DAG on the stack under ``home`` (this interpreter's env)."""
    import numpy as np
    from airflow.dag_processing.dagbag import DagBag
    from cityfactory.config.scenarios import get_scenario
    from cityfactory.edge.fleet import LocalFleet, load_fleet
    from cityfactory.governance.ledger import RunLedger
    from cityfactory.governance.summary import format_summary, task_summary
    from cityfactory.ingestion import replay
    from cityfactory.storage.gold import read_gold
    from cityfactory.storage.lake import open_lake
    from cityfactory.tasktypes import load_model_spec, task_type_of
    from cityfactory.tasktypes.forecast import families
    from support import write_fleet

    scenario = get_scenario(name)
    fleet = scenario.rollout.fleet
    os.environ["CITYFACTORY_FLEETS_DIR"] = str(write_fleet(home / "fleets", fleet, len(load_fleet(fleet).nodes)))
    start, end = replay.history_interval(scenario)
    dag = DagBag(dag_folder=str(REPO / "dags")).get_dag(name)
    with LocalFleet.for_scenario(scenario):
        began = time.perf_counter()
        run = dag.test(run_conf={"data_interval_start": str(start), "data_interval_end": str(end), "search_trials": None})
        wall = time.perf_counter() - began
    entries = RunLedger(open_lake(), name, run.run_id).entries()
    if run.state != "success":
        return {"state": run.state, "reason": format_summary(task_summary(entries))}
    train = next(e for e in entries if e["task_id"] == "train")
    spec = load_model_spec(scenario.model_spec)
    kind = task_type_of(spec)
    examples = kind.examples(spec, read_gold(open_lake(), name, train["inputs"][0]["sha256"]))
    rmse = lambda model: float(np.sqrt(np.mean((model.predict_array(examples.x_test) - examples.y_test) ** 2)))
    trees = families.fit("lightgbm", spec, {}, examples.x_train, examples.y_train, examples.x_validation,
                         examples.y_validation, "rmse", spec.search.seed)
    # the same settings on the rows the search's trees see (with gaps, where the spec allows them)
    gaps = examples.split.get("rows_with_gaps", 0)
    with_gaps = rmse(kind.fit("lightgbm", spec, {}, examples, "rmse", spec.search.seed).model) if gaps else None
    metrics = train["details"]["metrics"]
    return {"state": "success", "wall": wall, "family": train["details"]["search"].get("chosen") or train["details"]["family"],
            "trials": train["details"]["search"]["trials"], "folds": train["details"]["search"]["folds"],
            "rank_correlation": train["details"]["search"]["rank_correlation"],
            "fingerprint": train["details"]["fingerprint"], "model": metrics["model"]["rmse"],
            "persistence": metrics["persistence"]["rmse"], "linear": metrics["linear_autoregression"]["rmse"],
            "lightgbm": rmse(trees.forecaster), "rows_with_gaps": gaps, "lightgbm_with_gaps": with_gaps}


def run_in_fresh_stack(name: str) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"cityfactory-evaluate-{name}-"))
    env = {**os.environ, **embedded_env(home), "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO / "tests")])}
    del env["CITYFACTORY_SEARCH_TRIALS"]  # the spec's whole budget: what production runs nightly
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    done = subprocess.run([sys.executable, __file__, "--one", name, str(home)], check=False, env=env, capture_output=True,
                          text=True)
    if done.returncode:
        fail(f"{name}: the evaluation run crashed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["state"] != "success":
        fail(f"{name}: the run did not succeed ({result['state']}), so it gives no figure:\n{result['reason']}")
    return result


def main(names: list[str]) -> None:
    print("## Model quality, production search budget, whole history; test = the last 365 days, same rows for all")
    for name in names:
        with ThreadPoolExecutor(2) as pool:  # the two runs at once: each search fits on one thread
            first, second = pool.map(run_in_fresh_stack, [name, name])
        drift = abs(second["model"] - first["model"]) / first["model"]
        print(f"{name}: {first['trials']} trials over {first['folds']} validation folds, model {first['family']}, "
              f"{first['wall']:.0f} s and {second['wall']:.0f} s wall")
        if name == "traffic_flow":
            print(f"traffic_flow test RMSE = {first['model']:.1f} (linear {first['linear']:.1f}, lightgbm "
                  f"{first['lightgbm']:.1f}, persistence {first['persistence']:.1f})")
        if first["lightgbm_with_gaps"] is not None:
            print(f"{name} lightgbm, default settings, also on the {first['rows_with_gaps']:,} training rows with "
                  f"gaps: {first['lightgbm_with_gaps']:.2f}")
        else:
            print(f"air_quality test RMSE / persistence = {first['model'] / first['persistence']:.3f} (model "
                  f"{first['model']:.2f}, persistence {first['persistence']:.2f}, linear {first['linear']:.2f}, "
                  f"lightgbm {first['lightgbm']:.2f}; pooled over stations)")
        correlation = first["rank_correlation"]
        print(f"{name} rank correlation validation/test = "
              + ("n/a (under 3 scored trials)" if correlation is None else f"{correlation:.2f}"))
        same = first["fingerprint"] == second["fingerprint"]
        print(f"{name} second run: test RMSE {second['model']:.3f} vs {first['model']:.3f} = {drift:.2%} apart "
              f"(target <= {REPRODUCED:.1%}); model {second['family']}; same examples: {same}")
        if drift > REPRODUCED or not same:
            fail(f"{name}: the second run did not reproduce the first")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        import logging

        logging.disable(logging.INFO)
        print(json.dumps(one_run(sys.argv[2], Path(sys.argv[3]))))
    elif unknown := set(sys.argv[1:]) - set(SCENARIOS):
        fail(f"no forecaster to evaluate: {', '.join(sorted(unknown))} (known: {', '.join(SCENARIOS)})")
    else:
        main(sys.argv[1:] or list(SCENARIOS))
