"""Maintenance seen in practice, on the real traffic data: a champion watched night after night.

The scenario is played as a gateway deployment (the test lands each day's files, as gateways
would) with the city's consumers replayed between nights. A quiet week retrains nothing and
rolls nothing out, nor do repeated nights on unchanged data; a forced retrain on unchanged inputs
registers nothing twice; then a counter stuck on one plausible value from one night on (inside
every quality gate's range) is flagged by the monitor, the decision retrains, and the new version
is judged against the champion on the same rows.
"""

from __future__ import annotations

import datetime as dt
import io
import json

import httpx
import pyarrow as pa
import pyarrow.csv as pv
import pytest
import yaml
from cityfactory.config.scenarios import get_scenario
from cityfactory.governance.ledger import RunLedger
from cityfactory.governance.summary import format_training
from cityfactory.ingestion import replay
from cityfactory.storage.lake import open_lake
from cityfactory.tasktypes import load_model_spec
from support import REPO, write_fleet

REPLAYED = get_scenario("traffic_flow")
_, LAST = replay.history_interval(REPLAYED)
HISTORY_END = LAST - dt.timedelta(days=14)
QUIET = [HISTORY_END + dt.timedelta(days=i) for i in range(1, 8)]
SHIFTED = [QUIET[-1] + dt.timedelta(days=i) for i in range(1, 3)]
FAULT = [SHIFTED[-1] + dt.timedelta(days=i) for i in range(1, 5)]


class Deployment:
    """The gateway deployment: land days, run nights, replay the consumers."""

    def __init__(self, dag, scenario):
        self.dag, self.scenario, self.runs = dag, scenario, []

    def land(self, days, stuck_at: int | None = None, scale: float | None = None):
        lake = open_lake()
        for obj, _ in replay.replay(REPLAYED, lake, days).files:  # the sensors' files, as the gateways drop them
            if stuck_at is not None or scale is not None:  # stuck on one value, or reading a share of what passes
                key = obj.uri.removeprefix(lake.uri + "/")
                table = pv.read_csv(io.BytesIO(lake.get_bytes(key)))
                volume = table.schema.get_field_index("traffic_volume")
                values = ([stuck_at] * table.num_rows if stuck_at is not None else
                          [round(v * scale) for v in table["traffic_volume"].to_pylist()])
                table = table.set_column(volume, "traffic_volume", pa.array(values, pa.int64()))
                buffer = io.BytesIO()
                pv.write_csv(table, buffer)
                lake.put_bytes(key, buffer.getvalue())

    def night(self, first, last=None, retrain="auto", full_refresh=False) -> dict[str, dict]:
        # every param given: dag.test keeps an earlier run's conf in the DAG's params
        run = self.dag.test(run_conf={"data_interval_start": str(first), "data_interval_end": str(last or first),
                                      "retrain": retrain, "full_refresh": full_refresh,
                                      "search_trials": None})
        assert run.state == "success", f"the run of {first} failed"
        entries = {}
        for e in RunLedger(open_lake(), "traffic_flow", run.run_id).entries():
            entries[e["task_id"]] = e  # the latest try
        self.runs.append(entries)
        return entries

    def until_retrained(self, days, **fault) -> dict[str, dict] | None:
        """Night after night of a faulty sensor (``land``'s options) until one decides to retrain."""
        for day in days:
            self.land([day], **fault)
            night = self.night(day)
            self.serve(day)
            if night["decide"]["details"]["retrain"]:
                return night
        return None

    def serve(self, day):
        from cityfactory.edge.consumers import serve_days

        assert sum(serve_days(self.scenario, day, day).values()) >= 20


