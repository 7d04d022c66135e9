"""The city overview's rows: the report's facts picked right, departments in the city's order,
scenario names and run ids escaped into links, nothing of a scenario not given."""

from __future__ import annotations

from cityfactory.governance.overview import (
    Champion,
    RunFacts,
    ScenarioRow,
    grouped,
    monitoring_facts,
    render,
)

REPORT = {"monitoring": {"live_ratio": 1.234, "decision": {"summary": "retrain: live error x1.23"},
                         "drift": [{"feature": "pm25_lag_1h", "drifted": True, "psi": 0.4},
                                   {"feature": "hour_of_day", "drifted": False, "psi": 0.01}]},
          "rollout": {"champion": "7", "events": [{"task": "promote_champion", "status": "success"}], "rollback": None}}


def test_the_reports_facts():
    assert monitoring_facts(REPORT) == {"live_ratio": 1.234, "drift": ["pm25_lag_1h"],
                                        "decision": "retrain: live error x1.23", "rollout": "all nodes, v7 champion"}
    rolled_back = {**REPORT, "rollout": {**REPORT["rollout"], "rollback": {"reason": "canary gate failed"}}}
    assert monitoring_facts(rolled_back)["rollout"] == "rolled back (canary gate failed)"
    assert monitoring_facts(None) == {} and monitoring_facts({"monitoring": None, "rollout": None})["rollout"] is None


def test_departments_in_the_citys_order_and_links_escaped():
    rows = [ScenarioRow("transport", "traffic_flow", "traffic_flow", "traffic_model",
                        RunFacts("manual__<script>", "failed", "2026-12-06T02:30:00+00:00"), "manual__<script>",
                        "2026-12-07T08:30:00+00:00", Champion("3", "2026-12-01T03:00:00+00:00"), **monitoring_facts(REPORT)),
            ScenarioRow("environment", "air_quality", "air_quality", "aq_model")]
    titles = {"environment": "Environment", "transport": "Transport", "governance": "General governance"}
    groups = grouped(rows, titles)
    assert [(title, [r.scenario for r in rs]) for title, rs in groups] == [("Environment", ["air_quality"]),
                                                                          ("Transport", ["traffic_flow"])]
    page = render(groups, "http://mlflow.example")
    assert "<script>" not in page and "manual__%3Cscript%3E" in page
    assert 'href="/cityfactory/reports/traffic_flow/manual__%3Cscript%3E"' in page
    assert 'href="http://mlflow.example/#/models/traffic_model/versions/3"' in page and "since 2026-12-01" in page
    assert "1.23× offline" in page and "pm25_lag_1h" in page and "never run" in page
    assert "General governance" not in page
