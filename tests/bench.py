"""Benchmarks (``make bench``): figures and ratios measured side by side in one run, medians.

1. Ingestion, per scenario: the replayed history (one landed CSV per source file and day) -> typed,
   date-partitioned bronze, next to plain pyarrow writing the same rows to the same partitions.
2. Parse time of the DAG folder (fresh interpreter, median of 5): the shipped scenarios and a city
   of 40 (copies of the shipped ones under their own names, fleets and schedules), side by side.
3. One full DAG run over the whole history (dag.test) with the model spec's whole search budget:
   wall time per task next to the rows it processed, the model-quality report (the search's winner
   beside the hand-set model and the baselines on the same test rows), the search's budget, trials
   and wall time, and the compression variant table (size, accuracy, latency ratios). The later
   sections train the hand-set model alone (a search of one trial): they measure other things.
4. One edge node serving the run's bundle: requests/s and p50/p99 latency at batch 1 and 256 with
   32 concurrent clients, and the errors during hot swaps under load.
5. The nightly run (yesterday, the champion watched and kept) on the history and on a history four
   times as long (the dataset replayed at three earlier offsets as well, labelled as such): wall
   time, median of 3 nights, and their ratio.
6. Scale-out: the same whole-history run of traffic_flow on Airflow's Celery executor (PostgreSQL,
   Redis) with one worker and with two, triggered through the REST API: wall time and where it went.
7. The camera scenario (solar_cells): a whole-history run with the spec's search budget (accuracy,
   macro-F1 beside the baselines, int8 vs fp32, search time), and its node under 32 clients at
   batch 1 and batched, beside onnxruntime in-process.
8. The city at a glance (the overview page) for a city of 40 scenarios with runs, reports and
   champions: through the API server as the platform admin (40 rows) and as one department.
9. A night of the city on the Celery stack with 2 workers: 40 forecasting scenarios, then a night
   of 3 of them and a night of all 40, each night's runs triggered at once: wall time, peak memory,
   queue waits (no task starved), the scheduler's loop time, side by side.

``make bench SECTIONS="bench_parse bench_city_night"`` runs only the sections named (those that
stand alone).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from support import REPO, embedded_env

HOME = Path(tempfile.mkdtemp(prefix="cityfactory-bench-"))
os.environ.update(embedded_env(HOME))
REPEATS = 3


@contextlib.contextmanager
def scoped_env(**changes: str):
    """Environment changes for one section only: a later section never runs on an earlier one's
    scenarios, lake or fleet (a leaked gateway copy once made the scale-out ingest nothing)."""
    before = dict(os.environ)
    os.environ.update(changes)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(before)


def succeeded(state: str, what: str, reason: str = "") -> None:
    """Every figure comes from a run that succeeded: anything else ends ``make bench`` with why."""
    if state != "success":
        fail(f"make bench: {what} ended {state}, so it gives no figure{': ' + reason if reason else ''}")


def fail(message: str) -> None:
    """On stdout, where ``make bench`` shows it (its stderr carries the libraries' logs)."""
    print(message, flush=True)
    sys.exit(1)


def median_time(fn, setup=lambda: None, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_ingestion(name: str) -> None:
    """One scenario's replayed history: ours (landing -> raw copy, parse to the schema with every
    check and reason, dedup, bronze and quarantine partitions) vs plain pyarrow reading the same
    landed files and writing the same rows to the same dt partitions."""
    import datetime as dt
    import shutil

    import pyarrow as pa
    import pyarrow.csv as pv
    import pyarrow.dataset as ds
    from cityfactory.config.scenarios import get_scenario
    from cityfactory.governance.ledger import Kind, LedgerEntry
    from cityfactory.ingestion import replay
    from cityfactory.ingestion.pipeline import ingest_days
    from cityfactory.storage.lake import LocalLake

    scenario = get_scenario(name)
    start, end = replay.history_interval(scenario)
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]

    landing = LocalLake(HOME / f"landing-master-{name}")
    landed = replay.replay(scenario, landing, days).files
    rows = sum(r for _, r in landed)
    files = [landing.path_of(o.uri.removeprefix(landing.uri + "/")) for o, _ in landed]
    work = HOME / "work"
    dialect = scenario.source.csv

    def fresh_lake():
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(landing.root, work)

    def ours():
        ingest_days(scenario, LocalLake(work), days, LedgerEntry("bench", Kind.BATCH_INGESTED))

    def plain_partitioned():
        tables = []
        for path in files:
            table = pv.read_csv(path, parse_options=pv.ParseOptions(delimiter=dialect.delimiter))
            day = dt.date.fromisoformat(path.parent.name)
            tables.append(table.append_column("dt", pa.repeat(pa.scalar(day, pa.date32()), table.num_rows)))
        ds.write_dataset(pa.concat_tables(tables, promote_options="permissive"), work / "plain", format="parquet", partitioning=["dt"],
                         partitioning_flavor="hive", existing_data_behavior="overwrite_or_ignore",
                         max_partitions=len(days))

    t_ours = median_time(ours, fresh_lake)
    t_plain = median_time(plain_partitioned, fresh_lake)
    print(f"\n## Ingestion of {name}: {rows:,} rows in {len(files):,} landed files ({len(days):,} days), median of {REPEATS}")
    print(f"{'path':<62} {'seconds':>8} {'rows/s':>10}")
    for label, t in [
        ("ours: raw copy + parse + checks + reasons + bronze/quarantine", t_ours),
        ("plain pyarrow: same files -> same rows in the same dt partitions", t_plain),
    ]:
        print(f"{label:<62} {t:>8.3f} {rows / t:>10,.0f}")
    print(f"ratio plain / ours (same rows, same partitions) = {t_plain / t_ours:.2f} (target >= 0.8)")


LARGE_FILE = """
import resource, sys, time
from pathlib import Path
sys.path[:0] = [{plugins!r}, {tests!r}]
from corpus import first_day
from cityfactory.config.scenarios import get_scenario
from cityfactory.ingestion.parsing import parse_file
scenario, day = get_scenario("traffic_flow"), first_day()[0]
parse_file(b"", "warm.csv", scenario, day)  # every import and lazy load done before the file
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
data = Path({path!r}).read_bytes()
start = time.perf_counter()
read, converted = parse_file(data, "big.csv", scenario, day)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(data), converted.accepted.num_rows, converted.rejected_table.num_rows, seconds, before * 1024, peak * 1024)
"""


def bench_large_files() -> None:
    """One large landed file, parsed in a fresh interpreter: time, and the peak RSS of that process
    (the one that parses), beside the interpreter's own before the file and the file's size."""
    from corpus import first_day

    _, header, rows = first_day()
    print("\n## One large landed file (parsed in a fresh interpreter; memory = that process's peak RSS)")
    for count, good in ((2_800_000, True), (1_000_000, False)):
        line = (rows[0] if good else rows[0].rsplit(",", 1)[0] + ",many").encode() + b"\r\n"
        path = HOME / f"large-{count}.csv"
        with open(path, "wb") as out:
            out.write(",".join(header).encode() + b"\r\n")
            for _ in range(count // 10_000):
                out.write(line * 10_000)
        code = LARGE_FILE.format(plugins=str(REPO / "plugins"), tests=str(REPO / "tests"), path=str(path))
        size, accepted, rejected, seconds, before, peak = (float(v) for v in subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
        path.unlink()
        if accepted + rejected != count:
            fail(f"make bench: the large file's {count:,} rows came out as {accepted + rejected:,.0f}")
        print(f"{size / 1e6:,.0f} MB, {count:,} rows: {accepted:,.0f} accepted, {rejected:,.0f} rejected in {seconds:.1f} s; "
              f"peak RSS {peak / 1e6:,.0f} MB (interpreter before the file {before / 1e6:,.0f} MB): "
              f"{(peak - before) / size:.1f}x the file on top")


_CLOCKS = "import time; clocks = lambda: (time.perf_counter(), time.process_time());"
_DAG_FILE = REPO / "dags" / "scenario_pipelines.py"


def _parse_times(env: dict[str, str], runs: int = 5) -> dict[str, float]:
    """Medians over fresh interpreters, in seconds of wall and CPU time: importing airflow.sdk, the
    DAG file after it (the scenarios' verdict remembered, as at every re-parse of unchanged files:
    ``parse_memo``; and cold, without it), and Airflow's own share: DAGs of the same shapes rebuilt
    bare (``city.bare_copies``) in an interpreter that never ran our code, so Airflow's first imports
    of its task machinery count as its own, as they would for any DAG file; the folder's other DAG
    files, each in its own process. Also the DAGs made and the scenario files left out."""
    prelude = f"import sys, pickle, runpy; sys.path.insert(0, {str(REPO / 'tests')!r}); {_CLOCKS} t = clocks();"
    timed = "print(*(b - a for a, b in zip(s, e)))"
    with tempfile.TemporaryDirectory() as tmp:
        shapes = Path(tmp) / "shapes.pickle"
        subprocess.run([sys.executable, "-c", prelude + (
            f"g = runpy.run_path({str(_DAG_FILE)!r}); from city import dag_shapes;"
            "from cityfactory.factory.scenario_dag import build_scenario_dag;"
            f"open({str(shapes)!r}, 'wb').write(pickle.dumps(dag_shapes({{s.dag_id: build_scenario_dag(s) for s in g['_scenarios']}})))"
        )], capture_output=True, text=True, check=True, env=env)
        file = prelude + (f"import airflow.sdk; s = clocks(); g = runpy.run_path({str(_DAG_FILE)!r}); e = clocks();"
                          "print(*(b - a for a, b in zip(t, s)), *(b - a for a, b in zip(s, e)), len(g['_scenarios']), len(g['_broken']))")
        measured = {"file": (file, env), "cold": (file, {**env, "CITYFACTORY_HOME": str(Path(tmp) / "cold")}),
                    "bare": (prelude + (f"import airflow.sdk; from city import bare_copies; shapes = pickle.loads(open({str(shapes)!r}, 'rb')"
                                        f".read()); s = clocks(); bare_copies(shapes); e = clocks(); {timed}"), env)}
        others = [other.stem for other in sorted(set(_DAG_FILE.parent.glob("*.py")) - {_DAG_FILE})]
        for other in others:
            measured[other] = (prelude + f"import airflow.sdk; s = clocks(); runpy.run_path({str(_DAG_FILE.parent / f'{other}.py')!r}); e = clocks(); {timed}", env)
        outputs = {}
        for name, (code, code_env) in measured.items():
            outputs[name] = []
            for _ in range(runs):
                if name == "cold":  # no memo: a first parse after a change
                    shutil.rmtree(Path(tmp) / "cold", ignore_errors=True)
                printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=code_env).stdout
                outputs[name].append([float(v) for v in printed.split()[-6 if name in ("file", "cold") else -2:]])

    def median(name: str, i: int) -> float:
        return statistics.median(o[i] for o in outputs[name])

    return {"sdk": median("file", 0), "file": median("file", 2), "file_cpu": median("file", 3), "cold": median("cold", 2),
            "bare": median("bare", 0), "bare_cpu": median("bare", 1),
            "others": sum(median(name, 0) for name in others), "others_cpu": sum(median(name, 1) for name in others),
            "dags": int(outputs["file"][0][4]), "broken": int(outputs["file"][0][5])}


def bench_parse(city_sizes: tuple[int, ...] = (40,)) -> None:
    """The DAG file's parse time for the shipped scenarios and for a city of many (``tests/city.py``:
    copies of the shipped ones under their own names, fleets and schedules), side by side; Airflow's
    own share of building the same DAGs beside ours."""
    from city import write_city

    rows = [("shipped", _parse_times(dict(os.environ)))]
    for size in city_sizes:
        folders = write_city(HOME / f"city-{size}", size)
        env = {**os.environ, **{f"CITYFACTORY_{name}_DIR": str(path) for name, path in folders.items()}}
        rows.append((f"{size} scenarios", _parse_times(env)))
    print("\n## DAG folder parse time, median over 5 fresh interpreters each, after importing airflow.sdk (as the "
          "dag-processor does): scenario file = the scenarios' DAG file (scenario, spec and fleet files, library, DAG "
          "objects; no dbt at parse time) re-parsed, the scenarios' verdict remembered (parse_memo), and first = its "
          "first parse after a change; Airflow's share = DAGs of the same shapes rebuilt bare in an interpreter "
          "without our code (same schedule, trigger form and task count, plain tasks: tests/city.py bare_copies); "
          "other files = the folder's other DAG files, whole, each in its own process; ours = scenario file - "
          "Airflow's share + other files; CPU = the processes' CPU time")
    print(f"{'scenarios':<14} {'DAGs':>5} {'left out':>8} {'sdk ms':>7} {'scenario file ms':>16} {'first ms':>8} "
          f"{'Airflow share ms':>16} {'other files ms':>14} {'ours ms':>8} {'ours CPU ms':>11} {'ours ms / DAG':>13}")
    for label, t in rows:
        ours = t["file"] - t["bare"] + t["others"]
        print(f"{label:<14} {t['dags']:>5} {t['broken']:>8} {t['sdk'] * 1000:>7.0f} {t['file'] * 1000:>16.0f} "
              f"{t['cold'] * 1000:>8.0f} {t['bare'] * 1000:>16.0f} {t['others'] * 1000:>14.0f} {ours * 1000:>8.0f} "
              f"{(t['file_cpu'] - t['bare_cpu'] + t['others_cpu']) * 1000:>11.0f} {ours * 1000 / t['dags']:>13.1f}")
    few, many = (t["file"] - t["bare"] + t["others"] for t in (rows[0][1], rows[-1][1]))
    dags = rows[0][1]["dags"], rows[-1][1]["dags"]
    print(f"ratio ours {dags[1]} / {dags[0]} scenarios = {many / few:.2f} for {dags[1] / dags[0]:.1f}x the DAGs; "
          f"ours for {dags[1]}: {many * 1000:.0f} ms (target: < 500 ms for 40)")


def _whole_history_run(name: str) -> list[dict]:
    """One DAG run over the scenario's whole replayed history with the spec's whole search budget,
    its local fleet up; prints its wall time and task summary, returns its ledger entries."""
    from airflow.dag_processing.dagbag import DagBag
    from cityfactory.config.scenarios import get_scenario
    from cityfactory.edge.fleet import LocalFleet
    from cityfactory.governance.ledger import RunLedger
    from cityfactory.governance.summary import format_summary, task_summary
    from cityfactory.ingestion import replay
    from cityfactory.search.plan import BUDGET_CAP
    from cityfactory.storage.lake import open_lake

    scenario = get_scenario(name)
    start, end = replay.history_interval(scenario)
    dag = DagBag(dag_folder=str(REPO / "dags")).get_dag(name)
    cap = os.environ.pop(BUDGET_CAP, None)  # the spec's whole budget here
    with LocalFleet.for_scenario(scenario):
        t = time.perf_counter()
        run = dag.test(run_conf={"data_interval_start": str(start), "data_interval_end": str(end), "search_trials": None})
        wall = time.perf_counter() - t
    if cap is not None:
        os.environ[BUDGET_CAP] = cap
    entries = RunLedger(open_lake(), name, run.run_id).entries()
    succeeded(run.state, f"{name}'s whole-history run", format_summary(task_summary(entries)))
    print(f"\n## {name}: one DAG run over the whole history ({start} .. {end}): {run.state}, {wall:.1f} s wall")
    print(format_summary(task_summary(entries)))
    return entries


def bench_run(name: str) -> list[dict]:
    from cityfactory.config.scenarios import get_scenario
    from cityfactory.edge.fleet import load_fleet
    from cityfactory.governance.summary import (
        format_training,
        task_summary,
    )
    from cityfactory.tasktypes.forecast.report import series_table
    from support import write_fleet

    scenario = get_scenario(name)
    size = len(load_fleet(scenario.rollout.fleet).nodes)
    os.environ["CITYFACTORY_FLEETS_DIR"] = str(write_fleet(HOME / "fleets", scenario.rollout.fleet, size))
    entries = _whole_history_run(name)
    print("\n## Model quality (test = the last 365 days of the history; same rows for every model)")
    print(format_training(entries))
    train = next(e for e in entries if e["task_id"] == "train")
    if by_series := train["details"].get("metrics_by_series"):
        models = {k: [m[k]["rmse"] for m in by_series.values()] for k in ("model", "persistence", "linear_autoregression")}
        mean = {k: statistics.mean(v) for k, v in models.items()}
        print(f"\nPer series (test RMSE, same rows):\n{series_table(by_series, 'rmse')}")
        print(f"mean over series: model {mean['model']:.2f}, persistence {mean['persistence']:.2f}, linear "
              f"{mean['linear_autoregression']:.2f}; model / persistence = {mean['model'] / mean['persistence']:.3f}; "
              f"below linear on {sum(a < b for a, b in zip(models['model'], models['linear_autoregression']))} of {len(by_series)}")
    print(f"Training on the full history, 2-core machine: the winner's refit {train['details']['fit_seconds']} s on "
          f"{train['details']['train_rows']:,} rows; whole train task (refit, MLflow logging, registry) "
          f"{task_summary([train])[0]['wall_s']} s")
    bench_search(name, entries)
    compress = next(e for e in entries if e["task_id"] == "compress")
    print("\n## Compression variants, measured side by side in one run on the same test rows "
          "(onnxruntime, 1 thread; latency in ms; 'vs eager' = batch-1 median / torch eager fp32)")
    print(compress["details"]["table"])
    print(f"chosen: {compress['details']['chosen']} (targets: >= 3x smaller than ONNX fp32, batch-1 <= 0.3x torch eager, "
          f"test MAE within {scenario.compression.max_quality_loss:.0%} of fp32); ONNX fp32 parity with torch: max |diff| "
          f"{compress['details']['parity_max_abs']:.4f}")
    return entries


def bench_search(name: str, entries: list[dict]) -> None:
    """The search's winner beside the hand-set model (trained as before the search: training rows,
    early stopping on validation) and the baselines, on the same test rows; its budget and wall time."""
    import numpy as np
    from cityfactory.config.scenarios import get_scenario
    from cityfactory.storage.gold import read_gold
    from cityfactory.storage.lake import open_lake
    from cityfactory.tasktypes import load_model_spec
    from cityfactory.tasktypes.forecast import baselines, data
    from cityfactory.tasktypes.forecast.families import fit_hand_set
    from cityfactory.tasktypes.forecast.metrics import scores_by_series

    spec = load_model_spec(get_scenario(name).model_spec)
    by_task = {}
    for e in entries:
        by_task.setdefault(e["task_id"], []).append(e)
    [planned], [train] = by_task["plan_search"], by_task["train"]
    batches = by_task["trials"]
    trials = sum(e["counts"]["trials"] for e in batches)
    pruned = sum(e["counts"]["pruned"] for e in batches)
    wall = _seconds(planned["started_at"], train["started_at"])
    search = spec.search
    print(f"\n## Model search ({name}): budget {planned['details']['trials']} trials (seed {search.seed}, "
          f"{search.trials_per_batch} per batch: {len(batches)} batches), {trials} run, {pruned} pruned; "
          f"{wall:.0f} s wall from planning to the last trial (one embedded process: batches one after another), "
          f"{sum(e['details']['seconds'] for e in batches):.0f} s in trials")
    for family in search.families:
        best = [e["details"]["best"] for e in batches if e["details"]["family"] == family and e["details"]["best"] is not None]
        print(f"  {family:<14} best validation {search.metric.upper()} {min(best):.3f}" if best else f"  {family:<14} no completed trial")
    print(f"  winner: {train['details']['family']}")

    gold = read_gold(open_lake(), name, train["inputs"][0]["sha256"])
    d = spec.data
    parts = data.split_by_time(gold, d, spec.split)
    x_train, x_val, x_test = (data.features(p, d) for p in (parts.train, parts.validation, parts.test))
    y_train, y_val, y_test = (p[d.target].to_numpy(dtype=float) for p in (parts.train, parts.validation, parts.test))
    t = time.perf_counter()
    hand_set = fit_hand_set(spec, x_train, y_train, x_val, y_val).forecaster.predict_array(x_test)
    hand_seconds = time.perf_counter() - t
    reference = baselines.baseline_predictions(parts.train, parts.test, spec.baselines, d.target, d.series)
    metrics = train["details"]["metrics"]
    rmse = {"search winner (refit on train + validation)": metrics["model"]["rmse"],
            "hand-set model (train rows, early stopping)": float(np.sqrt(np.mean((hand_set - y_test) ** 2))),
            "linear autoregression (fit on train + validation)": metrics["linear_autoregression"]["rmse"],
            "persistence": metrics["persistence"]["rmse"]}
    print(f"  {'test RMSE, same rows (' + d.unit + ')':<52} {'pooled':>8}" + (f" {'mean over series':>17} {'/ persistence':>13}" if d.series else ""))
    series = parts.test[d.series] if d.series else None
    by_series = {}
    if d.series:
        by_series = scores_by_series(series, y_test, {"hand-set model (train rows, early stopping)": hand_set,
                                                      "persistence": reference["persistence"]})
        winner = train["details"]["metrics_by_series"]
    for label, value in rmse.items():
        line = f"  {label:<52} {value:>8.2f}"
        if d.series:
            if label in next(iter(by_series.values())):
                values = [m[label]["rmse"] for m in by_series.values()]
            else:
                key = {"search winner (refit on train + validation)": "model", "persistence": "persistence",
                       "linear autoregression (fit on train + validation)": "linear_autoregression"}[label]
                values = [m[key]["rmse"] for m in winner.values()]
            persistence = statistics.mean(m["persistence"]["rmse"] for m in winner.values())
            line += f" {statistics.mean(values):>17.2f} {statistics.mean(values) / persistence:>13.3f}"
        print(line)
    print(f"  (the hand-set model alone: {hand_seconds:.0f} s to fit here)")
    bench_compression_per_family(name, spec, train, parts)


def bench_compression_per_family(name: str, spec, train: dict, parts) -> None:
    """Every family's best trial refitted and put through its compression path, side by side."""
    import mlflow
    import pandas as pd
    from cityfactory.compression import gate
    from cityfactory.config.scenarios import get_scenario
    from cityfactory.search import results
    from cityfactory.tasktypes.forecast import data, edge, families

    budget = get_scenario(name).compression
    run_id = next(a["uri"] for a in train["outputs"] if a["kind"] == "mlflow_run").removeprefix("runs:/")
    trials = mlflow.artifacts.load_dict(f"runs:/{run_id}/search/trials.json")["trials"]
    d = spec.data
    seen = pd.concat([parts.train, parts.validation])
    x_seen, x_test = data.features(seen, d), data.features(parts.test, d)
    y_seen, y_test = seen[d.target].to_numpy(float), parts.test[d.target].to_numpy(float)
    print(f"\n## Compression of every family ({name}): each family's best trial refitted, its variants on the same "
          f"test rows; budget: test MAE within {budget.max_quality_loss:.0%} of ONNX fp32")
    print(f"{'family':<14} {'chosen':<22} {'fp32 bytes':>10} {'chosen bytes':>12} {'x smaller':>9} {'dMAE %':>7} "
          f"{'b1 ms fp32':>10} {'b1 ms chosen':>12}  int8 dynamic")
    for family in spec.search.families:
        done = [t for t in trials if t["family"] == family and t["state"] == "complete"]
        if not done:
            continue
        best = results.winner(done)
        model = families.refit(family, spec, best["params"], best["best_step"], x_seen, y_seen, spec.search.seed)
        with tempfile.TemporaryDirectory() as tmp:
            variants, _ = edge.compress(spec, model, x_seen, y_seen, x_test, y_test, Path(tmp), budget.parity_tolerance)
        by_name = {v.name: v for v in variants}
        fp32, int8 = by_name["onnx_fp32"], by_name["int8_dynamic"]
        try:
            chosen = gate.choose(variants, "mae", budget.max_quality_loss)
        except gate.CompressionGateError:
            chosen = None
        int8_note = f"{fp32.size_bytes / int8.size_bytes:.2f}x smaller, dMAE {100 * (int8.quality['mae'] / fp32.quality['mae'] - 1):+.2f} %"
        if chosen is None:
            print(f"{family:<14} {'none within budget':<22} {fp32.size_bytes:>10}  {int8_note}")
            continue
        print(f"{family:<14} {chosen.name:<22} {fp32.size_bytes:>10} {chosen.size_bytes:>12} "
              f"{fp32.size_bytes / chosen.size_bytes:>9.2f} {100 * (chosen.quality['mae'] / fp32.quality['mae'] - 1):>7.2f} "
              f"{fp32.b1_median_ms:>10.4f} {chosen.b1_median_ms:>12.4f}  {int8_note}")


async def _load(url: str, payload: dict | bytes, seconds: float, clients: int,
                content_type: str = "application/json", headers: dict | None = None) -> tuple[list[float], int]:
    """``clients`` concurrent keep-alive connections (aiohttp), each posting back to back."""
    import asyncio

    import aiohttp

    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(session):
        nonlocal errors
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                async with session.post(url, data=body, headers={"Content-Type": content_type, **(headers or {})}) as response:
                    await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - start)
            errors += not ok

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return latencies, errors


def bench_edge(entries: list[dict]) -> None:
    """One node on loopback: throughput and latency under 32 concurrent clients, and a hot swap."""
    import asyncio

    import httpx
    import numpy as np
    from cityfactory.compression import bundle
    from cityfactory.security.signing import public_key_pem
    from cityfactory.storage.lake import open_lake
    from support import free_ports, wait_for_port

    compress = next(e for e in entries if e["task_id"] == "compress")
    uri = compress["outputs"][0]["uri"].rsplit("/", 1)[0]
    lake = open_lake()
    files = bundle.read(lake, uri.split("/lake/", 1)[1])
    manifest = json.loads(files["manifest.json"])
    facts = {k: v for k, v in manifest.items() if k not in ("files", "created_at", "signing_key_id")}
    newer = [str(int(manifest["model_version"]) + 1000 + i) for i in range(6)]  # a node only moves up
    for version in newer:
        bundle.write(lake, "traffic_flow", version, bundle.build({"model.onnx": files["model.onnx"]}, {**facts, "model_version": version}))
    (HOME / "public.pem").write_bytes(public_key_pem())
    token = "bench-" + os.urandom(4).hex()

    def start(port: int, *extra: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "cityfactory.edge", "serve", "--port", str(port), "--node-id", "bench",
                                 "--public-key", str(HOME / "public.pem"), "--bundle", uri, "--scenario", "traffic_flow",
                                 "--registered-model", manifest["registered_model"],
                                 "--bundle-base", lake.uri_for("bundles/traffic_flow/"), *extra],
                                env={**os.environ, "CITYFACTORY_EDGE_TOKEN": token, "CITYFACTORY_CONSUMER_TOKEN": consumer,
                                     "PYTHONPATH": str(REPO / "plugins")})

    port, logged_port = free_ports(2)
    row = [100.0] * len(manifest["feature_order"])
    consumer = "bench-consumer-" + os.urandom(4).hex()
    hour = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).replace(minute=0, second=0, microsecond=0).isoformat()
    print("\n## Edge node on loopback (uvicorn, 1 process; 32 concurrent clients in one asyncio process on the same 2 cores)")
    print("off: no prediction log, no rate limit; on: every row logged before its answer (consumer token, keys checked "
          "against the window) and the per-client rate limit checked on every request (set high enough not to refuse)")
    medians = {}
    for label, node_port, extra in (("off", port, ("--rate", "0")),
                                    ("on", logged_port, ("--prediction-log", str(HOME / "served"), "--rate", "1e9",
                                                         "--burst", "1000000000"))):
        node = start(node_port, *extra)
        try:
            wait_for_port(node_port)
            for batch in (1, 256):
                body = {"rows": [row] * batch, "keys": [{"series": None, "predicted_for": hour}] * batch}
                latencies, errors = asyncio.run(_load(f"http://127.0.0.1:{node_port}/predict", body, 8, 32,
                                                      headers={"Authorization": f"Bearer {consumer}"}))
                ms = np.array(latencies) * 1000
                medians[(label, batch)] = np.percentile(ms, 50)
                print(f"{label:<7} batch {batch:>3}: {len(ms) / 8:,.0f} requests/s ({len(ms) * batch / 8:,.0f} predictions/s), "
                      f"p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms, errors {errors}")
        finally:
            node.terminate()
            node.wait(timeout=20)
    print("ratio p50 on / off: " + ", ".join(f"batch {b} {medians[('on', b)] / medians[('off', b)]:.2f}" for b in (1, 256)))
    node = start(port, "--rate", "0")
    try:
        wait_for_port(port)
        base = f"http://127.0.0.1:{port}"

        async def swap_under_load():
            load = asyncio.create_task(_load(f"{base}/predict", {"rows": [row]}, 6, 32))
            async with httpx.AsyncClient(timeout=30) as admin:
                for target in (f"bundles/traffic_flow/{v}" for v in newer):
                    await asyncio.sleep(0.5)
                    answer = await admin.post(f"{base}/admin/deploy", json={"uri": lake.uri_for(target)},
                                              headers={"Authorization": f"Bearer {token}"})
                    assert answer.status_code == 200, answer.text
            return await load

        latencies, errors = asyncio.run(swap_under_load())
        print(f"hot swap: 6 deploys during 6 s of load, {len(latencies):,} requests served, errors {errors}")
    finally:
        node.terminate()
        node.wait(timeout=20)


