"""Sans-I/O handshake: turn the bytes of an HTTP upgrade request into a decision.

The relay accepts a connection only after the whole request head is read and checked,
so every refusal is an ordinary HTTP response with a one-line plain-text reason, sent
before any WebSocket frame exists.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import attrs

from . import deflate, v1

# RFC 6455 §1.3: the fixed GUID the server appends to the client's key.
_WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_HEAD_END = b"\r\n\r\n"
# HTTP-version (RFC 9112 §2.3): exactly "HTTP/" DIGIT "." DIGIT.
_HTTP_VERSION = re.compile(r"HTTP/[0-9]\.[0-9]")
# A WebSocket upgrade needs HTTP/1.1 (RFC 6455 §4.1). A plain GET or HEAD of a probe
# may also be HTTP/1.0: health checkers still send it (HAProxy's httpchk by default),
# and a 1.1 response that closes the connection is one a 1.0 client reads.
_UPGRADE_VERSION = "HTTP/1.1"
_PROBE_VERSIONS = frozenset({"HTTP/1.0", "HTTP/1.1"})


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
    #: The position a reconnecting v1 member names (``?since=EPOCH:OFFSET``), to get
    #: what it missed; None: it names none (ignored for a plain member).
    since: v1.Position | None = None
    #: The request's headers, by lower-cased name (repeated ones joined with commas):
    #: what the back end's connect hook may be shown of them (its allow-list).
    headers: Mapping[str, str] = attrs.field(factory=dict, eq=False, repr=False)
    #: permessage-deflate as agreed (and answered in ``response``), or None: the
    #: client offered none the relay could honour, or compression is off.
    deflate: deflate.Agreement | None = None


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
    """A plain GET or HEAD of one of the relay's own HTTP endpoints (health, metrics)."""

    path: str
    #: A HEAD request: answer with the head GET would get and no body
    #: (:func:`probe_response`).
    head_only: bool = False


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
    #: Whether permessage-deflate is negotiated with clients that offer it.
    compression: bool = False


def head_complete(buffer: bytes | bytearray, limits: Limits) -> bool | Refusal:
    """Whether ``buffer`` holds a whole request head (True), needs more bytes (False),
    or cannot end within the size limit (a Refusal).

    ``max_head_size`` counts the whole head, its closing blank line included: a head of
    exactly that many bytes is complete, one byte more is refused (431)."""
    # The first blank line must end within the limit; bytes after it (the first frames,
    # sent without waiting for the 101) do not count.
    if buffer.find(_HEAD_END, 0, limits.max_head_size) >= 0:
        return True
    if len(buffer) >= limits.max_head_size:
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


def respond(status: int, body: bytes, content_type: str, *, head_only: bool = False) -> bytes:
    """A complete plain HTTP response that closes the connection.

    With ``head_only`` (the answer to a HEAD request, RFC 9110 §9.3.2) the headers are
    those of the full response, ``Content-Length`` included, and the body is left out."""
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + (b"" if head_only else body)


def probe_response(probe: Probe, status: int, body: bytes, content_type: str) -> bytes:
    """The response to ``probe``: :func:`respond`, without the body for a HEAD."""
    return respond(status, body, content_type, head_only=probe.head_only)


