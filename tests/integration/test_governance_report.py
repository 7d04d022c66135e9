"""Governance of every run, end to end: the compliance report of a full run (JSON against the repo's
schema, HTML in a real headless Chromium), lineage across every stage, OpenLineage events, the audit
trail; retention on both lake backends and the daily maintenance DAG."""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

import jsonschema
import pytest
from cityfactory.config.scenarios import get_scenario
from cityfactory.edge.fleet import load_fleet
from cityfactory.governance import audit, retention
from cityfactory.governance.ledger import RunLedger
from cityfactory.ingestion import replay
from cityfactory.security.signing import audit_public_key_pem
from cityfactory.storage.lake import open_lake
from support import CHROMIUM, CHROMIUM_FLAGS, REPO, openlineage_events

SCHEMA = json.loads((REPO / "plugins" / "cityfactory" / "governance" / "report.schema.json").read_text())


def _report(lake, run_id: str) -> tuple[dict, str]:
    prefix = RunLedger(lake, "traffic_flow", run_id).prefix
    return json.loads(lake.get_bytes(f"{prefix}/report.json")), lake.get_bytes(f"{prefix}/report.html").decode()


def chromium(url: str, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium as root on a closed network (the flags keep it from calling out)."""
    assert CHROMIUM, "Chromium is needed for the report test: apt-get install chromium (.ci/run does)"
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
            capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def full_report(history_run):
    run, _, _ = history_run
    report, html = _report(open_lake(), run.run_id)
    return run, report, html


def test_full_run_report_validates_and_every_control_holds(full_report):
    _, report, html = full_report
    jsonschema.Draft202012Validator(SCHEMA).validate(report)
    assert report["outcome"] == {**report["outcome"], "state": "success", "stopped_at": None, "reason": None}
    statuses = {c["id"]: c["status"] for c in report["controls"]}
    assert "failed" not in statuses.values(), [c for c in report["controls"] if c["status"] == "failed"]
    assert statuses["OVERSIGHT-1"] == "not_applicable" and statuses["DATA-4"] == "not_applicable"
    assert all(c["eu_ai_act"] and c["nist_ai_rmf"] and c["evidence"] for c in report["controls"])
    [source] = report["sources"]
    assert source["sha256"] == source["pinned_sha256"] == get_scenario("traffic_flow").source.files[0].sha256
    shift = replay.time_shift(get_scenario("traffic_flow")).days
    assert shift > 0 and report["run"]["replay_shift_days"] == shift  # the report says its dates are moved
    assert report["run"]["triggered_by"] == f"{getpass.getuser()} (dag.test)"  # the person, not Airflow's "dag_test"
    assert f"moved {shift} days forward" in html
    q = report["quarantine"]
    assert q["rows_in"] == q["rows_bronze"] + q["rows"] and sum(q["reasons"].values()) == q["rows"] > 0
    assert {g["suite"]: g["success"] for g in report["quality_gates"]} == {"traffic_flow_bronze": True, "traffic_flow_features": True}
    assert report["dbt"]["tests"] and all(t["status"] == "pass" for t in report["dbt"]["tests"])
    assert set(report["model"]["metrics"]) >= {"model", "linear_autoregression", "persistence"}
    assert report["compression"]["chosen"] in {v["name"] for v in report["compression"]["variants"]}
    rollout = report["rollout"]
    assert [g["stage"] for g in rollout["gates"]] == ["canary", "district", "city"] and rollout["rollback"] is None
    assert rollout["champion"] == report["model"]["version"]
    assert "Model card" in report["model_card"] and report["audit"]["verified"]


def test_lineage_links_every_stage_of_a_full_run(full_report):
    _, report, html = full_report
    nodes = {n["id"]: n for n in report["lineage"]["nodes"]}
    edges = {(e["source"], e["target"]) for e in report["lineage"]["edges"]}
    by_kind: dict[str, list[str]] = {}
    for n in nodes.values():
        by_kind.setdefault(n["kind"], []).append(n["id"])
    [source], [gold], [run], [version], [alias] = (by_kind[k] for k in ("source", "gold", "mlflow_run", "model_version", "model_alias"))
    mart = next(m for m in by_kind["dbt_model"] if m.endswith("/traffic_flow_features"))
    staging = next(m for m in by_kind["dbt_model"] if "/stg_" in m)
    chain = [(source, "landing"), ("landing", "raw"), ("raw", "bronze"), ("raw", "quarantine"), ("bronze", staging),
             (mart, gold), (gold, run), (run, version), (version, "bundle"), (version, alias)]
    for link in chain:
        assert link in edges, f"lineage misses {link}"
    assert len(by_kind["edge_node"]) == 6 and all(("bundle", n) in edges for n in by_kind["edge_node"])
    fleet = {n.id: n.district for n in load_fleet(get_scenario("traffic_flow").rollout.fleet).nodes}
    labels = {nodes[n]["label"] for n in by_kind["edge_node"]}  # people name nodes by id and district, not host:port
    assert labels == {f"{node} ({district}) v{nodes[version]['label'].rsplit(' v', 1)[1]}" for node, district in fleet.items()}
    graph_reach = _reachable(edges, source)
    assert set(nodes) - {source} <= graph_reach, f"not reached from the source: {set(nodes) - graph_reach - {source}}"
    assert nodes["raw"]["objects"] == nodes["landing"]["objects"] > 1000 and len(nodes["raw"]["sha256"]) == 64
    assert nodes[gold]["sha256"] and nodes[gold]["rows"] > 10_000
    assert html.count('<rect x="') - 6 == len(nodes) and "lineage graph" in html  # 6: the legend


def _reachable(edges: set[tuple[str, str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        here = todo.pop()
        for a, b in edges:
            if a == here and b not in seen:
                seen.add(b)
                todo.append(b)
    return seen


def test_report_opens_in_chromium(full_report, tmp_path):
    run, report, _ = full_report
    page = open_lake().path_of(f"{RunLedger(open_lake(), 'traffic_flow', run.run_id).prefix}/report.html")
    dom = chromium(page.as_uri(), "--dump-dom").stdout
    assert "Run succeeded" in dom and "Controls checklist" in dom and 'aria-label="lineage graph"' in dom
    assert f"version {report['model']['version']}" in dom and "data:image/png;base64," in dom
    shot = Path(os.environ.get("CITYFACTORY_SCREENSHOT_DIR", tmp_path)) / "report.png"
    chromium(page.as_uri(), "--window-size=1200,3000", f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 100_000  # a page, not a blank


def test_report_is_attached_to_the_mlflow_run(full_report, history_run):
    _, report, _ = full_report
    client = history_run[2]
    names = {Path(a.path).name for a in client.list_artifacts(report["model"]["mlflow_run_id"], "governance")}
    assert names == {"report.json", "report.html", "lineage.svg"}


def test_audit_trail_holds_the_runs_decisions(full_report):
    run, report, _ = full_report
    lake = open_lake()
    assert audit.verify(lake, audit_public_key_pem()).entries >= report["audit"]["last_seq"]
    events = [e for e in audit.entries(lake) if e["details"].get("run_id") == run.run_id]
    kinds = [e["event"] for e in events]
    for kind, count in {"ingested": 1, "quality_gate": 2, "dbt_build": 1, "model_registered": 1, "bundle_signed": 1,
                        "deployed": 6, "rollout_gate": 3, "run_report": 1}.items():
        assert kinds.count(kind) == count, (kind, kinds)
    moves = [(e["details"]["alias"], e["details"]["to"]) for e in events if e["event"] == "alias_moved"]
    assert moves == [("challenger", report["model"]["version"]), ("champion", report["model"]["version"])]
    [final] = [e for e in events if e["event"] == "run_report"]
    prefix = RunLedger(lake, "traffic_flow", run.run_id).prefix
    assert final["details"]["report_sha256"] == hashlib.sha256(lake.get_bytes(f"{prefix}/report.json")).hexdigest()
    assert any(e["event"] == "key_generated" and e["details"]["name"] == "signing" for e in audit.entries(lake))


def report_version(run) -> str:
    return _report(open_lake(), run.run_id)[0]["model"]["version"]


def test_openlineage_events_carry_the_ledgers_datasets(full_report):
    run, _, _ = full_report
    events = [json.loads(line) for line in openlineage_events(Path(os.environ["CITYFACTORY_HOME"])).read_text().splitlines()]
    starts = {(e["job"]["name"], e["run"]["runId"]) for e in events if e["eventType"] == "START"
              and e["run"]["facets"].get("airflow", {}).get("dagRun", {}).get("run_id") == run.run_id}
    ours = [e for e in events if e["eventType"] == "RUNNING" and (e["job"]["name"], e["run"]["runId"]) in starts]
    assert len(starts) > 20 and {e["job"]["name"] for e in ours} >= {f"traffic_flow.{t}" for t in ("land", "ingest", "transform",
        "export_gold", "train", "compress", "canary_deploy", "governance")}, "attached to the listener's task runs"
    by_job = {}
    for e in ours:
        by_job.setdefault(e["job"]["name"].removeprefix("traffic_flow."), []).append(e)
    transform = by_job["transform"][-1]
    assert [d["name"].rsplit("/", 2)[-2:] for d in transform["inputs"]] == [["bronze", "traffic_flow"]]
    assert {d["name"] for d in transform["outputs"]} >= {"traffic_flow_features"}
    assert all(d["namespace"].startswith("duckdb://") for d in transform["outputs"])
    [trained] = by_job["train"][-1:]
    assert {d["namespace"] for d in trained["outputs"]} == {"mlflow"}
    [bundle] = by_job["compress"][-1]["outputs"]
    assert bundle["name"].endswith("/bundles/traffic_flow/" + str(report_version(run)))
    assert {d["name"] for e in by_job["city_deploy"] for d in e["inputs"]} == {bundle["name"]}, "the same dataset"
    deployed = {d["namespace"] for e in by_job["canary_deploy"] + by_job["city_deploy"] for d in e["outputs"]}
    assert deployed and all(n.startswith("http://127.0.0.1:") for n in deployed)
    gold = by_job["export_gold"][-1]["outputs"][0]
    assert gold["facets"]["version"]["datasetVersion"] and gold["outputFacets"]["outputStatistics"]["rowCount"] > 10_000


@pytest.fixture(params=["local", "s3"])
def aged_lake(request):
    """Partitions at known ages in every layer, another scenario's, and a folder that is no partition."""
    request.getfixturevalue("lake_uri" if request.param == "local" else "s3_lake_uri")
    lake = open_lake()
    today = dt.date(2026, 11, 22)
    for layer in ("raw", "quarantine", "bronze", "landing"):
        for age in (0, 4, 5, 6, 30, 400):
            day = today - dt.timedelta(days=age)
            lake.put_bytes(f"{layer}/traffic_flow/dt={day}/part-0.bin", b"x")
            lake.put_bytes(f"{layer}/other_city/dt={day}/part-0.bin", b"x")
    lake.put_bytes("quarantine/traffic_flow/_manifest/notes.txt", b"keep me")
    policy = get_scenario("traffic_flow").governance.model_copy(update={"retention_days": {"raw": 30, "quarantine": 5}})
    return lake, today, get_scenario("traffic_flow").model_copy(update={"governance": policy})


def _days(lake, prefix: str, today: dt.date) -> set[int]:
    return {(today - dt.date.fromisoformat(d.removeprefix("dt="))).days for d in lake.list_dirs(prefix) if d.startswith("dt=")}


def test_retention_deletes_only_what_the_policy_says_and_records_it(aged_lake):
    lake, today, scenario = aged_lake
    dry = retention.enforce(lake, scenario, today, "maintenance-test", dry_run=True)
    assert _days(lake, "quarantine/traffic_flow", today) == {0, 4, 5, 6, 30, 400}, "a dry run deletes nothing"
    done = retention.enforce(lake, scenario, today, "maintenance-test")
    assert done["partitions"] == dry["partitions"]
    assert _days(lake, "raw/traffic_flow", today) == {0, 4, 5, 6, 30}          # 30 days old stays
    assert _days(lake, "quarantine/traffic_flow", today) == {0, 4, 5}          # 5 days old stays
    assert _days(lake, "bronze/traffic_flow", today) == {0, 4, 5, 6, 30, 400}  # no policy: untouched
    assert _days(lake, "landing/traffic_flow", today) == {0, 4, 5, 6, 30, 400}
    for layer in ("raw", "quarantine", "bronze"):
        assert _days(lake, f"{layer}/other_city", today) == {0, 4, 5, 6, 30, 400}
    assert lake.exists("quarantine/traffic_flow/_manifest/notes.txt")
    [recorded] = [e for e in audit.entries(lake) if e["event"] == "retention_enforced"]
    gone = {(p["layer"], p["day"]) for p in recorded["details"]["partitions"]}
    assert gone == {("raw", str(today - dt.timedelta(days=400))),
                    *{("quarantine", str(today - dt.timedelta(days=a))) for a in (6, 30, 400)}}
    assert recorded["details"]["objects"] == 4 and recorded["details"]["cutoffs"] == {
        "raw": str(today - dt.timedelta(days=30)), "quarantine": str(today - dt.timedelta(days=5))}


def test_maintenance_dag_verifies_enforces_and_refuses_on_a_broken_trail(airflow_db, lake_uri, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    lake = open_lake()
    today = dt.datetime.now(dt.UTC).date()
    old = today - dt.timedelta(days=400)  # past the traffic_flow quarantine policy (365 days)
    lake.put_bytes(f"quarantine/traffic_flow/dt={old}/part-0.parquet", b"x")
    lake.put_bytes(f"raw/traffic_flow/dt={old}/gateway.csv", b"x")  # raw keeps 3650 days
    audit.append(lake, "ingested", {"rows": 1})
    audit.seal(lake)
    dag = DagBag(dag_folder=str(REPO / "dags")).get_dag("governance_maintenance")
    assert dag.params["dry_run"] is True  # unless the deployment says so, retention deletes nothing
    assert dag.test().state == "success" and lake.list(f"quarantine/traffic_flow/dt={old}")

    monkeypatch.setenv("CITYFACTORY_RETENTION_ENFORCED", "true")
    dag = DagBag(dag_folder=str(REPO / "dags")).get_dag("governance_maintenance")
    run = dag.test()
    assert run.state == "success"
    assert not lake.list(f"quarantine/traffic_flow/dt={old}") and lake.list(f"raw/traffic_flow/dt={old}")
    summary = json.loads(lake.get_bytes(f"governance/_maintenance/{RunLedger(lake, 'x', run.run_id).prefix.rsplit('/', 1)[1]}/summary.json"))
    done = {r["scenario"]: r["objects"] for r in summary["retention"]}
    assert summary["audit"]["verified"] and done["traffic_flow"] == 1 and sum(done.values()) == 1

    entry = json.loads(lake.get_bytes("audit/entries/000000000001.json"))
    entry["details"]["rows"] = 1000
    lake.put_bytes("audit/entries/000000000001.json", json.dumps(entry).encode())
    lake.put_bytes(f"quarantine/traffic_flow/dt={old}/part-0.parquet", b"x")
    run = dag.test()
    assert run.state == "failed"
    assert lake.list(f"quarantine/traffic_flow/dt={old}"), "nothing is deleted while the trail does not verify"
    summary = json.loads(lake.get_bytes(f"governance/_maintenance/{RunLedger(lake, 'x', run.run_id).prefix.rsplit('/', 1)[1]}/summary.json"))
    assert not summary["audit"]["verified"] and "entry 1" in summary["audit"]["error"]
