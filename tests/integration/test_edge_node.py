"""A real edge node process on loopback: deploy, predict, metrics, auth, refusal, hot swap."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest
from cityfactory.compression import bundle
from cityfactory.edge.orders import sign_rollback
from cityfactory.security.signing import public_key_pem
from cityfactory.storage.lake import open_lake
from support import REPO, free_ports, wait_for_port

TOKEN = "test-token-" + os.urandom(4).hex()


@pytest.fixture(scope="module")
def bundles(history_run, tmp_path_factory):
    """The run's signed bundle, and a second version of it signed the same way."""
    _, entries, _ = history_run
    lake = open_lake()
    prefix = entries["compress"]["outputs"][0]["uri"].split("/lake/", 1)[1].rsplit("/", 1)[0]
    files = bundle.read(lake, prefix)
    manifest = json.loads(files["manifest.json"])
    facts = {k: v for k, v in manifest.items() if k not in ("files", "created_at", "signing_key_id")}
    second = bundle.build({"model.onnx": files["model.onnx"]}, {**facts, "model_version": "2000"})
    bundle.write(lake, "traffic_flow", "2000", second)
    return lake.uri_for(prefix), lake.uri_for("bundles/traffic_flow/2000"), manifest


def _serve(tmp_path, port, public: bytes, *extra):
    pem = tmp_path / "public.pem"
    pem.write_bytes(public)
    with open(tmp_path / "node.log", "ab") as log:  # the child keeps its own handle
        return subprocess.Popen(
            [sys.executable, "-m", "cityfactory.edge", "serve", "--port", str(port), "--node-id", "n1", "--public-key", str(pem),
             "--scenario", "traffic_flow", "--registered-model", "cityfactory.traffic_flow",
             "--bundle-base", open_lake().uri_for("bundles/traffic_flow/"), "--state-dir", str(tmp_path / "state"),
             "--rate", "100000", "--burst", "100000", *extra],  # load tests come from one address: no limit unless asked
            env={**os.environ, "CITYFACTORY_EDGE_TOKEN": TOKEN, "PYTHONPATH": str(REPO / "plugins")},
            stdout=log, stderr=subprocess.STDOUT,
        )


@pytest.fixture
def node(tmp_path, bundles):
    [port] = free_ports(1)
    process = _serve(tmp_path, port, public_key_pem())
    wait_for_port(port)
    yield f"http://127.0.0.1:{port}", tmp_path / "node.log"
    process.terminate()
    process.wait(timeout=20)


