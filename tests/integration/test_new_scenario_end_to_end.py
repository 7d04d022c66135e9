"""A third scenario, added by configuration alone, runs end to end: ingest to rollout."""

from __future__ import annotations

import datetime as dt

from support import REPO, configure_harbour_air


def test_a_third_scenario_runs_end_to_end_with_rollout(airflow_db, tmp_path, monkeypatch, lake_uri, private_mlflow):
    import mlflow
    from airflow.dag_processing.dagbag import DagBag
    from cityfactory.config.scenarios import get_scenario
    from cityfactory.edge.fleet import LocalFleet, edge_token, load_fleet
    from cityfactory.governance.ledger import RunLedger
    from cityfactory.rollout.controller import snapshot
    from cityfactory.storage.lake import open_lake
    from cityfactory.storage.parquet import read_partitions

    configure_harbour_air(tmp_path, monkeypatch)
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {} and set(bag.dag_ids) >= {"harbour_air"}
    with LocalFleet.for_scenario(get_scenario("harbour_air")):
        run = bag.get_dag("harbour_air").test(run_conf={"data_interval_start": "2015-06-01",
                                                        "data_interval_end": "2016-05-31"})
        serving = snapshot(load_fleet("harbour_air"), edge_token())
    assert run.state == "success"

    entries = {e["task_id"]: e for e in RunLedger(open_lake(), "harbour_air", run.run_id).entries()}
    summary = entries["ingest_summary"]["counts"]
    assert summary["rows_in"] == summary["rows_bronze"] + summary["rows_quarantined"]
    # the spring-forward hour (2016-03-27 02:00, Europe/Rome) does not exist: one row per station;
    # the fall-back hour (2015-10-25 02:00) comes once per station and is the earlier instant
    assert entries["ingest_summary"]["details"]["reasons"] == {"observed_at does not exist in Europe/Rome": 3}
    bronze = read_partitions(open_lake(), "bronze", "harbour_air", [dt.date(2016, 3, 1)])
    assert sorted(set(bronze["station"].to_pylist())) == ["Lighthouse", "Quay North", "Quay South"]
    assert bronze["PM2.5"].type == "double" and bronze["observed_at"].type.tz == "UTC"

    version = str(entries["train"]["counts"]["version"])
    assert entries["train"]["details"]["alias"] == "challenger", entries["train"]["details"]["reason"]
    assert {"compress", "canary_gate", "all_gate", "promote_champion"} <= set(entries), sorted(entries)
    assert set(entries["train"]["details"]["metrics_by_series"]) == {"Lighthouse", "Quay North", "Quay South"}
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("cityfactory.harbour_air", "champion").version) == version
    assert set(serving.values()) == {version}  # every node of the fleet serves the new version
    gates = [e for t, e in entries.items() if t.endswith("_gate") and "verdict" in e["details"]]
    assert gates and all(e["status"] == "success" for e in gates)
