"""Signed access tokens: HS256 JWTs naming a member id, the groups it may join, an expiry.

Claims: ``sub`` (the id), ``groups`` (a list of group names; a name ending in ``*`` is a
prefix: ``"game-*"`` allows ``game-1``), ``exp`` (expiry, seconds since the epoch). Any
back end that can sign an HS256 JWT with the relay's secret can mint them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from http import HTTPStatus

import attrs

# PyJWT is imported where it is used, not here: it imports the cryptography package
# whenever that is installed (10 MiB of memory and about 50 ms at start-up), which a relay
# without tokens never needs. A relay with a token secret loads it as it starts
# (:func:`preload`), so that no handshake waits for the import.

#: The signing algorithm; the only one accepted.
ALGORITHM = "HS256"


def preload() -> None:
    """Import PyJWT now (a relay with a token secret does, before it accepts anyone)."""
    import jwt  # noqa: F401


@attrs.frozen
class TokenRefusal:
    """Why a token does not admit a connection: 401 (no valid token) or 403 (not for this)."""

    status: int
    reason: str
    kind: str


def mint_token(
    secret: str | bytes,
    member_id: str,
    groups: Sequence[str],
    ttl: float,
    *,
    now: float | None = None,
) -> str:
    """A token for ``member_id`` to join ``groups`` (names, or prefixes ending in ``*``)
    for ``ttl`` seconds from ``now``."""
    if not member_id:
        raise ValueError("a token needs a member id")
    if not groups or any(not group for group in groups):
        raise ValueError("a token needs at least one non-empty group name or prefix")
    if ttl <= 0:
        raise ValueError(f"ttl must be positive, got {ttl!r}")
    issued = int(now if now is not None else time.time())
    claims = {"sub": member_id, "groups": list(groups), "iat": issued, "exp": issued + int(ttl)}
    import jwt

    return jwt.encode(claims, _key(secret), algorithm=ALGORITHM)


def check_token(
    token: str | None,
    secret: str | bytes,
    member_id: str,
    group: str,
    *,
    now: float | None = None,
) -> TokenRefusal | None:
    """None when ``token`` admits ``member_id`` to ``group``; otherwise why not.

    The reasons say what is wrong with the token, never what it contains.
    """
    if not token:
        return TokenRefusal(HTTPStatus.UNAUTHORIZED, "access token required", "token_missing")
    import jwt

    try:
        claims = jwt.decode(
            token,
            _key(secret),
            algorithms=[ALGORITHM],
            options={"require": ["exp", "sub"], "verify_iat": False},
            leeway=0,
        )
    except jwt.ExpiredSignatureError:
        return TokenRefusal(HTTPStatus.UNAUTHORIZED, "access token expired", "token_expired")
    except (jwt.InvalidTokenError, RecursionError):
        # RecursionError: PyJWT before 2.14 lets a JOSE header nested too deeply for
        # json out (2.14 and later refuse it as invalid); refused the same either way.
        return TokenRefusal(HTTPStatus.UNAUTHORIZED, "invalid access token", "token_invalid")
    if now is not None and claims["exp"] <= now:
        return TokenRefusal(HTTPStatus.UNAUTHORIZED, "access token expired", "token_expired")
    if claims.get("sub") != member_id:
        return TokenRefusal(HTTPStatus.FORBIDDEN, "access token is for another id", "token_id")
    groups = claims.get("groups")
    if not isinstance(groups, list) or not allows(groups, group):
        return TokenRefusal(
            HTTPStatus.FORBIDDEN, "access token does not allow this group", "token_group"
        )
    return None


def issued_after(token: str, secret: str | bytes, moment: float) -> bool:
    """Whether ``token`` — one :func:`check_token` admitted — says it was issued (its
    ``iat``, whole seconds since the epoch) after ``moment``: a token minted after the
    back end removed a member is its word that the member may come back. A token without
    a numeric ``iat`` was not issued after anything."""
    import jwt

    try:
        claims = jwt.decode(
            token,
            _key(secret),
            algorithms=[ALGORITHM],
            options={"verify_exp": False, "verify_iat": False},
        )
    except (jwt.InvalidTokenError, RecursionError):
        return False
    issued = claims.get("iat")
    return isinstance(issued, int | float) and not isinstance(issued, bool) and issued > moment


def allows(patterns: Iterable[object], group: str) -> bool:
    """Whether ``group`` matches one of ``patterns`` (exact names, or ``prefix*``)."""
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            continue
        if pattern.endswith("*"):
            if group.startswith(pattern[:-1]):
                return True
        elif pattern == group:
            return True
    return False


def _key(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if not key:
        raise ValueError("the token secret is empty")
    return key
