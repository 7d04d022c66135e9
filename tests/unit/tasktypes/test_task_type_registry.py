"""The seam: a spec's ``task_type`` picks the kind that reads the rest of it; a kind is a class
registered by name, and the stages find it without being edited."""

from __future__ import annotations

from types import MappingProxyType
from typing import Literal

import pytest
import yaml
from cityfactory.config.scenarios import ScenarioError
from cityfactory.tasktypes import (
    _REGISTERED,
    load_model_spec,
    parse_model_spec,
    register,
    task_type_of,
    task_types,
)
from cityfactory.tasktypes.base import Metric, TaskType
from cityfactory.tasktypes.forecast.task import ForecastTask
from cityfactory.tasktypes.image_classification.task import ImageClassificationTask
from cityfactory.tasktypes.spec import ModelSpec
from support import REPO

COMMON = {"name": "n", "registered_model": "test.n", "description": "d", "intended_use": "u", "limitations": "l",
          "card_template": "model_card.md"}


def test_the_shipped_kinds_are_found_by_discovery_and_the_repo_specs_name_theirs():
    assert isinstance(task_types()["forecast"], ForecastTask)
    assert isinstance(task_types()["image_classification"], ImageClassificationTask)
    kinds = {load_model_spec(path.stem).task_type: path.stem for path in sorted((REPO / "models").glob("*.yaml"))}
    assert set(kinds) == {"forecast", "image_classification"}
    for name in kinds.values():
        spec = load_model_spec(name)
        assert task_type_of(spec).name == spec.task_type


@pytest.mark.parametrize(("raw", "words"), [
    (COMMON, "key 'task_type': None is no known kind of model (known: forecast"),
    ({**COMMON, "task_type": "weather_oracle"}, "'weather_oracle' is no known kind of model"),
    ({**COMMON, "task_type": "forecast"}, "key 'data': Field required"),
])
def test_a_spec_without_a_known_kind_or_missing_the_kinds_keys_is_refused_naming_the_key(tmp_path, raw, words):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ScenarioError, match="bad.yaml") as error:
        load_model_spec("bad", tmp_path)
    assert words in str(error.value)


def test_a_new_kind_is_a_registered_class_and_its_spec_class_reads_its_own_keys():
    class CountSpec(ModelSpec):
        task_type: Literal["count"]
        threshold: int

    class CountTask(TaskType):
        name, spec_class = "count", CountSpec
        metrics = MappingProxyType({"accuracy": Metric("accuracy", "accuracy", greater_is_better=True)})

    CountTask.__abstractmethods__ = frozenset()  # only what this test asks; a real kind implements them all
    register(CountTask)
    try:
        spec = parse_model_spec({**COMMON, "task_type": "count", "threshold": 3})
        assert isinstance(spec, CountSpec) and spec.threshold == 3
        assert isinstance(task_type_of(spec), CountTask)
        with pytest.raises(ValueError, match="threshold"):
            parse_model_spec({**COMMON, "task_type": "count"})
    finally:
        _REGISTERED.pop("count")


def test_metrics_say_which_direction_is_better_and_how_days_pool():
    rmse, accuracy = ForecastTask.metrics["rmse"], Metric("accuracy", "accuracy", greater_is_better=True)
    assert rmse.better(1.0, 2.0) and not rmse.better(2.0, 1.0)
    assert accuracy.better(0.9, 0.8)
    assert rmse.pool([3.0, 4.0], [1, 1]) == pytest.approx((12.5) ** 0.5)  # root of the mean square
    assert ForecastTask.metrics["mae"].pool([3.0, 5.0], [1, 3]) == pytest.approx(4.5)  # rows weighted
