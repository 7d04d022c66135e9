"""Start the embedded services: Airflow (api-server, scheduler, dag-processor, triggerer) and the
MLflow UI.

The four run as ``airflow standalone`` would run them (LocalExecutor), but started here so that
nothing listens beyond loopback: the API on 127.0.0.1, and no log server at all (standalone's
scheduler and triggerer would serve task logs on 0.0.0.0:8793/8794; on one machine the API server
reads the log files itself). Logins go through the FAB auth manager, whose roles give each
department its own scenarios (``cityfactory.access``); their passwords are generated once into the
git-ignored home; we wait until the API answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"


def sync_access_command(passwords_file: Path) -> list[str]:
    """The command that writes the city's roles and logins into Airflow's FAB tables."""
    return [sys.executable, "-m", "cityfactory.cli", "sync-access", "--passwords", str(passwords_file)]


def components(passwords_file: Path) -> str:
    """The embedded stack's shell line: the metadata DB migrated, the shared pool set, the city's
    roles and logins written, then every Airflow component in one process group."""
    from cityfactory.factory.pools import training_pool

    return (f"airflow db migrate > /dev/null && {shlex.join(training_pool().set_command())} > /dev/null && "
            f"{shlex.join(sync_access_command(passwords_file))} > /dev/null && "
            "{ airflow api-server & airflow scheduler --skip-serve-logs & airflow dag-processor & "
            "airflow triggerer --skip-serve-logs & wait; }")


def start_airflow(port: int, passwords_file: Path, log_file: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    environment = {
        **os.environ,
        **(env or {}),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",  # loopback by default: the embedded stack is not a server for others
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
    }
    bin_dir = str(Path(sys.executable).parent)
    environment["PATH"] = bin_dir + os.pathsep + environment.get("PATH", "")  # `airflow` of this virtualenv
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:  # one process group: stop() ends every component
        return subprocess.Popen(["bash", "-c", components(passwords_file)], env=environment, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def start_mlflow_ui(port: int, log_file: Path) -> subprocess.Popen:
    """The MLflow UI (runs and the model registry) on the embedded tracking store."""
    from cityfactory.training.registry import tracking_uri

    mlflow = str(Path(sys.executable).parent / "mlflow")
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            [mlflow, "ui", "--backend-store-uri", tracking_uri(), "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


def _poll(ready, processes: tuple[subprocess.Popen, ...], timeout: float, what: str) -> None:
    """Call ``ready()`` until it is true; fail early if a process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{' '.join(map(str, process.args[:2]))} exited with {process.returncode}; see its log")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{what} not ready after {timeout}s")


def wait_for_url(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    def answers() -> bool:
        with urllib.request.urlopen(url, timeout=5):
            return True

    _poll(answers, (process,), timeout, url)


def wait_healthy(base_url: str, *processes: subprocess.Popen, timeout: float = 240) -> None:
    """Airflow's API answers and reports a healthy metadata DB and scheduler (while every one of
    ``processes`` lives)."""

    def healthy() -> bool:
        with urllib.request.urlopen(f"{base_url}/api/v2/monitor/health", timeout=5) as response:
            health = json.loads(response.read())
        return all(health.get(c, {}).get("status") == "healthy" for c in ("metadatabase", "scheduler"))

    _poll(healthy, processes, timeout, f"Airflow at {base_url}")


def live_members(group: int) -> list[int]:
    """The processes of a process group that still run (zombies waiting for their reaper do not)."""
    members = []
    for entry in Path("/proc").iterdir():
        try:
            state, _, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # not a process, or gone
        if int(pgrp) == group and state != "Z":
            members.append(int(entry.name))
    return members


def stop(process: subprocess.Popen, grace: float = 30) -> None:
    """Stop the whole process group (standalone's children included, which may outlive it):
    TERM, then KILL whatever of the group still runs after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        process.poll()  # reap the leader
        if not live_members(process.pid):
            break
        time.sleep(0.5)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        settled = time.monotonic() + 5  # a KILL lands asynchronously: on a busy machine not at once
        while live_members(process.pid) and time.monotonic() < settled:
            process.poll()
            time.sleep(0.05)
    process.wait()


def api_call(method: str, url: str, token: str | None = None, body: dict | None = None) -> dict:
    """One call to Airflow's REST API (JSON in, JSON out)."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=30) as response:
        return json.loads(response.read() or b"{}")


def login_token(base_url: str, password: str, username: str = "admin") -> str:
    """An API token for a login (the platform admin unless named)."""
    return api_call("POST", f"{base_url}/auth/token", body={"username": username, "password": password})["access_token"]


def unpause(base_url: str, password: str, dag_ids: list[str], process: subprocess.Popen,
            timeout: float = 240) -> dict[str, str | None]:
    """Unpause ``dag_ids`` once the dag-processor has parsed them, through Airflow's REST API (as
    the UI's toggle does); returns each DAG's next scheduled run (ISO, UTC) as Airflow plans it."""
    token = login_token(base_url, password)
    parsed: set[str] = set()

    def all_parsed() -> bool:
        for dag_id in set(dag_ids) - parsed:
            try:
                api_call("GET", f"{base_url}/api/v2/dags/{dag_id}", token)
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
            else:
                parsed.add(dag_id)
        return parsed == set(dag_ids)

    _poll(all_parsed, (process,), timeout, "the DAGs' first parse")
    return {dag_id: api_call("PATCH", f"{base_url}/api/v2/dags/{dag_id}", token, {"is_paused": False})["next_dagrun_run_after"]
            for dag_id in dag_ids}
