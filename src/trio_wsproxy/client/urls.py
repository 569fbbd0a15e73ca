"""Relay URLs, decided without I/O: the full URL a member joins with, the address a URL
names, and which URL to try next.

A member given several relay URLs (nodes of one cluster) joins with one id and group on
all of them, and after losing a connection tries the others in turn, starting with the
one after the URL it lost — see :func:`round_order`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs

__all__ = ["RelayAddress", "connection_url", "connection_urls", "relay_address", "round_order"]


def connection_url(
    url: str, *, group: str | None = None, id: str | None = None
) -> tuple[str, str, str]:
    """Return ``(full_url, id, group)`` for joining a group.

    ``url`` is either the .NET style, with ``id`` and ``groupName`` already in its query,
    or a base URL (``ws://127.0.0.1:8765/ws``) completed by ``group`` and ``id``; a missing
    id becomes a fresh UUID4. Giving a group or id both ways, differently, is an error.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"the relay URL must start with ws:// or wss://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"the relay URL has no host: {url!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    in_url = {key: value for key, value in query if key in ("id", "groupName") and value}
    for keyword, key, given in (("group", "groupName", group), ("id", "id", id)):
        if given is not None and key in in_url and in_url[key] != given:
            raise ValueError(
                f"{keyword}={given!r} contradicts {key}={in_url[key]!r} in the URL; give it once"
            )
    final_group = group or in_url.get("groupName")
    if not final_group:
        raise ValueError("no group to join: pass group=... or put groupName=... in the URL")
    final_id = id or in_url.get("id") or str(uuid.uuid4())
    rest = [(key, value) for key, value in query if key not in ("id", "groupName")]
    full_query = urlencode([("id", final_id), ("groupName", final_group), *rest])
    return urlunsplit(parts._replace(query=full_query)), final_id, final_group


def connection_urls(
    urls: str | Sequence[str], *, group: str | None = None, id: str | None = None
) -> tuple[tuple[str, ...], str, str]:
    """Return ``(full_urls, id, group)`` for joining one group through any of several relays.

    Each URL is completed as by :func:`connection_url`, all with the same id and group: a
    member keeps one id on every relay, so that a relay cluster's "newest connection with
    the same id wins" rule retires its stale connection on a node it left. An id or
    groupName in one URL's query applies to all of them; two URLs that name different ones
    are an error. A single ``str`` is one URL.
    """
    given = (urls,) if isinstance(urls, str) else tuple(urls)
    if not given:
        raise ValueError("no relay URL given")
    agreed = {"id": id, "groupName": group}
    for key in agreed:
        named: dict[str, str] = {}  # value -> the first URL naming it
        for url in given:
            value = _query_value(url, key)
            if value:
                named.setdefault(value, url)
        if len(named) > 1:
            each = "; ".join(f"{key}={value!r} in {url!r}" for value, url in named.items())
            raise ValueError(
                f"the relay URLs name different {key}s ({each}): "
                f"a member has one {key} on every relay"
            )
        if agreed[key] is None and named:
            agreed[key] = next(iter(named))
    # One id for all, drawn here: connection_url would draw a fresh one per URL.
    member_id = agreed["id"] or str(uuid.uuid4())
    completed = []
    for url in given:
        try:
            completed.append(connection_url(url, group=agreed["groupName"], id=member_id))
        except ValueError as error:
            if len(given) == 1:
                raise
            raise ValueError(f"relay URL {url!r}: {error}") from None
    return tuple(full for full, _, _ in completed), member_id, completed[0][2]


def with_query(url: str, key: str, value: str) -> str:
    """``url`` with ``key`` set to ``value`` in its query (replacing any it had)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != key]
    return urlunsplit(parts._replace(query=urlencode([*query, (key, value)])))


def _query_value(url: str, key: str) -> str | None:
    """The value ``url``'s query gives ``key`` (the last one, as :func:`connection_url` reads)."""
    values = [value for name, value in parse_qsl(urlsplit(url).query) if name == key]
    return values[-1] if values else None


def round_order(count: int, current: int | None) -> tuple[int, ...]:
    """The indexes of ``count`` relay URLs in the order one round of attempts tries them.

    The first round (``current`` None) goes in the order given. Later rounds start with
    the URL *after* ``current``, the one just lost, and end with it: a member fails over
    to a live node rather than knocking at the dead one first.
    """
    if current is None:
        return tuple(range(count))
    return tuple((current + step) % count for step in range(1, count + 1))


@attrs.frozen
class RelayAddress:
    """Where a relay URL points, as the TCP, TLS and WebSocket handshakes need it."""

    #: Host name or address to connect to (and to check the certificate against).
    host: str
    #: TCP port: the URL's, else 443 for ``wss`` and 80 for ``ws``.
    port: int
    #: Whether the connection needs TLS (``wss``).
    secure: bool
    #: The upgrade request's target: path and query.
    resource: str
    #: The ``Host`` header: the URL's authority without user info.
    authority: str


def relay_address(url: str) -> RelayAddress:
    """The address of the relay ``url`` names (a URL completed by :func:`connection_url`).

    Raises :exc:`ValueError` for a URL without a host or with a malformed port.
    """
    parts = urlsplit(url)
    if parts.hostname is None:
        raise ValueError(f"the relay URL has no host: {url!r}")
    secure = parts.scheme == "wss"
    return RelayAddress(
        host=parts.hostname,
        port=parts.port or (443 if secure else 80),
        secure=secure,
        resource=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
        authority=parts.netloc.rpartition("@")[2],
    )
