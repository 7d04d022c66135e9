"""Baselines on the same test images: the majority class, and a classical model on hand-crafted
features (histograms of oriented gradients and of intensity, then logistic regression), the
kind of model the CNN must beat to be worth its cost."""

from __future__ import annotations

import numpy as np

from cityfactory.tasktypes.image_classification.spec import Baselines


def majority(y_seen: np.ndarray, n_test: int, classes: int) -> np.ndarray:
    """Probability 1 for the most common class of the training and validation images."""
    probabilities = np.zeros((n_test, classes), dtype=np.float32)
    probabilities[:, np.bincount(y_seen, minlength=classes).argmax()] = 1.0
    return probabilities


def handcrafted(images: np.ndarray, spec: Baselines) -> np.ndarray:
    """Per image: HOG of the (first channel, resized) image beside its intensity histogram."""
    import torch
    from skimage.feature import hog
    from torch.nn import functional as F

    small = F.interpolate(torch.from_numpy(images[:, :1]), size=(spec.hog_size, spec.hog_size), mode="bilinear",
                          align_corners=False, antialias=True).numpy()[:, 0]
    rows = []
    for image, full in zip(small, images[:, 0]):
        gradients = hog(image, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2), feature_vector=True)
        histogram = np.histogram(full, bins=spec.histogram_bins, range=(0.0, 1.0))[0] / full.size
        rows.append(np.concatenate([gradients, histogram]))
    return np.asarray(rows, dtype=np.float32)


def classical(x_seen: np.ndarray, y_seen: np.ndarray, x_test: np.ndarray, classes: int, spec: Baselines) -> np.ndarray:
    """Logistic regression (balanced class weights) on the hand-crafted features: test probabilities."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=spec.regularisation, class_weight="balanced",
                                                                max_iter=2000))
    model.fit(handcrafted(x_seen, spec), y_seen)
    probabilities = np.zeros((len(x_test), classes), dtype=np.float32)
    probabilities[:, model.classes_] = model.predict_proba(handcrafted(x_test, spec))
    return probabilities
