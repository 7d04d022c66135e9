"""The spec's ranges as Optuna distributions: what a trial suggests, and what the importances read."""

from __future__ import annotations

from cityfactory.tasktypes.spec import Range


def distribution(r: Range):
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if r.choices is not None:
        return CategoricalDistribution(r.choices)
    if float(r.low).is_integer() and float(r.high).is_integer() and r.high > 1:  # counts
        return IntDistribution(int(r.low), int(r.high), log=r.log)
    return FloatDistribution(r.low, r.high, log=r.log)


def suggest(trial, ranges: dict[str, Range]) -> dict:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    params = {}
    for name, r in ranges.items():
        d = distribution(r)
        if isinstance(d, CategoricalDistribution):
            params[name] = trial.suggest_categorical(name, d.choices)
        elif isinstance(d, IntDistribution):
            params[name] = trial.suggest_int(name, d.low, d.high, log=d.log)
        else:
            params[name] = trial.suggest_float(name, d.low, d.high, log=d.log)
    return params