@pytest.fixture(scope="module")
def deployment(airflow_db, tmp_path_factory):
    import mlflow
    from airflow.dag_processing.dagbag import DagBag
    from cityfactory.edge.fleet import LocalFleet

    previous = mlflow.get_tracking_uri()  # process-wide in MLflow: put back for the modules after this one
    home = tmp_path_factory.mktemp("maintenance")
    scenarios = home / "scenarios"
    scenarios.mkdir()
    config = yaml.safe_load((REPO / "dags" / "scenarios" / "traffic_flow.yaml").read_text())
    config["source"]["kind"] = "gateway"
    (scenarios / "traffic_flow.yaml").write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CITYFACTORY_SCENARIOS_DIR", str(scenarios))
        mp.setenv("CITYFACTORY_LAKE_URI", (home / "lake").as_uri())
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
        # the replayed consumers ask about days up to 12 before the history's end (at most a week before
        # yesterday): the nodes accept 23 days back
        mp.setenv("CITYFACTORY_FLEETS_DIR", str(write_fleet(home / "fleets", "traffic_flow", 3, past_hours=24 * 23)))
        scenario = get_scenario("traffic_flow")
        dag = DagBag(dag_folder=str(REPO / "dags" / "scenario_pipelines.py")).get_dag("traffic_flow")
        with LocalFleet.for_scenario(scenario):
            deployment = Deployment(dag, scenario)
            first, _ = replay.history_interval(REPLAYED)
            deployment.land([first + dt.timedelta(days=i) for i in range((HISTORY_END - first).days + 1)])
            history = deployment.night(first, HISTORY_END)
            assert history["decide"]["details"]["reasons"][0]["code"] == "no_champion"
            assert history["promote_champion"]["status"] == "success"
            deployment.serve(HISTORY_END)
            yield deployment
    mlflow.set_tracking_uri(previous)


def _versions(scenario) -> list[str]:
    import mlflow
    from cityfactory.tasktypes import load_model_spec
    from cityfactory.training import registry

    registry.use_experiment(scenario.name)
    model = load_model_spec(scenario.model_spec).registered_model
    return sorted((str(v.version) for v in mlflow.MlflowClient().search_model_versions(f"name = '{model}'")), key=int)


def _serving(scenario) -> set[str | None]:
    from cityfactory.edge.fleet import edge_token, load_fleet
    from cityfactory.rollout.controller import snapshot

    return set(snapshot(load_fleet(scenario.rollout.fleet), edge_token(scenario.rollout.fleet)).values())


def _attack(scenario) -> int:
    """What an anonymous client and an altered node log can do before a night: keyed rows from
    far outside any window, thousands of target days, lines that do not parse. Returns the
    number of lines planted in the node's log (the edge refuses or does not log the rest)."""
    import hashlib

    from cityfactory.edge.fleet import bundle_base, load_fleet
    from cityfactory.settings import get_settings

    node = load_fleet(scenario.rollout.fleet).nodes[0]
    width = len(load_model_spec(scenario.model_spec).data.feature_names)
    far = {"rows": [[1.0] * width], "keys": [{"series": None, "predicted_for": "9999-12-31T23:00:00+00:00"}]}
    assert httpx.post(f"{node.url}/predict", json=far).status_code == 422
    now = dt.datetime.now(dt.UTC)
    many = {"rows": [[1.0] * width] * 2000,
            "keys": [{"series": None, "predicted_for": (now - dt.timedelta(minutes=m)).isoformat()} for m in range(2000)]}
    assert httpx.post(f"{node.url}/predict", json=many).status_code == 200  # answered; anonymous: not logged
    pin = f"{scenario.name}|{load_model_spec(scenario.model_spec).registered_model}|{bundle_base(scenario.name)}"
    state = hashlib.sha256(pin.encode()).hexdigest()[:12]  # the node's log folder, as the node names it
    planted = [json.dumps({"served_at": now.timestamp(), "node": node.id, "model_version": "1", "series": None,
                           "predicted_for": f"9999-12-{d:02d}T23:00:00+00:00", "input_sha256": "ab", "prediction": 1.0,
                           "purpose": "serve"}) for d in range(1, 15)] + ['{"served_at": 17']
    (get_settings().home / "edge-predictions" / f"{node.id}-{state}" / "seg-99999999.jsonl").write_text("\n".join(planted) + "\n")
    return len(planted)


