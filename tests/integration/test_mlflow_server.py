"""The production tracking path: an MLflow server on PostgreSQL with artifacts on S3 (SeaweedFS),
behind MLflow's basic-auth app (deny by default): the pipeline writes as its service account, and
each department reads only its own scenarios' experiments and models."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from cityfactory import cli, services
from cityfactory.access.logins import admin_password
from cityfactory.access.mlflow_access import PIPELINE_LOGIN
from cityfactory.config.scenarios import get_scenario
from cityfactory.pipeline.train_stage import RunFacts, train_and_register
from cityfactory.tasktypes import load_model_spec
from support import S3_BUCKET, free_ports, postgres_admin


@pytest.fixture
def mlflow_server(s3_server, tmp_path, monkeypatch):
    database, prefix = f"cityfactory_mlflow_{uuid.uuid4().hex[:8]}", f"mlflow-{uuid.uuid4().hex[:8]}"
    postgres_admin(f"CREATE DATABASE {database}")
    [port] = free_ports(1)
    passwords = tmp_path / "passwords.json"
    auth_config = tmp_path / "basic_auth.ini"
    auth_config.write_text(f"[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = sqlite:///{tmp_path}/auth.db\n"
                           f"admin_username = admin\nadmin_password = {admin_password(passwords)}\n")
    env = {**s3_server.env(), "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint, "MLFLOW_AUTH_CONFIG_PATH": str(auth_config),
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--app-name", "basic-auth",
               "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}",
               "--artifacts-destination", f"s3://{S3_BUCKET}/{prefix}"]
    previous = mlflow.get_tracking_uri()
    with open(tmp_path / "mlflow.log", "wb") as log:
        process = subprocess.Popen(command, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        services.wait_for_url(f"http://127.0.0.1:{port}/health", process, timeout=180)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
        assert cli.main(["sync-mlflow-access", "--passwords", str(passwords)]) == 0
        logins = json.loads(passwords.read_text())  # the pipeline's tasks write as the service account
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", PIPELINE_LOGIN)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", logins[PIPELINE_LOGIN])
        yield prefix, s3_server, f"http://127.0.0.1:{port}", passwords
    finally:
        services.stop(process)
        mlflow.set_tracking_uri(previous)  # the client library keeps the last URI process-wide
        postgres_admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def _synthetic_gold(days: int = 500) -> pd.DataFrame:
    """A small feature table of the traffic_flow shape (the real one is exercised elsewhere)."""
    rng = np.random.default_rng(7)
    times = pd.date_range("2024-01-01", periods=days * 24, freq="h")
    level = 3000 + 2000 * np.sin(2 * np.pi * (times.hour - 6) / 24) + rng.normal(0, 150, len(times))
    volume = pd.Series(np.clip(level, 0, None)).round()
    frame = pd.DataFrame({"target_at": times, "target_volume": volume})
    for lag in (*range(1, 25), 168):
        frame[f"volume_lag_{lag}h"] = volume.shift(lag)
    for column, hours in (("volume_weekly_median", 0), ("volume_weekly_median_1h", 1)):
        frame[column] = pd.concat([volume.shift(168 * weeks + hours) for weeks in range(1, 5)], axis=1).median(axis=1)
    frame["volume_above_weekly_median_1h"] = frame["volume_lag_1h"] - frame["volume_weekly_median_1h"]
    frame["volume_mean_24h"] = volume.shift(1).rolling(24).mean()
    frame["volume_std_24h"] = volume.shift(1).rolling(24).std()
    frame["observed_hours_24h"] = 24
    frame["hour_of_day"], frame["day_of_week"], frame["month"] = times.hour, times.dayofweek + 1, times.month
    frame["is_weekend"], frame["is_holiday"] = frame["day_of_week"] >= 6, False
    for column in ("temp_c_lag_1h", "rain_mm_lag_1h", "snow_mm_lag_1h", "clouds_pct_lag_1h"):
        frame[column] = rng.normal(0, 1, len(times))
    frame["is_complete"] = frame.notna().all(axis=1)
    return frame


def test_training_tracks_to_postgres_and_s3(mlflow_server, tmp_path):
    prefix, s3, *_ = mlflow_server
    spec = load_model_spec(get_scenario("traffic_flow").model_spec)
    spec = spec.model_copy(update={"split": spec.split.model_copy(update={"test_days": 60, "validation_days": 30}),
                                   "training": spec.training.model_copy(update={"epochs": 2})})
    gold = _synthetic_gold()
    source = tmp_path / "gold.parquet"
    gold.to_parquet(source)
    outcome = train_and_register(spec, gold, RunFacts("traffic_flow", "traffic_flow", "manual__prod", "2024", source.as_uri(), "f" * 64))

    client = mlflow.MlflowClient()
    assert client.get_run(outcome.mlflow_run_id).data.metrics["test_rmse"] > 0
    assert str(client.get_model_version(spec.registered_model, outcome.version).version) == outcome.version
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id=s3.access_key,
                                           aws_secret_access_key=s3.secret_key, region_name="us-east-1")
            .list_objects_v2(Bucket=S3_BUCKET, Prefix=prefix)["Contents"]]
    assert any(k.endswith("model_card.md") for k in keys) and any("/model" in k for k in keys)
    assert any(k.endswith("forecast_test_week.png") for k in keys)


def test_each_department_reads_only_its_own_models(mlflow_server):
    """Registered models and experiments by department: environment's logins read air_quality's
    (its viewer cannot edit it), transport's get 403, a stranger 401; run twice, the sync changes
    nothing."""
    _, _, base, passwords = mlflow_server
    logins = json.loads(passwords.read_text())
    model = load_model_spec(get_scenario("air_quality").model_spec).registered_model
    experiment = mlflow.MlflowClient().get_experiment_by_name("cityfactory/air_quality").experiment_id

    def status(login: str | None, method: str, path: str, **kwargs) -> int:
        auth = (login, logins[login]) if login else None
        return requests.request(method, f"{base}/api/2.0/mlflow/{path}", auth=auth, timeout=30, **kwargs).status_code

    def reads(login: str | None) -> tuple[int, int]:
        return (status(login, "GET", "registered-models/get", params={"name": model}),
                status(login, "GET", "experiments/get", params={"experiment_id": experiment}))

    assert reads("environment-operator") == reads("environment-viewer") == (200, 200)
    assert reads("transport-operator") == reads("transport-viewer") == (403, 403)
    assert reads(None) == (401, 401)
    describe = {"json": {"name": model, "description": "checked by the environment team"}}
    assert status("environment-viewer", "PATCH", "registered-models/update", **describe) == 403
    assert status("transport-operator", "PATCH", "registered-models/update", **describe) == 403
    assert status("environment-operator", "PATCH", "registered-models/update", **describe) == 200
    traffic = load_model_spec(get_scenario("traffic_flow").model_spec).registered_model
    assert status("transport-viewer", "GET", "registered-models/get", params={"name": traffic}) == 200
    assert cli.main(["sync-mlflow-access", "--passwords", str(passwords)]) == 0  # again: grants kept, not doubled
    assert reads("environment-viewer") == (200, 200) and reads("transport-operator") == (403, 403)
    assert json.loads(passwords.read_text()) == logins
