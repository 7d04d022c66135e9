"""A run at a glance, from its ledger: counts and wall time per task."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from cityfactory.governance.ledger import Kind, last_of, latest_tries
from cityfactory.numbers import side_by_side


def task_summary(entries: list[dict]) -> list[dict]:
    """One row per task id (mapped instances folded, latest tries): instances, summed counts, wall seconds."""
    grouped: dict[str, list[dict]] = defaultdict(list)
    for entry in latest_tries(entries):
        grouped[entry["task_id"]].append(entry)
    rows = []
    for task_id, group in grouped.items():
        counts: dict[str, int] = defaultdict(int)
        for entry in group:
            for name, value in entry["counts"].items():
                counts[name] += value
        start = min(datetime.fromisoformat(e["started_at"] or e["ended_at"]) for e in group)
        end = max(datetime.fromisoformat(e["ended_at"]) for e in group)
        rows.append(
            {
                "task": task_id,
                "instances": len(group),
                "status": "failed" if any(e["status"] != "success" for e in group) else "success",
                "wall_s": round((end - start).total_seconds(), 2),
                "counts": dict(counts),
                "started": start,
            }
        )
    return sorted(rows, key=lambda r: r["started"])


def format_summary(rows: list[dict]) -> str:
    lines = [f"{'task':<18} {'n':>3} {'status':<8} {'wall s':>7}  counts"]
    for r in rows:
        counts = ", ".join(f"{k}={v}" for k, v in r["counts"].items())
        lines.append(f"{r['task']:<18} {r['instances']:>3} {r['status']:<8} {r['wall_s']:>7.2f}  {counts}")
    return "\n".join(lines)


@dataclass
class Layer:
    """Rows a layer holds, and beside it the rows that left the flow there, by why (quarantined,
    blank lines, set aside by the replay): nothing is lost between two layers unseen."""

    name: str
    rows: int
    beside: dict[str, int] = field(default_factory=dict)


def layer_rows(entries: list[dict]) -> list[Layer]:
    """Rows at each layer of a run, in pipeline order, from its ledger."""
    layers: dict[str, Layer] = {}
    gated = 0
    for entry in latest_tries(entries):
        counts, kind = entry["counts"], entry["kind"]
        if kind == Kind.LANDED:
            landed = layers.setdefault("landed", Layer("landed", 0, {"set aside by the replay": 0}))
            landed.rows += counts.get("rows", 0)
            landed.beside["set aside by the replay"] += counts.get("set_aside", 0)
        elif kind == Kind.INGESTED:
            layers["bronze"] = Layer("bronze", counts.get("rows_bronze", 0), {
                "quarantined": counts.get("rows_quarantined", 0), "blank lines": counts.get("rows_blank", 0)})
        elif kind == Kind.DBT_BUILD:
            for model in entry["details"].get("models", []):  # in build order
                layers[model["name"]] = Layer(model["name"], counts.get(f"rows_{model['name']}", 0))
        elif kind == Kind.QUALITY_GATE and entry["details"].get("layer") == "features":
            gated = counts.get("quarantined", 0)
        elif kind == Kind.GOLD_EXPORTED:
            layers["gold"] = Layer("gold", counts.get("rows", 0), {"quarantined by the features gate": gated})
    return list(layers.values())


def format_layers(layers: list[Layer]) -> str:
    def beside(layer: Layer) -> str:
        shown = [f"+{rows:,} {why}" for why, rows in layer.beside.items() if rows or why == "quarantined"]
        return f" ({', '.join(shown)})" if shown else ""

    return " -> ".join(f"{layer.name} {layer.rows:,}{beside(layer)}" for layer in layers)


def format_failures(entries: list[dict], width: int = 600) -> str:
    """Why the run stopped: each failed task's own reason from its ledger entry (the gate's
    expectation, column and rows; the file and the fix), one line each."""
    failed = [e for e in latest_tries(entries) if e["status"] == "failed" and e["details"].get("error")]
    lines = []
    for entry in failed:
        reason = entry["details"]["error"].split(": ", 1)[-1].replace("\n", " ")
        lines.append(f"  {entry['task_id']}: {reason[:width]}{' ...' if len(reason) > width else ''}")
    return "Why it failed:\n" + "\n".join(lines) if lines else ""


def format_gates(entries: list[dict]) -> str:
    """Rows a gate set aside (expectations that quarantine rather than stop), by expectation."""
    lines = [f"  {e['details']['suite']}: {c['quarantined']:,} row(s) quarantined by {c['expectation']}({c['column']}), "
             f"observed {c['observed']}"
             for e in latest_tries(entries) if e["kind"] == Kind.QUALITY_GATE
             for c in e["details"].get("checks", []) if c.get("quarantined")]
    return "Quality gates:\n" + "\n".join(lines) if lines else ""


def format_monitoring(entries: list[dict]) -> str:
    """What the monitor saw and the retraining decision, in two lines."""
    current = latest_tries(entries)
    monitored, decided = last_of(current, Kind.MONITORED), last_of(current, Kind.RETRAIN_DECIDED)
    lines = []
    if monitored is not None and monitored["status"] == "success":
        m, c = monitored["details"], monitored["counts"]
        live = f", live/offline x{m['live_ratio']:.2f} over {m['live_days']} day(s)" if m.get("live_ratio") else ""
        watched = (f"{c['features_drifting']} of {len(m['drift'])} features drifting" if m.get("champion")
                   else "no champion to watch yet")
        refused = f" ({c['predictions_refused']:,} set aside: unplaceable)" if c.get("predictions_refused") else ""
        lines.append(f"Monitor: {c['predictions_collected']:,} served rows collected{refused}, {c['days_evaluated']} day(s) scored{live}, "
                     + watched)
    if decided is not None and "summary" in decided["details"]:
        lines.append(f"Decision: {decided['details']['summary']}")
    same = last_of(current, Kind.SEARCH_PLANNED)
    if same is not None and same["status"] == "skipped":
        lines.append(f"Registry: {same['details']['reason']}")
    return "\n".join(lines)


def _search_outcome(family: str, search: dict) -> str:
    scored = (f"by validation over {search.get('folds', 1)} fold(s) ({search['pruned']} pruned, "
              f"{search['trial_seconds']:.0f} s of trials)")
    if search["trials"] == 1:
        return f"{family}, a budget of one trial, scored {scored}"
    members, chosen = search.get("members") or [family], search.get("chosen") or family
    if chosen != members[0]:  # a mean: of families, or of a family's best few trials
        scores = search["combinations"]
        return (f"the mean of {chosen} (validation {scores[chosen]:.4g} against {scores[members[0]]:.4g} for the "
                f"winner {members[0]} alone), each family's best of {search['trials']} trials {scored}")
    return f"{family} won, the best of {search['trials']} trials {scored}"


def format_training(entries: list[dict]) -> str:
    """The train task's metrics beside the baselines, and its alias decision."""
    current = latest_tries(entries)
    train = last_of(current, Kind.MODEL_TRAINED)
    if train is None or train["status"] != "success":
        return ""
    details = train["details"]
    promoted = last_of(current, Kind.PROMOTED)
    rolled_back = last_of(current, Kind.ROLLED_BACK)
    if rolled_back is not None and rolled_back["status"] == "success":
        standing = "rolled back by this run's rollout"
    elif promoted is not None and promoted["status"] == "success":
        standing = "champion: this run's rollout promoted it"
    else:
        standing = details["alias"] or "no alias"
    search = details.get("search") or {}
    columns = [c for c in details["metric_columns"] if c["in_summary"]]  # the task type's metrics, as it labels them
    correlation = search.get("rank_correlation")
    lines = [(f"Model {details['registered_model']} version {train['counts']['version']}: {standing}\n"
              + (f"  model search: {_search_outcome(details['family'], search)}"
                 + ("" if correlation is None else f"; rank correlation validation/test = {correlation:.2f}")
                 + (f"; examples {details['train_rows']:,} seen (sha256 {details['fingerprint']['seen'][:12]}), test "
                    f"sha256 {details['fingerprint']['test'][:12]}" if details.get("fingerprint") else "") + "\n"
                 if search else "")
              + (f"  left out of training: {len(details['excluded_days'])} faulty day(s) the monitor flagged "
                 f"({details['excluded_days'][0]} .. {details['excluded_days'][-1]})\n" if details.get("excluded_days") else "")
              + f"  registry gate: {details['alias'] or 'rejected'} ({details['reason']})"),
             f"  {'test rows, same for all':<26}" + "".join(f" {c['label']:>8}" for c in columns)]
    rows = list(details["metrics"].items())
    shown = [side_by_side(m[c["name"]] for _, m in rows) for c in columns]  # per column, decimals that tell rows apart
    for index, (name, _) in enumerate(rows):
        lines.append(f"  {name:<26}" + "".join(f" {column[index]:>8}" for column in shown))
    return "\n".join(lines)
