"""A real edge node process serving an image classifier: raw PNG/JPEG bodies and multipart
batches answered with class, probabilities and version; anything that is not an image by its
content refused with 415, over-limit images and batches with 413; the prediction log keeps the
image's sha256 and the answer, never the image; the answer equals the model's on the same pixels."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import subprocess
import sys

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import torch
from cityfactory.compression import bundle, preprocessing
from cityfactory.compression.onnx_export import export
from cityfactory.security.signing import public_key_pem
from cityfactory.storage.lake import open_lake
from cityfactory.tasktypes import load_model_spec
from cityfactory.tasktypes.image_classification import edge
from cityfactory.tasktypes.image_classification.network import ImageNet
from PIL import Image
from support import REPO, free_ports, wait_for_port

TOKEN = "test-token-" + os.urandom(4).hex()
SPEC = load_model_spec("solar_cells")


def _png(seed: int, size: int = 300, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8), "L").save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def node(tmp_path, lake_uri):
    torch.manual_seed(0)
    net = ImageNet("plain_cnn", 1, 2, 32, 8, 3, 0.0).eval()
    model = export(net, (1, SPEC.data.size, SPEC.data.size), tmp_path / "model.onnx")
    facts = {"scenario": "solar_cells", "registered_model": SPEC.registered_model, "model_version": "1",
             "task_type": "image_classification", **edge.contract(SPEC, None)}
    lake = open_lake()
    bundle.write(lake, "solar_cells", "1", bundle.build({bundle.MODEL: model.read_bytes()}, facts))
    [port] = free_ports(1)
    pem = tmp_path / "public.pem"
    pem.write_bytes(public_key_pem())
    with open(tmp_path / "node.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cityfactory.edge", "serve", "--port", str(port), "--node-id", "cam-node",
             "--public-key", str(pem), "--scenario", "solar_cells", "--registered-model", SPEC.registered_model,
             "--bundle-base", lake.uri_for("bundles/solar_cells/"), "--state-dir", str(tmp_path / "state"),
             "--prediction-log", str(tmp_path / "served"), "--max-rows", "8", "--max-pixels", "500000",
             "--max-body-bytes", "4000000", "--bundle", lake.uri_for("bundles/solar_cells/1")],
            env={**os.environ, "CITYFACTORY_EDGE_TOKEN": TOKEN, "PYTHONPATH": str(REPO / "plugins")},
            stdout=log, stderr=subprocess.STDOUT)
    wait_for_port(port)
    yield f"http://127.0.0.1:{port}", ort.InferenceSession(str(model)), tmp_path / "served"
    process.terminate()
    process.wait(timeout=20)


def test_raw_and_multipart_images_are_classified_as_the_model_would(node):
    base, session, served = node
    image = _png(1)
    captured = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).isoformat()  # inside the node's window
    one = httpx.post(f"{base}/predict", params={"series": "el-cam-1", "predicted_for": captured},
                     content=image, headers={"content-type": "image/png"})
    assert one.status_code == 200, one.text
    body = one.json()
    pixels = preprocessing.as_inputs(preprocessing.pixels(image, "L", SPEC.data.size))[None]
    expected = session.run(None, {"features": pixels})[0]
    assert body["model_version"] == "1" and np.allclose(body["predictions"], expected, atol=1e-5)
    assert body["classes"] == [SPEC.data.classes[int(expected.argmax())]]

    batch = [("image", (f"{i}.jpg", _png(i, fmt="JPEG"), "image/jpeg")) for i in range(3)]
    many = httpx.post(f"{base}/predict", files=batch, data={"purpose": "serve"})
    assert many.status_code == 200 and len(many.json()["predictions"]) == 3

    httpx.post(f"{base}/admin/predictions/rotate", headers={"Authorization": f"Bearer {TOKEN}"})
    lines = [json.loads(line) for p in sorted(served.rglob("seg-*.jsonl")) for line in p.read_text().splitlines()]
    assert len(lines) == 4
    first = lines[0]
    assert first["input_sha256"] == hashlib.sha256(image).hexdigest() and first["series"] == "el-cam-1"
    assert first["label"] in SPEC.data.classes and 0.5 <= first["confidence"] <= 1
    logged = b"".join(p.read_bytes() for p in served.rglob("seg-*.jsonl"))
    assert image[8:64] not in logged  # the answer, never the image


def test_hostile_keys_with_images_get_422_naming_them(node):
    base, _, _ = node
    image = _png(4)
    far = httpx.post(f"{base}/predict", params={"predicted_for": "9999-12-31T23:00:00+00:00"}, content=image,
                     headers={"content-type": "image/png"})
    assert far.status_code == 422 and "keys[0].predicted_for" in far.json()["detail"]
    deep = httpx.post(f"{base}/predict", files=[("image", ("a.png", image, "image/png"))],
                      data={"keys": "[" * 100_000 + "]" * 100_000})
    assert deep.status_code == 422 and "nested too deeply" in deep.json()["detail"]
    assert httpx.get(f"{base}/healthz").json()["status"] == "ok"


@pytest.mark.parametrize(("headers", "content", "status", "words"), [
    ({"content-type": "image/png"}, b"GIF89a not what it says", 415, "declared image/png but the content is not an image"),
    ({"content-type": "image/png"}, _png(2, fmt="JPEG"), 415, "content is JPEG"),
    ({"content-type": "application/json"}, b'{"rows": [[1, 2]]}', 415, "this model takes image/png"),
    ({"content-type": "image/png"}, _png(3, size=800), 413, "800x800 pixels, more than 500000"),
    ({"content-type": "image/png"}, b"\x89PNG\r\n\x1a\n" + b"\0" * 100, 415, "cannot be decoded"),
])
def test_what_is_not_an_image_we_take_is_refused_with_a_reason(node, headers, content, status, words):
    base, _, _ = node
    answer = httpx.post(f"{base}/predict", content=content, headers=headers)
    assert answer.status_code == status and words in answer.json()["detail"], answer.text
    assert httpx.get(f"{base}/healthz").status_code == 200  # the node goes on serving


def test_batches_and_bodies_over_the_limits_are_413(node):
    base, _, _ = node
    nine = [("image", (f"{i}.png", _png(i, size=64), "image/png")) for i in range(9)]
    answer = httpx.post(f"{base}/predict", files=nine)
    assert answer.status_code == 413 and "at most 8" in answer.json()["detail"]
    big = httpx.post(f"{base}/predict", content=b"\x89PNG\r\n\x1a\n" + os.urandom(4_100_000),
                     headers={"content-type": "image/png"})
    assert big.status_code == 413
    operation = httpx.get(f"{base}/openapi.json").json()["paths"]["/predict"]["post"]
    assert "multipart/form-data" in operation["requestBody"]["content"] and "415" in operation["responses"]