def _admin(base, path, body=None, token=TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{base}{path}", json=body, headers=headers, timeout=30)


def _rows(manifest, n=3):
    return [[float(i % 7) * 100 for i in range(len(manifest["feature_order"]))] for _ in range(n)]


def test_deploy_predict_metrics(node, bundles):
    base, _ = node
    first, _, manifest = bundles
    assert httpx.get(f"{base}/healthz").status_code == 503
    assert "no model loaded" in httpx.get(f"{base}/openapi.json").json()["paths"]["/predict"]["post"]["summary"]
    deployed = _admin(base, "/admin/deploy", {"uri": first})
    # the OpenAPI schema names every feature of the model now loaded
    operation = httpx.get(f"{base}/openapi.json").json()["paths"]["/predict"]["post"]
    rows = operation["requestBody"]["content"]["application/json"]["schema"]["properties"]["rows"]
    assert rows["items"]["oneOf"][0]["required"] == manifest["feature_order"]
    assert operation["summary"] == f"Predict with model version {manifest['model_version']}"
    assert deployed.status_code == 200 and deployed.json()["model_version"] == manifest["model_version"]
    answer = httpx.post(f"{base}/predict", json={"rows": _rows(manifest)}).json()
    assert answer["model_version"] == manifest["model_version"] and len(answer["predictions"]) == 3
    named = [dict(zip(manifest["feature_order"], row)) for row in _rows(manifest, 1)]
    assert httpx.post(f"{base}/predict", json={"rows": named}).json()["predictions"] == answer["predictions"][:1]
    text = httpx.get(f"{base}/metrics").text
    assert 'edge_requests_total{node="n1",status="200"} 2' in text
    assert f'edge_model_info{{node="n1",version="{manifest["model_version"]}"}} 1' in text
    assert "edge_latency_seconds_bucket" in text


def test_bad_input_names_the_field(node, bundles):
    base, _ = node
    first, _, manifest = bundles
    _admin(base, "/admin/deploy", {"uri": first})
    row = dict(zip(manifest["feature_order"], _rows(manifest, 1)[0]))
    del row["volume_lag_24h"]
    answer = httpx.post(f"{base}/predict", json={"rows": [row]})
    assert answer.status_code == 422 and "rows[0].volume_lag_24h: missing" in answer.text
    width = len(manifest["feature_order"])
    answer = httpx.post(f"{base}/predict", json={"rows": [[1.0, 2.0]]})
    assert answer.status_code == 422 and f"expected {width} values, got 2" in answer.text
    answer = httpx.post(f"{base}/predict", json={"rows": [["x"] * width]})
    assert answer.status_code == 422 and "rows[0].volume_lag_1h: expected a finite number" in answer.text


def test_admin_needs_the_token(node, bundles):
    base, log = node
    first, _, _ = bundles
    assert _admin(base, "/admin/deploy", {"uri": first}, token=None).status_code == 401
    assert _admin(base, "/admin/deploy", {"uri": first}, token="wrong").status_code == 401
    assert httpx.get(f"{base}/admin/status", headers={"Authorization": "Bearer nope"}).status_code == 401
    time.sleep(0.2)
    assert log.read_text().count("refused admin call") == 3


def test_tampered_bundle_is_refused_and_the_old_model_keeps_serving(node, bundles):
    base, _ = node
    first, _, manifest = bundles
    _admin(base, "/admin/deploy", {"uri": first})
    lake = open_lake()
    files = bundle.read(lake, first.split("/lake/", 1)[1])
    model = bytearray(files["model.onnx"])
    model[100] ^= 0xFF
    for name, blob in {**files, "model.onnx": bytes(model)}.items():
        lake.put_bytes(f"bundles/traffic_flow/tampered-1/{name}", blob)
    refused = _admin(base, "/admin/deploy", {"uri": lake.uri_for("bundles/traffic_flow/tampered-1")})
    assert refused.status_code == 422 and "model.onnx: sha256" in refused.text
    answer = httpx.post(f"{base}/predict", json={"rows": _rows(manifest)})
    assert answer.status_code == 200 and answer.json()["model_version"] == manifest["model_version"]


def test_hot_swaps_under_concurrent_load_drop_nothing(node, bundles):
    base, _ = node
    first, second, manifest = bundles
    _admin(base, "/admin/deploy", {"uri": first})
    stop, failures, seen, count = threading.Event(), [], set(), [0]
    payload = {"rows": _rows(manifest, 1)}

    def client():
        with httpx.Client(timeout=10) as session:
            while not stop.is_set():
                try:
                    response = session.post(f"{base}/predict", json=payload)
                    if response.status_code != 200:
                        failures.append(response.status_code)
                    else:
                        seen.add(response.json()["model_version"])
                        count[0] += 1
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(32)]
    for t in threads:
        t.start()
    assert _admin(base, "/admin/deploy", {"uri": second}).status_code == 200
    time.sleep(0.3)
    back = _admin(base, "/admin/rollback", {"order": sign_rollback("n1", "traffic_flow", manifest["model_version"])})
    assert back.json()["model_version"] == manifest["model_version"]
    time.sleep(0.3)
    assert _admin(base, "/admin/deploy", {"uri": second}).status_code == 200
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join()
    assert failures == [] and count[0] > 100
    assert seen == {manifest["model_version"], "2000"}


