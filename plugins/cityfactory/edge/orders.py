"""Signed rollback orders: the only way a node goes back to a lower model version.

A node keeps the highest version it accepted and refuses lower ones (no downgrade by replaying an
old, validly signed bundle). The rollout controller, which holds the signing key, issues an order
naming the node, its scenario and the version to return to, valid for a few minutes; the node
checks it with the public key it already trusts for bundles (as TUF and Mender gate rollbacks).
Each order carries a nonce the node records when it follows the order (kept across restarts until
the order expires): an order is followed once, never replayed.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from pathlib import Path

from cryptography.exceptions import InvalidSignature


class OrderError(ValueError):
    """An order the node must not follow; the message says why."""


def sign_rollback(node: str, scenario: str, target_version: str | None, valid_seconds: float = 600) -> dict:
    from cityfactory.security.signing import signing_key

    body = json.dumps({"kind": "rollback", "node": node, "scenario": scenario, "target_version": target_version,
                       "expires_at": time.time() + valid_seconds, "nonce": secrets.token_hex(16)}, sort_keys=True)
    return {"body": body, "signature": signing_key().sign(body.encode()).hex()}


class SpentOrders:
    """The nonces of orders this node followed, until they expire (in ``path``, if given, so a
    restart does not make a followed order valid again)."""

    def __init__(self, path: Path | None = None):
        self.path, self._lock = path, threading.Lock()
        self._spent: dict[str, float] = json.loads(path.read_text()) if path and path.exists() else {}

    def spend(self, nonce: str, expires_at: float) -> None:
        with self._lock:
            now = time.time()
            self._spent = {n: t for n, t in self._spent.items() if t >= now}
            if nonce in self._spent:
                raise OrderError("order: already followed once (its nonce is spent); ask the controller for a new one")
            self._spent[nonce] = expires_at
            if self.path:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(self._spent))
                tmp.replace(self.path)


def verify_rollback(order: object, public, node: str, scenario: str, spent: SpentOrders) -> str | None:
    """The order's target version, if it is signed, for this node and scenario, not expired and
    not followed before (its nonce is spent by this call)."""
    if not isinstance(order, dict) or not isinstance(order.get("body"), str) or not isinstance(order.get("signature"), str):
        raise OrderError("order: expected {body, signature} signed by the rollout controller")
    try:
        public.verify(bytes.fromhex(order["signature"]), order["body"].encode())
        body = json.loads(order["body"])
    except (InvalidSignature, ValueError):
        raise OrderError("order: signature does not verify with the node's trusted key") from None
    if body.get("kind") != "rollback" or body.get("node") != node or body.get("scenario") != scenario:
        raise OrderError(f"order: for {body.get('node')}/{body.get('scenario')}, not this node {node}/{scenario}")
    expires_at = body.get("expires_at")
    if not isinstance(expires_at, int | float) or expires_at < time.time():
        raise OrderError("order: expired")
    nonce = body.get("nonce")
    if not isinstance(nonce, str) or not nonce:
        raise OrderError("order: no nonce: a replayable order is not followed")
    spent.spend(nonce, expires_at)
    return body.get("target_version")
