"""Airflow as production runs it, on one machine's services: every component its own process
(api-server, scheduler, dag-processor, triggerer), the Celery executor with Redis as broker and
PostgreSQL as metadata DB and result backend, and as many Celery workers as asked.

docker-compose.yml runs the same components in containers; this is how the tests and the scale-out
bench run them here, where there is no container engine. Each worker reports its own name as the
task instances' hostname, so the UI and the REST API say which worker ran what.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import psutil

from cityfactory import services
from cityfactory.access.logins import admin_password
from cityfactory.factory.pools import training_pool
from cityfactory.settings import REPO_ROOT

WORKER_NAME = "CITYFACTORY_WORKER_NAME"


def worker_hostname() -> str:
    """``[core] hostname_callable`` of a worker: its name where several share one machine."""
    return os.environ.get(WORKER_NAME) or socket.getfqdn()


def celery_env(home: Path, database_url: str, broker_url: str, port: int, jwt_secret: str) -> dict[str, str]:
    """The configuration every component shares (one JWT secret, one DB, one broker)."""
    database = database_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": "airflow.providers.celery.executors.celery_executor.CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database_url,
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",  # a busy worker leaves queued tasks to idle ones
        "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
        "AIRFLOW__CORE__AUTH_MANAGER": services.FAB_AUTH_MANAGER,
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "PYTHONPATH": str(REPO_ROOT / "plugins"),
    }


@dataclass
class CeleryStack:
    """``with CeleryStack(home, database_url, broker_url, port, workers=2) as stack:``"""

    home: Path
    database_url: str
    broker_url: str
    port: int
    workers: int = 2
    concurrency: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    component_env: dict[str, dict[str, str]] = field(default_factory=dict)  # by component, e.g. a scheduler's log level
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        shared = celery_env(self.home, self.database_url, self.broker_url, self.port, self.jwt_secret)
        return {**os.environ, **shared, **self.extra_env}

    def _start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        airflow = str(Path(sys.executable).parent / "airflow")
        log = open(self.home / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - held by the child process
        process = subprocess.Popen([airflow, *args], env=env or self.env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        log.close()
        self.processes[name] = process
        return process

    def start_worker(self, name: str) -> subprocess.Popen:
        """One Celery worker, named ``name``. Its task logs are files the api-server reads from the
        same disk, so it serves none (Airflow's log server would listen on every interface)."""
        env = {**self.env, WORKER_NAME: name}
        process = self._start(name, "celery", "worker", "--celery-hostname", f"{name}@%h", "--skip-serve-logs",
                              "--concurrency", str(self.concurrency), "--without-gossip", "--without-mingle", env=env)
        log = self.home / "logs" / f"{name}.log"
        deadline = time.monotonic() + 120
        while b" ready." not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Celery worker {name} did not start; see {log}")
            time.sleep(0.5)
        return process

    def kill_worker(self, name: str) -> None:
        """SIGKILL a worker and every process under it, as a lost machine would."""
        root = psutil.Process(self.processes[name].pid)
        victims = [root, *root.children(recursive=True)]
        for process in victims:
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        self.processes[name].wait(timeout=30)

    def __enter__(self) -> Self:
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        passwords = self.home / "passwords.json"
        self.password = admin_password(passwords)
        airflow = str(Path(sys.executable).parent / "airflow")
        for command in ([airflow, "db", "migrate"], [airflow, *training_pool().set_command()[1:]],
                        services.sync_access_command(passwords)):
            done = subprocess.run(command, env=self.env, capture_output=True, text=True, check=False)
            if done.returncode:
                raise RuntimeError(f"{' '.join(command[1:4])} failed: {done.stderr[-2000:]}")
        try:
            # the scheduler's and triggerer's log servers would listen on every interface (8793/8794);
            # their task logs are files the api-server reads from the same disk
            for component, *options in (("api-server",), ("scheduler", "--skip-serve-logs"), ("dag-processor",),
                                        ("triggerer", "--skip-serve-logs")):
                self._start(component, component, *options, env={**self.env, **self.component_env.get(component, {})})
            services.wait_healthy(self.base_url, *self.processes.values())
            for index in range(self.workers):
                self.start_worker(f"worker-{index + 1}")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        for process in self.processes.values():
            services.stop(process)

