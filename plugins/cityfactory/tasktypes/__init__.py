"""Kinds of model, by the name a model spec gives in ``task_type``.

A kind is a package here with a ``TaskType`` subclass decorated with ``@register``; the packages
are found by discovery (every subpackage is imported once), so adding a kind edits nothing here. Reading a spec asks the kind for its spec
class first, so each kind validates its own keys and the error names the file and the key.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pkgutil
from pathlib import Path

from cityfactory.config.yaml_files import load_validated
from cityfactory.settings import get_settings
from cityfactory.tasktypes.base import TaskType
from cityfactory.tasktypes.spec import ModelSpec

_REGISTERED: dict[str, TaskType] = {}


def register(cls: type[TaskType]) -> type[TaskType]:
    """Class decorator: the kind becomes known by ``cls.name``."""
    _REGISTERED[cls.name] = cls()
    return cls


def task_types() -> dict[str, TaskType]:
    """Every registered kind by name (its package imported on first use)."""
    for package in pkgutil.iter_modules(__path__, f"{__name__}."):
        if package.ispkg:
            importlib.import_module(package.name)
    return dict(_REGISTERED)


def task_type_of(spec: ModelSpec) -> TaskType:
    return task_types()[spec.task_type]


def parse_model_spec(raw: object) -> ModelSpec:
    """A spec's content validated by its kind's spec class (pydantic's ``ValidationError`` or a
    ``ValueError`` naming ``task_type`` if the kind is missing or unknown)."""
    kinds = task_types()
    kind = raw.get("task_type") if isinstance(raw, dict) else None
    if kind not in kinds:
        raise ValueError(f"key 'task_type': {kind!r} is no known kind of model (known: {', '.join(sorted(kinds))})")
    return kinds[kind].spec_class.model_validate(raw)


def load_model_spec(name: str, directory: Path | None = None) -> ModelSpec:
    """``models/<name>.yaml`` (or ``$CITYFACTORY_MODELS_DIR``), validated; errors name file and key."""
    return load_validated((directory or get_settings().models_dir) / f"{name}.yaml", parse_model_spec)


def spec_digest(spec: ModelSpec) -> str:
    """sha256 of the spec's validated content (comments and key order do not count)."""
    return hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
