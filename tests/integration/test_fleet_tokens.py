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
