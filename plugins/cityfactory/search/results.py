"""The search's outcome: the winner, the parameter importances, and its picture."""

from __future__ import annotations

from cityfactory.search.space import distribution
from cityfactory.tasktypes.spec import SearchSpec


def winner(trials: list[dict], greater_is_better: bool = False) -> dict:
    """The completed trial with the best validation score (ties: the earlier one)."""
    complete = [t for t in trials if t["state"] == "complete"]
    if not complete:
        raise ValueError(f"no trial of the search completed ({len(trials)} pruned or failed)")
    return (max if greater_is_better else min)(complete, key=lambda t: t["value"])


def family_rankings(trials: list[dict], greater_is_better: bool = False) -> list[list[dict]]:
    """Each family's completed trials, best first; the families by their best, the search's winner's
    family first (ties: the earlier trial)."""
    complete = [t for t in trials if t["state"] == "complete"]
    key = (lambda t: -t["value"]) if greater_is_better else (lambda t: t["value"])
    rankings = [sorted((t for t in complete if t["family"] == family), key=key)
                for family in dict.fromkeys(t["family"] for t in complete)]
    return sorted(rankings, key=lambda ranked: key(ranked[0]))


def rank_correlation(trials: list[dict]) -> float | None:
    """Spearman's rank correlation of the completed trials' validation and test scores: near 1, the
    validation ranks trials as the test year would; None with fewer than 3 trials or no spread."""
    from scipy.stats import spearmanr

    scored = [t for t in trials if t["state"] == "complete" and t.get("test_value") is not None]
    if len(scored) < 3 or len({t["value"] for t in scored}) < 2 or len({t["test_value"] for t in scored}) < 2:
        return None
    return float(spearmanr([t["value"] for t in scored], [t["test_value"] for t in scored]).statistic)


def importances(trials: list[dict], search: SearchSpec | None, greater_is_better: bool = False) -> dict[str, dict[str, float]]:
    """Per family, each searched parameter's share of the validation score's variance (Optuna's
    fANOVA); families with fewer than 3 searched trials or no spread are left out."""
    import optuna

    out: dict[str, dict[str, float]] = {}
    for family, spec in (search.families.items() if search else []):
        found = [t for t in trials if t["family"] == family and t["state"] == "complete" and not t["hand_set"]]
        if len(found) < 3 or not spec.ranges or len({t["value"] for t in found}) < 2:
            continue
        study = optuna.create_study(direction="maximize" if greater_is_better else "minimize")
        dists = {name: distribution(r) for name, r in spec.ranges.items()}
        study.add_trials([optuna.trial.create_trial(params={k: t["params"][k] for k in dists}, distributions=dists,
                                                    value=t["value"]) for t in found])
        out[family] = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    return out


PALETTE = ["tab:blue", "tab:green", "tab:orange", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]


def families_in_order(trials: list[dict]) -> list[str]:
    """The families in the order their trials came (the plan's: the spec's order)."""
    return list(dict.fromkeys(t["family"] for t in trials))


def colours(trials: list[dict]) -> dict[str, str]:
    return {family: PALETTE[i % len(PALETTE)] for i, family in enumerate(families_in_order(trials))}


def ordered(trials: list[dict]) -> list[dict]:
    order = families_in_order(trials)
    return sorted(trials, key=lambda t: (order.index(t["family"]), t["batch"], t["number"]))


def figure(trials: list[dict], metric: str, unit: str, found: dict[str, dict[str, float]],
           greater_is_better: bool = False):
    """Left: every trial's validation score (pruned ones hollow), the best so far per family.
    Right: the parameter importances per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ordered(trials)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 2]})
    palette = colours(trials)
    for family, colour in palette.items():
        points = [(i, t) for i, t in enumerate(rows, 1) if t["family"] == family]
        if not points:
            continue
        done = [(i, t["value"]) for i, t in points if t["state"] == "complete"]
        pruned = [(i, t["value"]) for i, t in points if t["state"] != "complete"]
        if done:
            left.scatter(*zip(*done), color=colour, label=family, zorder=3)
            best, line = None, []
            for i, value in done:
                best = value if best is None else (max if greater_is_better else min)(best, value)
                line.append((i, best))
            left.step(*zip(*line), where="post", color=colour, alpha=0.6)
        if pruned:
            left.scatter(*zip(*pruned), facecolors="none", edgecolors=colour, label=f"{family} (pruned)", zorder=3)
    hand = [(i, t["value"]) for i, t in enumerate(rows, 1) if t["hand_set"]]
    if hand:
        left.axhline(hand[0][1], color="grey", linestyle="--", linewidth=0.8, label="hand-set model")
    left.set_xlabel("trial")
    left.set_ylabel(f"validation {metric.upper()} ({unit})")
    left.set_title("validation score per trial")
    left.legend(fontsize=8)
    labels, values, bar_colours = [], [], []
    for family, shares in found.items():
        for name, share in shares.items():
            labels.append(f"{family}: {name}")
            values.append(share)
            bar_colours.append(palette[family])
    if labels:
        right.barh(labels[::-1], values[::-1], color=bar_colours[::-1])
        right.set_xlabel("importance (share of variance, fANOVA)")
    else:
        right.text(0.5, 0.5, "too few trials for importances", ha="center", va="center")
        right.set_axis_off()
    right.set_title("parameter importances")
    fig.tight_layout()
    return fig


def table(trials: list[dict], metric: str) -> str:
    """Markdown: one row per trial, best first."""
    lines = [f"| family | batch.trial | state | validation {metric} | best step | seconds | parameters |",
             "|---|---|---|---:|---:|---:|---|"]
    for t in sorted(trials, key=lambda t: (t["state"] != "complete", t["value"])):
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
        lines.append(f"| {t['family']}{' (hand-set)' if t['hand_set'] else ''} | {t['batch']}.{t['number']} | {t['state']} "
                     f"| {t['value']:.3f} | {t['best_step']} | {t['seconds']:.1f} | {params} |")
    return "\n".join(lines)
