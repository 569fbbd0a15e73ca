"""Sans-I/O handshake: turn the bytes of an HTTP upgrade request into a decision.

The relay accepts a connection only after the whole request head is read and checked,
so every refusal is an ordinary HTTP response with a one-line plain-text reason, sent
before any WebSocket frame exists.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import attrs

# RFC 6455 §1.3: the fixed GUID the server appends to the client's key.
_WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_HEAD_END = b"\r\n\r\n"


@attrs.frozen
class Join:
    """A valid upgrade: who joins which group, and the 101 response to send if admitted."""

    id: str
    group: str
    response: bytes
    #: The access token from ``?access_token=`` or ``Authorization: Bearer``, if any.
    token: str | None = attrs.field(default=None, repr=False)
    #: The ``Origin`` header (browsers send it), if any.
    origin: str | None = None
    #: The subprotocol selected from the client's ``Sec-WebSocket-Protocol`` offer (and
    #: named in ``response``), or None: the plain protocol of the wire contract.
    subprotocol: str | None = None


@attrs.frozen
class Refusal:
    """A refused request: its HTTP status, the reason, and the whole response to send."""

    status: int
    reason: str
    response: bytes
    #: A short label for metrics and logs (``bad_request``, ``token_expired``, ...).
    kind: str


@attrs.frozen
class Probe:
    """A plain GET of one of the relay's own HTTP endpoints (health, metrics)."""

    path: str


@attrs.frozen
class Limits:
    """What the handshake checks besides the protocol itself."""

    path: str = "/ws"
    #: Paths answered as plain HTTP (health, metrics) instead of being refused.
    probes: frozenset[str] = frozenset()
    max_id_length: int = 256
    max_group_length: int = 256
    max_head_size: int = 16384
    #: Subprotocols the relay speaks, by ``Sec-WebSocket-Protocol`` name. A client that
    #: offers none of them gets the plain protocol (RFC 6455 §4.2.2: no header in the 101).
    subprotocols: frozenset[str] = frozenset()


def head_complete(buffer: bytes | bytearray, limits: Limits) -> bool | Refusal:
    """Whether ``buffer`` holds a whole request head (True), needs more bytes (False),
    or has grown past the size limit without ending (a Refusal)."""
    if buffer.find(_HEAD_END, 0, limits.max_head_size + len(_HEAD_END)) >= 0:
        return True
    if len(buffer) > limits.max_head_size:
        return refuse(
            HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
            f"request head longer than {limits.max_head_size} bytes",
            kind="head_too_large",
        )
    return False


def refuse(
    status: int,
    reason: str,
    extra_headers: tuple[tuple[str, str], ...] = (),
    *,
    kind: str | None = None,
) -> Refusal:
    """Build a refusal whose body is ``reason`` on one line of plain text; ``kind``
    defaults to the status's name (``bad_request``, ``not_found``, ...)."""
    body = (reason + "\n").encode()
    phrase = HTTPStatus(status).phrase
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in extra_headers),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    label = kind or HTTPStatus(status).name.lower()
    return Refusal(status=status, reason=reason, response=head + body, kind=label)


def respond(status: int, body: bytes, content_type: str) -> bytes:
    """A complete plain HTTP response that closes the connection."""
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def accept_token(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a client's ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1(key.encode("ascii") + _WEBSOCKET_GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def decide(head: bytes, limits: Limits) -> Join | Refusal | Probe:
    """Check a complete request head (up to and including the blank line).

    Returns the Join to upgrade with, or the Refusal to answer with. Never raises on
    bad input: every malformed request becomes a 400.
    """
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        return refuse(HTTPStatus.BAD_REQUEST, "request head is not text")
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return refuse(HTTPStatus.BAD_REQUEST, "not an HTTP/1.1 request")
    method, target, _version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            break
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            return refuse(HTTPStatus.BAD_REQUEST, "malformed header line")
        key = name.lower()
        value = value.strip()
        # Repeated headers combine with commas (RFC 9110 §5.3).
        headers[key] = f"{headers[key]}, {value}" if key in headers else value

    try:
        url = urlsplit(target)
    except ValueError:
        return refuse(HTTPStatus.BAD_REQUEST, "malformed request target")
    if url.path in limits.probes and method in ("GET", "HEAD"):
        return Probe(url.path)
    if url.path != limits.path:
        return refuse(HTTPStatus.NOT_FOUND, f"no such path: use {limits.path}")
    if method != "GET":
        return refuse(HTTPStatus.METHOD_NOT_ALLOWED, "only GET upgrades to a WebSocket")

    upgrade = {token.strip().lower() for token in headers.get("upgrade", "").split(",")}
    connection = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    if "websocket" not in upgrade or "upgrade" not in connection:
        return refuse(
            HTTPStatus.UPGRADE_REQUIRED,
            "this endpoint speaks WebSocket only: send Upgrade: websocket",
            (("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")),
        )
    if headers.get("sec-websocket-version") != "13":
        return refuse(
            HTTPStatus.UPGRADE_REQUIRED,
            "unsupported WebSocket version: use 13",
            (("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")),
        )
    key = headers.get("sec-websocket-key", "")
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid_key = False
    if not valid_key:
        return refuse(HTTPStatus.BAD_REQUEST, "missing or malformed Sec-WebSocket-Key")

    query = parse_qs(url.query, keep_blank_values=True)
    member_id = _single(query, "id", limits.max_id_length)
    if isinstance(member_id, Refusal):
        return member_id
    group = _single(query, "groupName", limits.max_group_length)
    if isinstance(group, Refusal):
        return group

    token = query.get("access_token", [""])[0] or None
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        token = credentials.strip()
    subprotocol = select_subprotocol(headers.get("sec-websocket-protocol", ""), limits)
    selected = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
    response = (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_token(key)}\r\n"
        f"{selected}\r\n"
    ).encode("ascii")
    return Join(
        id=member_id,
        group=group,
        response=response,
        token=token,
        origin=headers.get("origin"),
        subprotocol=subprotocol,
    )


def select_subprotocol(offer: str, limits: Limits) -> str | None:
    """The first subprotocol in a client's ``Sec-WebSocket-Protocol`` offer (a comma
    list, repeated headers already joined) that the relay speaks; None declines them
    all, and the client gets the plain protocol."""
    for token in offer.split(","):
        name = token.strip()
        if name in limits.subprotocols:
            return name
    return None


def _single(query: dict[str, list[str]], name: str, max_length: int) -> str | Refusal:
    values = query.get(name)
    if not values or not values[0]:
        return refuse(HTTPStatus.BAD_REQUEST, f"missing query parameter {name!r}")
    if len(values) > 1:
        return refuse(HTTPStatus.BAD_REQUEST, f"query parameter {name!r} given more than once")
    value = values[0]
    if len(value) > max_length:
        return refuse(
            HTTPStatus.BAD_REQUEST, f"query parameter {name!r} longer than {max_length} characters"
        )
    if not value.isprintable():
        return refuse(HTTPStatus.BAD_REQUEST, f"query parameter {name!r} has control characters")
    return value
