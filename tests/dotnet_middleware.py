"""A stand-in of EasyWebSocketProxy's sample "Middleware" forwarder, to run clients against.

The .NET sample is an ASP.NET Core app whose ``WebSocketController`` (Middleware/
Controllers/WebSocketController.cs) relays every message of a connection to the other
sessions of its group. This module does the same in Trio, quirks included, so the
Python client can be tested against what .NET users run::

    async with open_middleware() as middleware:
        url = f"{middleware.url}?id={uuid.uuid4()}&groupName=group_1"
        ...  # connect clients; middleware.groups, .aborted, .wait_until(...)

What it reproduces, with where each comes from (``Controller`` is
WebSocketController.cs, ``Program`` Middleware/Program.cs, ``ASP.NET`` the framework's
routing and WebSocket middleware):

| behaviour | source |
| --- | --- |
| ``[Route("/ws")]``: any case, a trailing slash allowed; other paths 404 | Controller; ASP.NET |
| not a WebSocket request (a plain GET, a version other than 13): 400, empty body | Controller |
| the upgrade (101) comes first; then a missing or empty ``id``/``groupName`` ends it | Controller |
| ``new Guid(id)`` (D, N, B or P format, any case): else aborted after the 101 | Controller |
| query keys case-insensitive; a repeated key's values joined with ``,`` | ASP.NET |
| sessions keyed by the Guid: the same id twice shares one session and its queue, and | Controller |
| each queued message goes to whichever of the two takes it first; both stay open | |
| a message goes to every session of the group whose id differs, text stays text | Controller |
| queues are unbounded; a message dequeued for a socket no longer open is lost | Controller |
| a closing connection removes its session (the shared one too); an empty group goes | Controller |
| a client's close frame is never answered: the socket is disposed (TCP closed) | Controller |
| pings answered; keepalive as unsolicited pongs every 120 s | Program; ASP.NET |

Not reproduced: HTTPS redirection (the sample listens on wss://localhost:7298 and
redirects plain HTTP), Razor pages on the other paths, the races of its unlocked
``List`` and of its busy-polling sender (which may also crash the process when a send
fails), the Guid ``X`` format.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import math
import re
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import NoReturn

import attrs
import trio

from wsraw import OP_CLOSE, OP_PING, OP_PONG, Fragments, FrameFault, mask_frame, read_frame

#: The sample's WebSocketOptions.KeepAliveInterval.
KEEPALIVE = 120.0
_GUID_FORMATS = (
    re.compile(r"([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})", re.I),
    re.compile(r"([0-9a-f]{32})", re.I),
    re.compile(r"\{([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})\}", re.I),
    re.compile(r"\(([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})\)", re.I),
)


def parse_guid(text: str) -> uuid.UUID | None:
    """``new Guid(text)``: D, N, B or P format, any case, surrounding spaces trimmed;
    None where .NET throws FormatException."""
    trimmed = text.strip()
    for pattern in _GUID_FORMATS:
        match = pattern.fullmatch(trimmed)
        if match:
            return uuid.UUID("".join(match.groups()))
    return None


def server_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked final frame (ManagedWebSocket sends each message as one)."""
    return mask_frame(opcode, payload, masked=False)


@attrs.define(eq=False)
class Session:
    """A ``WebSocketSession``: an id and a queue, shared by connections of that id."""

    id: uuid.UUID
    queue_in: trio.MemorySendChannel[tuple[int, bytes]]
    queue_out: trio.MemoryReceiveChannel[tuple[int, bytes]]

    @classmethod
    def new(cls, session_id: uuid.UUID) -> Session:
        send, receive = trio.open_memory_channel[tuple[int, bytes]](math.inf)
        return cls(session_id, send, receive)


class Closed(Exception):
    """The connection ended: EOF, a close frame, a protocol error."""


