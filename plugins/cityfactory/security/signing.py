"""Ed25519 signing keys for edge bundles.

The private key comes from ``CITYFACTORY_SIGNING_KEY`` (PEM) or the Airflow Variable
``cityfactory_signing_key``; otherwise the embedded default generates a key pair once into the
git-ignored keys folder. Edge nodes get only the public key (``signing-public.pem``).
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


def signing_key() -> Ed25519PrivateKey:
    pem = os.environ.get("CITYFACTORY_SIGNING_KEY") or _from_airflow("cityfactory_signing_key")
    if pem:
        return serialization.load_pem_private_key(pem.encode(), password=None)
    path = _keys_dir() / "signing-private.pem"
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
        log.warning("generated a new bundle signing key at %s", path)
        note_generated(path.parent, "signing", public_key_pem(key))
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def public_key_pem(key: Ed25519PrivateKey | None = None) -> bytes:
    """The public half, PEM: what edge nodes are configured with."""
    key = key or signing_key()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    path = _keys_dir() / "signing-public.pem"
    if key is not None and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pem)
    return pem


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    return serialization.load_pem_public_key(pem)
