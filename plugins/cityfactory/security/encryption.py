"""Personal data at rest: Parquet modular encryption, keyed pseudonyms, and sealed files.

- ``encrypt`` columns: Parquet modular encryption (AES-GCM inside the Parquet writer); data keys are
  wrapped by master keys from :mod:`cityfactory.security.keys` through a ``cryptography`` AES-GCM
  KMS client, so a lake file alone reveals nothing.
- ``pseudonymise`` columns: HMAC-SHA256 with a secret key; the same input gives the same pseudonym,
  so the column stays joinable without ever being stored in plain text.
- Whole files (raw copies and quarantined rows of scenarios with personal data): AES-256-GCM.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet.encryption as pe
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cityfactory.security.keys import get_secret

FOOTER_KEY = "lake-footer"
COLUMN_KEY = "lake-columns"
FILE_KEY = "lake-files"
PSEUDONYM_KEY = "pseudonym"
SEALED_MAGIC = b"CFSEAL1"


class DecryptionError(RuntimeError):
    """Sealed data that does not decrypt: wrong key or tampered bytes."""


class _LakeKms(pe.KmsClient):
    """Wraps Parquet data keys with AES-GCM master keys resolved by name."""

    def __init__(self, _config: pe.KmsConnectionConfig):
        super().__init__()

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> bytes:
        nonce = os.urandom(12)
        sealed = AESGCM(get_secret(master_key_identifier)).encrypt(nonce, key_bytes, master_key_identifier.encode())
        return base64.b64encode(nonce + sealed)

    def unwrap_key(self, wrapped_key: bytes, master_key_identifier: str) -> bytes:
        raw = base64.b64decode(wrapped_key)
        try:
            return AESGCM(get_secret(master_key_identifier)).decrypt(raw[:12], raw[12:], master_key_identifier.encode())
        except InvalidTag:
            raise DecryptionError(f"cannot unwrap a Parquet data key with master key {master_key_identifier!r}") from None


_FACTORY = pe.CryptoFactory(_LakeKms)
_KMS = pe.KmsConnectionConfig()


def parquet_write_options(columns: list[str]):
    """Dataset write options that encrypt ``columns``; the footer stays plain (signed), so
    readers without keys still see the schema and the other columns."""
    import pyarrow.dataset as ds

    config = pe.EncryptionConfiguration(
        footer_key=FOOTER_KEY,
        column_keys={COLUMN_KEY: list(columns)},
        plaintext_footer=True,
        double_wrapping=True,
        cache_lifetime=timedelta(minutes=10),
    )
    return ds.ParquetFileFormat().make_write_options(
        encryption_config=ds.ParquetEncryptionConfig(_FACTORY, _KMS, config)
    )


def parquet_decryption() -> pe.FileDecryptionProperties:
    """For ``pyarrow.parquet.read_table(..., decryption_properties=...)`` by key holders."""
    return _FACTORY.file_decryption_properties(_KMS, pe.DecryptionConfiguration(cache_lifetime=timedelta(minutes=10)))


def pseudonymise(values: pa.Array) -> pa.Array:
    """HMAC-SHA256 pseudonyms (hex), computed once per distinct value; nulls stay null."""
    key = get_secret(PSEUDONYM_KEY)
    distinct = pc.unique(values).drop_null()
    digests = pa.array(
        [hmac.new(key, v.encode(), hashlib.sha256).hexdigest() for v in distinct.to_pylist()], pa.string()
    )
    return pc.take(digests, pc.index_in(values, value_set=distinct))


def seal(data: bytes) -> bytes:
    nonce = os.urandom(12)
    return SEALED_MAGIC + nonce + AESGCM(get_secret(FILE_KEY)).encrypt(nonce, data, SEALED_MAGIC)


def unseal(blob: bytes, where: str) -> bytes:
    if not blob.startswith(SEALED_MAGIC):
        raise DecryptionError(f"{where}: not a sealed file")
    body = blob[len(SEALED_MAGIC) :]
    try:
        return AESGCM(get_secret(FILE_KEY)).decrypt(body[:12], body[12:], SEALED_MAGIC)
    except InvalidTag:
        raise DecryptionError(f"{where}: does not decrypt (wrong key or tampered)") from None
