"""What a person looks at: forecast-vs-actual for a test week, the loss curve, the model card."""

from __future__ import annotations

import string

import pandas as pd

from cityfactory.training.spec import MODELS_DIR


def forecast_week_figure(times: pd.Series, actual, predicted, baseline, title: str):
    """The last full week of the test set: actual, model and linear baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame({"time": times.to_numpy(), "actual": actual, "model": predicted, "linear": baseline})
    week = frame[frame["time"] >= frame["time"].max() - pd.Timedelta(days=7)]
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.plot(week["time"], week["actual"], label="actual", color="black", linewidth=1.4)
    ax.plot(week["time"], week["model"], label="model", color="tab:blue", linewidth=1)
    ax.plot(week["time"], week["linear"], label="linear baseline", color="tab:orange", linewidth=0.8, alpha=0.8)
    ax.set_title(title)
    ax.set_ylabel("vehicles / hour")
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def loss_figure(history: list[dict], best_epoch: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot(epochs, [h["train_loss"] for h in history])
    left.set_title("train loss (scaled MSE)")
    right.plot(epochs, [h["validation_rmse"] for h in history], color="tab:green")
    right.axvline(best_epoch, color="grey", linestyle="--", label=f"kept: epoch {best_epoch}")
    right.set_title("validation RMSE")
    right.legend()
    for ax in (left, right):
        ax.set_xlabel("epoch")
    fig.tight_layout()
    return fig


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    lines = ["| model | MAE | RMSE | MAPE % |", "|---|---:|---:|---:|"]
    for name, m in metrics.items():
        lines.append(f"| {name} | {m['mae']:.1f} | {m['rmse']:.1f} | {m['mape']:.2f} |")
    return "\n".join(lines)


def model_card(template: str, **values) -> str:
    return string.Template((MODELS_DIR / template).read_text()).safe_substitute(values)
