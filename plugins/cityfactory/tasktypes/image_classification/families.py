"""The CNN families behind one interface, and the fitted classifier as an MLflow pyfunc.

``fit`` trains on the training images with early stopping on the validation images, reporting
each epoch's validation score; ``refit`` trains the chosen settings again on training and
validation images for the number of epochs ``fit`` found best. Settings a trial does not give
come from the spec's hand-set ``architecture`` and ``training``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cityfactory.tasktypes.base import Examples, Report, Trained
from cityfactory.tasktypes.image_classification.spec import ImageClassificationSpec
from cityfactory.tasktypes.pickled_model import PickledStateModel


def hand_set_params(spec: ImageClassificationSpec) -> dict:
    """The hand-set network and training as one family's settings: every search's first trial."""
    a, t = spec.architecture, spec.training
    return {"input_size": a.input_size, "width": a.width, "blocks": a.blocks, "dropout": a.dropout, "epochs": t.epochs,
            "patience": t.patience, "batch_size": t.batch_size, "learning_rate": t.learning_rate,
            "weight_decay": t.weight_decay}


class ImageClassifier(PickledStateModel):
    """A fitted CNN as an MLflow pyfunc: ``predict`` takes (n, channels, size, size) images in
    [0, 1] and answers class probabilities (the champion is scored this way). Logged as code
    (``image_classifier_model.py``) with the fitted state as an artifact."""

    code_file, state_file, code_dir = "image_classifier_model.py", "image_classifier.pkl", Path(__file__).parent

    def __init__(self, family: str = "", params: dict | None = None, model=None, classes: list[str] | None = None):
        self.family, self.params, self.model, self.classes = family, params or {}, model, classes or []

    def predict_array(self, images: np.ndarray) -> np.ndarray:
        from cityfactory.tasktypes.image_classification.fitting import probabilities

        return probabilities(self.model, images)


def _settings(spec: ImageClassificationSpec, params: dict) -> dict:
    return {**hand_set_params(spec), **params}


def _network(family: str, spec: ImageClassificationSpec, settings: dict):
    from cityfactory.tasktypes.image_classification.network import ImageNet

    return ImageNet(family, spec.data.channels, len(spec.data.classes), int(settings["input_size"]),
                    int(settings["width"]), int(settings["blocks"]), float(settings["dropout"]))


def _train(family, spec, params, x_train, y_train, x_val, y_val, metric, seed, report=None, epochs=None):
    from cityfactory.tasktypes.epochs import seed_everything
    from cityfactory.tasktypes.image_classification.fitting import fit_network

    settings = _settings(spec, params)
    seed_everything(seed)
    return fit_network(_network(family, spec, settings), x_train, y_train, x_val, y_val,
                       epochs=int(epochs or settings["epochs"]), patience=int(settings["patience"]),
                       batch_size=int(settings["batch_size"]), learning_rate=float(settings["learning_rate"]),
                       weight_decay=float(settings["weight_decay"]), seed=seed, augmentation=spec.augmentation,
                       weighting=spec.training.class_weights, metric=metric, report=report)


def fit(family: str, spec: ImageClassificationSpec, params: dict, examples: Examples, metric: str, seed: int,
        report: Report | None = None) -> Trained:
    e = examples
    fitted = _train(family, spec, params, e.x_train, e.y_train, e.x_validation, e.y_validation, metric, seed, report)
    history = [{"step": h.pop("epoch"), **h} for h in fitted.history]
    return Trained(ImageClassifier(family, params, fitted.model, spec.data.classes), history, fitted.best_epoch)


def refit(family: str, spec: ImageClassificationSpec, params: dict, steps: int, x: np.ndarray, y: np.ndarray,
          seed: int) -> ImageClassifier:
    fitted = _train(family, spec, params, x, y, None, None, "accuracy", seed, epochs=max(int(steps), 1))
    return ImageClassifier(family, params, fitted.model, spec.data.classes)
