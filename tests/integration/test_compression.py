"""Compression and signed bundles, on the model the whole-history run trained."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cityfactory.cli import main as cli
from cityfactory.compression import bundle, gate
from cityfactory.compression.onnx_export import ParityError, check_parity, export
from cityfactory.compression.onnx_export import run as ort_run
from cityfactory.compression.variants import Variant
from cityfactory.config.scenarios import get_scenario
from cityfactory.security.signing import public_key_pem
from cityfactory.storage.gold import read_gold
from cityfactory.storage.lake import open_lake
from cityfactory.tasktypes import load_model_spec
from cityfactory.tasktypes.forecast import data
from cityfactory.tasktypes.forecast.families import load_network
from cityfactory.tasktypes.forecast.fitting import predict
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SPEC = load_model_spec(get_scenario("traffic_flow").model_spec)


def _bundle_prefix(entries) -> str:
    uri = entries["compress"]["outputs"][0]["uri"]
    return uri.split("/lake/", 1)[1].rsplit("/", 1)[0]


def test_dag_writes_a_verified_bundle(history_run):
    _, entries, client = history_run
    compress = entries["compress"]
    assert compress["status"] == "success"
    version = str(entries["train"]["counts"]["version"])
    prefix = _bundle_prefix(entries)
    assert prefix == f"bundles/traffic_flow/{version}"
    manifest = bundle.verify(bundle.read(open_lake(), prefix), public_key_pem())
    assert manifest["model_version"] == version and manifest["scenario"] == "traffic_flow"
    assert manifest["feature_order"] == SPEC.data.feature_names
    assert manifest["inputs"][0]["shape"] == [-1, len(SPEC.data.feature_names)]
    assert set(manifest["files"]) == {"model.onnx"}

    variants = [Variant.from_row(row) for row in compress["details"]["variants"]]
    fp32 = next(v for v in variants if v.name == "onnx_fp32")
    chosen = next(v for v in variants if v.name == compress["details"]["chosen"])
    assert chosen.quality["mae"] <= fp32.quality["mae"] * 1.01
    assert chosen.size_bytes == min(v.size_bytes for v in variants if v.size_bytes and v is not fp32 and v.quality["mae"] <= fp32.quality["mae"] * 1.01)
    assert {v.name for v in variants} >= {"torch_eager_fp32", "onnx_fp32", "int8_dynamic", "int8_dynamic_reduce_range",
                                          "int8_static", "pruned50_int8_dynamic"}

    tags = client.get_model_version(SPEC.registered_model, version).tags
    assert tags["compression_variant"] == chosen.name and tags["bundle_uri"].endswith(prefix)
    metrics = client.get_run(entries["train"]["outputs"][0]["uri"].removeprefix("runs:/")).data.metrics
    for v in variants:
        assert metrics[f"compression_{v.name}_mae"] == pytest.approx(v.quality["mae"])
    artifacts = {a.path for a in client.list_artifacts(manifest["mlflow_run_id"], "compression")}
    assert "compression/variants.json" in artifacts

    # the bundled model itself reproduces its recorded test accuracy
    test = _test_rows(entries)
    path = open_lake().path_of(f"{prefix}/model.onnx")
    predicted = ort_run(path, data.features(test, SPEC.data))
    assert np.mean(np.abs(predicted - test["target_volume"].to_numpy())) == pytest.approx(chosen.quality["mae"], rel=1e-6)


def _test_rows(entries):
    gold = read_gold(open_lake(), "traffic_flow", entries["export_gold"]["outputs"][0]["sha256"])
    return data.split_by_time(gold, SPEC.data, SPEC.split).test


def test_onnx_parity(history_run, tmp_path):
    _, entries, _ = history_run
    model = load_network(SPEC, f"models:/{SPEC.registered_model}/{entries['train']['counts']['version']}")
    features = data.features(_test_rows(entries), SPEC.data)
    path = export(model, features.shape[1], tmp_path / "m.onnx")
    worst = check_parity(ort_run(path, features), predict(model, features), tolerance=0.5)
    assert worst < 0.5
    with pytest.raises(ParityError, match="differs from torch by up to"):
        check_parity(ort_run(path, features) + 1.0, predict(model, features), tolerance=0.5)


def test_gate_fails_with_the_table_when_the_budget_is_impossible(history_run):
    _, entries, _ = history_run
    variants = [Variant.from_row(row) for row in entries["compress"]["details"]["variants"]]
    with pytest.raises(gate.CompressionGateError) as err:
        gate.choose(variants, "mae", max_loss=-0.5)
    assert "no variant keeps test MAE within -50.00% of fp32" in str(err.value)
    assert "int8_dynamic" in str(err.value) and "x smaller" in str(err.value)


@pytest.fixture
def good_bundle(history_run):
    _, entries, _ = history_run
    return bundle.read(open_lake(), _bundle_prefix(entries))


def test_verification_refuses_tampering(good_bundle):
    trusted = public_key_pem()
    flipped = dict(good_bundle)
    model = bytearray(flipped["model.onnx"])
    model[len(model) // 2] ^= 0x01
    flipped["model.onnx"] = bytes(model)
    with pytest.raises(bundle.BundleError, match="model.onnx: sha256 .* does not match"):
        bundle.verify(flipped, trusted)

    edited = dict(good_bundle)
    manifest = json.loads(edited["manifest.json"])
    manifest["model_version"] = "999"
    edited["manifest.json"] = json.dumps(manifest, indent=1, sort_keys=True).encode()
    with pytest.raises(bundle.BundleError, match="signature does not verify with the trusted key"):
        bundle.verify(edited, trusted)

    other = Ed25519PrivateKey.generate()
    resigned = {**good_bundle, "manifest.sig": other.sign(good_bundle["manifest.json"])}
    with pytest.raises(bundle.BundleError, match="signature does not verify"):
        bundle.verify(resigned, trusted)
    other_pem = other.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(bundle.BundleError, match="signed by key .* not the trusted key"):
        bundle.verify(good_bundle, other_pem)

    missing = {k: v for k, v in good_bundle.items() if k != "model.onnx"}
    with pytest.raises(bundle.BundleError, match="model.onnx is missing"):
        bundle.verify(missing, trusted)
    with pytest.raises(bundle.BundleError, match="manifest.sig is missing"):
        bundle.verify({k: v for k, v in good_bundle.items() if k != "manifest.sig"}, trusted)


def test_verify_cli(history_run, tmp_path, capsys):
    _, entries, _ = history_run
    prefix = _bundle_prefix(entries)
    assert cli(["verify-bundle", prefix]) == 0
    assert "OK" in capsys.readouterr().out
    lake = open_lake()
    copy_prefix = f"bundles/tampered/{prefix.rsplit('/', 1)[1]}"
    for name, blob in bundle.read(lake, prefix).items():
        lake.put_bytes(f"{copy_prefix}/{name}", blob[:-1] + bytes([blob[-1] ^ 1]) if name == "model.onnx" else blob)
    assert cli(["verify-bundle", copy_prefix]) == 1
    assert "REFUSED" in capsys.readouterr().err
