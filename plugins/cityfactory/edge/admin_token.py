"""A node's admin token, rotatable while the node serves: the fleet's controller sends a new one,
authorised by the current one. The node keeps only the token's sha256, in its state folder, so a
restart honours the rotation (the token it was started with stays refused) and the folder never
holds a usable token."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from cityfactory.security.bearer import B64TOKEN, bearer_token

MIN_LENGTH = 32  # characters: a generated token (32 random bytes, base64) has 44


class TokenRefused(ValueError):
    """A new token that is too short or not a bearer token's characters."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class AdminToken:
    def __init__(self, initial: str, state_file: Path | None = None):
        self.state_file = state_file
        if state_file is not None and state_file.exists():
            self._digest = bytes.fromhex(state_file.read_text().strip())
        else:
            self._digest = _digest(initial)

    def holds(self, header: str | bytes | None) -> bool:
        """The header carries the current token (compared in constant time)."""
        token = bearer_token(header)
        return token is not None and hmac.compare_digest(_digest(token), self._digest)

    def rotate(self, new: str) -> None:
        """From now on only ``new`` is the admin token (kept across restarts when there is a state file)."""
        if len(new) < MIN_LENGTH or not B64TOKEN.fullmatch(new):
            raise TokenRefused(f"token: at least {MIN_LENGTH} characters of A-Z a-z 0-9 - . _ ~ + / (then = padding)")
        digest = _digest(new)
        if self.state_file is not None:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            partial = self.state_file.with_suffix(".tmp")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(digest.hex())
            partial.replace(self.state_file)
        self._digest = digest
