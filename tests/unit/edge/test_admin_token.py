"""A node's admin token rotates in place: the old one is refused at once and after a restart, the
state folder never holds a usable token, and a weak new token is refused."""

from __future__ import annotations

import base64
import secrets

import pytest
from cityfactory.edge.admin_token import AdminToken, TokenRefused


def _token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def test_rotation_refuses_the_old_token_now_and_after_a_restart(tmp_path):
    first, second = _token(), _token()
    state = tmp_path / "node-admin-token.sha256"
    token = AdminToken(first, state)
    assert token.holds(f"Bearer {first}") and not token.holds(f"Bearer {second}")
    token.rotate(second)
    assert token.holds(f"Bearer {second}") and not token.holds(f"Bearer {first}")
    assert second not in state.read_text() and first not in state.read_text(), "only a digest is kept"
    assert oct(state.stat().st_mode & 0o777) == "0o600"
    restarted = AdminToken(first, state)  # started again with the environment's original token
    assert restarted.holds(f"Bearer {second}") and not restarted.holds(f"Bearer {first}")


def test_weak_or_malformed_new_tokens_are_refused_and_change_nothing(tmp_path):
    first = _token()
    token = AdminToken(first, tmp_path / "t.sha256")
    for weak in ("short", "x" * 31, "spaces are not token characters " * 2, ""):
        with pytest.raises(TokenRefused, match="at least 32 characters"):
            token.rotate(weak)
    assert token.holds(f"Bearer {first}") and not (tmp_path / "t.sha256").exists()
    assert not token.holds(f"bearer  {first}") and not token.holds(None), "the one bearer parser reads the header"
