"""The city's departments (``dags/domains.yaml``): every scenario belongs to one, by its ``domain``
key, and a department's teams see and change only their own scenarios."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from cityfactory.config.yaml_files import load_validated


class Domain(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    title: str
    teams: list[str] = Field(min_length=1)  # who owns the department's scenarios (group or mail names)


class Domains(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    domains: dict[str, Domain] = Field(min_length=1)

    def problem(self, domain: str, path: Path, file: Path) -> str | None:
        """What is wrong with a scenario's ``domain`` (None: it is a department of the city)."""
        if domain in self.domains:
            return None
        return f"{path}: key 'domain': {domain!r} is no department of {file} (one of: {', '.join(self.domains)})"


def load_domains(path: Path | None = None) -> Domains:
    """``dags/domains.yaml`` (or ``$CITYFACTORY_DOMAINS_FILE``), validated; errors name file and key.
    Read once per version of the file (a DAG parse asks once per scenario)."""
    from cityfactory.settings import get_settings

    path = path or get_settings().domains_file
    return _load(path, path.stat().st_mtime_ns if path.exists() else None)


@lru_cache(maxsize=4)
def _load(path: Path, stamp: int | None) -> Domains:  # ``stamp`` (the file's mtime) keys the cache
    return load_validated(path, Domains.model_validate)
