"""Model specs (``models/<scenario>.yaml``): what to learn, from what, and how to judge it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cityfactory.config.scenarios import ScenarioError, _location
from cityfactory.settings import REPO_ROOT

MODELS_DIR = REPO_ROOT / "models"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Strict):
    target: str
    time_column: str
    usable: str
    numeric: list[str] = Field(min_length=1)
    one_hot: dict[str, tuple[int, int]] = {}
    flags: list[str] = []

    @property
    def feature_names(self) -> list[str]:
        """Model input order: numeric, then one-hot blocks, then flags."""
        names = list(self.numeric)
        for column, (first, last) in self.one_hot.items():
            names += [f"{column}={v}" for v in range(first, last + 1)]
        return names + list(self.flags)


class SplitSpec(_Strict):
    test_days: int = Field(gt=0)
    validation_days: int = Field(gt=0)


class ArchitectureSpec(_Strict):
    type: Literal["residual_mlp"]
    residual_of: str
    hidden: list[int] = Field(min_length=1)
    output_scale: float = Field(gt=0)


class TrainingSpec(_Strict):
    seed: int
    epochs: int = Field(ge=1)
    patience: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    weight_decay: float = Field(ge=0)


class LinearBaseline(_Strict):
    lags: list[str]
    hour_of_week: bool


class BaselineSpec(_Strict):
    persistence: str
    same_hour_last_week: str
    linear_autoregression: LinearBaseline


class GateSpec(_Strict):
    metric: Literal["rmse", "mae"]
    min_improvement_over_linear: float = Field(ge=0, lt=1)
    champion_tolerance: float = Field(ge=0)


class ModelSpec(_Strict):
    name: str
    registered_model: str
    description: str
    card_template: str
    data: DataSpec
    split: SplitSpec
    architecture: ArchitectureSpec
    training: TrainingSpec
    baselines: BaselineSpec
    gate: GateSpec


def load_model_spec(name: str, directory: Path = MODELS_DIR) -> ModelSpec:
    path = directory / f"{name}.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
        return ModelSpec.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(f"key '{_location(e['loc'])}': {e['msg']}" for e in exc.errors())
        raise ScenarioError(f"{path}: {problems}") from None