COLLECT_CHILD = """
import json, resource, sys, time
from cityfactory.edge.fleet import Fleet, Node
from cityfactory.monitoring.collect import collect
from cityfactory.storage.lake import open_lake
started = time.perf_counter()
got = collect(open_lake(sys.argv[2]), "traffic_flow", Fleet(nodes=[Node(id="bench", district="d", url=sys.argv[1])]),
              sys.argv[3], "UTC", timeout=600)
print(json.dumps({"rows": got.rows, "refused": sum(got.refused.values()), "objects": len(got.stored),
                  "seconds": time.perf_counter() - started,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _segment(path: Path, size: int) -> int:
    """A node's log segment of about ``size`` bytes of served rows (the last day's hours, 24 series);
    one line in a thousand is hostile (a far-future key or a torn line)."""
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    lines = []
    for i in range(100_000):
        hostile = i % 1000 == 999
        lines.append(json.dumps({"served_at": now.timestamp() - i % 3600, "node": "bench", "model_version": "7",
                                 "series": f"s{i % 24}", "predicted_for": "9999-12-31T23:00:00+00:00" if hostile else
                                 (now - dt.timedelta(hours=i % 24)).isoformat(), "input_sha256": f"{i:016x}",
                                 "prediction": 1000.0 + i % 977, "purpose": "serve"}))
    block = ("\n".join(lines) + "\n").encode()
    with open(path, "wb") as out:
        out.writelines(block for _ in range(max(1, size // len(block))))
    return path.stat().st_size


def bench_collect() -> None:
    """Collect memory and time against the size of a node's prediction log: flat memory, linear time."""
    from support import free_ports, wait_for_port

    print("\n## Collecting a node's prediction log (streamed; one process measured per size)")
    print("size    rows         set aside  objects  seconds  peak RSS")
    from cityfactory.security.signing import public_key_pem

    token = "bench-" + os.urandom(4).hex()
    HOME.mkdir(parents=True, exist_ok=True)
    (HOME / "public.pem").write_bytes(public_key_pem())
    results = {}
    for size in (100 << 20, 1 << 30):
        work = Path(tempfile.mkdtemp(prefix="collect-", dir=HOME))
        logs = work / "served"
        folder = logs / f"bench-{_state_of(work)}"  # the node's own log folder: the segment is closed, waiting
        folder.mkdir(parents=True)
        written = _segment(folder / "seg-00000001.jsonl", size)
        [port] = free_ports(1)
        node = subprocess.Popen([sys.executable, "-m", "cityfactory.edge", "serve", "--port", str(port), "--node-id", "bench",
                                 "--public-key", str(HOME / "public.pem"), "--scenario", "traffic_flow",
                                 "--registered-model", "cityfactory.traffic_flow", "--bundle-base", (work / "lake").as_uri(),
                                 "--prediction-log", str(logs)],
                                env={**os.environ, "CITYFACTORY_EDGE_TOKEN": token, "PYTHONPATH": str(REPO / "plugins")})
        try:
            wait_for_port(port)
            child = subprocess.run([sys.executable, "-c", COLLECT_CHILD, f"http://127.0.0.1:{port}", (work / "lake").as_uri(),
                                    token], capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": str(REPO / "plugins")})
            if child.returncode:
                raise RuntimeError(child.stderr[-2000:])
            got = json.loads(child.stdout.strip().splitlines()[-1])
        finally:
            node.terminate()
            node.wait(timeout=20)
        results[size] = got
        print(f"{written / (1 << 20):>5,.0f} MB {got['rows']:>11,} {got['refused']:>10,} {got['objects']:>8} "
              f"{got['seconds']:>8.1f} {got['peak_rss_mb']:>6,.0f} MB")
        shutil.rmtree(work, ignore_errors=True)
    small, large = results[100 << 20], results[1 << 30]
    print(f"ratio 1 GB / 100 MB: peak RSS {large['peak_rss_mb'] / small['peak_rss_mb']:.2f} (target <= 300 MB at 1 GB), "
          f"time {large['seconds'] / small['seconds']:.1f}")


def _state_of(work: Path) -> str:
    """The folder name a node gives its log (``cityfactory.edge.__main__``): its pin's digest."""
    import hashlib

    return hashlib.sha256(f"traffic_flow|cityfactory.traffic_flow|{(work / 'lake').as_uri()}".encode()).hexdigest()[:12]


def bench_governance(entries: list[dict]) -> None:
    """What governance costs a run: the report from its ledger, and verifying the whole trail."""
    from cityfactory.config.scenarios import get_scenario
    from cityfactory.governance import audit, lineage, report
    from cityfactory.governance.summary import task_summary
    from cityfactory.security.signing import audit_public_key_pem
    from cityfactory.storage.lake import open_lake

    run = {"run_id": entries[0]["run_id"], "run_type": "manual", "triggered_by": None, "conf": {}, "code_version": "bench"}
    states = {e["task_id"]: e["status"] for e in entries}
    trail = {"first_seq": None, "last_seq": None, "verified": True, "verified_entries": 0, "error": None}
    sizes = {}

    def build():
        facts = report.assemble(get_scenario("traffic_flow"), entries, run, states, trail)
        sizes.update(json=len(json.dumps(facts, default=str)), html=len(report.render_html(facts, lineage.svg(lineage.build(entries)))))

    t_report = median_time(build)
    lake = open_lake()
    t_verify = median_time(lambda: audit.verify(lake, audit_public_key_pem()))
    t_quick = median_time(lambda: audit.verify(lake, audit_public_key_pem(), full=False))
    [governance] = [r for r in task_summary(entries) if r["task"] == "governance"]
    print(f"\n## Governance of that run ({len(entries):,} ledger entries), median of {REPEATS}")
    print(f"report (assemble + schema check + lineage + HTML) {t_report * 1000:.0f} ms: JSON {sizes['json']:,} bytes, "
          f"HTML {sizes['html']:,} bytes; whole governance task {governance['wall_s']} s (incl. MLflow artifacts, audit, seal)")
    print(f"audit verify over {len(audit.entries(lake))} entries (local lake): full (every entry re-read, root rebuilt) "
          f"{t_verify * 1000:.1f} ms; from the witnessed checkpoint {t_quick * 1000:.1f} ms")


def _city_with_runs(base: str, token: str, names: list[str], report: bytes, champion: tuple[str, str]) -> None:
    """Each city scenario gets a finished run (triggered, then marked success through the REST API;
    its report a copy of ``report``) and a champion (a version of the same model files)."""
    import mlflow
    from cityfactory.governance.ledger import RunLedger
    from cityfactory.storage.lake import join_key, open_lake
    from cityfactory.training import registry
    from support import api_call, wait_for

    lake, client = open_lake(), mlflow.MlflowClient(registry.tracking_uri())
    source = client.get_model_version(*champion)
    for name in names:
        wait_for(lambda n=name: api_call("GET", f"{base}/api/v2/dags/{n}", token), 300, f"{name} not parsed")
        run = api_call("POST", f"{base}/api/v2/dags/{name}/dagRuns", token, {"logical_date": None})
        api_call("PATCH", f"{base}/api/v2/dags/{name}/dagRuns/{run['dag_run_id']}", token, {"state": "success"})
        lake.put_bytes(join_key(RunLedger(lake, name, run["dag_run_id"]).prefix, "report.json"), report)
        model = f"cityfactory.{name}"
        client.create_registered_model(model)
        version = client.create_model_version(model, source.source, source.run_id)
        client.set_registered_model_alias(model, registry.CHAMPION, version.version)
        client.set_model_version_tag(model, version.version, registry.PROMOTED_AT, dt.datetime.now(dt.UTC).isoformat())


def bench_overview(entries: list[dict], size: int = 40) -> None:
    """The city at a glance for a city of ``size`` scenarios, each with a finished run and a champion:
    the page through Airflow's API server (FAB auth, its metadata DB), as the platform admin (every
    scenario) and as one department's operator (its share), median of 9 requests each."""
    import urllib.request

    from city import write_city
    from cityfactory import services
    from cityfactory.config.scenarios import scan_scenarios
    from cityfactory.governance.ledger import RunLedger
    from cityfactory.storage.lake import join_key, open_lake
    from cityfactory.training import registry
    from support import free_ports

    folders = write_city(HOME / f"overview-{size}", size)
    env = {f"CITYFACTORY_{name}_DIR": str(path) for name, path in folders.items()}
    scenarios = scan_scenarios(folders["SCENARIOS"])[0]
    report = open_lake().get_bytes(join_key(RunLedger(open_lake(), "traffic_flow", entries[0]["run_id"]).prefix, "report.json"))
    champion = ("cityfactory.traffic_flow", registry.alias_version("cityfactory.traffic_flow", registry.CHAMPION))
    [port], passwords = free_ports(1), HOME / f"overview-{size}" / "passwords.json"
    base = f"http://127.0.0.1:{port}"
    airflow = services.start_airflow(port, passwords, HOME / "logs" / "overview-airflow.log", env)
    try:
        services.wait_healthy(base, airflow)
        logins = json.loads(passwords.read_text())
        _city_with_runs(base, services.login_token(base, logins["admin"]), [s.dag_id for s in scenarios], report, champion)
        department = scenarios[0].domain
        rows = []
        for login in ("admin", f"{department}-operator"):
            token = services.login_token(base, logins[login], login)

            def page(token=token) -> bytes:
                request = urllib.request.Request(f"{base}/cityfactory-overview/", headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(request, timeout=60) as response:
                    return response.read()

            body = page().decode()  # warm: the app's first request imports what it needs
            shown = sum(f">{s.name}</a>" in body for s in scenarios)
            if "never run" in body or shown == 0:
                fail(f"the overview as {login} shows {shown} scenarios, or some without their run")
            rows.append((login, shown, len(body), median_time(page, repeats=9)))
    finally:
        services.stop(airflow)
    print(f"\n## The city at a glance, {size} scenarios each with a finished run, its report and a champion: "
          "GET through Airflow's API server (FAB auth, SQLite metadata DB, local lake, MLflow on SQLite), median of 9")
    print(f"{'login':<26} {'scenarios':>9} {'page KB':>8} {'ms':>7}")
    for login, shown, length, seconds in rows:
        print(f"{login:<26} {shown:>9} {length / 1024:>8.1f} {seconds * 1000:>7.0f}")
    (_, n_all, _, t_all), (_, n_one, _, t_one) = rows
    print(f"ratio {n_all} / {n_one} scenarios: time x{t_all / t_one:.2f} for x{n_all / n_one:.1f} the rows "
          f"(target: under 1 s for {size})")


def bench_nightly(copies: tuple[int, ...] = (1, 4), nights: int = 3) -> None:
    """A gateway deployment per history length: the history landed (the dataset at ``copies``
    offsets, each one span of whole weeks earlier), one bulk run, then the night of the last day."""
    import yaml
    from cityfactory.config.scenarios import get_scenario
    from cityfactory.ingestion import replay
    from support import write_fleet

    replayed = get_scenario("traffic_flow")
    first, last = replay.history_interval(replayed)
    weeks = -(-((last - first).days + 1) // 7)  # the history's span, in whole weeks (weekdays keep their meaning)
    span, shift = dt.timedelta(weeks=weeks), replay.time_shift(replayed) // dt.timedelta(weeks=1)
    config = yaml.safe_load((REPO / "dags" / "scenarios" / "traffic_flow.yaml").read_text())
    config["source"]["kind"] = "gateway"
    # the copies repeat the test year inside the training rows, so the 4x model is overfit and its
    # int8 variant loses more than 1 % MAE against it: a wider budget keeps the measure about time
    config["compression"]["max_quality_loss"] = 0.05
    scenarios = HOME / "nightly-scenarios"
    scenarios.mkdir(exist_ok=True)
    (scenarios / "traffic_flow.yaml").write_text(yaml.safe_dump(config))
    results = {}
    for n in copies:
        home = HOME / f"nightly-x{n}"
        home.mkdir(parents=True, exist_ok=True)
        with scoped_env(CITYFACTORY_SCENARIOS_DIR=str(scenarios), CITYFACTORY_LAKE_URI=(home / "lake").as_uri(),
                        MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}",
                        CITYFACTORY_FLEETS_DIR=str(write_fleet(home / "fleets", "traffic_flow", 3))):
            results[n] = _nightly(replayed, n, span, shift, weeks, first, last, nights)
    print(f"\n## The nightly run (one day ingested, the champion monitored and kept), median of {nights} nights")

    print(f"{'history':<52} {'gold rows':>10} {'night s':>8}  decision")
    for n, (_, state, rows, wall, summary) in results.items():
        label = "the replayed history" if n == 1 else f"{n}x: the dataset replayed at {n - 1} earlier offsets too"
        print(f"{label:<52} {rows:>10,} {wall:>8.1f}  {state}: {summary}")
    one, four = results[copies[0]][3], results[copies[-1]][3]
    print(f"ratio night on {copies[-1]}x history / on 1x = {four / one:.2f} (target <= 1.3)")


def _nightly(replayed, n: int, span, shift: int, weeks: int, first, last, nights: int) -> tuple:
    """One gateway deployment: ``n`` copies of the history landed, the bulk run, ``nights`` nights."""
    from airflow.dag_processing.dagbag import DagBag
    from cityfactory.config.scenarios import get_scenario
    from cityfactory.edge.consumers import serve_days
    from cityfactory.edge.fleet import LocalFleet
    from cityfactory.governance.ledger import RunLedger
    from cityfactory.ingestion import replay
    from cityfactory.storage.lake import open_lake

    lake = open_lake()
    for k in range(n):  # copy k plays the dataset k spans earlier
        source = replayed.source.model_copy(update={"time_shift": shift - k * weeks})
        copy = replayed.model_copy(update={"source": source})
        start, end = replay.history_interval(copy)
        replay.replay(copy, lake, [start + dt.timedelta(days=i) for i in range((end - start).days + 1)])
    scenario = get_scenario("traffic_flow")
    dag = DagBag(dag_folder=str(REPO / "dags" / "scenario_pipelines.py")).get_dag("traffic_flow")
    with LocalFleet.for_scenario(scenario):
        history = dag.test(run_conf={"data_interval_start": str(first - (n - 1) * span), "data_interval_end": str(last)})
        succeeded(history.state, f"the nightly bench's bulk run on {n}x history")
        walls, rows = [], 0
        for _ in range(nights):
            serve_days(scenario, last, last)
            t = time.perf_counter()
            night = dag.test(run_conf={"data_interval_start": str(last), "data_interval_end": str(last)})
            walls.append(time.perf_counter() - t)
            succeeded(night.state, f"a night on {n}x history")
            entries = {e["task_id"]: e for e in RunLedger(lake, "traffic_flow", night.run_id).entries()}
            rows = entries["export_gold"]["counts"]["rows"]
    return history.state, night.state, rows, statistics.median(walls), entries["decide"]["details"]["summary"]


def _seconds(start: str | None, end: str | None) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() if start and end else 0.0


def bench_scale_out() -> None:
    """One whole-history run of traffic_flow per worker count, each on a fresh stack and lake."""
    from cityfactory.config.scenarios import get_scenario
    from cityfactory.edge.fleet import LocalFleet
    from cityfactory.ingestion import replay
    from support import production_stack, trigger_and_wait, write_fleet

    scenario = get_scenario("traffic_flow")
    start, end = replay.history_interval(scenario)
    rows = []
    for workers in (1, 2):
        home = HOME / f"celery-{workers}"
        with scoped_env(CITYFACTORY_LAKE_URI=(home / "lake").as_uri(),
                        CITYFACTORY_FLEETS_DIR=str(write_fleet(home / "fleets", scenario.rollout.fleet, 6))), \
                production_stack(home, workers) as (stack, token), LocalFleet.for_scenario(scenario):
            run, instances = trigger_and_wait(stack, token, "traffic_flow",
                                              {"data_interval_start": str(start), "data_interval_end": str(end)})
        succeeded(run["state"], f"the scale-out run on {workers} Celery worker(s)")
        ran = [ti for ti in instances if ti["start_date"]]
        busy = sum(_seconds(ti["start_date"], ti["end_date"]) for ti in ran)
        spans = sorted((ti["start_date"], ti["end_date"]) for ti in ran if ti["end_date"])
        covered, reach = 0.0, None
        for begin, finish in spans:  # the union of the tasks' running intervals
            if reach is None or begin > reach:
                covered, reach = covered + _seconds(begin, finish), finish
            elif finish > reach:
                covered, reach = covered + _seconds(reach, finish), finish
        queued = sum(_seconds(ti["queued_when"], ti["start_date"]) for ti in ran)
        by_task: dict[str, float] = {}
        for ti in ran:
            by_task[ti["task_id"]] = by_task.get(ti["task_id"], 0.0) + _seconds(ti["start_date"], ti["end_date"])
        wall = _seconds(run["start_date"], run["end_date"])
        rows.append({"workers": workers, "state": run["state"], "wall": wall, "busy": busy, "idle": wall - covered,
                     "queued": queued, "tasks": len(ran), "by_task": by_task})
    print(f"\n## Scale-out: traffic_flow's whole history ({start} .. {end}) on the Celery executor, "
          "triggered through the REST API (PostgreSQL, Redis, concurrency 1 per worker, 2-core machine)")
    print("wall = run start to end; task s = summed running time of all task instances; no task s = wall time in which "
          "no task ran (scheduling, Celery hand-off, task process start); queued s = summed queued-to-running waits")
    print(f"{'workers':>7} {'state':<8} {'wall s':>7} {'task s':>7} {'no task s':>9} {'queued s':>8} {'tasks':>5}  "
          "busiest tasks (s, summed over instances)")
    for r in rows:
        top = sorted(r["by_task"].items(), key=lambda kv: -kv[1])[:5]
        print(f"{r['workers']:>7} {r['state']:<8} {r['wall']:>7.1f} {r['busy']:>7.1f} {r['idle']:>9.1f} {r['queued']:>8.1f} "
              f"{r['tasks']:>5}  " + ", ".join(f"{t} {v:.0f}" for t, v in top))
    one, two = rows
    print(f"ratio wall 1 worker / 2 workers = {one['wall'] / two['wall']:.2f}; task seconds 2 / 1 = "
          f"{two['busy'] / one['busy']:.2f} (two task processes share two cores)")



class PeakMemory:
    """The peak of the summed RSS of a stack's processes and everything under them (task processes
    included), sampled every half second while the block runs: ``with PeakMemory({name: pid}) as memory``."""

    def __init__(self, roots: dict[str, int]):
        import threading

        self.roots, self.peak, self.by_group = roots, 0, {}
        self._stop, self._thread = threading.Event(), threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        while not self._stop.wait(0.5):
            groups = {}
            for name, pid in self.roots.items():
                with contextlib.suppress(psutil.Error):
                    root = psutil.Process(pid)
                    for process in (root, *root.children(recursive=True)):
                        with contextlib.suppress(psutil.Error):
                            groups[name] = groups.get(name, 0) + process.memory_info().rss
            self.peak = max(self.peak, sum(groups.values()))
            for name, rss in groups.items():
                self.by_group[name] = max(self.by_group.get(name, 0), rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _trigger_all(stack, token: str, dag_ids: list[str], conf_of) -> list[tuple[str, str]]:
    """One run of each DAG, as fast as the API takes them (a DAG not serialized yet answers 404: wait)."""
    from cityfactory.services import api_call
    from support import wait_for

    return [(d, wait_for(lambda d=d: api_call("POST", f"{stack.base_url}/api/v2/dags/{d}/dagRuns", token, {
        "logical_date": None, "conf": conf_of(d)}), 300, f"{d} not parsed", every=1)["dag_run_id"]) for d in dag_ids]


def _wait_all(stack, token: str, runs: list[tuple[str, str]], what: str, timeout: float = 7200) -> list[tuple[dict, list[dict]]]:
    """Every run finished, each with its task instances; any run that failed ends the bench."""
    from support import finished_run

    done = []
    for dag_id, run_id in runs:
        run, instances = finished_run(stack, token, dag_id, run_id, timeout)
        succeeded(run["state"], f"{what}: {dag_id}")
        done.append((run, instances))
    return done


LOOP_LOGGER = "airflow.jobs.scheduler_job_runner=DEBUG"  # its DEBUG line times each scheduling loop


def _loop_times(log: Path, offset: int) -> list[float]:
    """The scheduler's loop durations (ms) logged since ``offset``."""
    import re

    text = log.read_bytes()[offset:].decode(errors="replace")
    return [float(ms) for ms in re.findall(r"Ran scheduling loop in ([0-9.]+) ms", text)]


def _night(stack, token: str, dag_ids: list[str]) -> dict:
    """All of ``dag_ids``'s nights triggered at once (no days: yesterday on each scenario's clock;
    retrain never: an incremental night), measured from the first trigger to the last task's end."""
    from cityfactory.factory.steps import INGESTION_FIRST, STEPS

    log = stack.home / "logs" / "scheduler.log"
    offset = log.stat().st_size
    roots = {name: p.pid for name, p in stack.processes.items()}
    workers = {name for name in roots if name.startswith("worker-")}
    with PeakMemory(roots) as memory:
        started = dt.datetime.now(dt.UTC)
        runs = _wait_all(stack, token, _trigger_all(stack, token, dag_ids, lambda d: {"retrain": "never"}),
                         f"a night of {len(dag_ids)} scenarios")
    ran = [ti for _, instances in runs for ti in instances if ti["start_date"]]
    end = max(ti["end_date"] for ti in ran)
    waits = sorted(_seconds(ti["queued_when"], ti["start_date"]) for ti in ran if ti["queued_when"])
    ingest_waits = [_seconds(ti["queued_when"], ti["start_date"]) for ti in ran
                    if ti["queued_when"] and ti["task_id"] in STEPS and STEPS[ti["task_id"]].priority == INGESTION_FIRST]
    loops = _loop_times(log, offset)
    return {"scenarios": len(dag_ids), "tasks": len(ran), "wall": _seconds(started.isoformat(), end),
            "task_s": sum(_seconds(ti["start_date"], ti["end_date"]) for ti in ran),
            "wait_max": waits[-1], "wait_median": statistics.median(waits), "ingest_wait_max": max(ingest_waits),
            "peak_mb": memory.peak / 2**20,
            "workers_mb": sum(v for k, v in memory.by_group.items() if k in workers) / 2**20,
            "loop_median": statistics.median(loops), "loop_p95": statistics.quantiles(loops, n=20)[-1],
            "loops": len(loops)}


def bench_city_night(size: int = 40, small: int = 3, bulk_days: int = 14) -> None:
    """A night of a whole city on the Celery stack (2 workers, PostgreSQL, Redis): ``size`` forecasting
    scenarios (``tests/city.py``), each with ``bulk_days`` of history ingested first, then a night of ``small``
    of them and a night of all, every run triggered at once through the REST API."""
    from city import write_city
    from cityfactory.pipeline.preflight import usable_scenarios
    from support import not_scheduled_yet, production_stack

    home = HOME / f"city-night-{size}"
    # the forecasters: the camera replay has no images after its dataset's last day, and a night
    # with none stops at the bronze gate, as a camera gone dark should; nights come from the triggers
    folders = write_city(home / "config", size, not_scheduled_yet, bases=("air_quality", "traffic_flow"))
    env = {f"CITYFACTORY_{name}_DIR": str(path) for name, path in folders.items()}
    with scoped_env(**env, CITYFACTORY_LAKE_URI=(home / "lake").as_uri()), \
            production_stack(home, 2, component_env={"scheduler": {"AIRFLOW__LOGGING__NAMESPACE_LEVELS": LOOP_LOGGER}}) \
            as (stack, token):
        scenarios = {s.dag_id: s for s in usable_scenarios(folders["SCENARIOS"])[0]}

        def bulk(dag_id: str) -> dict:
            yesterday = dt.datetime.now(dt.UTC).astimezone(ZoneInfo(scenarios[dag_id].timezone)).date() - dt.timedelta(days=1)
            return {"data_interval_start": str(yesterday - dt.timedelta(days=bulk_days)),
                    "data_interval_end": str(yesterday - dt.timedelta(days=1)), "retrain": "never"}

        t = time.perf_counter()
        _wait_all(stack, token, _trigger_all(stack, token, list(scenarios), bulk), f"the {bulk_days} days' history")
        history = time.perf_counter() - t
        nights = [_night(stack, token, list(scenarios)[:small]), _night(stack, token, list(scenarios))]
    print(f"\n## A night of the city on the Celery executor: 2 workers (concurrency 1), PostgreSQL, Redis, 2 cores; "
          f"{size} scenarios ({bulk_days} days of history each first: {history:.0f} s), each night's runs triggered at once "
          "(retrain never: ingest yesterday, gates, dbt, monitor, decide, governance; no champions, so no edge fleets "
          "to collect from)")
    print("wall = first trigger to the last task's end; peak memory = summed RSS of every Airflow process and the task "
          "processes under them; wait = a task instance's queued-to-running time; loop = the scheduler's loop "
          "(its own DEBUG line)")
    print(f"{'scenarios':>9} {'tasks':>5} {'wall s':>7} {'task s':>7} {'peak MB':>8} {'workers MB':>10} "
          f"{'wait med s':>10} {'wait max s':>10} {'ingest wait max s':>17} {'loop med ms':>11} {'loop p95 ms':>11}")
    for n in nights:
        print(f"{n['scenarios']:>9} {n['tasks']:>5} {n['wall']:>7.0f} {n['task_s']:>7.0f} {n['peak_mb']:>8.0f} "
              f"{n['workers_mb']:>10.0f} {n['wait_median']:>10.1f} {n['wait_max']:>10.1f} {n['ingest_wait_max']:>17.1f} "
              f"{n['loop_median']:>11.1f} {n['loop_p95']:>11.1f}")
    few, many = nights
    print(f"ratio {many['scenarios']} / {few['scenarios']} scenarios: wall {many['wall'] / few['wall']:.1f}x, peak memory "
          f"{many['peak_mb'] / few['peak_mb']:.2f}x, scheduler loop (median) {many['loop_median'] / few['loop_median']:.2f}x "
          f"for {many['scenarios'] / few['scenarios']:.1f}x the scenarios")

def bench_camera() -> None:
    """The camera scenario: one DAG run over the whole replayed history with the spec's whole
    search budget (accuracy, macro-F1, int8 vs fp32, search wall time), then its bundle on one node
    under 32 clients (raw PNG, batch 1) and batched (multipart), beside onnxruntime in-process."""
    from cityfactory.governance.summary import format_training, task_summary

    entries = _whole_history_run("solar_cells")
    by_task = {e["task_id"]: e for e in entries}
    print("\n## Camera model quality (ELPV, defective = expert probability >= 0.5; the same test images for every "
          "model; published anchors: SVM 82.44 %, GPU CNN 88.42 %; targets >= 85 %, goal 90 %)")
    print(format_training(entries))
    trials = [e for e in entries if e["task_id"] == "trials"]
    search_s = sum(r["wall_s"] for r in task_summary(trials)) if trials else 0.0
    print(f"search: {sum(e['counts'].get('trials', 0) for e in trials)} trials in {search_s:.0f} s of task time "
          f"(target: within 20 minutes); train task {task_summary([by_task['train']])[0]['wall_s']} s")
    compress = by_task["compress"]["details"]
    print("\n## Camera compression (accuracy and recalls in points; latency in ms, onnxruntime, 1 thread)")
    print(compress["table"])
    print(f"chosen: {compress['choice']}")

    bench_camera_edge(entries)


def bench_camera_edge(entries: list[dict]) -> None:
    """The camera run's bundle on one node: batch 1 under 32 clients, batched, beside in-process."""
    import asyncio

    import httpx
    import numpy as np
    import onnxruntime as ort
    from cityfactory.compression import bundle, preprocessing
    from cityfactory.security.signing import public_key_pem
    from cityfactory.storage.gold import read_gold
    from cityfactory.storage.lake import open_lake
    from support import free_ports, wait_for_port

    by_task = {e["task_id"]: e for e in entries}
    uri = by_task["compress"]["outputs"][0]["uri"].rsplit("/", 1)[0]
    lake = open_lake()
    files = bundle.read(lake, uri.split("/lake/", 1)[1])
    manifest = json.loads(files["manifest.json"])
    prep = manifest["preprocessing"]
    gold = read_gold(lake, "solar_cells")
    images = [lake.get_bytes(k) for k in gold["image_key"].head(64)]
    session = ort.InferenceSession(files["model.onnx"], providers=["CPUExecutionProvider"])

    def in_process(batch: list[bytes]):
        pixels = np.stack([preprocessing.pixels(b, prep["mode"], int(prep["size"])) for b in batch])
        return session.run(None, {"features": preprocessing.as_inputs(pixels)})

    one = median_time(lambda: in_process(images[:1]), repeats=50) * 1000
    many = median_time(lambda: in_process(images), repeats=5)
    (HOME / "public.pem").write_bytes(public_key_pem())
    [port] = free_ports(1)
    node = subprocess.Popen([sys.executable, "-m", "cityfactory.edge", "serve", "--port", str(port), "--node-id", "bench-cam",
                             "--public-key", str(HOME / "public.pem"), "--bundle", uri, "--scenario", "solar_cells",
                             "--registered-model", manifest["registered_model"], "--max-rows", "64",
                             "--max-body-bytes", "16000000", "--bundle-base", lake.uri_for("bundles/solar_cells/")],
                            env={**os.environ, "CITYFACTORY_EDGE_TOKEN": "bench", "PYTHONPATH": str(REPO / "plugins")})
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}/predict"
        latencies, errors = asyncio.run(_load(url, images[0], 8, 32, "image/png"))
        ms = np.array(latencies) * 1000
        request = httpx.Request("POST", url, files=[("image", (f"{i}.png", b, "image/png")) for i, b in enumerate(images)])
        body = request.read()
        batched, batch_errors = asyncio.run(_load(url, body, 8, 4, request.headers["content-type"]))
    finally:
        node.terminate()
        node.wait(timeout=20)
    print(f"\n## Camera edge node (uvicorn, 1 process, {prep['size']}x{prep['size']} {prep['mode']} input; clients on the "
          "same 2 cores)")
    print(f"batch 1, 32 clients, raw PNG: {len(ms) / 8:,.0f} images/s, p50 {np.percentile(ms, 50):.2f} ms, p99 "
          f"{np.percentile(ms, 99):.2f} ms (target <= 20 ms), errors {errors}")
    print(f"batch 64, 4 clients, multipart: {len(batched) * 64 / 8:,.0f} images/s (target >= 500), errors {batch_errors}")
    print(f"onnxruntime in-process, same preprocessing: batch 1 {one:.2f} ms; batch 64 {64 / many:,.0f} images/s; "
          f"ratio node p50 / in-process batch 1 = {np.percentile(ms, 50) / one:.2f}")


if __name__ == "__main__":
    import logging
    import signal

    # a stopped bench (SIGTERM, e.g. from `timeout`) unwinds: its Celery stacks and nodes stop with it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    if sys.argv[1:]:  # sections that stand alone, by name
        for section in sys.argv[1:]:
            globals()[section]()
        sys.exit()
    for scenario in ("traffic_flow", "air_quality"):
        bench_ingestion(scenario)
    bench_large_files()
    bench_parse()
    logging.disable(logging.INFO)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    bench_run("air_quality")
    entries = bench_run("traffic_flow")
    bench_governance(entries)
    bench_overview(entries)
    bench_edge(entries)
    bench_collect()
    bench_nightly()
    bench_scale_out()
    bench_camera()
    bench_city_night()
