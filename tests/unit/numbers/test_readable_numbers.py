"""Metrics printed with the digits that show their difference: "0.597 vs 0.645", not "0.6 vs 0.6"
(a scenario whose target is small), and no false precision on large values."""

from __future__ import annotations

from dataclasses import asdict

import pytest
from cityfactory.governance.ledger import Kind
from cityfactory.governance.summary import format_training
from cityfactory.numbers import decimals, side_by_side
from cityfactory.tasktypes.forecast.gate import decide
from cityfactory.tasktypes.forecast.task import ForecastTask


@pytest.mark.parametrize(("values", "shown"), [
    ([0.597, 0.645], ["0.597", "0.645"]),
    ([0.6012, 0.6009], ["0.6012", "0.6009"]),       # one more decimal until they differ
    ([230.746, 228.8, 818.9], ["231", "229", "819"]),
    ([17.202, 17.10, 19.41], ["17.2", "17.1", "19.4"]),
    ([0.0, 0.0], ["0", "0"]),
])
def test_values_side_by_side_differ_where_they_differ(values, shown):
    assert side_by_side(values) == shown


def test_nothing_finite_and_equal_values_need_no_decimals_beyond_the_significant():
    assert decimals([None, float("nan")]) == 0
    assert decimals([1 / 3, 1 / 3]) == 3
    assert decimals([1e-12, 2e-12]) == 6  # at most six


def test_the_gate_says_which_is_better_in_digits_that_show_it():
    decision = decide("rmse", 0.597, 0.645, None, 0.05, 0.02)
    assert decision.reason == "test rmse 0.597 beats the linear baseline 0.645 by 7.4%; no champion yet"
    refused = decide("rmse", 0.6409, 0.645, 0.6021, 0.05, 0.02)
    assert "0.641 does not beat the linear baseline 0.645 by 5% (needs <= 0.613)" in refused.reason


def test_the_summary_table_gives_each_column_the_decimals_its_rows_need():
    metrics = {"model": {"mae": 0.4412, "rmse": 0.597, "mape": 12.31},
               "persistence": {"mae": 0.4409, "rmse": 0.645, "mape": 13.02}}
    entry = {"task_id": "train", "map_index": -1, "try_number": 1, "kind": Kind.MODEL_TRAINED, "status": "success",
             "counts": {"version": 3}, "details": {
                 "registered_model": "cityfactory.small", "alias": "challenger", "reason": "beats",
                 "metrics": metrics, "family": "residual_mlp",
                 "metric_columns": [asdict(m) for m in ForecastTask.metrics.values()]}}
    table = format_training([entry]).splitlines()[-2:]
    assert table[0].split() == ["model", "0.4412", "0.597", "12.3"]
    assert table[1].split() == ["persistence", "0.4409", "0.645", "13.0"]
