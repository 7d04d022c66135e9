"""What people look at for an image classifier: the confusion matrix, a gallery of the worst
mistakes, accuracy per group, and the model card's tables."""

from __future__ import annotations

import numpy as np

from cityfactory.tasktypes.image_classification.metrics import confusion


def confusion_figure(actual: np.ndarray, probabilities: np.ndarray, classes: list[str], title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = confusion(actual, probabilities.argmax(axis=1), len(classes))
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(1.6 * len(classes) + 2.5, 1.4 * len(classes) + 2))
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            axes.text(j, i, f"{matrix[i, j]}\n{shares[i, j]:.0%}", ha="center", va="center",
                      color="white" if shares[i, j] > 0.5 else "black")
    axes.set_xticks(range(len(classes)), classes)
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true (inspector)")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    return figure


def mistakes_figure(images: np.ndarray, actual: np.ndarray, probabilities: np.ndarray, classes: list[str],
                    names: list[str], title: str, count: int = 12):
    """The test images the model was most sure of and wrong about, with what it said."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != actual)
    worst = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:count]
    columns = 6
    rows = max(1, -(-len(worst) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.0 * columns, 2.3 * rows + 0.4), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, i in zip(axes.flat, worst):
        image = images[i]
        axis.imshow(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
        axis.set_title(f"true {classes[actual[i]]}\nsaid {classes[predicted[i]]} {probabilities[i, predicted[i]]:.0%}\n"
                       f"{names[i][:12]}", fontsize=7)
    figure.suptitle(f"{title}: {len(wrong)} test mistakes, the {len(worst)} most confident", fontsize=10)
    figure.tight_layout()
    return figure


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    names = ["accuracy", "macro_f1", "balanced_accuracy"]
    lines = ["| model | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for model, values in sorted(metrics.items(), key=lambda kv: -kv[1]["accuracy"]):
        lines.append(f"| {model} | " + " | ".join(f"{100 * values[n]:.2f} %" for n in names) + " |")
    return "\n".join(lines)


def groups_table(by_group: dict[str, dict[str, dict[str, float]]]) -> str:
    """Per class: precision, recall, F1 (the candidate beside the classical baseline); per other
    group: accuracy."""
    lines = ["| group | images | model | classical |", "|---|---:|---|---|"]
    for group, models in by_group.items():
        model, classical = models["model"], models.get("classical", {})
        if "recall" in model:
            shown = f"precision {100 * model['precision']:.1f} %, recall {100 * model['recall']:.1f} %"
            base = f"recall {100 * classical.get('recall', float('nan')):.1f} %"
        else:
            shown = f"accuracy {100 * model['accuracy']:.1f} %"
            base = f"accuracy {100 * classical.get('accuracy', float('nan')):.1f} %"
        lines.append(f"| {group} | {int(model.get('images', 0))} | {shown} | {base} |")
    return "\n".join(lines)


def class_balance(y_parts: dict[str, np.ndarray], classes: list[str]) -> str:
    lines = ["| split | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    for part, y in y_parts.items():
        counts = np.bincount(y, minlength=len(classes))
        lines.append(f"| {part} | " + " | ".join(f"{n} ({n / max(len(y), 1):.0%})" for n in counts) + " |")
    return "\n".join(lines)
