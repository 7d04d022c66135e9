"""What a person looks at for any kind of model: the winning trial's curves and the model card
(the kind's own figures and card values come from its task type)."""

from __future__ import annotations

import string

from cityfactory.settings import get_settings


def loss_figure(client, trial_run_id: str, metric: str, best_step: int):
    """The winning trial's curves as its child run logged them: train loss (networks) and the
    validation score per step, with the step the refit trains to."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {name: sorted((m.step, m.value) for m in client.get_metric_history(trial_run_id, name))
              for name in ("train_loss", f"validation_{metric}")}
    curves = {name: points for name, points in curves.items() if points}
    fig, axes = plt.subplots(1, len(curves) or 1, figsize=(5 * max(len(curves), 1), 3.5), squeeze=False)
    for ax, (name, points) in zip(axes.flat, curves.items()):
        ax.plot(*zip(*points), color="tab:green" if name.startswith("validation") else "tab:blue")
        ax.axvline(best_step, color="grey", linestyle="--", label=f"kept: step {best_step}")
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("epoch or boosting round")
        ax.legend()
    fig.tight_layout()
    return fig


def model_card(template: str, **values) -> str:
    return string.Template((get_settings().models_dir / template).read_text()).safe_substitute(values)
