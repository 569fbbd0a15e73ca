"""Revoked access tokens: by subject or by token id (``POST /api/revocations``).

A revocation names a subject (``sub``: every token of that user issued before it) or one
token (``jti``), and lasts until ``until`` (wall-clock seconds). While it lasts, every
connection whose token it covers is closed with 4007, and tokens it covers are refused
(401) at the handshake and at every later join; a subject's tokens issued after the
revocation (their ``iat``) are accepted, so a user signed in again connects again. On
a cluster the revocation lives in Redis and reaches every node (backplane/), and it
expires there with its period: bounded by the revocations of that period.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

SUBJECT = "sub"
TOKEN_ID = "jti"


@attrs.frozen
class Revocation:
    """``kind`` (``"sub"`` or ``"jti"``) ``value`` is revoked from ``at`` to ``until``
    (wall-clock seconds since the epoch)."""

    kind: str = attrs.field(validator=attrs.validators.in_((SUBJECT, TOKEN_ID)))
    value: str
    at: float
    until: float

    def covers(self, claims: Mapping[str, Any]) -> bool:
        """Whether a token with ``claims`` is revoked by this (its ``sub`` or ``jti``; a
        token without a numeric ``iat`` counts as issued before a subject's revocation)."""
        if self.kind == TOKEN_ID:
            return claims.get("jti") == self.value
        if claims.get("sub") != self.value:
            return False
        issued = claims.get("iat")
        if not isinstance(issued, int | float) or isinstance(issued, bool):
            return True
        return issued <= self.at


class Revocations:
    """The revocations in force on this node, by kind and value."""

    def __init__(self) -> None:
        self._by: dict[tuple[str, str], Revocation] = {}

    def __len__(self) -> int:
        return len(self._by)

    def add(self, revocation: Revocation, now: float) -> bool:
        """Hold ``revocation`` (the later of two for one value); False when it is over."""
        if revocation.until <= now:
            return False
        key = (revocation.kind, revocation.value)
        held = self._by.get(key)
        if held is None or (revocation.at, revocation.until) > (held.at, held.until):
            self._by[key] = revocation
        if len(self._by) > 1024 and len(self._by) % 1024 == 0:
            self._forget_ended(now)
        return True

    def refuses(self, claims: Mapping[str, Any], now: float) -> bool:
        """Whether a revocation in force covers a token with ``claims``."""
        if not self._by:
            return False
        for kind, value in ((TOKEN_ID, claims.get("jti")), (SUBJECT, claims.get("sub"))):
            if not isinstance(value, str):
                continue
            revocation = self._by.get((kind, value))
            if revocation is None:
                continue
            if revocation.until <= now:
                del self._by[(kind, value)]
            elif revocation.covers(claims):
                return True
        return False

    def _forget_ended(self, now: float) -> None:
        self._by = {key: each for key, each in self._by.items() if each.until > now}