def _slim_image(root):
    """What edge.Dockerfile puts in the image: a venv with requirements-edge.txt only, and the
    library files its COPY lines name, at the same places under ``root``."""
    import shlex
    import shutil

    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    subprocess.run([str(root / "venv" / "bin" / "pip"), "install", "-q", "-r", str(REPO / "requirements-edge.txt")],
                   check=True, capture_output=True)
    for line in (REPO / "edge.Dockerfile").read_text().splitlines():
        words = shlex.split(line)
        if words[:1] != ["COPY"] or not words[1].startswith("plugins/"):
            continue
        *sources, target = words[1:]
        destination = root / target.removeprefix("/")
        for source in sources:
            path = REPO / source
            if path.is_dir():
                shutil.copytree(path, destination, dirs_exist_ok=True)
            else:
                destination.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, destination)
    return root / "venv" / "bin" / "python", root / "opt" / "edge"


def test_the_slim_edge_image_serves_a_signed_bundle(bundles, tmp_path):
    python, library = _slim_image(tmp_path / "image")
    pem = tmp_path / "public.pem"
    pem.write_bytes(public_key_pem())
    [port] = free_ports(1)
    with open(tmp_path / "slim.log", "ab") as log:
        process = subprocess.Popen(
            [str(python), "-m", "cityfactory.edge", "serve", "--port", str(port), "--node-id", "slim", "--public-key", str(pem),
             "--scenario", "traffic_flow", "--registered-model", "cityfactory.traffic_flow",
             "--bundle-base", open_lake().uri_for("bundles/traffic_flow/"), "--state-dir", str(tmp_path / "state")],
            env={"PATH": os.environ["PATH"], "CITYFACTORY_EDGE_TOKEN": TOKEN, "PYTHONPATH": str(library)},
            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port)
        base = f"http://127.0.0.1:{port}"
        first, _, manifest = bundles
        assert _admin(base, "/admin/deploy", {"uri": first}).status_code == 200
        answer = httpx.post(f"{base}/predict", json={"rows": _rows(manifest)}, timeout=10)
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 3
    finally:
        process.terminate()
        process.wait(timeout=20)
        print((tmp_path / "slim.log").read_text()[-2000:])
    libraries = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                               check=True).stdout.lower()
    for heavy in ("pyarrow", "pandas", "apache-airflow", "mlflow", "torch", "duckdb", "pyyaml"):
        assert f"\n{heavy}==" not in "\n" + libraries


# --- the node under attack (issue: downgrades, foreign bundles, hostile requests, bad keys) ---

