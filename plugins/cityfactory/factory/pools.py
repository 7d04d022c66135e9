"""The Airflow pool that every scenario's heavy tasks share.

Model searches, refits and compression take minutes of CPU each; with forty scenarios they could
take every worker slot at night, and the next scenario's ingestion would wait behind them. They run
in one pool of ``slots`` slots, across all scenarios, so the other slots stay for ingestion, gates,
dbt, monitoring and rollouts; and every task's priority is absolute across all DAGs (``steps.py``):
ingestion first, searches and refits last.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class PoolSpec:
    name: str
    slots: int
    description: str

    def set_command(self) -> list[str]:
        """``airflow pools set``: creates the pool or updates its slots (idempotent)."""
        return ["airflow", "pools", "set", self.name, str(self.slots), self.description]


TRAINING_POOL_NAME = "cityfactory_training"


def training_pool() -> PoolSpec:
    """The pool, its slots from ``CITYFACTORY_TRAINING_SLOTS`` (default 1: one worker slot of the
    embedded stack's; production sets it to what the workers can give, leaving the rest)."""
    return PoolSpec(TRAINING_POOL_NAME, int(os.environ.get("CITYFACTORY_TRAINING_SLOTS", "1")),
                    "Model searches, refits and compression, across every scenario")
