"""A new scenario's files as text, before they are written: what a kind of model drafts from a
profile, and what the scaffold then places in the project's folders."""

from __future__ import annotations

from dataclasses import dataclass, field


class ScaffoldError(ValueError):
    """A new scenario cannot be drafted: says what, where, and how to go on."""


@dataclass(frozen=True)
class Draft:
    """Every file a scenario needs but its fleet (the scaffold finds free ports for that)."""

    scenario: str  # dags/scenarios/<name>.yaml
    model_spec: str  # models/<name>.yaml
    suites: dict[str, str]  # expectations/<suite>.json
    dbt_models: dict[str, str]  # path under the dbt project's models/ -> text
    series: tuple[str, ...] = ()  # one edge node each (none: two nodes that serve everything)
    dataset_files: dict[str, bytes] = field(default_factory=dict)  # written beside the data (an image index)
    notes: tuple[str, ...] = ()  # what a human must decide, said on the terminal


@dataclass(frozen=True)
class DraftRequest:
    """What the person scaffolding said, beside the sample data."""

    dataset: str  # the data folder's name (under the data directory)
    domain: str  # the department the scenario belongs to
    pins: dict[str, str]  # file name -> sha256
    target: str | None = None  # the column to predict, for a kind that predicts a column; None: it guesses
    timezone: str | None = None  # the wall clock the files are written in; None: UTC, marked "decide"
    schedule: str = "30 2 * * *"
