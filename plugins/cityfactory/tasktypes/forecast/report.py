"""What a person looks at for a forecaster: the last test week, actual beside model and the
linear baseline, and the model card's metric tables."""

from __future__ import annotations

import pandas as pd


def forecast_week_figure(frame: pd.DataFrame, time_column: str, series: str | None, actual, predicted, baseline,
                         title: str, ylabel: str, max_panels: int = 12):
    """The last full week of the test rows: actual, model and linear baseline, one small panel per
    series (the first ``max_panels`` by name) on a shared time axis; hours without a usable row
    are gaps in the lines, not straight joins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = pd.DataFrame({"time": frame[time_column].to_numpy(), "series": frame[series].to_numpy() if series else "",
                         "actual": actual, "model": predicted, "linear": baseline})
    week = data[data["time"] >= data["time"].max() - pd.Timedelta(days=7)]
    names = sorted(week["series"].unique(), key=str)[:max_panels]
    cols = 1 if len(names) == 1 else 2
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(11 if cols == 1 else 12, 3.2 * rows), sharex=True, squeeze=False)
    for ax, name in zip(axes.flat, names):
        one = week[week["series"] == name].drop(columns="series").set_index("time").sort_index()
        one = one.reindex(pd.date_range(one.index.min(), one.index.max(), freq="h")).rename_axis("time").reset_index()
        ax.plot(one["time"], one["actual"], label="actual", color="black", linewidth=1.3)
        ax.plot(one["time"], one["model"], label="model", color="tab:blue", linewidth=1)
        ax.plot(one["time"], one["linear"], label="linear baseline", color="tab:orange", linewidth=0.8, alpha=0.8)
        ax.set_title(str(name) if series else title, fontsize=10)
        ax.set_ylabel(ylabel)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    axes.flat[0].legend(loc="upper left", fontsize=8)
    if series:
        fig.suptitle(title)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    lines = ["| model | MAE | RMSE | MAPE % | sMAPE % |", "|---|---:|---:|---:|---:|"]
    for name, m in metrics.items():
        lines.append(f"| {name} | {m['mae']:.2f} | {m['rmse']:.2f} | {m['mape']:.2f} | {m['smape']:.2f} |")
    return "\n".join(lines)


def series_table(by_series: dict[str, dict[str, dict[str, float]]], metric: str) -> str:
    """Per-series test metric: model beside persistence and the linear baseline."""
    if len(by_series) <= 1:
        return ""
    lines = [f"| series | model {metric} | persistence | linear | vs persistence |", "|---|---:|---:|---:|---:|"]
    for name, m in by_series.items():
        model, naive, linear = (m[k][metric] for k in ("model", "persistence", "linear_autoregression"))
        lines.append(f"| {name} | {model:.2f} | {naive:.2f} | {linear:.2f} | {model / naive - 1:+.1%} |")
    return "\n".join(lines)
