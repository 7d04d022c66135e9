"""An image classifier's model spec (``task_type: image_classification``): which mart columns
hold the image, the label and the split, the classes, the input size, the augmentation, the
hand-set network, the classical baselines and the gate against them."""

from __future__ import annotations

from types import MappingProxyType
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from cityfactory.tasktypes.spec import STRICT, ModelSpec, check_search


class Strict(BaseModel):
    model_config = STRICT


class ImageDataSpec(Strict):
    image_key: str  # the mart column with the image's lake key
    label: str
    classes: list[str] = Field(min_length=2)  # in this order: the model's outputs
    split: str  # the mart's stable split column (train, validation, test)
    usable: str  # true where the label has arrived
    time_column: str
    series: str | None = None  # the camera
    size: int = Field(128, ge=16, le=512)  # images are loaded at size x size; a family may resize smaller
    mode: Literal["L", "RGB"] = "L"
    report_by: list[str] = []  # mart columns the metrics are also shown per value of (probability level, cell type)
    drift: list[str] = Field(min_length=1)  # per-image statistics the monitor compares with training

    @model_validator(mode="after")
    def _distinct(self) -> ImageDataSpec:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes are not distinct")
        return self

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3


class Augmentation(Strict):
    """Label-preserving changes drawn per training image and epoch."""

    hflip: bool = False
    vflip: bool = False
    rot90: bool = False  # quarter turns (a cell has no up)
    brightness: float = Field(0.0, ge=0, le=1)  # +- this share of the range
    contrast: float = Field(0.0, ge=0, le=1)  # x (1 +- this)


class Architecture(Strict):
    """The hand-set network (the search's first trial)."""

    family: Literal["plain_cnn", "separable_cnn"] = "plain_cnn"
    input_size: int = Field(96, ge=16)
    width: int = Field(16, ge=4)
    blocks: int = Field(4, ge=1, le=6)
    dropout: float = Field(0.2, ge=0, lt=1)


class Training(Strict):
    seed: int = 0
    epochs: int = Field(20, ge=1)
    patience: int = Field(5, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(0.002, gt=0)
    weight_decay: float = Field(0.0001, ge=0)
    class_weights: Literal["balanced", "none"] = "balanced"


class Baselines(Strict):
    """The majority class, and a classical model on hand-crafted features (HOG and an intensity
    histogram, logistic regression), both on the same test images."""

    hog_size: int = Field(64, ge=16)  # images resized to this before HOG
    histogram_bins: int = Field(32, ge=4)
    regularisation: float = Field(1.0, gt=0)  # C of the logistic regression


class Gate(Strict):
    metric: Literal["accuracy", "macro_f1", "balanced_accuracy"] = "accuracy"
    must_beat: list[Literal["majority", "classical"]] = Field(["majority", "classical"], min_length=1)
    min_improvement_over_classical: float = Field(0.0, ge=0)  # in the metric's points (0.01 = 1 point)
    champion_tolerance: float = Field(0.01, ge=0)  # may be this much below the champion
    min_class_recall: float = Field(0.0, ge=0, le=1)  # every class's recall at least this


class Calibration(Strict):
    """The int8 quantiser's calibration set: this many training images per class (balanced),
    chosen by content hash, versioned with the model."""

    per_class: int = Field(32, ge=1)


FAMILY_SETTINGS = MappingProxyType({
    family: ("input_size", "width", "blocks", "dropout", "epochs", "patience", "batch_size", "learning_rate",
             "weight_decay") for family in ("plain_cnn", "separable_cnn")})
METRICS = ("accuracy", "macro_f1", "balanced_accuracy")


class ImageClassificationSpec(ModelSpec):
    task_type: Literal["image_classification"]
    data: ImageDataSpec
    augmentation: Augmentation = Augmentation()
    architecture: Architecture = Architecture()
    training: Training = Training()
    baselines: Baselines = Baselines()
    gate: Gate = Gate()
    calibration: Calibration = Calibration()

    @model_validator(mode="after")
    def _search_fits_the_families(self) -> ImageClassificationSpec:
        if self.architecture.input_size > self.data.size:
            raise ValueError(f"architecture.input_size {self.architecture.input_size} is above data.size {self.data.size}")
        search = self.search
        check_search(search, dict(FAMILY_SETTINGS), METRICS, "image classification")
        for family, declared in (search.families if search else {}).items():
            sizes = declared.ranges.get("input_size")
            if sizes and max(sizes.choices or [sizes.high]) > self.data.size:
                raise ValueError(f"search.families.{family}.ranges.input_size: above data.size {self.data.size}")
        return self
