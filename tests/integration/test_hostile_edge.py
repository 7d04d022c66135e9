"""A real node process attacked the way a client on the network would: claims far outside any
plausible time, rows of nested JSON, a flood of requests, a header that differs by one space, a
captured rollback order replayed, an anonymous client trying to reach the monitor. Each attack
must be refused with a status that names what is wrong, counted, and leave the node serving."""

from __future__ import annotations

import datetime as dt
import os

import httpx
import pytest
from cityfactory.edge.orders import sign_rollback
from cityfactory.security.signing import public_key_pem
from support import free_ports, wait_for_port
from test_edge_node import TOKEN, _admin, _rows, _serve, bundles  # noqa: F401 - the module's bundles fixture

CONSUMER = "consumer-" + os.urandom(6).hex()


@pytest.fixture
def logged_node(tmp_path, bundles, monkeypatch):  # noqa: F811
    """A node with a prediction log, a consumer token, a low rate limit and a small log cap."""
    first, _, manifest = bundles
    monkeypatch.setenv("CITYFACTORY_CONSUMER_TOKEN", CONSUMER)
    [port] = free_ports(1)
    process = _serve(tmp_path, port, public_key_pem(), "--prediction-log", str(tmp_path / "served"),
                     "--rate", "20", "--burst", "20", "--log-max-bytes", "40000", "--key-past-hours", "48",
                     "--key-ahead-hours", "24")
    wait_for_port(port)
    base = f"http://127.0.0.1:{port}"
    assert _admin(base, "/admin/deploy", {"uri": first}).status_code == 200
    yield base, manifest, tmp_path
    process.terminate()
    process.wait(timeout=20)


def _keyed(manifest, when: str) -> dict:
    return {"rows": _rows(manifest, 1), "keys": [{"series": "s1", "predicted_for": when}]}


def _logged_lines(tmp_path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in (tmp_path / "served").rglob("seg-*.jsonl"))


def _consumer(token=CONSUMER) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_keys_outside_the_window_are_refused_naming_the_field(logged_node):
    base, manifest, tmp_path = logged_node
    for claim in ("9999-12-31T23:00:00+00:00", "1970-01-01T00:00:00+00:00", "2026-12-05T10:00:00", "not a time"):
        refused = httpx.post(f"{base}/predict", json=_keyed(manifest, claim), headers=_consumer())
        assert refused.status_code == 422 and "keys[0].predicted_for" in refused.json()["detail"], claim
    hour = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    assert httpx.post(f"{base}/predict", json=_keyed(manifest, hour.isoformat()), headers=_consumer()).status_code == 200
    assert _logged_lines(tmp_path) == 1  # only the plausible row reached the log


def test_an_anonymous_client_is_answered_but_never_reaches_the_monitor(logged_node):
    base, manifest, tmp_path = logged_node
    hour = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).isoformat()
    anonymous = httpx.post(f"{base}/predict", json=_keyed(manifest, hour))
    assert anonymous.status_code == 200 and len(anonymous.json()["predictions"]) == 1
    wrong = httpx.post(f"{base}/predict", json=_keyed(manifest, hour), headers=_consumer("guess"))
    assert wrong.status_code == 401 and "consumer token" in wrong.json()["detail"]
    loose = httpx.post(f"{base}/predict", json=_keyed(manifest, hour), headers={"Authorization": f"Bearer  {CONSUMER}"})
    assert loose.status_code == 401  # two spaces: malformed, never read leniently
    assert _logged_lines(tmp_path) == 0
    assert httpx.post(f"{base}/predict", json=_keyed(manifest, hour), headers=_consumer()).status_code == 200
    assert _logged_lines(tmp_path) == 1


@pytest.mark.parametrize("header", [f"Bearer  {TOKEN}", f"Bearer\t{TOKEN}", f"Basic {TOKEN}", f"Bearer {TOKEN}!",
                                    f"Bearer {TOKEN},Bearer {TOKEN}", TOKEN])
