"""MLflow's grants: each scenario's experiment and registered model to its own department's logins
only (operators edit, viewers read); a deployment's passwords in the environment win."""

from __future__ import annotations

from cityfactory.access.mlflow_access import (
    PIPELINE_LOGIN,
    Grant,
    Tracked,
    given_passwords,
    mlflow_grants,
)


def test_each_scenario_is_granted_to_its_own_department_only():
    grants = mlflow_grants({"air_quality": Tracked("environment", "7", "air_quality_forecaster"),
                            "traffic_flow": Tracked("transport", "3", "traffic_flow_forecaster")})
    assert set(grants) == {
        Grant("environment-operator", "experiment", "7", "EDIT"), Grant("environment-viewer", "experiment", "7", "READ"),
        Grant("environment-operator", "registered_model", "air_quality_forecaster", "EDIT"),
        Grant("environment-viewer", "registered_model", "air_quality_forecaster", "READ"),
        Grant("transport-operator", "experiment", "3", "EDIT"), Grant("transport-viewer", "experiment", "3", "READ"),
        Grant("transport-operator", "registered_model", "traffic_flow_forecaster", "EDIT"),
        Grant("transport-viewer", "registered_model", "traffic_flow_forecaster", "READ"),
    }
    assert len(grants) == 8


def test_passwords_a_deployment_sets_win(monkeypatch):
    for key in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    assert given_passwords() == {}
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "a")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "someone-else")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "p")
    assert given_passwords() == {"admin": "a"}  # another login's password is not the service account's
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", PIPELINE_LOGIN)
    assert given_passwords() == {"admin": "a", PIPELINE_LOGIN: "p"}
