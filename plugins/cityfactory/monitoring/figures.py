"""The monitor's picture: drift per feature against its threshold, and live accuracy per series
(or per day) beside the offline estimate and the task type's reference baseline."""

from __future__ import annotations

import io


def monitoring_figure(drift: list[dict], evaluations: list[dict], champion: str | None, metric: str, title: str,
                      reference: str) -> bytes:
    """PNG bytes: left, PSI per feature (bar) and its threshold (tick); right, the champion's
    live metric per series on the latest day (or per evaluated day for one series)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, max(3.5, 0.28 * len(drift) + 1.2)))
    if drift:
        names = [r["feature"] for r in drift][::-1]
        values = [r["psi"] for r in drift][::-1]
        limits = [r["threshold"] for r in drift][::-1]
        colors = ["tab:red" if r["drifted"] else "tab:blue" for r in drift][::-1]
        left.barh(names, values, color=colors)
        left.scatter(limits, names, marker="|", s=300, color="black", label="threshold (from training windows)")
        left.set_xlabel("PSI, recent window vs training rows")
        left.legend(loc="lower right", fontsize=8)
        left.tick_params(axis="y", labelsize=8)
    else:
        left.text(0.5, 0.5, "no drift reference for the champion", ha="center", va="center")
    left.set_title("Data drift")
    mine = [(e["day"], v) for e in sorted(evaluations, key=lambda e: e["day"]) for v in e["versions"] if v["version"] == champion]
    if mine and mine[-1][1]["series"]:
        latest = mine[-1][1]["series"]
        labels = [s["series"] for s in latest]
        right.bar(labels, [s["live"] for s in latest], label="live", color="tab:blue")
        right.scatter(labels, [s["offline"] or 0 for s in latest], marker="_", s=400, color="black", label="offline (test rows)")
        right.scatter(labels, [s[reference] or 0 for s in latest], marker="x", color="tab:orange", label=reference)
        right.tick_params(axis="x", rotation=60, labelsize=8)
        right.set_title(f"Version {champion}, {mine[-1][0]}: live {metric.upper()} per series")
    elif mine:
        days = [d for d, _ in mine]
        right.plot(days, [v["live"] for _, v in mine], marker="o", label="live", color="tab:blue")
        right.plot(days, [v["offline"] for _, v in mine], linestyle="--", marker="_", markersize=24, color="black",
                   label="offline (test rows)")
        right.plot(days, [v["baselines"].get(reference) for _, v in mine], marker="x", color="tab:orange", label=reference)
        right.tick_params(axis="x", rotation=45, labelsize=8)
        right.set_title(f"Version {champion}: live {metric.upper()} per day")
    else:
        right.text(0.5, 0.5, "no served predictions evaluated yet", ha="center", va="center")
        right.set_title("Live accuracy")
    if mine:
        right.set_ylabel(metric.upper())
        right.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()
