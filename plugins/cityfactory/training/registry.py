"""MLflow: where runs and registered models live, their aliases and tags.

Embedded default: SQLite backend and local artifacts under the git-ignored home. Production: set
``MLFLOW_TRACKING_URI`` to an MLflow server (PostgreSQL backend, S3 artifacts). Aliases, not
stages: a new version gets ``challenger`` only if it passes its task type's gate; ``champion``
moves when a rollout completes.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from functools import lru_cache

from cityfactory.settings import REPO_ROOT, get_settings

CHALLENGER, CHAMPION = "challenger", "champion"
# MLflow 3's UI opens an experiment in its model-training view, not the GenAI (traces) one, by this tag
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = {EXPERIMENT_KIND: "custom_model_development"}


def tracking_uri() -> str:
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri
    database = get_settings().home / "mlflow" / "mlflow.db"
    database.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{database}"


def experiment_name(scenario: str) -> str:
    return f"cityfactory/{scenario}"


def use_experiment(scenario: str) -> str:
    """Point MLflow at our tracking server and the scenario's experiment (created on first use)."""
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a task log is no terminal
    mlflow.set_tracking_uri(tracking_uri())
    name = experiment_name(scenario)
    if mlflow.get_experiment_by_name(name) is None:
        location = None
        if not tracking_uri().startswith(("http://", "https://")):  # a database URI: artifacts beside the home
            location = (get_settings().home / "mlflow" / "artifacts").as_uri()
        mlflow.create_experiment(name, artifact_location=location, tags={"scenario": scenario, **MODEL_TRAINING})
    experiment = mlflow.set_experiment(name)
    if experiment.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING[EXPERIMENT_KIND]:  # made before the tag existed here
        mlflow.set_experiment_tag(EXPERIMENT_KIND, MODEL_TRAINING[EXPERIMENT_KIND])
    return name


@lru_cache(maxsize=1)
def code_version() -> str:
    if version := os.environ.get("CITYFACTORY_CODE_VERSION"):
        return version
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=False).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def alias_version(registered_model: str, alias: str) -> str | None:
    """The version an alias points at now, or None."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(registered_model, alias).version)
    except MlflowException:
        return None


def champions(registered_models: list[str]) -> dict[str, tuple[str, str | None]]:
    """Each model's champion version and when it became champion, in two registry calls whatever
    the number of models (a model without a champion is left out)."""
    import mlflow

    if not registered_models:
        return {}
    client = mlflow.MlflowClient(tracking_uri())
    names = "name IN ({})".format(", ".join("'" + n.replace("'", "''") + "'" for n in registered_models))
    found = {m.name: str(m.aliases[CHAMPION]) for m in client.search_registered_models(names, max_results=1000)
             if CHAMPION in m.aliases}
    if not found:
        return {}
    promoted = {(v.name, str(v.version)): v.tags.get(PROMOTED_AT) for v in client.search_model_versions(names, max_results=10_000)}
    return {name: (version, promoted.get((name, version))) for name, version in found.items()}


def champion_model(registered_model: str):
    """The current champion as an MLflow pyfunc model (and its version), or (None, None)."""
    import mlflow

    version = alias_version(registered_model, CHAMPION)
    if version is None:
        return None, None
    return mlflow.pyfunc.load_model(f"models:/{registered_model}@{CHAMPION}"), version


# the inputs that make two versions the same model: no second version is registered for them
INPUT_TAGS = ("feature_digest", "spec_digest", "code_version", "search_budget", "excluded_days")


def version_with_inputs(registered_model: str, inputs: dict[str, str]) -> str | None:
    """The lowest existing version trained on exactly these inputs (``INPUT_TAGS``), or None."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        versions = mlflow.MlflowClient().search_model_versions(f"name = '{registered_model}'")
    except MlflowException:
        return None
    same = [int(v.version) for v in versions if all(v.tags.get(k) == inputs[k] for k in INPUT_TAGS)]
    return str(min(same)) if same else None


def version_tags(registered_model: str, version: str) -> dict[str, str]:
    import mlflow

    return dict(mlflow.MlflowClient().get_model_version(registered_model, version).tags)


