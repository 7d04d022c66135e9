"""The audit trail as a transparency log (the way C2SP checkpoints, Trillian and Rekor do it).

Entries: one object each, ``audit/entries/<seq>.json``, claimed with an exclusive create so
concurrent runs never fork the log; each names the hash of the one before and is signed with the
audit key by the pipeline that writes it (an entry a lake writer adds is refused, never sealed). The entries are the
leaves of an RFC 6962 Merkle tree. A checkpoint is a C2SP signed note over the log's origin, its
size and the tree's root, signed with the audit key (not the bundle key); it is stored in the lake
(``audit/checkpoints/<size>.json``, with the tree's frontier) and, the latest one, in a witness file
outside the lake that lake writers cannot rewrite.

``seal`` starts from the last trusted checkpoint (the witness), checks only the entries added since
and signs the extended tree; it never signs a head it has not verified. ``verify`` needs only the
public key: it refuses a log smaller than the witness, a fork, an empty trail the witness knows to
be longer, and entries without a checkpoint; ``full=True`` also re-reads every entry and rebuilds
the root. Inclusion and consistency proofs come from :func:`prove_inclusion` /
:func:`prove_consistency` (``cityfactory.cli audit-proof``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature

from cityfactory.governance import merkle
from cityfactory.storage.lake import Lake

ENTRIES, CHECKPOINTS = "audit/entries", "audit/checkpoints"
GENESIS = "0" * 64
KEY_NAME = "cityfactory-audit"


class AuditError(RuntimeError):
    """The trail does not verify; the message names the first broken entry or checkpoint."""


def _digest(entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k not in ("hash", "signature")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _leaf(entry: dict) -> bytes:
    return merkle.leaf_hash(json.dumps(entry, sort_keys=True, separators=(",", ":")).encode())


def _key(folder: str, seq: int) -> str:
    return f"{folder}/{seq:012d}.json"


def _seq_of(key: str) -> int:
    return int(key.rsplit("/", 1)[1].split(".")[0])


def origin(lake: Lake) -> str:
    """The log's name in its checkpoints: one log per lake."""
    return f"{lake.uri}/audit"


def entries(lake: Lake, first: int = 1) -> list[dict]:
    """Entries from sequence number ``first`` on (fetching only those)."""
    keys = [k for k in lake.list(ENTRIES) if _seq_of(k) >= first]
    return [json.loads(lake.get_bytes(k)) for k in keys]


def _head(lake: Lake) -> dict | None:
    keys = lake.list(ENTRIES)
    return json.loads(lake.get_bytes(keys[-1])) if keys else None


def append(lake: Lake, event: str, details: dict, attempts: int = 50) -> dict:
    """Add one entry at the head of the log (retrying if another writer got there first)."""
    return append_all(lake, [(event, details)], attempts)[0]


def append_all(lake: Lake, events: list[tuple[str, dict]], attempts: int = 50) -> list[dict]:
    """Add entries in order; the head is looked up once and again only when another writer took
    the next sequence number first."""
    from cityfactory.security.signing import audit_key

    key = audit_key()  # entries are signed by the pipeline: a lake writer cannot add one the seal accepts
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
            entry["signature"] = key.sign(entry["hash"].encode()).hex()
            if lake.put_new(_key(ENTRIES, entry["seq"]), json.dumps(entry, sort_keys=True).encode()):
                written.append(entry)
                head = entry
                break
            conflicts += 1
            if conflicts >= attempts:
                raise AuditError(f"could not append {event!r}: the head kept moving ({attempts} attempts)")
            head = _head(lake)
    return written


# --- checkpoints: C2SP signed notes --------------------------------------------------------------

@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    note: str  # the signed note as stored
    frontier: tuple[bytes, ...]
    head_hash: str  # the last entry's hash (links the next entry's prev_hash)

    def to_json(self) -> bytes:
        return json.dumps({"note": self.note, "frontier": [h.hex() for h in self.frontier],
                           "head_hash": self.head_hash}, indent=1).encode()


