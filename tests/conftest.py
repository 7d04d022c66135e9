"""Test session set-up: a private embedded stack (Airflow home, lake, keys) in a temp folder.

The environment is set before anything imports Airflow, so the suite never touches the
developer's own ``.cityfactory/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from support import (
    REPO,
    S3_BUCKET,
    S3Server,
    embedded_env,
    start_seaweedfs,
    stop_seaweedfs,
    write_fleet,
)

SESSION_HOME = Path(tempfile.mkdtemp(prefix="cityfactory-tests-"))
os.environ.update(embedded_env(SESSION_HOME))
for key in [k for k in os.environ if k.startswith(("AWS_", "CITYFACTORY_KEY_"))]:
    del os.environ[key]


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """An initialised Airflow metadata DB (SQLite, the embedded default) for dag.test runs."""
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    return home


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    """The repo's DAG folder, parsed once per test module."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.fixture
def lake_uri(tmp_path, monkeypatch) -> str:
    """A fresh local lake for one test; tasks and library calls both see it."""
    uri = (tmp_path / "lake").as_uri()
    monkeypatch.setenv("CITYFACTORY_LAKE_URI", uri)
    return uri


@pytest.fixture
def private_mlflow(tmp_path, monkeypatch) -> str:
    """A tracking store of the test's own; the process-wide URI MLflow keeps is put back after."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield uri
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Server:
    import boto3

    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                 aws_secret_access_key=server.secret_key, region_name="us-east-1").create_bucket(Bucket=S3_BUCKET)
    yield server
    stop_seaweedfs(server)


@pytest.fixture
def s3_lake_uri(s3_server, monkeypatch) -> str:
    """A fresh prefix in the session's bucket on the real S3 server, with the AWS environment
    pointing at it (one bucket: SeaweedFS gives every bucket volumes of its own)."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    uri = f"s3://{S3_BUCKET}/{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("CITYFACTORY_LAKE_URI", uri)
    return uri


@pytest.fixture(scope="session")
def history_run(airflow_db, tmp_path_factory):
    """One bulk run over the whole replayed history, every stage, with its own lake, MLflow and a
    fleet of 6 local edge nodes (all stay the session's default while it lives; tests that need
    others patch them)."""
    import mlflow
    from airflow.dag_processing.dagbag import DagBag
    from cityfactory.config.scenarios import get_scenario
    from cityfactory.edge.fleet import LocalFleet
    from cityfactory.governance.ledger import RunLedger
    from cityfactory.ingestion import replay
    from cityfactory.storage.lake import open_lake
    from cityfactory.training import registry

    home = tmp_path_factory.mktemp("training")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CITYFACTORY_LAKE_URI", (home / "lake").as_uri())
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
        mp.setenv("CITYFACTORY_FLEETS_DIR", str(write_fleet(home / "fleets", "traffic_flow", 6)))
        start, end = replay.history_interval(get_scenario("traffic_flow"))
        dag = DagBag(dag_folder=str(REPO / "dags")).get_dag("traffic_flow")
        with LocalFleet.for_scenario(get_scenario("traffic_flow")):
            run = dag.test(run_conf={"data_interval_start": str(start), "data_interval_end": str(end)})
            entries = {}
            for entry in RunLedger(open_lake(), "traffic_flow", run.run_id).entries():
                entries.setdefault(entry["task_id"], entry)  # mapped tasks: the first instance
            registry.use_experiment("traffic_flow")
            yield run, entries, mlflow.MlflowClient()
