"""The same departments in MLflow (its basic-auth app, deny by default): each scenario's experiment
and registered model are read by its department's viewers, edited by its operators, and a 403 to
every other login. The pipeline writes as a service account that creates both, and so manages them;
the MLflow admin (the platform team) only makes the users and the grants.

MLflow's grants are per login and resource, made as ``mlflow_grants`` says each time this runs
(after a scenario is added), with the logins' passwords from the same file as Airflow's. A grant no
longer wanted (a scenario moved to another department) is not taken back here: revoke it with
MLflow's ``revoke_user_permission``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from cityfactory.access.logins import login_passwords
from cityfactory.access.roles import ADMIN_LOGIN, Duty, login_name

PIPELINE_LOGIN = "cityfactory-pipeline"  # the service account the pipeline's tasks write as
PERMISSION = {Duty.OPERATOR: "EDIT", Duty.VIEWER: "READ"}


@dataclass(frozen=True)
class Tracked:
    """What MLflow holds of one scenario."""

    domain: str
    experiment_id: str
    registered_model: str


@dataclass(frozen=True)
class Grant:
    username: str
    resource_type: str  # MLflow's: experiment, registered_model
    resource_id: str  # an experiment's id, a registered model's name
    permission: str


def mlflow_grants(tracked: Mapping[str, Tracked]) -> list[Grant]:
    """Each scenario's experiment and model to its own department's logins, by duty."""
    return [Grant(login_name(t.domain, duty), resource_type, resource_id, PERMISSION[duty])
            for _, t in sorted(tracked.items()) for duty in Duty
            for resource_type, resource_id in (("experiment", t.experiment_id), ("registered_model", t.registered_model))]


@contextlib.contextmanager
def signed_in(username: str, password: str) -> Iterator[None]:
    """MLflow's clients read the login from the environment: this one for the block's calls."""
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    before = {key: os.environ.get(key) for key in keys}
    os.environ.update(dict(zip(keys, (username, password), strict=True)))
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _ensure_user(auth, username: str, password: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    try:
        auth.get_user(username)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        auth.create_user(username, password)
    else:
        auth.update_user_password(username, password)


def _tracked_scenarios() -> dict[str, Tracked]:
    """Every loadable scenario's experiment and registered model, made by the service account if
    missing (so that it owns them)."""
    import mlflow

    from cityfactory.config.scenarios import scan_scenarios
    from cityfactory.settings import get_settings
    from cityfactory.tasktypes import load_model_spec
    from cityfactory.training.registry import tracking_uri, use_experiment

    client, tracked = mlflow.MlflowClient(tracking_uri()), {}
    for scenario in scan_scenarios(get_settings().scenarios_dir)[0]:
        model = load_model_spec(scenario.model_spec).registered_model
        experiment = mlflow.get_experiment_by_name(use_experiment(scenario.name))
        if not client.search_registered_models(filter_string=f"name = '{model}'"):
            client.create_registered_model(model, tags={"scenario": scenario.name})
        tracked[scenario.name] = Tracked(scenario.domain, experiment.experiment_id, model)
    return tracked


def _grant(auth, grant: Grant) -> None:
    """Grant, or set the level of an existing grant (MLflow refuses a second grant)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    try:
        auth.grant_user_permission(grant.username, grant.resource_type, grant.resource_id, grant.permission)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
        auth.revoke_user_permission(grant.username, grant.resource_type, grant.resource_id)
        auth.grant_user_permission(grant.username, grant.resource_type, grant.resource_id, grant.permission)


def given_passwords() -> dict[str, str]:
    """Passwords a deployment sets in the environment, which win over the file: the MLflow admin's
    (MLflow's own ``MLFLOW_AUTH_ADMIN_PASSWORD``) and the service account's (the pipeline's
    ``MLFLOW_TRACKING_PASSWORD``, when its ``MLFLOW_TRACKING_USERNAME`` is the service account)."""
    given = {}
    if password := os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
        given[ADMIN_LOGIN] = password
    if os.environ.get("MLFLOW_TRACKING_USERNAME") == PIPELINE_LOGIN and os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        given[PIPELINE_LOGIN] = os.environ["MLFLOW_TRACKING_PASSWORD"]
    return given


def sync_mlflow_access(passwords_file: Path, domains: list[str]) -> list[str]:
    """Users, the scenarios' experiments and models, and the grants on an MLflow server whose
    admin is the file's ``admin``; returns the logins whose passwords were generated now."""
    from mlflow.server.auth.client import AuthServiceClient

    from cityfactory.access.roles import city_logins
    from cityfactory.training.registry import tracking_uri

    usernames = [*city_logins(domains), PIPELINE_LOGIN]
    passwords, new = login_passwords(passwords_file, usernames)
    passwords = {**passwords, **given_passwords()}
    with signed_in(ADMIN_LOGIN, passwords[ADMIN_LOGIN]):
        auth = AuthServiceClient(tracking_uri())
        for username in usernames[1:]:
            _ensure_user(auth, username, passwords[username])
    with signed_in(PIPELINE_LOGIN, passwords[PIPELINE_LOGIN]):
        tracked = _tracked_scenarios()
    with signed_in(ADMIN_LOGIN, passwords[ADMIN_LOGIN]):
        for grant in mlflow_grants(tracked):
            _grant(auth, grant)
    return new