def test_a_quiet_week_retrains_nothing_and_rolls_nothing_out(deployment):
    versions, serving = _versions(deployment.scenario), _serving(deployment.scenario)
    assert len(versions) == 1 and serving == {versions[0]}
    planted = _attack(deployment.scenario)
    for day in QUIET:
        deployment.land([day])
        night = deployment.night(day)
        if planted:  # the night after the attack: the bad rows counted and set aside, the real day scored
            assert night["monitor"]["counts"]["predictions_refused"] == planted
            assert night["monitor"]["details"]["evaluations"][0]["day"] == str(day - dt.timedelta(days=1))
            planted = 0
        deployment.serve(day)
        decided, monitored = night["decide"]["details"], night["monitor"]
        assert not decided["retrain"] and decided["reasons"] == [], decided["summary"]
        assert "train" not in night and "rollout_plan" not in night  # skipped before they recorded anything
        assert monitored["counts"]["days_evaluated"] == 1 and monitored["details"]["evaluations"][0]["scored_rows"] >= 20
        assert night["transform"]["details"]["window"] is not None  # incremental: the night's window only
    assert _versions(deployment.scenario) == versions and _serving(deployment.scenario) == serving
    last = deployment.runs[-1]["monitor"]["details"]
    # a week may be harder than the test year on average: the limit is what the champion's own test days reached
    assert last["live_days"] == 3 and last["live_usual"] > 1 and 0.3 < last["live_ratio"] < max(1.25, last["live_usual"])
    assert last["drift"] and not last["drifted"]


def test_two_nights_on_unchanged_data_register_nothing_and_a_forced_retrain_registers_once(deployment):
    versions = _versions(deployment.scenario)
    digests = []
    for _ in range(2):  # the same night again: unchanged data
        night = deployment.night(QUIET[-1])
        assert not night["decide"]["details"]["retrain"] and "train" not in night and "rollout_plan" not in night
        digests.append(night["export_gold"]["outputs"][0]["sha256"])
    assert digests[0] == digests[1] and _versions(deployment.scenario) == versions
    forced = deployment.night(QUIET[-1], retrain="always")
    assert forced["decide"]["details"]["reasons"][0]["code"] == "forced" and forced["train"]["status"] == "success"
    new = str(forced["train"]["counts"]["version"])
    again = deployment.night(QUIET[-1], retrain="always", full_refresh=True)  # a full rebuild gives the same inputs
    assert again["transform"]["details"]["full_refresh"] and again["export_gold"]["outputs"][0]["sha256"] == digests[0]
    assert again["plan_search"]["status"] == "skipped" and again["plan_search"]["details"]["same_inputs_as"] == new
    assert "train" not in again
    assert "compress" not in again and "rollout_plan" not in again
    assert _versions(deployment.scenario) == sorted([*versions, new])


def test_a_level_shift_is_caught_within_two_nights_and_its_days_are_not_trained_on(deployment):
    """A sensor reading 35 % low from one night on (a lane closed, a miscalibration): inside every
    gate, the forecaster follows it within the hour; the level-shift test catches it."""
    caught = deployment.until_retrained(SHIFTED, scale=0.65)
    assert caught is not None, "two nights of a 35 % level shift never led to retraining"
    reasons = {r["code"]: r["text"] for r in caught["decide"]["details"]["reasons"]}
    assert "level_shift" in reasons and f"since {SHIFTED[0]}" in reasons["level_shift"], reasons
    shift = caught["monitor"]["details"]["level_shift"]
    assert shift["faulty_days"][0] == str(SHIFTED[0]) and -0.45 < shift["change"] < -0.25
    assert caught["plan_search"]["details"]["excluded_days"] == shift["faulty_days"]
    assert caught["train"]["details"]["excluded_days"] == shift["faulty_days"]
    summary = format_training(list(caught.values()))
    assert f"left out of training: {len(shift['faulty_days'])} faulty day(s)" in summary


def test_a_stuck_counter_is_flagged_and_the_retrained_version_is_judged_on_the_same_rows(deployment):
    before = _versions(deployment.scenario)
    decided = deployment.until_retrained(FAULT, stuck_at=3000)  # stuck from the first day on: passes every gate
    assert decided is not None, "four nights of a stuck counter never led to retraining"
    reasons = {r["code"] for r in decided["decide"]["details"]["reasons"]}
    assert reasons & {"drift", "live_error", "level_shift"}, reasons
    drifted = decided["monitor"]["details"]["drifted"]
    assert "drift" not in reasons or any(f.startswith("volume_") for f in drifted), drifted
    trained = decided["train"]
    assert trained["status"] == "success" and str(trained["counts"]["version"]) not in before
    assert "champion" in trained["details"]["metrics"]  # new and champion scored on the same test rows
    report = open_lake().get_bytes(decided["governance"]["outputs"][1]["uri"].split("/lake/", 1)[1]).decode()
    assert "Monitoring and the retraining decision" in report and "drift per feature" in report