def _version_artifact(registered_model: str, version: str, path: str) -> dict | None:
    """A JSON artifact of the run that made a version, or None (no such version, run or file)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        run_id = mlflow.MlflowClient().get_model_version(registered_model, version).run_id
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{path}")
    except (MlflowException, OSError):
        return None


def feature_names(registered_model: str, version: str) -> list[str] | None:
    """The input order a version was trained with (from its model summary), or None."""
    return (_version_artifact(registered_model, version, "model_summary.json") or {}).get("feature_names")


def offline_metrics(registered_model: str, version: str) -> dict:
    """What a version showed on its test rows: ``{"metrics": {...}, "by_series": {series: {...}},
    "daily": [{"day", "value", "rows"}, ...]}`` (daily: its live metric per test day)."""
    summary = _version_artifact(registered_model, version, "model_summary.json")
    if summary is None:
        return {}
    return {"metrics": summary["metrics"]["model"],
            "by_series": {name: m["model"] for name, m in summary.get("metrics_by_series", {}).items()},
            "daily": summary.get("daily_test_scores", [])}


def drift_reference(registered_model: str, version: str) -> dict | None:
    """The drift profile of a version's training rows (None for versions made before it existed)."""
    return _version_artifact(registered_model, version, DRIFT_REFERENCE)


DRIFT_REFERENCE = "monitoring/drift_reference.json"
# version tag that says where a version stands in the field
ROLLOUT_STATE, SERVING_NODES, PROMOTED_AT = "rollout_state", "serving_nodes", "promoted_at"


def _drop_tag(client, registered_model: str, version: str, key: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.delete_model_version_tag(registered_model, version, key)
    except MlflowException:  # not set: nothing to drop
        pass


def promote(registered_model: str, version: str, previous: str | None, serving_nodes: list[str]) -> None:
    """``champion`` moves to ``version``; tags stay true: the new version is ``complete`` and served
    by ``serving_nodes``, the one it replaces ``superseded``, and no version is both challenger and
    champion. Repeating it changes nothing."""
    import mlflow

    client = mlflow.MlflowClient()
    if alias_version(registered_model, CHAMPION) != version:  # when it became champion (the city overview shows it)
        client.set_model_version_tag(registered_model, version, PROMOTED_AT, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    client.set_registered_model_alias(registered_model, CHAMPION, version)
    if alias_version(registered_model, CHALLENGER) == version:
        client.delete_registered_model_alias(registered_model, CHALLENGER)
    client.set_model_version_tag(registered_model, version, ROLLOUT_STATE, "complete")
    client.set_model_version_tag(registered_model, version, SERVING_NODES, ",".join(serving_nodes))
    if previous is not None and previous != version:
        client.set_model_version_tag(registered_model, previous, ROLLOUT_STATE, "superseded")
        _drop_tag(client, registered_model, previous, SERVING_NODES)


def reinstate(registered_model: str, failed: str, previous: str | None, reason: str,
              serving: dict[str, list[str]]) -> str | None:
    """After a rollback: ``champion`` back on ``previous`` (removed if there was none), the failed
    version tagged ``rolled_back`` with the reason and no longer a challenger, serving tags from
    what the nodes serve now. Returns the champion. Repeating it changes nothing."""
    import mlflow

    client = mlflow.MlflowClient()
    if alias_version(registered_model, CHAMPION) == failed:
        if previous is None:
            client.delete_registered_model_alias(registered_model, CHAMPION)
        else:
            client.set_registered_model_alias(registered_model, CHAMPION, previous)
    if alias_version(registered_model, CHALLENGER) == failed:
        client.delete_registered_model_alias(registered_model, CHALLENGER)
    client.set_model_version_tag(registered_model, failed, ROLLOUT_STATE, "rolled_back")
    client.set_model_version_tag(registered_model, failed, "rollout_failure", reason[:4000])
    _drop_tag(client, registered_model, failed, SERVING_NODES)
    if previous is not None:
        client.set_model_version_tag(registered_model, previous, ROLLOUT_STATE, "complete")
        client.set_model_version_tag(registered_model, previous, SERVING_NODES, ",".join(serving.get(previous, [])))
    return alias_version(registered_model, CHAMPION)
