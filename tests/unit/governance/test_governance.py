"""Governance of every run: the compliance report (JSON against the repo's schema, HTML in a real
headless Chromium), lineage across every stage, OpenLineage events, the audit trail, retention and
the daily maintenance DAG."""

from __future__ import annotations

import json

import pytest
from cityfactory.config.scenarios import get_scenario
from cityfactory.governance import audit
from cityfactory.storage.lake import open_lake
from support import REPO

SCHEMA = json.loads((REPO / "plugins" / "cityfactory" / "governance" / "report.schema.json").read_text())


def test_mapped_task_states_fold_to_the_worst_instance():
    from cityfactory.pipeline.context import fold_task_states

    states = {"plan": "success", "land_0": "success", "land_1": "failed", "land_2": "success", "canary_deploy_0": "skipped"}
    assert fold_task_states(states, ["plan", "land", "canary_deploy", "train"]) == {
        "plan": "success", "land": "failed", "canary_deploy": "skipped", "train": None}


def test_a_retried_governance_task_adds_no_event_twice(lake_uri):
    from cityfactory.pipeline.context import RunContext
    from cityfactory.pipeline.govern import append_run_events
    from cityfactory.security.signing import audit_key

    audit_key()  # the audit key exists already (the first append would make it, and its event is due once)
    scenario = get_scenario("traffic_flow")
    ctx = RunContext(scenario, open_lake(), "manual__retry", "governance")
    gate = {"task_id": "bronze_gate", "kind": "quality_gate", "map_index": -1, "try_number": 1,
            "ended_at": "2026-11-22T01:00:00", "status": "failed", "inputs": [], "outputs": [],
            "counts": {"rows": 5, "expectations": 9, "failed": 2},
            "details": {"layer": "bronze", "suite": "traffic_flow_bronze", "success": False}}
    first, last = append_run_events(ctx, [gate])
    assert first == 1 and last >= 1
    assert append_run_events(ctx, [gate]) == (None, None)
    [event] = [e for e in audit.entries(ctx.lake) if e["event"] == "quality_gate"]
    assert event["details"]["passed"] is False and event["details"]["run_id"] == "manual__retry"


def test_a_try_that_failed_before_a_successful_retry_does_not_fail_the_report():
    from cityfactory.governance import report

    def entry(task, kind, try_number, status, at, error=None):
        return {"task_id": task, "kind": kind, "map_index": -1, "try_number": try_number, "status": status,
                "started_at": at, "ended_at": at, "inputs": [], "outputs": [], "counts": {},
                "details": {"error": error} if error else {}}

    entries = [entry("plan", "run_planned", 1, "success", "2026-11-22T01:00:00+00:00"),
               entry("transform", "dbt_build", 1, "failed", "2026-11-22T01:01:00+00:00", "dbt: connection reset"),
               entry("transform", "dbt_build", 2, "success", "2026-11-22T01:02:00+00:00")]
    run = {"run_id": "r", "run_type": "scheduled", "triggered_by": None, "conf": {}, "code_version": "test"}
    trail = {"first_seq": None, "last_seq": None, "verified": True, "verified_entries": 0, "error": None}
    retried = report.assemble(get_scenario("traffic_flow"), entries, run, {"plan": "success", "transform": "success"}, trail)
    assert retried["outcome"]["state"] == "success" and retried["outcome"]["stopped_at"] is None
    failed = report.assemble(get_scenario("traffic_flow"), entries[:2], run, {"plan": "success", "transform": "failed"}, trail)
    assert failed["outcome"]["stopped_at"] == "transform" and failed["outcome"]["reason"] == "dbt: connection reset"


@pytest.mark.parametrize(("artifact", "expected"), [
    ({"uri": "file:///lake/bronze/traffic_flow/dt=2026-01-02/part-0.parquet", "kind": "bronze"}, ("file", "/lake/bronze/traffic_flow")),
    ({"uri": "s3://city-lake/prod/raw/traffic_flow/dt=2026-01-02/a.csv", "kind": "raw"}, ("s3://city-lake", "prod/raw/traffic_flow")),
    ({"uri": "s3://city-lake/prod/gold/traffic_flow/features.parquet", "kind": "gold"}, ("s3://city-lake", "prod/gold/traffic_flow/features.parquet")),
    ({"uri": "duckdb:///home/x/traffic_flow.duckdb/traffic_flow_features", "kind": "dbt_model"},
     ("duckdb:///home/x/traffic_flow.duckdb", "traffic_flow_features")),
    ({"uri": "file:///lake/bundles/traffic_flow/3/manifest.sig", "kind": "bundle"}, ("file", "/lake/bundles/traffic_flow/3")),
    ({"uri": "s3://city-lake/prod/bundles/traffic_flow/3", "kind": "bundle"}, ("s3://city-lake", "prod/bundles/traffic_flow/3")),
    ({"uri": "file:///lake/bronze/traffic_flow", "kind": "bronze"}, ("file", "/lake/bronze/traffic_flow")),
    ({"uri": "models:/cityfactory.traffic_flow/3", "kind": "model_version"}, ("mlflow", "models:/cityfactory.traffic_flow/3")),
    ({"uri": "http://10.0.0.7:9101#model=3", "kind": "edge_node"}, ("http://10.0.0.7:9101", "serving/model=3")),
])
def test_openlineage_dataset_names_follow_the_naming_conventions(artifact, expected):
    from cityfactory.governance.openlineage import dataset_name

    assert dataset_name({**artifact, "sha256": ""}) == expected


