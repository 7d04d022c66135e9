"""What every model spec (``models/<scenario>.yaml``) has, whatever kind of model it makes.

The kind is ``task_type``; its package adds the keys that only it knows (``data``, ``split``,
``gate``, ...) by subclassing ``ModelSpec``. The search block is shared: which families it draws
from and which metric ranks trials are checked by the task type against its own tables.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

STRICT = ConfigDict(extra="forbid", frozen=True)  # unknown keys are errors; a spec never changes once read


class Strict(BaseModel):
    model_config = STRICT


class Range(Strict):
    """One hyper-parameter's range: ``choices``, or ``low``..``high`` (integers if both are; ``log``
    for a log scale)."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _one(self) -> Range:
        if (self.choices is None) == (self.low is None or self.high is None):
            raise ValueError("give either 'choices' (a list) or both 'low' and 'high'")
        if self.choices is not None and not self.choices:
            raise ValueError("'choices' is empty")
        if self.low is not None and self.high < self.low:
            raise ValueError(f"high {self.high} is below low {self.low}")
        if self.log and self.low is not None and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class FamilySearch(Strict):
    """A model family in the search: its searched ``ranges`` and its ``fixed`` settings."""

    ranges: dict[str, Range] = {}
    fixed: dict[str, Any] = {}
    # False: its trials always run to their end. Median pruning compares trials at the same step,
    # where a slow learning rate looks worst and may end best (boosted trees, step = round).
    pruned: bool = True


class PrunerSpec(Strict):
    """Median pruning: a trial stops when its intermediate validation score is worse than the
    median of the earlier trials at the same step."""

    startup_trials: int = Field(3, ge=0)
    warmup_steps: int = Field(5, ge=0)


class SearchSpec(Strict):
    """The model search (Optuna, TPE sampler): the families and their ranges, the budget, and the
    validation metric that ranks trials (empty: the task type's). Given ``seed`` and ``trials`` it
    is deterministic; ``timeout_minutes`` adds a time budget per batch (then it is not)."""

    metric: str | None = None
    seed: int = 0
    trials: int = Field(ge=1)
    trials_per_batch: int = Field(4, ge=1)
    random_trials: int = Field(3, ge=1)  # per batch, before the TPE sampler's model guides the rest
    timeout_minutes: float | None = Field(None, gt=0)
    pruner: PrunerSpec = PrunerSpec()
    families: dict[str, FamilySearch] = Field(min_length=1)


class ModelSpec(Strict):
    """The keys every task type's spec has; ``task_type`` picks the package that reads the rest."""

    task_type: str
    name: str
    registered_model: str
    description: str
    intended_use: str
    limitations: str
    card_template: str
    search: SearchSpec | None = None


def check_search(search: SearchSpec | None, families: dict[str, tuple[str, ...]], metrics: tuple[str, ...],
                 kind: str) -> None:
    """A search that names only ``families`` of this kind, their known settings, and one of its
    ``metrics``; raises ``ValueError`` naming the key otherwise."""
    if search is None:
        return
    if search.metric is not None and search.metric not in metrics:
        raise ValueError(f"search.metric: {search.metric!r} is no {kind} metric (known: {', '.join(metrics)})")
    for family, declared in search.families.items():
        if family not in families:
            raise ValueError(f"search.families.{family}: no such {kind} family (known: {', '.join(families)})")
        if unknown := sorted((set(declared.ranges) | set(declared.fixed)) - set(families[family])):
            raise ValueError(f"search.families.{family}: {', '.join(unknown)} is no {family} setting "
                             f"(known: {', '.join(sorted(families[family]))})")
