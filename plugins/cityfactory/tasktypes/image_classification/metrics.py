"""Classification scores from class probabilities: accuracy, macro-F1, balanced accuracy, and
per class precision, recall and F1; the confusion matrix behind them."""

from __future__ import annotations

import numpy as np


def confusion(actual: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Rows: the true class; columns: the predicted one."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(actual, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix


def per_class(matrix: np.ndarray) -> list[dict[str, float]]:
    found = []
    for k in range(len(matrix)):
        tp, predicted, actual = matrix[k, k], matrix[:, k].sum(), matrix[k].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        found.append({"precision": float(precision), "recall": float(recall), "f1": float(f1), "images": int(actual)})
    return found


def scores(actual: np.ndarray, probabilities: np.ndarray, classes: int) -> dict[str, float]:
    """The headline scores (shares, 0..1) of probabilities against true class indices."""
    predicted = np.asarray(probabilities).argmax(axis=1)
    matrix = confusion(actual, predicted, classes)
    each = per_class(matrix)
    present = [c for c in each if c["images"]]
    return {"accuracy": float(np.trace(matrix) / max(matrix.sum(), 1)),
            "macro_f1": float(np.mean([c["f1"] for c in each])),
            "balanced_accuracy": float(np.mean([c["recall"] for c in present])) if present else 0.0}


def class_scores(actual: np.ndarray, probabilities: np.ndarray, names: list[str]) -> dict[str, dict[str, float]]:
    """Per class: precision, recall, F1 and the number of images."""
    matrix = confusion(actual, np.asarray(probabilities).argmax(axis=1), len(names))
    return dict(zip(names, per_class(matrix), strict=True))
