"""A tamper-evident audit trail: hash-chained entries sealed by Ed25519-signed checkpoints.

Each entry is its own object ``audit/entries/<seq>.json`` holding the hash of the one before, so
an edit, a deletion or a reordering breaks the chain. A writer claims the next sequence number
with an exclusive create, so two runs appending at once never fork the chain. ``seal()`` writes
``audit/checkpoints/<seq>.json``: the chain head's hash signed with the signing key; entries after
the last valid checkpoint count as appended without one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature

from cityfactory.security.signing import load_public_key, signing_key
from cityfactory.storage.lake import Lake

ENTRIES, CHECKPOINTS = "audit/entries", "audit/checkpoints"
GENESIS = "0" * 64


class AuditError(RuntimeError):
    """The trail does not verify; the message names the first broken entry."""


def _digest(entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _key(folder: str, seq: int) -> str:
    return f"{folder}/{seq:012d}.json"


def entries(lake: Lake) -> list[dict]:
    return [json.loads(lake.get_bytes(k)) for k in lake.list(ENTRIES)]


def _head(lake: Lake) -> dict | None:
    keys = lake.list(ENTRIES)
    return json.loads(lake.get_bytes(keys[-1])) if keys else None


def append(lake: Lake, event: str, details: dict, attempts: int = 50) -> dict:
    """Add one entry at the head of the chain (retrying if another writer got there first)."""
    return append_all(lake, [(event, details)], attempts)[0]


def append_all(lake: Lake, events: list[tuple[str, dict]], attempts: int = 50) -> list[dict]:
    """Add entries in order; the head is looked up once and again only when another writer took
    the next sequence number first (so a run's events cost one listing, not one each)."""
    written: list[dict] = []
    head, conflicts = _head(lake), 0
    for event, details in events:
        while True:
            entry = {
                "seq": head["seq"] + 1 if head else 1,
                "at": datetime.now(UTC).isoformat(timespec="microseconds"),
                "event": event,
                "details": details,
                "prev_hash": head["hash"] if head else GENESIS,
            }
            entry["hash"] = _digest(entry)
            if lake.put_new(_key(ENTRIES, entry["seq"]), json.dumps(entry, sort_keys=True).encode()):
                written.append(entry)
                head = entry
                break
            conflicts += 1
            if conflicts >= attempts:
                raise AuditError(f"could not append {event!r}: the head kept moving ({attempts} attempts)")
            head = _head(lake)
    return written


def seal(lake: Lake) -> dict | None:
    """Sign the current head; returns the checkpoint (None for an empty trail)."""
    head = _head(lake)
    if head is None:
        return None
    key = signing_key()
    checkpoint = {"seq": head["seq"], "hash": head["hash"], "signature": key.sign(head["hash"].encode()).hex()}
    lake.put_bytes(_key(CHECKPOINTS, head["seq"]), json.dumps(checkpoint).encode())
    return checkpoint


@dataclass
class Verified:
    entries: int
    sealed_through: int


def verify(lake: Lake, public_pem: bytes) -> Verified:
    """Walk the chain and the checkpoints; raise :class:`AuditError` at the first problem."""
    public = load_public_key(public_pem)
    chain = entries(lake)
    previous, by_seq = GENESIS, {}
    for position, entry in enumerate(chain, 1):
        where = f"entry {entry.get('seq')} ({_key(ENTRIES, entry.get('seq', 0))})"
        if entry.get("seq") != position:
            raise AuditError(f"{where}: expected sequence number {position} (an entry was removed or reordered)")
        if _digest(entry) != entry.get("hash"):
            raise AuditError(f"{where}: content does not match its hash (edited)")
        if entry["prev_hash"] != previous:
            raise AuditError(f"{where}: does not follow entry {position - 1} (reordered or replaced)")
        previous, by_seq[position] = entry["hash"], entry["hash"]
    sealed = 0
    for key in lake.list(CHECKPOINTS):
        checkpoint = json.loads(lake.get_bytes(key))
        try:
            public.verify(bytes.fromhex(checkpoint["signature"]), checkpoint["hash"].encode())
        except (InvalidSignature, ValueError):
            raise AuditError(f"checkpoint {key}: signature does not verify (forged)") from None
        if by_seq.get(checkpoint["seq"]) != checkpoint["hash"]:
            raise AuditError(f"checkpoint {key}: seals entry {checkpoint['seq']} with a hash the chain does not have")
        sealed = max(sealed, checkpoint["seq"])
    if sealed < len(chain):
        raise AuditError(f"entry {sealed + 1} ({_key(ENTRIES, sealed + 1)}): appended without a valid checkpoint")
    return Verified(len(chain), sealed)