def _key_hash(public_raw: bytes) -> bytes:
    """C2SP signed-note key hash for Ed25519: SHA-256(name || 0x0A || 0x01 || key)[:4]."""
    return hashlib.sha256(KEY_NAME.encode() + b"\n\x01" + public_raw).digest()[:4]


def _raw(public) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _sign(key, log_origin: str, size: int, root: bytes) -> str:
    """A C2SP checkpoint: origin, size, root, and an extension line with the signing time."""
    issued = datetime.now(UTC).isoformat(timespec="seconds")
    body = f"{log_origin}\n{size}\n{base64.b64encode(root).decode()}\nissued {issued}\n"
    signature = base64.b64encode(_key_hash(_raw(key.public_key())) + key.sign(body.encode())).decode()
    return f"{body}\n\u2014 {KEY_NAME} {signature}\n"


def _open(note: str, public, where: str) -> tuple[str, int, bytes]:
    """The note's origin, size and root, if its signature verifies with ``public``."""
    body, sep, signatures = note.partition("\n\n")
    match = re.fullmatch(rf"\u2014 {re.escape(KEY_NAME)} (\S+)\n", signatures)
    lines = body.split("\n")
    if not sep or match is None or len(lines) < 3:
        raise AuditError(f"{where}: not a signed checkpoint note")
    try:
        blob = base64.b64decode(match.group(1), validate=True)
        if blob[:4] != _key_hash(_raw(public)):
            raise AuditError(f"{where}: signed by another key than the trusted audit key")
        public.verify(blob[4:], (body + "\n").encode())
        return lines[0], int(lines[1]), base64.b64decode(lines[2], validate=True)
    except (InvalidSignature, ValueError):
        raise AuditError(f"{where}: signature does not verify (forged or edited)") from None


def _load(data: bytes, public, where: str) -> Checkpoint:
    try:
        stored = json.loads(data)
        note, frontier = stored["note"], tuple(bytes.fromhex(h) for h in stored["frontier"])
    except (ValueError, KeyError, TypeError):
        raise AuditError(f"{where}: not a checkpoint") from None
    log_origin, size, root = _open(note, public, where)
    if merkle.frontier_root(list(frontier)) != root or len(frontier) != size.bit_count():
        raise AuditError(f"{where}: its frontier does not make the signed root")
    return Checkpoint(log_origin, size, root, note, frontier, stored.get("head_hash", GENESIS))


def witness_path(lake: Lake) -> Path:
    """Where the latest checkpoint is kept outside the lake: ``CITYFACTORY_AUDIT_WITNESS``, or the
    embedded home's ``witness/`` folder (per lake)."""
    if path := os.environ.get("CITYFACTORY_AUDIT_WITNESS"):
        return Path(path)
    from cityfactory.settings import get_settings

    name = re.sub(r"[^A-Za-z0-9._-]+", "_", origin(lake))
    return get_settings().home / "witness" / f"{name}.checkpoint"


def _witnessed(lake: Lake, public) -> Checkpoint | None:
    path = witness_path(lake)
    if not path.exists():
        return None
    checkpoint = _load(path.read_bytes(), public, f"witness {path}")
    if checkpoint.origin != origin(lake):
        raise AuditError(f"witness {path}: for log {checkpoint.origin!r}, not {origin(lake)!r}")
    return checkpoint


def _witness(lake: Lake, checkpoint: Checkpoint) -> None:
    path = witness_path(lake)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_bytes(checkpoint.to_json())
    os.replace(tmp, path)


def _latest_in_lake(lake: Lake, public) -> Checkpoint | None:
    keys = lake.list(CHECKPOINTS)
    if not keys:
        return None
    checkpoint = _load(lake.get_bytes(keys[-1]), public, f"checkpoint {keys[-1]}")
    if checkpoint.size != _seq_of(keys[-1]) or checkpoint.origin != origin(lake):
        raise AuditError(f"checkpoint {keys[-1]}: signs size {checkpoint.size} of {checkpoint.origin!r}")
    return checkpoint


