"""docker-compose.yml cannot run here (no Docker engine); check what can be checked statically:
the Compose Specification's JSON schema, every build context, Dockerfile and mounted file, and
that every command is one the project or its images provide. (The same components ran for real in
tests/test_celery.py, as processes.)"""

from __future__ import annotations

import json
import re
import shlex

import jsonschema
import yaml
from support import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
# compose-spec/compose-spec, schema/compose-spec.json at commit 170098ba07d9f53c383a41bfd4c5166b0a4529a6 (2026-06-23)
SCHEMA = REPO / "tests" / "schemas" / "compose-spec.json"
SCHEMA_SHA256 = "1f91e091f16b2dd50ab8860e02bb391d22df553d91c145eacedb1b6eff9c3f0e"


def test_compose_file_follows_the_compose_specification():
    import hashlib

    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256, "the pinned schema changed"
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert errors == []
    # and the validator does catch a mistake of the kind people make
    broken = {**COMPOSE, "services": {**SERVICES, "redis": {**SERVICES["redis"], "depends_on": "postgres"}}}
    assert any(e.path and list(e.path)[:2] == ["services", "redis"] for e in validator.iter_errors(broken))


def _dockerfile(build: dict) -> str:
    return (REPO / build["context"] / build.get("dockerfile", "Dockerfile")).read_text() if "dockerfile_inline" not in build \
        else build["dockerfile_inline"]


def test_build_contexts_dockerfiles_and_what_they_copy_exist():
    built = {name: s["build"] for name, s in SERVICES.items() if "build" in s}
    assert {"airflow-scheduler", "airflow-worker", "edge-node", "mlflow"} <= set(built)
    for name, build in built.items():
        assert (REPO / build["context"]).is_dir(), name
        text = _dockerfile(build)
        for line in text.splitlines():
            if line.startswith("COPY "):
                words = shlex.split(line)
                for source in [w for w in words[1:-1] if not w.startswith("--")]:
                    assert (REPO / build["context"] / source).exists(), f"{name}: COPY {source}"
    assert "requirements-edge.txt" in _dockerfile(built["edge-node"]) and "requirements.txt " not in _dockerfile(built["edge-node"])


def test_commands_are_ones_the_images_provide():
    from cityfactory.edge.__main__ import build_parser

    for name, service in SERVICES.items():
        command = service.get("command")
        if isinstance(command, list) and command[:1] == ["airflow"]:
            assert command[1] in ("db", "api-server", "scheduler", "dag-processor", "triggerer", "celery"), name
    from cityfactory.factory.pools import TRAINING_POOL_NAME

    init = SERVICES["airflow-init"]["command"]
    assert init[:2] == ["bash", "-c"] and init[2].startswith("airflow db migrate && airflow pools set ")
    assert f"airflow pools set {TRAINING_POOL_NAME} " in init[2], "the DAGs' pool exists before any task needs it"
    passwords = "--passwords /opt/airflow/cityfactory/airflow-passwords.json"
    steps = init[2].split(" && ")
    assert steps[-2:] == [f"python -m cityfactory.cli sync-access {passwords}", f"python -m cityfactory.cli sync-mlflow-access {passwords}"]
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" in SERVICES["airflow-init"]["environment"]
    assert SERVICES["airflow-init"]["depends_on"]["mlflow"] == {"condition": "service_healthy"} and "healthcheck" in SERVICES["mlflow"]
    from cityfactory.access.mlflow_access import PIPELINE_LOGIN
    from cityfactory.services import FAB_AUTH_MANAGER

    airflow_env = COMPOSE["x-airflow-common"]["environment"]
    assert airflow_env["AIRFLOW__CORE__AUTH_MANAGER"] == FAB_AUTH_MANAGER
    assert airflow_env["MLFLOW_TRACKING_USERNAME"] == PIPELINE_LOGIN, "the pipeline writes to MLflow as its service account"
    assert "--app-name basic-auth" in SERVICES["mlflow"]["command"][2]
    edge = SERVICES["edge-node"]
    assert "ENTRYPOINT [\"python\", \"-m\", \"cityfactory.edge\"]" in (REPO / "edge.Dockerfile").read_text()
    args = build_parser().parse_args([re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", a) for a in edge["command"]])
    assert args.scenario == "traffic_flow" and args.public_key == edge["configs"][0]["target"]
    assert COMPOSE["configs"][edge["configs"][0]["source"]]["environment"] in _env_example()


def _env_example() -> set[str]:
    return {line.split("=")[0] for line in (REPO / ".env.example").read_text().splitlines() if "=" in line and not line.startswith("#")}


def test_dependencies_exist():
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"


def test_airflow3_topology_and_shared_library_path():
    commands = {name: " ".join(s.get("command", [])) if isinstance(s.get("command"), list) else s.get("command", "")
                for name, s in SERVICES.items()}
    for component in ("api-server", "scheduler", "dag-processor", "triggerer", "celery worker"):
        assert any(c.endswith(component) for c in commands.values()), component
    env = SERVICES["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["PYTHONPATH"] == "/opt/airflow/plugins"
    assert env["CITYFACTORY_LAKE_URI"].startswith("s3://")


def test_every_secret_is_in_env_example_and_mounts_exist():
    text = (REPO / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    assert required <= _env_example(), required - _env_example()
    for volume in SERVICES["airflow-scheduler"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (REPO / source).is_dir(), source


def test_openlineage_goes_to_marquez_over_http():
    import json

    env = SERVICES["airflow-worker"]["environment"]
    transport = json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    assert transport == {"type": "http", "url": "http://marquez:5000", "endpoint": "api/v1/lineage"}
    marquez = SERVICES["marquez"]
    assert marquez["environment"]["MARQUEZ_PORT"] == 5000 and marquez["environment"]["POSTGRES_HOST"] == "postgres"
    assert "marquez" in SERVICES["service-databases"]["command"][0]
