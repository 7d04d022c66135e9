"""Where the embedded stack lives and how to reach the lake, read from the environment.

Everything has a working default for one machine (a git-ignored ``.cityfactory/`` folder in the
repository); production overrides it with environment variables (see docker-compose.yml).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    home: Path
    lake_uri: str
    data_dir: Path
    scenarios_dir: Path
    models_dir: Path
    expectations_dir: Path
    fleets_dir: Path
    dbt_dir: Path  # the dbt project (a new scenario's models are written into it)
    domains_file: Path  # the city's departments, which scenarios belong to
    retention_enforced: bool  # scheduled maintenance deletes only when this is set explicitly

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"


def get_settings() -> Settings:
    """Read the settings now (not at import), so tests and tasks can point them elsewhere."""
    home = Path(os.environ.get("CITYFACTORY_HOME", REPO_ROOT / ".cityfactory")).resolve()
    return Settings(
        home=home,
        lake_uri=os.environ.get("CITYFACTORY_LAKE_URI", (home / "lake").as_uri()),
        data_dir=Path(os.environ.get("CITYFACTORY_DATA_DIR", REPO_ROOT.parent / "shared" / "data")),
        scenarios_dir=Path(os.environ.get("CITYFACTORY_SCENARIOS_DIR", REPO_ROOT / "dags" / "scenarios")),
        models_dir=Path(os.environ.get("CITYFACTORY_MODELS_DIR", REPO_ROOT / "models")),
        expectations_dir=Path(os.environ.get("CITYFACTORY_EXPECTATIONS_DIR", REPO_ROOT / "expectations")),
        fleets_dir=Path(os.environ.get("CITYFACTORY_FLEETS_DIR", REPO_ROOT / "dags" / "fleets")),
        dbt_dir=Path(os.environ.get("CITYFACTORY_DBT_DIR", REPO_ROOT / "dbt")),
        domains_file=Path(os.environ.get("CITYFACTORY_DOMAINS_FILE", REPO_ROOT / "dags" / "domains.yaml")),
        retention_enforced=os.environ.get("CITYFACTORY_RETENTION_ENFORCED", "").lower() in ("1", "true", "yes"),
    )
