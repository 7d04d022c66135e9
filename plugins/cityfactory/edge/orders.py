"""Signed rollback orders: the only way a node goes back to a lower model version.

A node keeps the highest version it accepted and refuses lower ones (no downgrade by replaying an
old, validly signed bundle). The rollout controller, which holds the signing key, issues an order
naming the node, its scenario and the version to return to, valid for a few minutes; the node
checks it with the public key it already trusts for bundles (as TUF and Mender gate rollbacks).
"""

from __future__ import annotations

import json
import time

from cryptography.exceptions import InvalidSignature


class OrderError(ValueError):
    """An order the node must not follow; the message says why."""


def sign_rollback(node: str, scenario: str, target_version: str | None, valid_seconds: float = 600) -> dict:
    from cityfactory.security.signing import signing_key

    body = json.dumps({"kind": "rollback", "node": node, "scenario": scenario, "target_version": target_version,
                       "expires_at": time.time() + valid_seconds}, sort_keys=True)
    return {"body": body, "signature": signing_key().sign(body.encode()).hex()}


def verify_rollback(order: object, public, node: str, scenario: str) -> str | None:
    """The order's target version, if it is signed, for this node and scenario, and not expired."""
    if not isinstance(order, dict) or not isinstance(order.get("body"), str) or not isinstance(order.get("signature"), str):
        raise OrderError("order: expected {body, signature} signed by the rollout controller")
    try:
        public.verify(bytes.fromhex(order["signature"]), order["body"].encode())
        body = json.loads(order["body"])
    except (InvalidSignature, ValueError):
        raise OrderError("order: signature does not verify with the node's trusted key") from None
    if body.get("kind") != "rollback" or body.get("node") != node or body.get("scenario") != scenario:
        raise OrderError(f"order: for {body.get('node')}/{body.get('scenario')}, not this node {node}/{scenario}")
    if body.get("expires_at", 0) < time.time():
        raise OrderError("order: expired")
    return body.get("target_version")