def test_the_admin_token_is_read_strictly(logged_node, header):
    base, _, _ = logged_node
    response = httpx.get(f"{base}/admin/status", headers={"Authorization": header})
    assert response.status_code == 401


def test_nested_and_deep_json_get_422_naming_the_field(logged_node):
    base, manifest, _ = logged_node
    width = len(manifest["feature_order"])
    nested = httpx.post(f"{base}/predict", json={"rows": [[[1.0, 2.0]] + [1.0] * (width - 1)]})
    assert nested.status_code == 422 and f"rows[0].{manifest['feature_order'][0]}" in nested.json()["detail"]
    as_object = httpx.post(f"{base}/predict", json={"rows": [[{"a": 1}] + [1.0] * (width - 1)]})
    assert as_object.status_code == 422 and "rows[0]." in as_object.json()["detail"]
    deep = b'{"rows": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    response = httpx.post(f"{base}/predict", content=deep, headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and "nested too deeply" in response.json()["detail"]
    keys = httpx.post(f"{base}/predict", json={"rows": _rows(manifest, 1), "keys": [{"series": {"a": [1]}}]})
    assert keys.status_code == 422 and "keys[0].series" in keys.json()["detail"]
    assert httpx.get(f"{base}/healthz").json()["status"] == "ok"


def test_a_flood_from_one_client_gets_429_and_others_are_served(logged_node):
    base, manifest, _ = logged_node
    body = {"rows": _rows(manifest, 1)}
    with httpx.Client() as flood:
        statuses = [flood.post(f"{base}/predict", json=body) for _ in range(60)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited and int(limited[0].headers["retry-after"]) >= 1
    other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))  # another client address
    assert other.post(f"{base}/predict", json=body).status_code == 200
    with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}) as controller:  # a rollout's bake is not limited
        assert all(controller.post(f"{base}/predict", json={**body, "purpose": "bake"}).status_code == 200 for _ in range(40))
    metrics = httpx.get(f"{base}/metrics").text
    assert f'status="429"}} {len(limited)}' in metrics


def test_a_full_log_drops_rows_counted_and_said_once(logged_node):
    base, manifest, tmp_path = logged_node
    hour = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    body = {"rows": _rows(manifest, 50), "keys": [{"series": "s1", "predicted_for": hour}] * 50}
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3")) as client:
        for _ in range(15):  # ~ 300 bytes a row: past the 40 kB cap
            assert client.post(f"{base}/predict", json=body, headers=_consumer()).status_code == 200
    held = sum(p.stat().st_size for p in (tmp_path / "served").rglob("seg-*.jsonl"))
    assert held <= 40000
    metrics = httpx.get(f"{base}/metrics").text
    dropped = next(int(line.split()[-1]) for line in metrics.splitlines() if line.startswith("edge_log_dropped_rows_total"))
    assert dropped >= 50 and (tmp_path / "node.log").read_text().count("prediction log full") == 1


def test_a_rollback_order_is_followed_once_even_across_a_restart(tmp_path, bundles):  # noqa: F811
    first, second, manifest = bundles
    old = manifest["model_version"]
    [port] = free_ports(1)
    base = f"http://127.0.0.1:{port}"
    process = _serve(tmp_path, port, public_key_pem())
    wait_for_port(port)
    assert _admin(base, "/admin/deploy", {"uri": first}).status_code == 200
    assert _admin(base, "/admin/deploy", {"uri": second}).status_code == 200
    order = {"order": sign_rollback("n1", "traffic_flow", old)}
    assert _admin(base, "/admin/rollback", order).json()["model_version"] == old
    process.terminate()
    process.wait(timeout=20)
    process = _serve(tmp_path, port, public_key_pem())  # the same state folder
    try:
        wait_for_port(port)
        assert _admin(base, "/admin/deploy", {"uri": second}).json()["model_version"] == "2000"
        replayed = _admin(base, "/admin/rollback", order)
        assert replayed.status_code == 403 and "already followed" in replayed.text
        assert httpx.get(f"{base}/healthz").json()["model_version"] == "2000"
    finally:
        process.terminate()
        process.wait(timeout=20)
