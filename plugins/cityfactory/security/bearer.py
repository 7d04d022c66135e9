"""``Authorization: Bearer <token>``, read one way for every route that takes a token.

RFC 6750: the scheme (any case), one space, then a b64token. Anything else (two spaces, a tab,
a trailing space, a second credential, characters outside the token alphabet) is malformed and
treated as no token at all, so no route can read a header more leniently than another.
"""

from __future__ import annotations

import hmac
import re

B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def bearer_token(header: str | bytes | None) -> str | None:
    """The token of a well-formed bearer header; None for a missing or malformed one."""
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    if not header:
        return None
    scheme, space, token = header.partition(" ")
    if not space or scheme.lower() != "bearer" or not B64TOKEN.fullmatch(token):
        return None
    return token


def holds(header: str | bytes | None, expected: str) -> bool:
    """The header carries exactly ``expected`` (compared in constant time)."""
    token = bearer_token(header)
    return token is not None and hmac.compare_digest(token.encode(), expected.encode())