@attrs.define(eq=False)
class ServerSocket:
    """The server's end of one connection: an HTTP head, then WebSocket frames.

    Tests that script a server (send a close, a ping, refuse the next connection) use it
    through :func:`accept_websocket`."""

    stream: trio.SocketStream
    buffer: bytearray = attrs.Factory(bytearray)
    lock: trio.Lock = attrs.Factory(trio.Lock)
    open: bool = True

    async def write(self, data: bytes) -> None:
        async with self.lock:
            await self.stream.send_all(data)

    async def _need(self, n: int) -> None:
        while len(self.buffer) < n:
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise Closed(repr(exc)) from exc
            if not data:
                raise Closed("EOF")
            self.buffer += data

    async def read_head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > 65536:
                raise Closed("request head too long")
            await self._need(len(self.buffer) + 1)
        end = self.buffer.index(b"\r\n\r\n") + 4
        head = bytes(self.buffer[:end])
        del self.buffer[:end]
        return head

    async def _fail(self, code: int, why: str) -> NoReturn:
        self.open = False
        try:
            await self.write(server_frame(OP_CLOSE, code.to_bytes(2, "big")))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        raise Closed(why)

    async def send(self, opcode: int, payload: bytes) -> None:
        """One unmasked frame."""
        await self.write(server_frame(opcode, payload))

    async def frame(self) -> tuple[bool, int, bytes]:
        """The next client frame, unmasked: ``(fin, opcode, payload)``; raises :class:`Closed`
        at EOF, and for a frame a client must not send."""
        await self._need(2)
        if not self.buffer[1] & 0x80:  # (judged before its payload is awaited)
            await self._fail(1002, "an unmasked client frame")
        b0, _b1, payload = await read_frame(self.buffer, self._need, masked=True)
        n = len(payload)
        if b0 & 0x70 or b0 & 0x0F not in (0, 1, 2, 8, 9, 10):
            await self._fail(1002, "reserved bits or an unknown opcode")
        if b0 & 0x08 and (n > 125 or not b0 & 0x80):
            await self._fail(1002, "a control frame fragmented or over 125 bytes")
        return bool(b0 & 0x80), b0 & 0x0F, payload

    async def message(self) -> tuple[int, bytes]:
        """The next whole data message; pings answered; raises :class:`Closed` at a close."""
        fragments = Fragments()
        while True:
            fin, op, payload = await self.frame()
            if op == OP_PING:
                await self.write(server_frame(OP_PONG, payload))
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                self.open = False  # CloseReceived; nobody answers it
                raise Closed("close frame")
            try:
                whole = fragments.add(op, fin, payload)
            except FrameFault as fault:
                await self._fail(fault.code, fault.why)
            if whole is not None:
                return whole


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept answering ``key``."""
    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    return base64.b64encode(digest).decode()


async def read_request(sock: ServerSocket) -> tuple[str, str, dict[str, str]]:
    """The request line's method and target, and the headers (names lower-cased)."""
    lines = (await sock.read_head()).decode("latin-1").split("\r\n")
    method, target = [*lines[0].split(" "), "", ""][:2]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


async def accept_websocket(stream: trio.SocketStream) -> tuple[ServerSocket, str]:
    """Upgrade whatever asks (101), for scripted servers: the socket and the request target."""
    sock = ServerSocket(stream)
    _method, target, headers = await read_request(sock)
    await sock.write(
        (
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            f"Sec-WebSocket-Accept: {accept_key(headers.get('sec-websocket-key', ''))}\r\n\r\n"
        ).encode()
    )
    return sock, target