def _check_run(run: list[dict], first: int, prev_hash: str, public) -> list[bytes]:
    """Entries ``first``.. in order, each intact, signed by the audit key and following the one
    before; their leaf hashes."""
    leaves = []
    for position, entry in enumerate(run, first):
        where = f"entry {entry.get('seq')} ({_key(ENTRIES, entry.get('seq') or 0)})"
        if entry.get("seq") != position:
            raise AuditError(f"{where}: expected sequence number {position} (an entry was removed or reordered)")
        if _digest(entry) != entry.get("hash"):
            raise AuditError(f"{where}: content does not match its hash (edited)")
        if entry.get("prev_hash") != prev_hash:
            raise AuditError(f"{where}: does not follow entry {position - 1} (reordered or replaced)")
        try:
            public.verify(bytes.fromhex(entry.get("signature") or ""), entry["hash"].encode())
        except (InvalidSignature, ValueError):
            raise AuditError(f"{where}: not signed with the audit key (written by someone other than the pipeline)") from None
        prev_hash = entry["hash"]
        leaves.append(_leaf(entry))
    return leaves


def _extend(trusted: Checkpoint | None, run: list[dict], public) -> tuple[tuple[bytes, ...], int, str]:
    size = trusted.size if trusted else 0
    leaves = _check_run(run, size + 1, trusted.head_hash if trusted else GENESIS, public)
    frontier = merkle.extend(list(trusted.frontier) if trusted else [], size, leaves)
    return tuple(frontier), size + len(run), run[-1]["hash"] if run else (trusted.head_hash if trusted else GENESIS)


def seal(lake: Lake) -> Checkpoint | None:
    """Sign the log as it is now, after checking what was added since the last trusted checkpoint
    (None for an empty log). Never signs entries it did not verify."""
    from cityfactory.security.signing import audit_key

    key = audit_key()
    public = key.public_key()
    trusted = _witnessed(lake, public) or _latest_in_lake(lake, public)
    run = _since(lake, trusted)
    if not run:
        if trusted:
            _witness(lake, trusted)
        return trusted
    frontier, size, head_hash = _extend(trusted, run, public)
    root = merkle.frontier_root(list(frontier))
    checkpoint = Checkpoint(origin(lake), size, root, _sign(key, origin(lake), size, root), frontier, head_hash)
    lake.put_new(_key(CHECKPOINTS, size), checkpoint.to_json())
    _witness(lake, checkpoint)
    return checkpoint


def _since(lake: Lake, trusted: Checkpoint | None) -> list[dict]:
    """The entries after a trusted checkpoint, once its last entry is checked to be the one it
    signed (one extra read: a rewritten or truncated history stops here)."""
    if trusted is None or trusted.size == 0:
        return entries(lake)
    run = entries(lake, trusted.size)
    if not run or run[0].get("seq") != trusted.size:
        raise AuditError(f"the log has {_head_seq(lake)} entries but checkpoint says {trusted.size}: entries were removed")
    if run[0].get("hash") != trusted.head_hash or _digest(run[0]) != trusted.head_hash:
        raise AuditError(f"entry {trusted.size} ({_key(ENTRIES, trusted.size)}): is not the entry the trusted checkpoint "
                         "signed (history rewritten)")
    return run[1:]


def _head_seq(lake: Lake) -> int:
    keys = lake.list(ENTRIES)
    return _seq_of(keys[-1]) if keys else 0


@dataclass
class Verified:
    entries: int
    sealed_through: int
    read: int = 0  # entries fetched to verify
    verified: list[dict] = field(default_factory=list, repr=False, compare=False)  # those entries, checked (all if full)