def accept_token(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a client's ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1(key.encode("ascii") + _WEBSOCKET_GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def decide(head: bytes, limits: Limits) -> Join | Refusal | Probe:
    """Check a complete request head (up to and including the blank line).

    Returns the Join to upgrade with, the Probe to answer, or the Refusal to answer
    with. Never raises on bad input: every malformed request becomes a 400. The rules:

    - The request line is ``METHOD SP TARGET SP HTTP/1.1``. An upgrade needs exactly
      HTTP/1.1; a GET or HEAD of a probe path may also say HTTP/1.0. Any other version
      (``HTTP/1.0`` upgrades, ``HTTP/1.9``, ``HTTP/2.0``) or a malformed one
      (``HTTP/1.1junk``) is refused with 400.
    - The target holds no control character (C0, DEL): one is refused with 400, never
      dropped (``a<TAB>b`` is not the id ``ab``).
    - The query is UTF-8. A raw non-ASCII byte in the target means what its
      percent-encoding means, so ``?id=é`` sent raw and ``?id=%C3%A9`` name one id; a
      query that does not decode as UTF-8, raw or percent-encoded (``%FE``), is refused
      with 400 rather than decoded lossily (``%FE`` and ``%FF`` would both be U+FFFD and
      name one id). ``+`` is a space, as in HTML forms.
    - ``id`` and ``groupName`` are given once each, non-empty, printable and at most
      ``max_id_length`` / ``max_group_length`` characters long.
    - A HEAD request gets no body: a HEAD of a probe is a Probe with ``head_only``
      (answer it with :func:`probe_response`), and a refusal of a HEAD request comes
      without its reason's body (the reason is still in :attr:`Refusal.reason`).
    """
    decision = _decide(head, limits)
    if isinstance(decision, Refusal) and head.startswith(b"HEAD "):
        # A response to HEAD has no body (RFC 9110 §9.3.2), a refusal included.
        end = decision.response.index(_HEAD_END) + len(_HEAD_END)
        return attrs.evolve(decision, response=decision.response[:end])
    return decision


def _decide(head: bytes, limits: Limits) -> Join | Refusal | Probe:
    # latin-1 maps each byte to one character and back: nothing is lost here.
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _HTTP_VERSION.fullmatch(parts[2]):
        return refuse(HTTPStatus.BAD_REQUEST, "not an HTTP/1.1 request")
    method, target, version = parts
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

    raw_target = target.encode("latin-1")
    if any(byte < 0x20 or byte == 0x7F for byte in raw_target):
        return refuse(HTTPStatus.BAD_REQUEST, "control character in the request target")
    try:
        url = urlsplit(_percent_encode_non_ascii(raw_target))
    except ValueError:
        return refuse(HTTPStatus.BAD_REQUEST, "malformed request target")
    if url.path in limits.probes and method in ("GET", "HEAD") and version in _PROBE_VERSIONS:
        return Probe(url.path, head_only=method == "HEAD")
    if version != _UPGRADE_VERSION:
        return refuse(
            HTTPStatus.BAD_REQUEST, f"{version} not supported: a WebSocket upgrade needs HTTP/1.1"
        )
    if not same_endpoint(url.path, limits.path):
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

    try:
        query = parse_qs(url.query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        return refuse(HTTPStatus.BAD_REQUEST, "query is not UTF-8")
    member_id = _single(query, "id", limits.max_id_length)
    if isinstance(member_id, Refusal):
        return member_id
    group = _single(query, "groupName", limits.max_group_length)
    if isinstance(group, Refusal):
        return group

    since = None
    if "since" in query:
        given = _single(query, "since", limits.max_id_length)
        if isinstance(given, Refusal):
            return given
        try:
            since = v1.Position.parse(given)
        except v1.V1Error as exc:
            return refuse(HTTPStatus.BAD_REQUEST, f"query parameter 'since': {exc}")

    token = query.get("access_token", [""])[0] or None
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        token = credentials.strip()
    subprotocol = select_subprotocol(headers.get("sec-websocket-protocol", ""), limits)
    selected = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
    agreement = None
    if limits.compression and "sec-websocket-extensions" in headers:
        agreement = deflate.negotiate(headers["sec-websocket-extensions"])
        if agreement is not None:
            selected += f"Sec-WebSocket-Extensions: {agreement.response}\r\n"
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
        since=since if subprotocol == v1.SUBPROTOCOL else None,
        headers=headers,
        deflate=agreement,
    )


def same_endpoint(path: str, endpoint: str) -> bool:
    """Whether a request for ``path`` is one for the WebSocket ``endpoint``, matched as
    ASP.NET Core routing matches the .NET Middleware's ``/ws``: ignoring case, and with or
    without one trailing slash (``/WS`` and ``/ws/`` are ``/ws``). A .NET client that
    works against the Middleware works here unchanged."""
    return _route_key(path) == _route_key(endpoint)


def _route_key(path: str) -> str:
    # (str.lower, not casefold: ASP.NET compares ordinally ignoring case; "/" stays "/".)
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return path.lower()


def select_subprotocol(offer: str, limits: Limits) -> str | None:
    """The first subprotocol in a client's ``Sec-WebSocket-Protocol`` offer (a comma
    list, repeated headers already joined) that the relay speaks; None declines them
    all, and the client gets the plain protocol."""
    for token in offer.split(","):
        name = token.strip()
        if name in limits.subprotocols:
            return name
    return None


def _percent_encode_non_ascii(raw: bytes) -> str:
    """``raw`` with each non-ASCII byte percent-encoded: the bytes a client sent raw
    then decode (as UTF-8) exactly like the same bytes sent percent-encoded."""
    return "".join(chr(byte) if byte < 0x80 else f"%{byte:02X}" for byte in raw)


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
