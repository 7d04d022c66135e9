"""A third scenario, added by configuration alone, runs end to end: ingest to rollout. One of its
sensors is stuck for 41 hours, past what the features suite allows; the suite says to quarantine
such rows rather than stop, so the year's run completes without them, and says so."""

from __future__ import annotations

import datetime as dt

from support import REPO, configure_harbour_air


def test_a_third_scenario_runs_end_to_end_with_rollout(airflow_db, tmp_path, monkeypatch, lake_uri, private_mlflow):
    import mlflow
    from airflow.dag_processing.dagbag import DagBag
    from cityfactory.config.scenarios import get_scenario
    from cityfactory.edge.fleet import LocalFleet, edge_token, load_fleet
    from cityfactory.governance.ledger import RunLedger
    from cityfactory.governance.summary import format_layers, layer_rows
    from cityfactory.rollout.controller import snapshot
    from cityfactory.storage.lake import open_lake
    from cityfactory.storage.parquet import read_partitions

    configure_harbour_air(tmp_path, monkeypatch)
    _stick_a_sensor(tmp_path, "quay_south.csv", "01/08/2015", hours=41, value="3")
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {} and set(bag.dag_ids) >= {"harbour_air"}
    with LocalFleet.for_scenario(get_scenario("harbour_air")):
        run = bag.get_dag("harbour_air").test(run_conf={"data_interval_start": "2015-06-01",
                                                        "data_interval_end": "2016-05-31"})
        serving = snapshot(load_fleet("harbour_air"), edge_token("harbour_air"))
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

    features_gate = next(e for e in entries.values() if e["kind"] == "quality_gate" and e["details"]["layer"] == "features")
    assert features_gate["status"] == "success" and features_gate["counts"]["quarantined"] == 41 - 36
    [stuck] = [c for c in features_gate["details"]["checks"] if c["quarantined"]]
    assert stuck["column"] == "pm25_repeat_hours" and stuck["on_fail"] == "quarantine"
    gold = entries["export_gold"]["counts"]["rows"]
    assert gold == entries["transform"]["counts"]["rows_air_quality_features"] - 5, "the stuck hours stay out of gold"
    lines = format_layers(layer_rows(list(RunLedger(open_lake(), "harbour_air", run.run_id).entries())))
    assert "(+5 quarantined by the features gate)" in lines

    version = str(entries["train"]["counts"]["version"])
    assert entries["train"]["details"]["alias"] == "challenger", entries["train"]["details"]["reason"]
    assert {"compress", "canary_gate", "all_gate", "promote_champion"} <= set(entries), sorted(entries)
    assert set(entries["train"]["details"]["metrics_by_series"]) == {"Lighthouse", "Quay North", "Quay South"}
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("cityfactory.harbour_air", "champion").version) == version
    assert set(serving.values()) == {version}  # every node of the fleet serves the new version
    gates = [e for t, e in entries.items() if t.endswith("_gate") and "verdict" in e["details"]]
    assert gates and all(e["status"] == "success" for e in gates)


def _stick_a_sensor(root, name: str, first_day: str, hours: int, value: str) -> None:
    """A station's PM2.5 stuck on ``value`` for ``hours`` from ``first_day``; the pin follows, and
    the features suite quarantines rows of a sensor stuck too long instead of stopping the run."""
    import hashlib
    import json

    import yaml

    path = root / "data" / "harbour_air_fixture" / name
    lines = path.read_bytes().split(b"\r\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{first_day};00.00.00".encode()))
    assert value.encode() not in (lines[start - 1].split(b";")[3], lines[start + hours].split(b";")[3]), "a longer run"
    for i in range(start, start + hours):
        fields = lines[i].split(b";")
        fields[3] = value.encode()
        lines[i] = b";".join(fields)
    path.write_bytes(b"\r\n".join(lines))
    scenario = root / "scenarios" / "harbour_air.yaml"
    config = yaml.safe_load(scenario.read_text())
    next(f for f in config["source"]["files"] if f["name"] == name)["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    scenario.write_text(yaml.safe_dump(config, sort_keys=False))
    suite_path = root / "expectations" / "air_quality_features.json"
    suite = json.loads(suite_path.read_text())
    stuck = next(e for e in suite["expectations"] if e["kwargs"].get("column") == "pm25_repeat_hours")
    stuck["meta"]["on_fail"] = "quarantine"
    suite_path.write_text(json.dumps(suite))