def verify(lake: Lake, public_pem: bytes, full: bool = True) -> Verified:
    """Check the latest checkpoint against the witness: with ``full``, every entry is re-read and
    the root rebuilt (finds an edit anywhere); without, only the entries after the witnessed
    checkpoint are read (what a run does after sealing). Raises :class:`AuditError` at the first
    problem."""
    from cityfactory.security.signing import load_public_key

    try:
        public = load_public_key(public_pem)
    except ValueError as exc:
        raise AuditError(f"the audit public key is not a PEM public key: {exc}") from None
    witnessed = _witnessed(lake, public)
    latest = _latest_in_lake(lake, public)
    head = _head_seq(lake)
    if latest is None:
        if witnessed and witnessed.size:
            raise AuditError(f"the trail is empty or its checkpoints are gone, but the witness saw {witnessed.size} entries")
        if head:
            raise AuditError(f"entry 1 ({_key(ENTRIES, 1)}): appended without a valid checkpoint")
        return Verified(0, 0)
    if witnessed and latest.size < witnessed.size:
        raise AuditError(f"checkpoint {latest.size} is older than the witnessed size {witnessed.size} (entries removed)")
    base = None if full else witnessed if witnessed and witnessed.size <= latest.size else None
    run = _since(lake, base)
    signed_part, extra = run[: latest.size - (base.size if base else 0)], run[latest.size - (base.size if base else 0):]
    frontier, size, _ = _extend(base, signed_part, public)
    if size != latest.size or merkle.frontier_root(list(frontier)) != latest.root:
        raise AuditError(f"checkpoint {latest.size}: the entries do not make its root (edited, removed or forked)")
    if full and witnessed and witnessed.size:
        _consistent(witnessed, run[: witnessed.size], public)
    if extra or head > latest.size:
        first = latest.size + 1
        raise AuditError(f"entry {first} ({_key(ENTRIES, first)}): appended without a valid checkpoint")
    return Verified(latest.size, latest.size, len(run), run)


def _consistent(witnessed: Checkpoint, prefix: list[dict], public) -> None:
    frontier, size, _ = _extend(None, prefix, public)
    if size != witnessed.size or merkle.frontier_root(list(frontier)) != witnessed.root:
        raise AuditError(f"the log's first {witnessed.size} entries do not make the witnessed root (history rewritten)")


def _leaves(lake: Lake, size: int, public) -> list[bytes]:
    run = entries(lake)[:size]
    return _check_run(run, 1, GENESIS, public)


def _covering(lake: Lake, public_pem: bytes, size: int, what: str) -> tuple[Checkpoint, list[bytes]]:
    """The latest checkpoint, if it covers ``size`` entries, and its verified leaves."""
    from cityfactory.security.signing import load_public_key

    public = load_public_key(public_pem)
    latest = _latest_in_lake(lake, public)
    if latest is None or not 1 <= size <= latest.size:
        raise AuditError(f"{what} is not covered by the latest checkpoint")
    return latest, _leaves(lake, latest.size, public)


def prove_inclusion(lake: Lake, public_pem: bytes, seq: int) -> dict:
    """Entry ``seq``'s audit path to the latest checkpoint's root, checked before it is returned."""
    latest, leaves = _covering(lake, public_pem, seq, f"entry {seq}")
    proof = merkle.inclusion_proof(seq - 1, leaves)
    if not merkle.verify_inclusion(seq - 1, latest.size, leaves[seq - 1], proof, latest.root):
        raise AuditError(f"entry {seq}: no inclusion in checkpoint {latest.size}")
    return {"seq": seq, "tree_size": latest.size, "leaf_hash": leaves[seq - 1].hex(),
            "proof": [h.hex() for h in proof], "root": latest.root.hex(), "checkpoint": latest.note}


def prove_consistency(lake: Lake, public_pem: bytes, old_size: int) -> dict:
    """Proof that the tree of ``old_size`` entries is a prefix of the latest checkpoint's tree."""
    latest, leaves = _covering(lake, public_pem, old_size, f"size {old_size}")
    old_root = merkle.root(leaves[:old_size])
    proof = merkle.consistency_proof(old_size, leaves)
    if not merkle.verify_consistency(old_size, latest.size, old_root, latest.root, proof):
        raise AuditError(f"size {old_size} is not consistent with checkpoint {latest.size}")
    return {"old_size": old_size, "old_root": old_root.hex(), "new_size": latest.size, "new_root": latest.root.hex(),
            "proof": [h.hex() for h in proof], "checkpoint": latest.note}
