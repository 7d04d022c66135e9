"""dbt transforms: one ``dbt build`` per run (models and their tests, in graph order).

dbt's fixed cost per invocation is seconds, so the scenario's whole selection is built in one call
rather than one call per model; every model's and test's result is
recorded in the run ledger. Each scenario writes its own DuckDB file (one writer per file).
DuckDB here has no network extensions, so an S3 lake's bronze is mirrored to a local cache first.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cityfactory.config.scenarios import Scenario
from cityfactory.settings import get_settings
from cityfactory.storage.lake import Lake, LocalLake, join_key

log = logging.getLogger(__name__)


class TransformError(RuntimeError):
    """dbt failed: the message names each failed model or test."""

    def __init__(self, message: str, report: DbtReport | None = None):
        super().__init__(message)
        self.report = report


@dataclass
class DbtReport:
    models: list[dict] = field(default_factory=list)
    tests: list[dict] = field(default_factory=list)

    @property
    def failures(self) -> list[dict]:
        return [r for r in self.models + self.tests if r["status"] in ("error", "fail", "skipped")]


def duckdb_path(scenario: Scenario) -> Path:
    """The scenario's DuckDB file for the current lake: incremental models hold state derived
    from one lake's bronze, so each lake has its own file."""
    import hashlib

    settings = get_settings()
    lake = hashlib.sha256(settings.lake_uri.encode()).hexdigest()[:8]
    return settings.home / "duckdb" / f"{scenario.name}-{lake}.duckdb"


def model_uri(database: Path, model: str) -> str:
    """How ledgers and lineage name a dbt model's relation."""
    return f"duckdb://{database}/{model}"


def local_lake_root(lake: Lake, scenario: Scenario) -> Path:
    """A local folder with the lake's layout holding this scenario's bronze (a mirror for S3)."""
    if isinstance(lake, LocalLake):
        return lake.root
    mirror = get_settings().cache_dir / "lake-mirror" / lake.uri.removeprefix("s3://").replace("/", "_")
    prefix = join_key("bronze", scenario.name)
    wanted = set(lake.list(prefix))
    for key in sorted(wanted):
        target = mirror / key
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(lake.get_bytes(key))
    local = mirror / prefix
    for stale in [p for p in local.rglob("*.parquet") if p.relative_to(mirror).as_posix() not in wanted]:
        stale.unlink()
    return mirror


