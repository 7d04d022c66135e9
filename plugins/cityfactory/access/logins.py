"""The embedded stack's passwords: generated on first use into a git-ignored file (mode 0600),
never a fixed default; a login added later gets its own without touching the others."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from cityfactory.access.roles import ADMIN_LOGIN


def login_passwords(file: Path, usernames: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Every login's password (those of ``usernames`` generated if missing), and which are new."""
    known = json.loads(file.read_text()) if file.exists() else {}
    new = [name for name in usernames if name not in known]
    if new:
        known |= {name: secrets.token_urlsafe(12) for name in new}
        file.parent.mkdir(parents=True, exist_ok=True)
        partial = file.with_name(f".{file.name}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(known, fh, indent=1)
        partial.replace(file)
    return known, new


def admin_password(file: Path) -> str:
    """The platform admin's password."""
    return login_passwords(file, [ADMIN_LOGIN])[0][ADMIN_LOGIN]
