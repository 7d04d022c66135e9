"""Each fleet has its own admin token: another fleet's nodes refuse it. A rotation gives every node
of the fleet a new one while the model keeps serving, keeps it where the old one was (the Airflow
connection, or the embedded default's generated key), and is all or none."""

from __future__ import annotations

import urllib.error
import urllib.request

import yaml
from support import free_ports, write_fleet

MODEL = "cityfactory.traffic_flow"


def _status(node, token: str) -> int:
    request = urllib.request.Request(f"{node.url}/admin/status", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_fleets_refuse_each_others_tokens_and_rotate_in_place(history_run, tmp_path, monkeypatch):
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session
    from cityfactory import cli
    from cityfactory.edge.fleet import LocalFleet, edge_token, load_fleet
    from cityfactory.rollout.controller import NodeClient, snapshot
    from cityfactory.storage.lake import open_lake

    _, entries, _ = history_run
    lake = open_lake()
    bundle_uri = lake.uri_for(entries["compress"]["outputs"][0]["uri"].split("/lake/", 1)[1].rsplit("/", 1)[0])
    version = str(entries["train"]["counts"]["version"])
    fleets = write_fleet(tmp_path / "fleets", "alpha", 2)
    write_fleet(fleets, "beta", 2)
    monkeypatch.setenv("CITYFACTORY_FLEETS_DIR", str(fleets))
    with create_session() as session:  # beta's token is kept as an Airflow connection, alpha's is generated
        session.query(Connection).filter(Connection.conn_id == "cityfactory_edge_beta").delete()
        session.add(Connection(conn_id="cityfactory_edge_beta", conn_type="generic", password="beta-" + "b" * 40))
    alpha, beta = load_fleet("alpha").nodes, load_fleet("beta").nodes
    first_alpha, first_beta = edge_token("alpha"), edge_token("beta")
    assert first_beta == "beta-" + "b" * 40 and first_alpha != first_beta

    with (LocalFleet(load_fleet("alpha"), "traffic_flow", MODEL, first_alpha),
          LocalFleet(load_fleet("beta"), "traffic_flow", MODEL, first_beta)):
        for node in alpha:
            NodeClient(node, first_alpha).deploy(bundle_uri)
        assert [_status(n, first_alpha) for n in beta] == [401, 401], "fleet beta refuses alpha's token"
        assert [_status(n, first_beta) for n in alpha] == [401, 401], "and alpha beta's"

        assert cli.main(["rotate-edge-token", "alpha"]) == 0
        second_alpha = edge_token("alpha")
        assert second_alpha != first_alpha
        assert [_status(n, first_alpha) for n in alpha] == [401, 401] and [_status(n, second_alpha) for n in alpha] == [200, 200]
        assert set(snapshot(load_fleet("alpha"), second_alpha).values()) == {version}, "the model kept serving"

        assert cli.main(["rotate-edge-token", "beta"]) == 0
        with create_session() as session:
            kept = session.query(Connection).filter(Connection.conn_id == "cityfactory_edge_beta").one().password
        assert kept == edge_token("beta") != first_beta and [_status(n, kept) for n in beta] == [200, 200]

        # all or none: a node that cannot be reached leaves every node and the stored token as they were
        [dead] = free_ports(1)
        nodes = [n.model_dump(exclude_none=True) for n in alpha] + [{"id": "alpha-dead", "district": "d0",
                                                                      "url": f"http://127.0.0.1:{dead}"}]
        (fleets / "alpha.yaml").write_text(yaml.safe_dump({"nodes": nodes}))
        assert cli.main(["rotate-edge-token", "alpha"]) == 1
        assert edge_token("alpha") == second_alpha and [_status(n, second_alpha) for n in alpha] == [200, 200]


TOKEN_DAG = """
import datetime as dt, json, warnings
from airflow.sdk import dag, task

@dag(dag_id="token_lookup_in_a_task", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
def lookup():
    @task
    def read_tokens():
        from cityfactory.security.keys import airflow_connection_password

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            seen = {"gamma": airflow_connection_password("cityfactory_edge_gamma"),
                    "delta": airflow_connection_password("cityfactory_edge_delta")}
        seen["warnings"] = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
        with open(OUT, "w") as out:
            json.dump(seen, out)

    read_tokens()

lookup()
"""


def test_inside_a_task_a_token_comes_through_the_task_sdk_without_deprecated_lookups(airflow_db, tmp_path, monkeypatch):
    """A fleet without a connection falls back to its generated key quietly (no DeprecationWarning
    from Airflow's models in every task); one with a connection gets its password."""
    import json

    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "token_lookup.py").write_text(f"OUT = {str(tmp_path / 'seen.json')!r}\n" + TOKEN_DAG)
    # dag.test serialises the DAG from the bundle holding it
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([
        {"name": "token-lookup", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
         "kwargs": {"path": str(tmp_path / "dags")}}]))
    monkeypatch.setenv("AIRFLOW_CONN_CITYFACTORY_EDGE_GAMMA", json.dumps({"conn_type": "generic", "password": "gamma-token"}))
    run = DagBag(dag_folder=str(tmp_path / "dags")).get_dag("token_lookup_in_a_task").test()
    assert run.state == DagRunState.SUCCESS
    assert json.loads((tmp_path / "seen.json").read_text()) == {"gamma": "gamma-token", "delta": None, "warnings": []}
