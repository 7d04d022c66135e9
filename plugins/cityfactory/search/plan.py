"""The search's budget cut into batches: one Airflow task each, spread over the Celery workers.

A batch is one family's own Optuna study with a seed of its own, run trial after trial, so the
outcome depends on the seed and the budget in trials only, not on which worker ran what when.
The budget is shared out over the families in the spec's order; the first batch of the task type's
hand-set family starts with the spec's hand-set model, so a search never ends below it on validation.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from cityfactory.tasktypes import task_type_of
from cityfactory.tasktypes.spec import ModelSpec

BUDGET_CAP = "CITYFACTORY_SEARCH_TRIALS"  # caps every search's trials (development machines, CI)
TRIALS_CEILING = 1000  # no run searches more, whatever asked (the trigger form's maximum too)


@dataclass(frozen=True)
class Batch:
    family: str
    index: int  # of the family's batches
    trials: int
    seed: int
    timeout_seconds: float | None
    hand_set_first: bool
    # Scored on every validation fold, to be ranked against other trials; a one-trial search has
    # nothing to rank, so its trial is fitted once, on the latest window (a first run's budget).
    ranked: bool = True

    def as_dict(self) -> dict:
        return asdict(self)


def trial_budget(spec: ModelSpec, requested: int | None = None) -> int:
    """Trials for this run: the form's number if given, else the spec's; never more than this
    deployment's ``$CITYFACTORY_SEARCH_TRIALS`` nor ``TRIALS_CEILING``, whatever the form or the API said."""
    budget = requested if requested else (spec.search.trials if spec.search else 1)
    cap = os.environ.get(BUDGET_CAP, "").strip()
    return max(1, min(int(budget), TRIALS_CEILING, int(cap) if cap else TRIALS_CEILING))


def plan_batches(spec: ModelSpec, budget: int) -> list[Batch]:
    search, kind = spec.search, task_type_of(spec)
    if search is None:  # no search declared: the hand-set model alone
        return [Batch(kind.hand_set_family, 0, 1, kind.hand_set(spec)[1], None, True, ranked=False)]
    families = list(search.families)
    batches = []
    for position, family in enumerate(families):
        share = budget // len(families) + (position < budget % len(families))
        for index, start in enumerate(range(0, share, search.trials_per_batch)):
            batches.append(Batch(family, index, min(search.trials_per_batch, share - start),
                                 search.seed + 1000 * position + index,
                                 search.timeout_minutes * 60 if search.timeout_minutes else None,
                                 family == kind.hand_set_family and index == 0, ranked=budget > 1))
    return batches
