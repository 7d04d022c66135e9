"""Ed25519 signing keys: one for edge bundles, one of its own for the audit log's checkpoints.

A private key comes from ``CITYFACTORY_SIGNING_KEY`` / ``CITYFACTORY_AUDIT_KEY`` (PEM) or the
Airflow Variable ``cityfactory_signing_key`` / ``cityfactory_audit_key``; otherwise the embedded
default generates a key pair once into the git-ignored keys folder. Edge nodes get only the
bundle public key (``signing-public.pem``), auditors only the audit one (``audit-public.pem``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from cityfactory.security.keys import _from_airflow, note_generated

log = logging.getLogger(__name__)


def _keys_dir() -> Path:
    from cityfactory.settings import get_settings

    return get_settings().keys_dir


def _private_key(name: str, purpose: str) -> Ed25519PrivateKey:
    """``<name>-private.pem``: from the environment, an Airflow Variable, or generated once."""
    pem = os.environ.get(f"CITYFACTORY_{name.upper()}_KEY") or _from_airflow(f"cityfactory_{name}_key")
    if pem:
        return serialization.load_pem_private_key(pem.encode(), password=None)
    path = _keys_dir() / f"{name}-private.pem"
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
        log.warning("generated a new %s key at %s", purpose, path)
        note_generated(path.parent, name, _public_pem(key, name))
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def _public_pem(key: Ed25519PrivateKey, name: str) -> bytes:
    """The public half, PEM, also written beside the keys for those who only verify."""
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    path = _keys_dir() / f"{name}-public.pem"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pem)
    return pem


def signing_key() -> Ed25519PrivateKey:
    """The edge-bundle signing key."""
    return _private_key("signing", "bundle signing")


def public_key_pem(key: Ed25519PrivateKey | None = None) -> bytes:
    """The bundle key's public half: what edge nodes are configured with."""
    return _public_pem(key or signing_key(), "signing")


def audit_key() -> Ed25519PrivateKey:
    """The audit log's checkpoint key (not the bundle key: each can be rotated or revoked alone)."""
    return _private_key("audit", "audit checkpoint")


def audit_public_key_pem() -> bytes:
    """The audit key's public half, from ``CITYFACTORY_AUDIT_PUBLIC_KEY`` (PEM) or the keys folder;
    never generates a key (a verifier without one must be told, not handed a fresh pair)."""
    if pem := os.environ.get("CITYFACTORY_AUDIT_PUBLIC_KEY"):
        return pem.encode()
    path = _keys_dir() / "audit-public.pem"
    if not path.exists():
        raise FileNotFoundError(f"no audit public key at {path}: pass --public-key or set CITYFACTORY_AUDIT_PUBLIC_KEY")
    return path.read_bytes()


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    return serialization.load_pem_public_key(pem)