def test_the_model_card_is_rendered_as_html_and_raw_html_in_it_is_escaped():
    from cityfactory.governance.report import markdown_html

    html = markdown_html("## Metrics\n\n| model | RMSE |\n|---|---|\n| model | 229.0 |\n\n<script>alert(1)</script>")
    assert "<h2>Metrics</h2>" in html and "<td>229.0</td>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_what_the_edge_served_and_its_evaluations_expire_as_declared_or_with_bronze(lake_uri):
    import datetime as dt

    from cityfactory.governance import retention

    scenario = get_scenario("traffic_flow")
    days = scenario.governance.retention_days
    assert days["predictions"] == days["monitoring"] == days["refused_predictions"] == days["bronze"]
    assert days["set_aside"] == days["quarantine"]
    lake = open_lake()
    today = dt.date(2026, 12, 5)
    old, recent = today - dt.timedelta(days=days["bronze"] + 1), today - dt.timedelta(days=1)
    for layer in ("predictions", "refused_predictions", "monitoring"):
        for day in (old, recent):
            lake.put_bytes(f"{layer}/traffic_flow/dt={day}/x", b"1")
    expired = {(e.layer, e.day) for e, _ in retention.expired_partitions(lake, scenario, today)}
    assert expired == {(layer, str(old)) for layer in ("predictions", "refused_predictions", "monitoring")}
    from cityfactory.config.scenarios import Governance

    declared = Governance.model_validate({**scenario.governance.model_dump(),
                                          "retention_days": {"raw": 9, "quarantine": 8, "bronze": 7, "predictions": 3}})
    assert declared.retention_days["predictions"] == 3 and declared.retention_days["monitoring"] == 7


def test_rows_per_layer_show_what_left_the_flow_and_why():
    from cityfactory.governance.ledger import Kind
    from cityfactory.governance.summary import format_layers, layer_rows

    def entry(task, kind, counts, index=-1):
        return {"task_id": task, "map_index": index, "try_number": 1, "kind": kind, "counts": counts, "details": {}}

    entries = [entry("land", Kind.LANDED, {"rows": 300, "set_aside": 1}, 0),
               entry("land", Kind.LANDED, {"rows": 215, "set_aside": 0}, 1),
               entry("summarize", Kind.INGESTED, {"rows_bronze": 400, "rows_quarantined": 1, "rows_blank": 114})]
    assert format_layers(layer_rows(entries)) == ("landed 515 (+1 set aside by the replay) -> "
                                                  "bronze 400 (+1 quarantined, +114 blank lines)")
    entries[0]["counts"]["set_aside"], entries[2]["counts"]["rows_blank"] = 0, 0
    assert format_layers(layer_rows(entries)) == "landed 515 -> bronze 400 (+1 quarantined)"


def test_the_summary_says_why_a_run_stopped_and_what_a_gate_set_aside():
    from cityfactory.governance.ledger import Kind
    from cityfactory.governance.summary import format_failures, format_gates

    reason = ("AirflowFailException: quality gate air_quality_features failed 1 of 8: "
              "expect_column_values_to_be_between(pm25_repeat_hours): observed 5 unexpected of 419616, e.g. [37, 38]")
    failed = {"task_id": "features_gate", "map_index": -1, "try_number": 1, "kind": Kind.QUALITY_GATE,
              "status": "failed", "counts": {}, "details": {"error": reason, "suite": "air_quality_features", "checks": []}}
    assert format_failures([failed]) == ("Why it failed:\n  features_gate: quality gate air_quality_features failed 1 "
                                         "of 8: expect_column_values_to_be_between(pm25_repeat_hours): observed 5 "
                                         "unexpected of 419616, e.g. [37, 38]")
    passed = {**failed, "status": "success", "details": {"suite": "air_quality_features", "checks": [
        {"expectation": "expect_column_values_to_be_between", "column": "pm25_repeat_hours", "quarantined": 5,
         "observed": "5 unexpected of 419616, e.g. [37, 38]"}]}}
    assert format_failures([passed]) == ""
    assert format_gates([passed]) == ("Quality gates:\n  air_quality_features: 5 row(s) quarantined by "
                                      "expect_column_values_to_be_between(pm25_repeat_hours), observed 5 unexpected of "
                                      "419616, e.g. [37, 38]")
