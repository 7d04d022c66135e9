"""A new user's ten minutes: sample data in a dialect no shipped scenario uses, ``new-scenario``,
then a run over the whole history with every drafted file as written, ingest to rollout."""

from __future__ import annotations

from support import (
    HARBOUR_STATIONS,
    REPO,
    harbour_dataset,
    inspection_images,
    scaffold_project,
)


def test_a_scaffolded_forecaster_runs_end_to_end_unedited(airflow_db, tmp_path, monkeypatch, lake_uri,
                                                         private_mlflow, capsys):
    import mlflow
    from airflow.dag_processing.dagbag import DagBag
    from cityfactory import cli
    from cityfactory.config.scenarios import get_scenario
    from cityfactory.edge.fleet import LocalFleet, edge_token, load_fleet
    from cityfactory.governance.ledger import RunLedger
    from cityfactory.ingestion.replay import history_interval
    from cityfactory.rollout.controller import snapshot
    from cityfactory.storage.lake import open_lake

    data = scaffold_project(tmp_path, monkeypatch)
    # semicolons, decimal commas, -200 for missing, date and time in two columns, CRLF, a blank
    # trailing header column: three stations, four months
    harbour_dataset(data / "harbour", HARBOUR_STATIONS, "2015-06-01", "2015-09-30")
    files = sorted(str(p) for p in (data / "harbour").glob("*.csv"))
    assert cli.main(["new-scenario", "harbour_watch", "--from", *files]) == 0
    printed = capsys.readouterr().out
    assert "OK   harbour_watch" in printed and "-200 read as 'missing' in PM2.5" in printed, printed

    scenario = get_scenario("harbour_watch")
    assert (scenario.source.csv.delimiter, scenario.source.csv.decimal) == (";", ",")
    assert "-200" in scenario.source.csv.null_values and scenario.schema_.series == "station"
    assert scenario.schema_.event_time.from_ == ["date", "time"]
    assert {n.series for n in load_fleet("harbour_watch").nodes} == {"Lighthouse", "Quay North", "Quay South"}

    monkeypatch.delenv("CITYFACTORY_SEARCH_TRIALS", raising=False)  # the drafted spec's budget, as drafted
    start, end = history_interval(scenario)
    bag = DagBag(dag_folder=str(REPO / "dags" / "scenario_pipelines.py"))
    assert bag.import_errors == {} and bag.dag_ids == ["harbour_watch"]
    with LocalFleet.for_scenario(scenario):
        run = bag.get_dag("harbour_watch").test(run_conf={"data_interval_start": start.isoformat(),
                                                          "data_interval_end": end.isoformat()})
        serving = snapshot(load_fleet("harbour_watch"), edge_token("harbour_watch"))
    assert run.state == "success"

    entries = {e["task_id"]: e for e in RunLedger(open_lake(), "harbour_watch", run.run_id).entries()}
    counts = entries["ingest_summary"]["counts"]
    assert counts["rows_in"] == counts["rows_bronze"] == 3 * 122 * 24 and counts["rows_quarantined"] == 0
    gates = [e for e in entries.values() if e["kind"] == "quality_gate"]
    assert len(gates) == 2 and all(e["status"] == "success" for e in gates)
    assert entries["export_gold"]["counts"]["rows"] == entries["transform"]["counts"]["rows_harbour_watch_features"]
    assert entries["train"]["details"]["alias"] == "challenger", entries["train"]["details"]["reason"]
    version = str(entries["train"]["counts"]["version"])
    assert str(mlflow.MlflowClient().get_model_version_by_alias("cityfactory.harbour_watch", "champion").version) == version
    assert set(serving.values()) == {version}, "every node of the drafted fleet serves the new champion"


def test_a_scaffolded_camera_scenario_runs_end_to_end_unedited(airflow_db, tmp_path, monkeypatch, lake_uri,
                                                              private_mlflow, capsys):
    import mlflow
    from airflow.dag_processing.dagbag import DagBag
    from cityfactory import cli
    from cityfactory.config.scenarios import get_scenario
    from cityfactory.edge.fleet import LocalFleet, edge_token, load_fleet
    from cityfactory.governance.ledger import RunLedger
    from cityfactory.ingestion.replay import history_interval
    from cityfactory.rollout.controller import snapshot
    from cityfactory.storage.lake import open_lake
    from cityfactory.tasktypes import load_model_spec

    data = scaffold_project(tmp_path, monkeypatch)
    folder = inspection_images(data / "line_camera", per_class=60)
    (folder / "intact" / "notes.txt").write_text("not an image")
    assert cli.main(["new-scenario", "crack_watch", "--from", str(folder)]) == 0
    printed = capsys.readouterr().out
    assert "OK   crack_watch" in printed and "left out, not images: intact/notes.txt" in printed, printed
    assert load_model_spec("crack_watch").data.classes == ["cracked", "intact"]
    assert len((folder / "index.csv").read_text().splitlines()) == 120

    monkeypatch.delenv("CITYFACTORY_SEARCH_TRIALS", raising=False)  # the drafted spec's budget, as drafted
    scenario = get_scenario("crack_watch")
    start, end = history_interval(scenario)
    bag = DagBag(dag_folder=str(REPO / "dags" / "scenario_pipelines.py"))
    assert bag.import_errors == {} and bag.dag_ids == ["crack_watch"]
    with LocalFleet.for_scenario(scenario):
        run = bag.get_dag("crack_watch").test(run_conf={"data_interval_start": start.isoformat(),
                                                        "data_interval_end": end.isoformat()})
        serving = snapshot(load_fleet("crack_watch"), edge_token("crack_watch"))
    assert run.state == "success"

    entries = {e["task_id"]: e for e in RunLedger(open_lake(), "crack_watch", run.run_id).entries()}
    assert entries["transform"]["counts"]["rows_crack_watch_examples"] == 120
    assert entries["train"]["details"]["alias"] == "challenger", entries["train"]["details"]["reason"]
    version = str(entries["train"]["counts"]["version"])
    assert str(mlflow.MlflowClient().get_model_version_by_alias("cityfactory.crack_watch", "champion").version) == version
    assert set(serving.values()) == {version}, "both drafted camera nodes serve the new champion"
