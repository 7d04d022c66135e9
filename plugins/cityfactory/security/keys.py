"""Secret keys: from the environment, an Airflow Variable, or generated once for the embedded stack.

Look-up order for a key named ``lake-master``: the environment variable
``CITYFACTORY_KEY_LAKE_MASTER`` (base64), the Airflow Variable ``cityfactory_key_lake_master``
(base64, only inside Airflow), and last a file ``<home>/keys/lake-master.key`` that the embedded
default generates on first use (mode 0600, in the git-ignored home). Keys never enter git.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)


class KeyConfigError(RuntimeError):
    """A configured key is unusable (wrong encoding or length)."""


def _decode(value: str, source: str, nbytes: int) -> bytes:
    try:
        key = base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise KeyConfigError(f"{source}: not valid base64 ({exc})") from None
    if len(key) != nbytes:
        raise KeyConfigError(f"{source}: expected {nbytes} bytes, got {len(key)}")
    return key


def _from_airflow(var_name: str) -> str | None:
    try:
        from airflow.sdk import Variable

        return Variable.get(var_name, default=None)
    except Exception:  # noqa: BLE001 - not inside an Airflow task, or no metadata DB: fall through
        return None


def airflow_connection_password(conn_id: str) -> str | None:
    """The password of Airflow connection ``conn_id``: through the Task SDK inside a task (its
    secrets backends), else from the metastore and secrets backends (the CLI); None where there is
    none, or no metadata DB to hold one."""
    import sys

    from airflow.sdk.exceptions import AirflowNotFoundException
    from sqlalchemy.exc import SQLAlchemyError

    # how Airflow itself tells a task (or parse) from the rest: the task runner's channel to its supervisor
    in_task = getattr(sys.modules.get("airflow.sdk.execution_time.task_runner"), "SUPERVISOR_COMMS", None) is not None
    try:
        if in_task:
            from airflow.sdk import Connection

            return Connection.get(conn_id).password
        from airflow.models.connection import Connection as StoredConnection

        return StoredConnection.get_connection_from_secrets(conn_id).password
    except (AirflowNotFoundException, SQLAlchemyError):
        return None


def replace_secret(name: str, material: bytes, keys_dir: Path | None = None) -> None:
    """Put ``material`` in place of the generated secret ``name`` (a rotation); refused when the
    environment provides the secret (rotate it there)."""
    env_name = "CITYFACTORY_KEY_" + name.upper().replace("-", "_")
    if env_name in os.environ:
        raise ValueError(f"{name} comes from the environment variable {env_name}: rotate it there")
    if keys_dir is None:
        from cityfactory.settings import get_settings

        keys_dir = get_settings().keys_dir
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = keys_dir / f"{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(material).decode())
    tmp.replace(keys_dir / f"{name}.key")
    _stored_secret.cache_clear()


def get_secret(name: str, nbytes: int = 32, keys_dir: Path | None = None) -> bytes:
    """The secret key ``name``, generating it into ``keys_dir`` if nothing else provides it."""
    env_name = "CITYFACTORY_KEY_" + name.upper().replace("-", "_")
    if value := os.environ.get(env_name):
        return _decode(value, f"environment variable {env_name}", nbytes)
    if keys_dir is None:
        from cityfactory.settings import get_settings

        keys_dir = get_settings().keys_dir
    return _stored_secret(name, nbytes, keys_dir)


@lru_cache(maxsize=64)
def _stored_secret(name: str, nbytes: int, keys_dir: Path) -> bytes:
    """From an Airflow Variable or the generated file; looked up once per process (it is hot:
    every sealed file and Parquet key wrap asks)."""
    var_name = "cityfactory_key_" + name.lower().replace("-", "_")
    if value := _from_airflow(var_name):
        return _decode(value, f"Airflow Variable {var_name}", nbytes)
    path = keys_dir / f"{name}.key"
    if not path.exists():
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(base64.b64encode(secrets.token_bytes(nbytes)).decode())
        try:
            os.link(tmp, path)  # first writer wins if two processes race
            log.warning("generated new key %s at %s", name, path)
            note_generated(keys_dir, name, base64.b64decode(path.read_text()))
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return _decode(path.read_text().strip(), str(path), nbytes)


GENERATED_LOG = "generated.jsonl"


def key_id(material: bytes) -> str:
    """A short, non-secret id for a key (a hash; public material for key pairs)."""
    return hashlib.sha256(b"cityfactory-key-id:" + material).hexdigest()[:16]


def note_generated(keys_dir: Path, name: str, material: bytes) -> None:
    """Log a key generation beside the keys; governance turns each line into an audit event."""
    line = json.dumps({"name": name, "key_id": key_id(material), "at": datetime.now(UTC).isoformat(),
                       "where": str(keys_dir)})
    with open(keys_dir / GENERATED_LOG, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def generated_keys(keys_dir: Path) -> list[dict]:
    path = keys_dir / GENERATED_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
