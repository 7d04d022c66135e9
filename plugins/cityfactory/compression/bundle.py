"""Signed edge bundles: the chosen ONNX model, a manifest, and an Ed25519 signature over it.

``bundles/<scenario>/<version>/`` holds ``model.onnx``, ``manifest.json`` (scenario, model name
and version, MLflow run, sha256 of every file, input/output names and shapes, feature order and
scaling, created-at, signing key id) and ``manifest.sig``. A node trusts a bundle only if the
signature verifies with its public key and every file matches its checksum.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature

from cityfactory.security.signing import load_public_key, public_key_pem, signing_key
from cityfactory.storage.lake import Lake, StoredObject, join_key, sha256_bytes

MANIFEST, SIGNATURE, MODEL = "manifest.json", "manifest.sig", "model.onnx"


class BundleError(RuntimeError):
    """A bundle that must not be loaded; the message names what failed."""


def key_id(public_pem: bytes) -> str:
    return hashlib.sha256(public_pem).hexdigest()[:16]


def build(files: dict[str, bytes], facts: dict) -> dict[str, bytes]:
    """Manifest and signature for ``files`` (name -> bytes); returns every file of the bundle."""
    key = signing_key()
    manifest = {
        **facts,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": {name: {"sha256": sha256_bytes(data), "bytes": len(data)} for name, data in sorted(files.items())},
        "signing_key_id": key_id(public_key_pem(key)),
    }
    body = json.dumps(manifest, indent=1, sort_keys=True).encode()
    return {**files, MANIFEST: body, SIGNATURE: key.sign(body)}


def write(lake: Lake, scenario: str, version: str, bundle: dict[str, bytes]) -> list[StoredObject]:
    prefix = bundle_prefix(scenario, version)
    return [lake.put_bytes(join_key(prefix, name), data) for name, data in sorted(bundle.items())]


def bundle_prefix(scenario: str, version: str) -> str:
    return join_key("bundles", scenario, str(version))


def verify(bundle: dict[str, bytes], public_pem: bytes) -> dict:
    """The manifest, if the signature and every checksum hold; else :class:`BundleError`."""
    for required in (MANIFEST, SIGNATURE):
        if required not in bundle:
            raise BundleError(f"{required} is missing")
    try:
        manifest = json.loads(bundle[MANIFEST])
    except ValueError as exc:
        raise BundleError(f"{MANIFEST} is not JSON: {exc}") from None
    try:
        load_public_key(public_pem).verify(bundle[SIGNATURE], bundle[MANIFEST])
    except InvalidSignature:
        expected = key_id(public_pem)
        if manifest.get("signing_key_id") != expected:
            raise BundleError(f"{SIGNATURE}: signed by key {manifest.get('signing_key_id')}, not the trusted key {expected}") from None
        raise BundleError(f"{SIGNATURE}: signature does not verify with the trusted key "
                          f"({MANIFEST} was edited, or signed by another key)") from None
    listed = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    if MODEL not in listed:
        raise BundleError(f"{MANIFEST} does not list {MODEL}: nothing it vouches for would be loaded")
    for name, expected in listed.items():
        if name not in bundle:
            raise BundleError(f"{name} is missing (listed in {MANIFEST})")
        actual = sha256_bytes(bundle[name])
        if actual != expected["sha256"]:
            raise BundleError(f"{name}: sha256 {actual} does not match the manifest's {expected['sha256']}")
    return manifest


def read(lake: Lake, prefix: str) -> dict[str, bytes]:
    """Every file under a bundle prefix, by name."""
    return {key.rsplit("/", 1)[1]: lake.get_bytes(key) for key in lake.list(prefix)}