def test_downgrades_need_a_signed_rollback_order_and_rollback_is_explicit(node, bundles):
    base, _ = node
    first, second, manifest = bundles
    old = manifest["model_version"]
    assert _admin(base, "/admin/deploy", {"uri": first}).status_code == 200
    assert _admin(base, "/admin/deploy", {"uri": second}).json()["model_version"] == "2000"
    again = _admin(base, "/admin/deploy", {"uri": second})  # a retried deploy: nothing changes
    assert again.status_code == 200 and again.json()["previous_version"] == old
    refused = _admin(base, "/admin/deploy", {"uri": first})
    assert refused.status_code == 409 and "lower than version 2000" in refused.text
    forged = sign_rollback("n1", "traffic_flow", old) | {"signature": "00" * 64}
    assert _admin(base, "/admin/rollback", {"order": forged}).status_code == 403
    assert _admin(base, "/admin/rollback", {}).status_code == 403
    other_node = sign_rollback("n2", "traffic_flow", old)
    assert _admin(base, "/admin/rollback", {"order": other_node}).status_code == 403
    order = {"order": sign_rollback("n1", "traffic_flow", old)}
    assert _admin(base, "/admin/rollback", order).json()["model_version"] == old
    fresh = {"order": sign_rollback("n1", "traffic_flow", old)}
    assert _admin(base, "/admin/rollback", fresh).json()["model_version"] == old  # not a toggle
    status = httpx.get(f"{base}/admin/status", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert status["highest_version"] == 2000 and status["model_version"] == old
    # the attack: roll forward again, then replay the captured order within its validity
    assert _admin(base, "/admin/deploy", {"uri": second}).json()["model_version"] == "2000"
    replayed = _admin(base, "/admin/rollback", order)
    assert replayed.status_code == 403 and "already followed" in replayed.text
    assert httpx.get(f"{base}/healthz").json()["model_version"] == "2000"


def test_a_validly_signed_bundle_of_another_scenario_or_place_is_refused(node, bundles, tmp_path):
    base, _ = node
    first, _, manifest = bundles
    lake = open_lake()
    files = bundle.read(lake, first.split("/lake/", 1)[1])
    facts = {k: v for k, v in manifest.items() if k not in ("files", "created_at", "signing_key_id")}
    foreign = bundle.build({"model.onnx": files["model.onnx"]}, {**facts, "scenario": "air_quality", "model_version": "3000"})
    bundle.write(lake, "traffic_flow", "3000", foreign)  # even inside the right folder
    refused = _admin(base, "/admin/deploy", {"uri": lake.uri_for("bundles/traffic_flow/3000")})
    assert refused.status_code == 422 and "this node serves traffic_flow" in refused.text
    outside = tmp_path / "elsewhere" / "bundles" / "traffic_flow" / "1"
    refused = _admin(base, "/admin/deploy", {"uri": outside.as_uri()})
    assert refused.status_code == 422 and "outside this node's bundle folder" in refused.text
    assert not (tmp_path / "elsewhere").exists()
    sneaky = _admin(base, "/admin/deploy", {"uri": lake.uri_for("bundles/traffic_flow/../air_quality/1")})
    assert sneaky.status_code == 422 and "outside" in sneaky.text
    assert _admin(base, "/admin/deploy", {"uri": "s3://someone-elses-bucket/bundles/traffic_flow/1"}).status_code == 422


def test_hostile_requests_get_a_counted_4xx_and_the_node_stays_responsive(node, bundles):
    base, _ = node
    first, _, manifest = bundles
    _admin(base, "/admin/deploy", {"uri": first})
    n = len(manifest["feature_order"])
    huge = b'{"rows": [' + b",".join([b"[" + b",".join([b"1.5"] * n) + b"]"] * 60_000) + b"]}"  # ~10 MB
    deep = b'{"rows": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    with httpx.Client(timeout=30) as client:
        started = time.perf_counter()
        assert client.post(f"{base}/predict", content=huge, headers={"Content-Type": "application/json"}).status_code == 413
        assert client.get(f"{base}/healthz").status_code == 200 and time.perf_counter() - started < 3
        assert client.post(f"{base}/predict", content=deep).status_code == 422
        overflow = client.post(f"{base}/predict", json={"rows": [[1e39] * n]})
        assert overflow.status_code == 422 and "finite number (float32)" in overflow.text
        text = client.post(f"{base}/predict", json={"rows": [["1"] + [1.0] * (n - 1)]})
        assert text.status_code == 422 and "got '1'" in text.text
        assert client.post(f"{base}/predict", json={"rows": [[True] + [1.0] * (n - 1)]}).status_code == 422
        too_many = client.post(f"{base}/predict", json={"rows": [[1.0] * n] * 5000})
        assert too_many.status_code == 413
        metrics = client.get(f"{base}/metrics").text
    assert 'status="413"} 2' in metrics and 'status="422"} 4' in metrics


def test_a_garbage_public_key_stops_the_node_at_start(tmp_path, bundles):
    [port] = free_ports(1)
    process = _serve(tmp_path, port, b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    assert process.wait(timeout=60) == 2
    assert "not a usable Ed25519 public key" in (tmp_path / "node.log").read_text()


def test_a_manifest_that_does_not_list_the_model_is_refused(bundles):
    first, _, _ = bundles
    files = bundle.read(open_lake(), first.split("/lake/", 1)[1])
    manifest = json.loads(files["manifest.json"])
    facts = {k: v for k, v in manifest.items() if k not in ("files", "created_at", "signing_key_id")}
    unlisted = bundle.build({}, facts) | {"model.onnx": files["model.onnx"]}
    with pytest.raises(bundle.BundleError, match="does not list model.onnx"):
        bundle.verify(unlisted, public_key_pem())


def test_metric_labels_are_escaped():
    from cityfactory.edge.metrics import NodeMetrics

    text = NodeMetrics().render('n"1\\x', '7"} evil 1\nfake_metric{a="b')
    assert 'node="n\\"1\\\\x"' in text and "\nfake_metric" not in text


def test_served_rows_are_logged_kept_through_a_kill_and_collected_once(tmp_path, bundles):
    """Every answered consumer row reaches the lake after the node is killed without warning;
    the restarted node serves its bundle again; collecting twice stores nothing twice."""
    from cityfactory.edge.fleet import Fleet, Node
    from cityfactory.monitoring.collect import collect
    from cityfactory.storage.parquet import read_partitions

    first, _, manifest = bundles
    [port] = free_ports(1)
    base, log_dir = f"http://127.0.0.1:{port}", tmp_path / "served"
    process = _serve(tmp_path, port, public_key_pem(), "--prediction-log", str(log_dir))
    wait_for_port(port)
    assert _admin(base, "/admin/deploy", {"uri": first}).status_code == 200
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    hours = [now - dt.timedelta(hours=h) for h in range(24)]  # the last day's hours: inside the node's window
    answered = {}

    def consumer(hour):
        body = {"rows": _rows(manifest, 1), "keys": [{"series": None, "predicted_for": hour.isoformat()}]}
        response = httpx.post(f"{base}/predict", json=body, timeout=30)
        assert response.status_code == 200
        answered[hour] = response.json()["predictions"][0]

    threads = [threading.Thread(target=consumer, args=(h,)) for h in hours]  # concurrent: one group commit or a few
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert httpx.post(f"{base}/predict", json={"rows": _rows(manifest, 5), "purpose": "bake"}).status_code == 200
    bad = httpx.post(f"{base}/predict", json={"rows": _rows(manifest, 2), "keys": [{"series": None}]})
    assert bad.status_code == 422 and "keys" in bad.json()["detail"]
    assert httpx.post(f"{base}/admin/predictions/rotate").status_code == 401  # the log is admin-only
    process.kill()  # no shutdown, no flush on exit
    process.wait(timeout=20)

    process = _serve(tmp_path, port, public_key_pem(), "--prediction-log", str(log_dir))
    try:
        wait_for_port(port)
        assert httpx.get(f"{base}/healthz").json()["model_version"] == manifest["model_version"]  # serving again
        fleet = Fleet(nodes=[Node(id="n1", district="d", url=base)])
        lake = open_lake()
        collected = collect(lake, "traffic_flow", fleet, TOKEN, "UTC")
        assert collected.rows == 24 and collected.days == {h.date().isoformat() for h in hours} and not collected.unreachable
        again = collect(lake, "traffic_flow", fleet, TOKEN, "UTC")
        assert again.rows == 0 and again.segments == 0
    finally:
        process.terminate()
        process.wait(timeout=20)
    frame = read_partitions(lake, "predictions", "traffic_flow", [now.date()]).to_pandas()  # by the day served
    assert len(frame) == 24 and set(frame["purpose"]) == {"serve"}  # the bake request was not logged
    logged = dict(zip(frame["predicted_for"].dt.to_pydatetime(), frame["prediction"]))
    assert logged == pytest.approx(answered) and set(frame["model_version"]) == {manifest["model_version"]}
    assert frame["input_sha256"].str.len().eq(16).all()