def run_dbt(scenario: Scenario, lake_root: Path, window: dict | None = None, full_refresh: bool = False) -> DbtReport:
    """``dbt build`` in a child process (its DuckDB connection closes with it, and dbt's logging
    stays out of the task's), then the per-node results from ``run_results.json``. ``window``
    (see ``run_window``) limits what incremental models rebuild; ``full_refresh`` rebuilds all."""
    database = duckdb_path(scenario)
    database.parent.mkdir(parents=True, exist_ok=True)
    settings = get_settings()
    target = settings.home / "dbt" / scenario.name / "target"
    command = [
        str(Path(sys.executable).parent / "dbt"), "build",
        "--project-dir", str(settings.dbt_dir),
        "--profiles-dir", str(settings.dbt_dir),
        "--target-path", str(target),
        "--log-path", str(target.parent / "logs"),
        "--select", scenario.transform.dbt_select,
        "--vars", json.dumps({"lake_root": str(lake_root), "scenario": scenario.name, "timezone": scenario.timezone,
                              **(window or {})}),
        *(["--full-refresh"] if full_refresh else []),
    ]
    env = {**os.environ, "CITYFACTORY_DUCKDB_PATH": str(database), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    (target / "run_results.json").unlink(missing_ok=True)
    process = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # judged below
    log.info("dbt build:\n%s", process.stdout[-4000:])
    try:
        results = json.loads((target / "run_results.json").read_text())["results"]
        nodes = json.loads((target / "manifest.json").read_text())["nodes"]
    except OSError:
        raise TransformError(f"dbt build {scenario.transform.dbt_select} did not run: {process.stdout[-2000:]}") from None
    report = DbtReport()
    for result in results:
        node = nodes[result["unique_id"]]
        row = {
            "name": node["name"],
            "unique_id": result["unique_id"],
            "status": result["status"],
            "seconds": round(result["execution_time"], 3),
            "message": result["message"],
        }
        if node["resource_type"] == "test":
            report.tests.append({**row, "failures": result["failures"]})
        else:
            upstream = [nodes[u]["name"] for u in node["depends_on"]["nodes"] if u in nodes]
            report.models.append({**row, "relation": node["relation_name"], "depends_on": upstream,
                                  "checksum": node["checksum"]["checksum"]})
    if report.failures or process.returncode != 0:
        lines = [f"{r['name']}: {r['status']} ({r['message']})" for r in report.failures]
        raise TransformError(f"dbt build for {scenario.name} failed: " + "; ".join(lines or [process.stdout[-1000:]]), report)
    return report


class DbtListError(RuntimeError):
    """dbt could not parse the project or list a selection: the message is dbt's own words."""


class ModelListing:
    """The models each dbt selection picks, from one parse of the project in this process: a
    selection then lists in a tenth of a second, where a ``dbt ls`` process took 7 s each (its
    import and its parse of the whole project every time: 40 scenarios validated in 5 minutes).
    dbt's console output is kept out of the caller's and only told when it fails."""

    def __init__(self):
        settings = get_settings()
        self.target = settings.home / "dbt" / "validate"
        self._flags = ["--project-dir", str(settings.dbt_dir), "--profiles-dir", str(settings.dbt_dir),
                       "--target-path", str(self.target), "--log-path", str(self.target / "logs"), "--quiet",
                       "--no-send-anonymous-usage-stats"]
        self._runner = None
        self._unparsable: DbtListError | None = None  # told to every selection, not parsed again for each

    @property
    def manifest_path(self) -> Path:
        return self.target / "manifest.json"

    def models(self, select: str) -> list[str]:
        """Names of the models ``select`` picks (``DbtListError`` if dbt cannot parse or list)."""
        from dbt.cli.main import dbtRunner

        if self._unparsable:
            raise self._unparsable
        if self._runner is None:  # no database is opened: the lake root only has to be a path
            try:
                manifest = self._invoke(dbtRunner(), ["parse", "--vars", json.dumps({"lake_root": "/nonexistent"})])
            except DbtListError as exc:
                self._unparsable = exc
                raise
            self._runner = dbtRunner(manifest=manifest)
        listed = self._invoke(self._runner, ["ls", "--resource-type", "model", "--output", "json", "--select", select])
        return [json.loads(line)["name"] for line in listed]

    def _invoke(self, runner, args: list[str]):
        import contextlib
        import io

        said = io.StringIO()
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
            outcome = runner.invoke([*args, *self._flags])
        if not outcome.success:
            raise DbtListError(said.getvalue().strip() or str(outcome.exception))
        return outcome.result


def run_window(days: list[dt.date], zone: str, lookback_days: int) -> dict:
    """The UTC bounds (dbt vars) of what a run over ``days`` rebuilds: the mart rows of its days
    and of the ``lookback_days`` after them (their lags reach into the run's days), read from
    the bronze rows of those days plus ``lookback_days`` before."""
    from cityfactory.run_calendar import day_bounds

    output_from, _ = day_bounds(days[0], days[0], zone)
    _, input_to = day_bounds(days[-1], days[-1] + dt.timedelta(days=lookback_days), zone)
    stamp = "%Y-%m-%d %H:%M:%S"
    return {"input_from": (output_from - dt.timedelta(days=lookback_days)).strftime(stamp),
            "output_from": output_from.strftime(stamp), "input_to": input_to.strftime(stamp)}


def has_model(scenario: Scenario, model: str) -> bool:
    """Whether the scenario's DuckDB file holds ``model`` (an incremental model needs a first full build)."""
    import duckdb

    if not duckdb_path(scenario).exists():
        return False
    with duckdb.connect(str(duckdb_path(scenario)), read_only=True) as connection:
        return connection.execute("select count(*) from information_schema.tables where table_name = ?",
                                  [model]).fetchone()[0] > 0


def definition_digest(report: DbtReport) -> str:
    """One sha256 over the SQL of every model built: changes when a feature's definition does."""
    import hashlib

    text = "\n".join(f"{m['name']}:{m['checksum']}" for m in sorted(report.models, key=lambda m: m["name"]))
    return hashlib.sha256(text.encode()).hexdigest()


def model_rows(scenario: Scenario, report: DbtReport) -> dict[str, int]:
    """Row count of every model the build made."""
    import duckdb

    with duckdb.connect(str(duckdb_path(scenario)), read_only=True) as connection:
        return {m["name"]: connection.execute(f"select count(*) from {m['relation']}").fetchone()[0] for m in report.models}


def read_model(scenario: Scenario, model: str, time_column: str | None = None, window: dict | None = None):
    """A built model as a pandas DataFrame (read-only connection: the writer is dbt); with a run
    ``window``, only the rows it rewrote."""
    import duckdb

    where = (f"where \"{time_column}\" >= '{window['output_from']}'::timestamp "
             f"and \"{time_column}\" < '{window['input_to']}'::timestamp") if window and time_column else ""
    with duckdb.connect(str(duckdb_path(scenario)), read_only=True) as connection:
        return connection.sql(f'select * from "{model}" {where}').df()


def read_days(scenario: Scenario, first: dt.date, last: dt.date):
    """The features mart's rows whose time falls on ``first``..``last`` (days in the scenario's zone)."""
    from cityfactory.run_calendar import day_bounds

    start, end = day_bounds(first, last, scenario.timezone)
    stamp = "%Y-%m-%d %H:%M:%S"
    return read_model(scenario, scenario.transform.features_model, scenario.transform.time,
                      {"output_from": start.strftime(stamp), "input_to": end.strftime(stamp)})
