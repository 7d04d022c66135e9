"""The city at a glance: one row per scenario a person may see, grouped by department, from what
the platform already keeps (Airflow's runs, each run's compliance report, the registry's champion).

Assembled from plain facts so that the page costs one query per source, not one per scenario.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from cityfactory.governance.report_app import URL_PREFIX
from cityfactory.numbers import side_by_side


@dataclass(frozen=True)
class RunFacts:
    run_id: str
    state: str
    run_after: str  # ISO


@dataclass(frozen=True)
class Champion:
    version: str
    promoted_at: str | None  # ISO, from the version's tag (None for a version promoted before the tag)


@dataclass(frozen=True)
class ScenarioRow:
    domain: str
    scenario: str
    dag_id: str
    registered_model: str
    last_run: RunFacts | None = None
    report_run: str | None = None  # the run whose report the columns below come from
    next_run: str | None = None
    champion: Champion | None = None
    live_ratio: float | None = None  # live error / offline error of the champion
    drift: list[str] = field(default_factory=list)
    decision: str | None = None
    rollout: str | None = None


def monitoring_facts(report: Mapping | None) -> dict:
    """The row's columns that a run's report holds: live vs offline error, drift, the retraining
    decision and how far the rollout went."""
    if not report:
        return {}
    monitoring, rollout = report.get("monitoring") or {}, report.get("rollout") or {}
    decision = (monitoring.get("decision") or {}).get("summary")
    drift = sorted(d["feature"] for d in monitoring.get("drift", []) if d.get("drifted"))
    if rollout.get("rollback"):
        stage = f"rolled back ({rollout['rollback'].get('reason', '')})".replace(" ()", "")
    elif rollout.get("champion"):
        stage = f"all nodes, v{rollout['champion']} champion"
    elif rollout.get("events"):
        last = rollout["events"][-1]
        stage = f"{last['task']}: {last['status']}"
    else:
        stage = None
    return {"live_ratio": monitoring.get("live_ratio"), "drift": drift, "decision": decision, "rollout": stage}


def grouped(rows: Iterable[ScenarioRow], titles: Mapping[str, str]) -> list[tuple[str, list[ScenarioRow]]]:
    """Rows by department, in the order of ``dags/domains.yaml``, scenarios by name."""
    rows = sorted(rows, key=lambda r: r.scenario)
    return [(titles[d], [r for r in rows if r.domain == d]) for d in titles if any(r.domain == d for r in rows)]


def _link(href: str, text: str) -> str:
    return f'<a href="{html.escape(href)}" target="_top">{html.escape(text)}</a>'


def _cell(row: ScenarioRow, mlflow_url: str) -> list[str]:
    dag, run = quote(row.dag_id, safe=""), row.last_run
    run_cell = "never run" if run is None else (
        f'<span class="state {html.escape(run.state)}">{html.escape(run.state)}</span> '
        + _link(f"/dags/{dag}/runs/{quote(run.run_id, safe='')}", run.run_after[:16].replace("T", " ")))
    report = _link(f"{REPORTS}/{dag}/{quote(row.report_run, safe='')}", "report") if row.report_run else ""
    champion = "none" if row.champion is None else (
        _link(f"{mlflow_url}/#/models/{quote(row.registered_model, safe='')}/versions/{row.champion.version}",
              f"v{row.champion.version}") + (f" since {html.escape(row.champion.promoted_at[:10])}" if row.champion.promoted_at else ""))
    live = "–" if row.live_ratio is None else f"{side_by_side([row.live_ratio, 1.0])[0]}× offline"
    return [_link(f"/dags/{dag}", row.scenario), run_cell, html.escape(row.next_run[:16].replace("T", " ")) if row.next_run else "–",
            champion, live, html.escape(", ".join(row.drift)) or "none", html.escape(row.decision or "–"),
            html.escape(row.rollout or "–"), report]


REPORTS = f"{URL_PREFIX}/reports"  # the compliance report view
HEADERS = ["scenario", "last run", "next run (UTC)", "champion", "live error", "drift", "last retraining decision",
           "rollout", ""]


def render(groups: list[tuple[str, list[ScenarioRow]]], mlflow_url: str) -> str:
    """The page: a table per department."""
    sections = []
    for title, rows in groups:
        body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in _cell(r, mlflow_url)) + "</tr>" for r in rows)
        head = "".join(f"<th>{h}</th>" for h in HEADERS)
        sections.append(f'<section><h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table></section>')
    content = "".join(sections) or "<p>No scenario of yours has a DAG yet.</p>"
    return ("<!doctype html><meta charset=utf-8><title>City at a glance</title><style>"
            "body{font-family:system-ui,sans-serif;margin:1rem;color:#222}h1{font-size:1.3rem}h2{font-size:1.05rem;margin-top:1.4rem}"
            "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.35rem .5rem;text-align:left;"
            "font-size:.9rem}th{background:#f4f4f4}.state{padding:0 .4rem;border-radius:.6rem}.success{background:#c8f0c8}"
            ".failed{background:#f6c6c6}.running,.queued{background:#fdf0b5}</style>"
            f"<h1>City at a glance</h1>{content}")
