"""The report view and run folders as an attacker would use them: a report altered in the lake
(a script that would ride the admin's session), a run id chosen to land in an older run's folder."""

from __future__ import annotations

import json

import pytest
from cityfactory.governance import audit
from cityfactory.governance.ledger import RunLedger, safe_run_id
from cityfactory.storage.lake import join_key, open_lake

RUN = "manual__2026-12-01T02:30:00+00:00"
PAGE = b"<!doctype html><h1 id=outcome>Run succeeded</h1>"


@pytest.fixture
def client(lake_uri):
    """The report app as the api-server mounts it, with Airflow's permission check passed."""
    from cityfactory.governance.report_app import create_app
    from fastapi.testclient import TestClient

    app = create_app()
    for route in app.routes:
        for dependency in getattr(route, "dependencies", []):
            app.dependency_overrides[dependency.dependency] = lambda: None
    lake = open_lake()
    stored = lake.put_bytes(join_key(RunLedger(lake, "traffic_flow", RUN).prefix, "report.html"), PAGE)
    audit.append(lake, "run_report", {"scenario": "traffic_flow", "run_id": RUN, "html_sha256": stored.sha256})
    audit.seal(lake)
    return TestClient(app), lake


def _url(run_id=RUN) -> str:
    return f"/reports/traffic_flow/{run_id}"


def test_the_recorded_report_is_served_sandboxed_without_script(client):
    http, _ = client
    response = http.get(_url())
    assert response.status_code == 200 and response.content == PAGE
    policy = response.headers["content-security-policy"]
    assert "sandbox" in policy and "default-src 'none'" in policy and "script-src" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"


def test_an_altered_report_is_not_served(client):
    http, lake = client
    key = join_key(RunLedger(lake, "traffic_flow", RUN).prefix, "report.html")
    lake.put_bytes(key, PAGE + b"<script>fetch('/api/v2/variables',{method:'POST'})</script>")
    response = http.get(_url())
    assert response.status_code == 409 and "Report altered" in response.text and "<script>" not in response.text
    assert "sandbox" in response.headers["content-security-policy"]


def test_a_report_the_trail_never_recorded_is_not_served(client):
    http, lake = client
    other = "manual__planted"
    lake.put_bytes(join_key(RunLedger(lake, "traffic_flow", other).prefix, "report.html"), PAGE)
    response = http.get(_url(other))
    assert response.status_code == 409 and "records no report for this run" in response.text


def test_a_forged_audit_entry_does_not_vouch_for_a_report(client):
    http, lake = client
    key = join_key(RunLedger(lake, "traffic_flow", RUN).prefix, "report.html")
    evil = PAGE + b"<script>alert(1)</script>"
    stored = lake.put_bytes(key, evil)
    head = lake.list(audit.ENTRIES)[-1]
    entry = json.loads(lake.get_bytes(head))
    entry["details"]["html_sha256"] = stored.sha256  # rewrite what the trail says
    lake.put_bytes(head, json.dumps(entry).encode())
    response = http.get(_url())
    assert response.status_code == 409 and "does not verify" in response.text


@pytest.mark.parametrize("one, other", [("manual__a:b", "manual__a_b"), ("manual__a+b", "manual__a_b"),
                                        ("x" * 200, "x" * 200 + "y"), ("manual__ä", "manual___")])
def test_run_folders_are_injective(one, other, lake_uri):
    assert safe_run_id(one) != safe_run_id(other)
    lake = open_lake()
    assert RunLedger(lake, "traffic_flow", one).prefix != RunLedger(lake, "traffic_flow", other).prefix
    assert safe_run_id(one) == safe_run_id(one)  # stable: a retried task finds its run's folder


def test_a_run_id_equal_to_an_older_runs_folder_name_gets_a_folder_of_its_own(lake_uri):
    older = "manual__2026-12-01T02:30:00+00:00"
    assert safe_run_id(safe_run_id(older)) != safe_run_id(older)
