"""The image classification kind's logic, without data: its spec's own errors, its scores, its
gate, its augmentation and its networks' shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from cityfactory.config.scenarios import ScenarioError
from cityfactory.tasktypes import load_model_spec, task_type_of
from cityfactory.tasktypes.image_classification.fitting import augment, class_weights
from cityfactory.tasktypes.image_classification.metrics import (
    class_scores,
    confusion,
    scores,
)
from cityfactory.tasktypes.image_classification.network import ImageNet
from cityfactory.tasktypes.image_classification.spec import Augmentation
from support import REPO

SPEC = load_model_spec("solar_cells")
KIND = task_type_of(SPEC)


def _spec_with(tmp_path, change) -> None:
    raw = yaml.safe_load((REPO / "models" / "solar_cells.yaml").read_text())
    change(raw)
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(raw))
    load_model_spec("broken", tmp_path)


@pytest.mark.parametrize(("change", "words"), [
    (lambda r: r["search"]["families"].update(resnet152={}), "search.families.resnet152: no such image classification family"),
    (lambda r: r["search"]["families"]["plain_cnn"]["ranges"].update(kernel={"choices": [3]}), "kernel is no plain_cnn setting"),
    (lambda r: r["architecture"].update(input_size=256), "architecture.input_size 256 is above data.size 128"),
    (lambda r: r["data"].update(classes=["ok", "ok"]), "classes are not distinct"),
    (lambda r: r["gate"].update(metric="rmse"), "key 'gate.metric'"),
    (lambda r: r["search"].update(metric="mae"), "'mae' is no image classification metric"),
])
def test_a_spec_mistake_names_the_file_and_the_key(tmp_path, change, words):
    with pytest.raises(ScenarioError, match="broken.yaml") as caught:
        _spec_with(tmp_path, change)
    assert words in str(caught.value)


def test_scores_from_probabilities():
    actual = np.array([0, 0, 0, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7], [0.7, 0.3]])
    assert confusion(actual, probabilities.argmax(1), 2).tolist() == [[2, 1], [1, 1]]
    found = scores(actual, probabilities, 2)
    assert found["accuracy"] == pytest.approx(3 / 5)
    assert found["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    per = class_scores(actual, probabilities, ["ok", "bad"])
    assert per["bad"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "images": 2})
    assert found["macro_f1"] == pytest.approx((per["ok"]["f1"] + per["bad"]["f1"]) / 2)


def _metrics(model: float, classical: float, majority: float = 0.6, champion: float | None = None) -> dict:
    found = {"model": {"accuracy": model}, "classical": {"accuracy": classical}, "majority": {"accuracy": majority}}
    return found | ({"champion": {"accuracy": champion}} if champion is not None else {})


RECALLS = {"functional": {"recall": 0.9}, "defective": {"recall": 0.8}}


@pytest.mark.parametrize(("metrics", "recalls", "alias", "words"), [
    (_metrics(0.88, 0.80), RECALLS, "challenger", "no champion yet"),
    (_metrics(0.78, 0.80), RECALLS, None, "below the baselines' bar"),
    (_metrics(0.58, 0.50), RECALLS, None, "majority 0.600"),
    (_metrics(0.78, 0.80, majority=0.7), RECALLS, None, "classical 0.800"),
    (_metrics(0.88, 0.80), {"functional": {"recall": 0.99}, "defective": {"recall": 0.3}}, None, "defective 0.30"),
    (_metrics(0.88, 0.80, champion=0.90), RECALLS, None, "below the champion's 0.900"),
    (_metrics(0.895, 0.80, champion=0.90), RECALLS, "challenger", "champion 0.900"),
])
def test_the_gate_compares_with_the_baselines_each_class_and_the_champion(metrics, recalls, alias, words):
    decision = KIND._decide(SPEC, metrics, recalls, "no champion yet")
    assert decision.alias == alias and words in decision.reason


def test_augmentation_changes_pixels_not_shapes_and_is_seeded():
    images = torch.rand(8, 1, 16, 16)
    rules = Augmentation(hflip=True, vflip=True, rot90=True, brightness=0.1, contrast=0.1)
    once = augment(images, rules, torch.Generator().manual_seed(1))
    again = augment(images, rules, torch.Generator().manual_seed(1))
    assert once.shape == images.shape and torch.equal(once, again) and not torch.equal(once, images)
    assert 0 <= once.min() and once.max() <= 1
    assert torch.equal(augment(images, Augmentation(), torch.Generator()), images)


def test_balanced_class_weights_lift_the_rare_class():
    weights = class_weights(np.array([0, 0, 0, 1]), 2, "balanced")
    assert weights.tolist() == pytest.approx([4 / 6, 2.0])
    assert class_weights(np.array([0, 1]), 2, "none").tolist() == [1.0, 1.0]


@pytest.mark.parametrize("family", ["plain_cnn", "separable_cnn"])
def test_both_families_take_any_image_size_and_answer_probabilities(family):
    net = ImageNet(family, channels=1, classes=3, input_size=32, width=8, blocks=3, dropout=0.0).eval()
    for size in (32, 64):
        out = net(torch.rand(2, 1, size, size))
        assert out.shape == (2, 3) and torch.allclose(out.sum(1), torch.ones(2))
    separable = sum(p.numel() for p in ImageNet("separable_cnn", 1, 2, 32, 32, 4, 0).parameters())
    plain = sum(p.numel() for p in ImageNet("plain_cnn", 1, 2, 32, 32, 4, 0).parameters())
    assert separable < plain / 4
