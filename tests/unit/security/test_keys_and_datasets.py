"""Keys come from the environment or are generated once; datasets are checksum-pinned."""

from __future__ import annotations

import base64
import functools
import http.server
import os
import stat
import threading

import pytest
from cityfactory.config.scenarios import DatasetFile
from cityfactory.ingestion.datasets import DatasetError, dataset_file
from cityfactory.security.keys import KeyConfigError, get_secret
from cityfactory.storage.lake import sha256_file
from support import METRO_CSV


def test_generated_key_is_private_and_stable(tmp_path):
    first = get_secret("unit-test", keys_dir=tmp_path)
    assert len(first) == 32
    assert get_secret("unit-test", keys_dir=tmp_path) == first
    assert stat.S_IMODE(os.stat(tmp_path / "unit-test.key").st_mode) == 0o600


def test_environment_key_wins(tmp_path, monkeypatch):
    key = os.urandom(32)
    monkeypatch.setenv("CITYFACTORY_KEY_UNIT_TEST", base64.b64encode(key).decode())
    assert get_secret("unit-test", keys_dir=tmp_path) == key
    assert not (tmp_path / "unit-test.key").exists()


def test_bad_environment_key_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("CITYFACTORY_KEY_UNIT_TEST", base64.b64encode(b"short").decode())
    with pytest.raises(KeyConfigError, match="CITYFACTORY_KEY_UNIT_TEST: expected 32 bytes, got 5"):
        get_secret("unit-test", keys_dir=tmp_path)


def test_dataset_checksum_is_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("CITYFACTORY_DATA_DIR", str(METRO_CSV.parents[1]))
    good = DatasetFile(name=METRO_CSV.name, sha256=sha256_file(METRO_CSV))
    assert dataset_file(METRO_CSV.parent.name, good) == METRO_CSV
    wrong = DatasetFile(name=METRO_CSV.name, sha256="0" * 64)
    with pytest.raises(DatasetError, match=f"{METRO_CSV}: sha256 is {good.sha256}, expected 0000"):
        dataset_file(METRO_CSV.parent.name, wrong)


@pytest.fixture
def http_origin(tmp_path):
    """A real HTTP server on loopback standing in for the dataset's public origin."""
    (tmp_path / "origin").mkdir()
    (tmp_path / "origin" / METRO_CSV.name).write_bytes(METRO_CSV.read_bytes())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "origin"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_when_missing(tmp_path, monkeypatch, http_origin):
    monkeypatch.setenv("CITYFACTORY_DATA_DIR", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("CITYFACTORY_HOME", str(tmp_path / "home"))
    spec = DatasetFile(name=METRO_CSV.name, sha256=sha256_file(METRO_CSV), url=f"{http_origin}/{METRO_CSV.name}")
    path = dataset_file("metro", spec)
    assert path.is_relative_to(tmp_path / "home") and sha256_file(path) == spec.sha256
    tampered = DatasetFile(name="other.csv", sha256="1" * 64, url=f"{http_origin}/{METRO_CSV.name}")
    with pytest.raises(DatasetError, match="expected 1111"):
        dataset_file("metro", tampered)
    assert not (tmp_path / "home" / "cache" / "datasets" / "metro" / "other.csv").exists()