@attrs.define(eq=False)
class Middleware:
    """The forwarder's state: ``groups`` maps a group name to its sessions (in join order)."""

    port: int = 0
    keepalive: float | None = KEEPALIVE
    groups: dict[str, list[Session]] = attrs.Factory(dict)
    #: Upgraded connections ended at once, with why: (request target, reason).
    aborted: list[tuple[str, str]] = attrs.Factory(list)
    #: Requests answered without an upgrade: (request target, status).
    refused: list[tuple[str, int]] = attrs.Factory(list)
    #: Connections that joined a group, in order: (group, id).
    joined: list[tuple[str, uuid.UUID]] = attrs.Factory(list)
    _changed: trio.Event = attrs.Factory(trio.Event)

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT/ws``, to which a query with ``id`` and ``groupName`` is added."""
        return f"ws://127.0.0.1:{self.port}/ws"

    def _note(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds (checked after every change)."""
        while not predicate():
            await self._changed.wait()

    async def handle(self, stream: trio.SocketStream) -> None:
        """One TCP connection: one HTTP request, and the WebSocket if it upgrades."""
        conn = ServerSocket(stream)
        try:
            await self._serve(conn)
        except Closed:
            pass
        finally:
            conn.open = False
            await trio.aclose_forcefully(stream)  # disposed: no close frame, ever
            self._note()

    async def _answer(self, conn: ServerSocket, target: str, status: int, reason: str) -> None:
        self.refused.append((target, status))
        await conn.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )

    async def _serve(self, conn: ServerSocket) -> None:
        method, target, headers = await read_request(conn)
        path, _, query = target.partition("?")
        # Attribute routing: case-insensitive, an optional trailing slash.
        if urllib.parse.unquote(path).lower() not in ("/ws", "/ws/"):
            await self._answer(conn, target, 404, "Not Found")
            return
        key = headers.get("sec-websocket-key", "")
        try:
            key_ok = len(base64.b64decode(key, validate=True)) == 16
        except binascii.Error:
            key_ok = False
        if not (
            method == "GET"
            and headers.get("upgrade", "").lower() == "websocket"
            and "upgrade" in [t.strip().lower() for t in headers.get("connection", "").split(",")]
            and headers.get("sec-websocket-version") == "13"
            and key_ok
        ):
            await self._answer(conn, target, 400, "Bad Request")
            return
        await conn.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                f"Upgrade: websocket\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
            ).encode()
        )
        values: dict[str, list[str]] = {}
        for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
            values.setdefault(name.lower(), []).append(value)
        id_text = ",".join(values.get("id", []))
        group = ",".join(values.get("groupname", []))
        if not id_text or not group:
            self.aborted.append((target, "no id or groupName"))
            return
        session_id = parse_guid(id_text)
        if session_id is None:
            # `new Guid(idString)` throws after the 101: the socket is disposed, aborted.
            self.aborted.append((target, f"FormatException: {id_text!r} is not a Guid"))
            return
        await self._forward(conn, group, session_id)

    async def _forward(self, conn: ServerSocket, group: str, session_id: uuid.UUID) -> None:
        sessions = self.groups.setdefault(group, [])
        session = next((s for s in sessions if s.id == session_id), None)
        if session is None:
            session = Session.new(session_id)
            sessions.append(session)
        self.joined.append((group, session_id))
        self._note()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_loop, conn, session)
                if self.keepalive is not None:
                    nursery.start_soon(self._keep_alive, conn, self.keepalive)
                try:
                    while conn.open:
                        opcode, data = await conn.message()
                        members = self.groups.get(group)
                        if members is None:
                            continue  # KeyNotFoundException, caught and ignored
                        for other in members:
                            if other.id != session_id:
                                other.queue_in.send_nowait((opcode, data))
                except Closed:
                    pass
                finally:
                    conn.open = False
                    nursery.cancel_scope.cancel()
        finally:
            members = self.groups.get(group)
            if members is not None:
                if session in members:
                    members.remove(session)
                if not members:
                    del self.groups[group]

    async def _send_loop(self, conn: ServerSocket, session: Session) -> None:
        async for opcode, data in session.queue_out:
            if conn.open:  # dequeued either way: a message for a closing socket is lost
                try:
                    await conn.write(server_frame(opcode, data))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    conn.open = False

    async def _keep_alive(self, conn: ServerSocket, interval: float) -> None:
        while conn.open:
            await trio.sleep(interval)
            try:
                await conn.write(server_frame(OP_PONG, b""))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return


@asynccontextmanager
async def open_middleware(
    *, port: int = 0, keepalive: float | None = KEEPALIVE
) -> AsyncIterator[Middleware]:
    """Serve a :class:`Middleware` on 127.0.0.1 for the duration of a block."""
    middleware = Middleware(port=port, keepalive=keepalive)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, middleware.handle, port, host="127.0.0.1")
        )
        middleware.port = listeners[0].socket.getsockname()[1]
        try:
            yield middleware
        finally:
            nursery.cancel_scope.cancel()
