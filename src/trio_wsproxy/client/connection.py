"""One connection to a relay, from TCP connect to close: the I/O.

:func:`connect_and_serve` opens it (TCP, TLS for ``wss``, the WebSocket upgrade), hands
the :class:`WebSocket` to the connection task, and closes it; :func:`serve_frames` reads
it, with client pings (:func:`keep_alive`) if configured. Failures to connect come out as
:exc:`~.errors.ConnectError` (:exc:`~.errors.HandshakeRefused` for an HTTP refusal).

The WebSocket is wsproto's (the sans-I/O engine trio-websocket runs on) driven directly:
it hands a binary message over as its data arrives (:class:`BinaryPiece`), so that the client
can stream one of any size with flat memory (:mod:`.streams`), and it costs no task or
channel per message. A message that arrives in one piece — nearly every message — comes
whole, as ``str`` or ``bytes``; text is always assembled (up to ``max_message_size``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
from collections.abc import Awaitable, Callable

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ..protocol.close_codes import CloseCode
from ..protocol.exceptions import leaves
from ..protocol.v1 import SUBPROTOCOL
from .config import ClientConfig
from .errors import ConnectError, HandshakeRefused
from .urls import RelayAddress, relay_address

__all__ = [
    "BinaryPiece",
    "Closed",
    "ConnectionEnded",
    "WebSocket",
    "connect_and_serve",
    "keep_alive",
    "open_websocket",
    "serve_frames",
]

logger = logging.getLogger("trio_wsproxy.client")

#: How a connection ended: the close code (1006 without a close frame) and the reason.
Closed = tuple[int, str | None]

# A refusal's body is read up to this many bytes (its first line is the reason).
_MAX_REFUSAL_BODY = 64 * 1024


class ConnectionEnded(Exception):
    """The connection is over: nothing more can be sent or received on it."""

    def __init__(self, code: int, reason: str | None) -> None:
        super().__init__(f"connection closed: code {code}{f' ({reason})' if reason else ''}")
        self.code = code
        self.reason = reason


@attrs.frozen(slots=True)
class BinaryPiece:
    """Part of a binary message that did not arrive whole: its data as it came."""

    data: bytes
    #: Whether it starts the message ...
    first: bool
    #: ... and whether it ends it.
    last: bool


#: What :meth:`WebSocket.receive` hands over: a whole message, or a piece of a binary one.
Received = str | bytes | BinaryPiece


class WebSocket:
    """A client WebSocket on an open ``stream`` whose upgrade ``ws`` has completed.

    One task reads (:meth:`receive`); any task may send. A data message is written whole
    (:meth:`send_message`), or piece by piece (:meth:`send_piece`) by a task holding
    :attr:`message_lock` for the whole message; control frames (pongs, pings, the close
    frame) may go between its pieces, as RFC 6455 allows.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        ws: WSConnection,
        *,
        subprotocol: str | None,
        receive_buffer_size: int,
        max_message_size: int | None,
        compressed: bool = False,
    ) -> None:
        self._stream = stream
        self._ws = ws
        #: The subprotocol the relay selected (``"wsproxy.v1"``), or None: plain.
        self.subprotocol = subprotocol
        #: Whether the relay agreed to permessage-deflate (``ClientConfig.compression``).
        self.compressed = compressed
        self._receive_size = receive_buffer_size
        self._max_message_size = max_message_size
        self._write_lock = trio.StrictFIFOLock()
        #: Held by whoever writes a data message, for all its pieces.
        self.message_lock = trio.StrictFIFOLock()
        self._events = ws.events()
        self._text: list[str] = []
        self._text_size = 0
        self._in_binary = False
        self._pings: dict[bytes, trio.Event] = {}
        self._ping_count = 0
        self._dropped = False
        #: How the connection ended, once it has (set before :attr:`ended` is).
        self.closed: Closed | None = None
        #: Set when the connection has ended.
        self.ended = trio.Event()

    # -- receiving ----------------------------------------------------------------------

    async def receive(self) -> Received:
        """The next message, or piece of one; raises :exc:`ConnectionEnded` at the end
        (after answering the relay's close frame)."""
        while self.closed is None:
            for event in self._events:
                if isinstance(event, BytesMessage):
                    data = bytes(event.data)  # it is bytes already: no copy
                    first, self._in_binary = not self._in_binary, not event.message_finished
                    if first and event.message_finished:
                        return data  # the whole message at once: the usual case
                    return BinaryPiece(data, first, event.message_finished)
                if isinstance(event, TextMessage):
                    text = await self._take_text(event)
                    if text is not None:
                        return text
                elif isinstance(event, Ping):
                    await self._write_control(event.response())
                elif isinstance(event, Pong):
                    waiter = self._pings.pop(bytes(event.payload), None)
                    if waiter is not None:
                        waiter.set()
                elif isinstance(event, CloseConnection):
                    if self._ws.state is ConnectionState.OPEN:
                        # Not the relay's close: wsproto found the relay's frames broken
                        # (it reports its own parse failure as a close event, 1002 or
                        # 1007, with the connection still open). Fail it with that code.
                        logger.warning("the relay broke the WebSocket protocol: %s", event.reason)
                        await self.close_with(event.code, (event.reason or "")[:120])
                        break
                    if self._ws.state is ConnectionState.REMOTE_CLOSING:
                        await self._write_control(event.response())
                    self._end(event.code, event.reason)
                if self.closed is not None:
                    break
            else:
                await self._read_more()
        raise ConnectionEnded(*self.closed)

    async def _read_more(self) -> None:
        try:
            data = await self._stream.receive_some(self._receive_size)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        try:
            self._ws.receive_data(bytes(data) if data else None)
        except RemoteProtocolError as error:
            logger.warning("the relay broke the WebSocket protocol: %s", error)
            await self.close_with(CloseCode.PROTOCOL_ERROR, f"protocol error: {error}"[:120])
        except LocalProtocolError:
            self._end(1006, None)  # data after the connection was over
        self._events = self._ws.events()

    async def _take_text(self, event: TextMessage) -> str | None:
        # Text is always assembled, so its limit is checked here; a binary message's is
        # checked by the connection task, which alone knows whether it streams.
        self._text.append(event.data)
        self._text_size += len(event.data)
        if self._max_message_size is not None and self._text_size > self._max_message_size:
            self._text, self._text_size = [], 0
            await self.too_big()
            return None
        if not event.message_finished:
            return None
        text = self._text[0] if len(self._text) == 1 else "".join(self._text)
        self._text, self._text_size = [], 0
        return text

    async def too_big(self) -> None:
        """The relay sent a message over ``max_message_size``: close with 1009."""
        reason = f"message larger than {self._max_message_size} bytes"
        logger.warning("closing the connection: the relay sent a %s", reason)
        await self.close_with(CloseCode.MESSAGE_TOO_BIG, reason)

    async def close_with(self, code: int, reason: str) -> None:
        """End the connection now with ``code``: send the close frame and stop reading
        (the relay's answer is not waited for)."""
        await self._write_control(CloseConnection(code, reason))
        self._end(code, reason)

    # -- sending ------------------------------------------------------------------------

    async def send_message(self, payload: str | bytes) -> None:
        """Write one whole message: text for ``str``, binary for ``bytes``; raises
        :exc:`ConnectionEnded` if the connection is over, or ends while it is written."""
        async with self.message_lock:
            await self.write_message(payload)

    async def write_message(self, payload: str | bytes) -> None:
        """:meth:`send_message`, for a caller that holds :attr:`message_lock`."""
        message = TextMessage(payload) if isinstance(payload, str) else BytesMessage(payload)
        await self._write_data(message)

    async def send_piece(self, data: bytes, *, last: bool) -> None:
        """Write the next piece of a binary message; the caller holds :attr:`message_lock`
        for the whole message."""
        await self._write_data(BytesMessage(data, message_finished=last))

    async def _write_data(self, message: TextMessage | BytesMessage) -> None:
        if self.closed is not None or self._ws.state is not ConnectionState.OPEN:
            raise ConnectionEnded(*(self.closed or (1006, None)))
        await self._write(self._ws.send(message))

    async def _write(self, data: bytes) -> None:
        async with self._write_lock:
            if self._dropped:
                raise ConnectionEnded(*(self.closed or (1006, None)))
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._end(1006, None)
                raise ConnectionEnded(*(self.closed or (1006, None))) from None
            except BaseException:
                # Cancelled part-way: the stream may end inside a frame, so nothing
                # more can go on it.
                self.drop()
                raise

    async def _write_control(self, event: CloseConnection | Pong | Ping) -> None:
        """Write a control frame if the connection still takes one (best effort)."""
        try:
            data = self._ws.send(event)
        except LocalProtocolError:
            return
        try:
            await self._write(data)
        except ConnectionEnded:
            pass

    async def ping(self) -> None:
        """Ping the relay and wait for its pong (or for the connection to end: there is
        nothing left to keep alive then)."""
        self._ping_count += 1
        payload = self._ping_count.to_bytes(8, "big")
        answered = self._pings[payload] = trio.Event()
        if self.closed is not None:
            return
        try:
            await self._write_control(Ping(payload))
            await answered.wait()
        finally:
            self._pings.pop(payload, None)

    # -- closing ------------------------------------------------------------------------

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Send a close frame (if the connection is open) and wait for the relay's
        answer, which the task reading the connection reads."""
        if self._ws.state is ConnectionState.OPEN:
            await self._write_control(CloseConnection(code, reason))
        await self.ended.wait()

    async def close_unread(self) -> None:
        """:meth:`aclose`, once no task reads the connection any more: read the relay's
        answer here."""
        if self._ws.state is ConnectionState.OPEN:
            await self._write_control(CloseConnection(1000, None))
        with contextlib.suppress(ConnectionEnded):
            while True:
                await self.receive()

    def _end(self, code: int, reason: str | None) -> None:
        if self.closed is None:
            self.closed = (code, reason)
            self.ended.set()
            for waiter in self._pings.values():
                waiter.set()  # nothing to keep alive any more

    def drop(self) -> None:
        """End the connection at once, without a close handshake (it may be mid-frame):
        the socket is closed, which wakes the task reading it."""
        self._end(1006, None)
        if not self._dropped:
            self._dropped = True
            stream = self._stream
            if isinstance(stream, trio.SSLStream):
                stream = stream.transport_stream
            if isinstance(stream, trio.SocketStream):
                stream.socket.close()

    async def aclose_stream(self) -> None:
        """Close the underlying stream (after :meth:`aclose`, or instead of it)."""
        self._dropped = True
        self._end(1006, None)
        await trio.aclose_forcefully(self._stream)


async def connect_and_serve(
    url: str,
    *,
    config: ClientConfig,
    ssl_context: ssl.SSLContext | None,
    serve: Callable[[WebSocket], Awaitable[Closed]],
) -> Closed:
    """Connect to the relay at ``url``, run ``serve`` on the WebSocket, close it, and
    return how the connection ended (what ``serve`` returned)."""
    ws = await open_websocket(url, config=config, ssl_context=ssl_context)
    try:
        closed = await serve(ws)
    finally:
        # The relay still has to answer our close frame (if ours went first) and close
        # the TCP connection: give it close_timeout.
        if trio.current_effective_deadline() != -math.inf:  # not cancelled from outside
            with trio.move_on_after(config.close_timeout):
                await ws.close_unread()
        await ws.aclose_stream()
    return closed


async def open_websocket(
    url: str, *, config: ClientConfig, ssl_context: ssl.SSLContext | None
) -> WebSocket:
    """Open the stream to ``url`` and complete the WebSocket upgrade on it, within
    ``connect_timeout``. The upgrade offers ``wsproxy.v1`` (``config.offer_v1``);
    ``ws.subprotocol`` says whether the relay selected it."""
    address = relay_address(url)
    with trio.move_on_after(config.connect_timeout):
        stream = await _open_stream(url, address, ssl_context)
        try:
            return await _upgrade(stream, url, address, config)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    raise ConnectError(f"could not connect to {url} within {config.connect_timeout} s", url=url)


async def _upgrade(
    stream: trio.abc.Stream, url: str, address: RelayAddress, config: ClientConfig
) -> WebSocket:
    ws = WSConnection(ConnectionType.CLIENT)
    request = Request(
        host=address.authority,
        target=address.resource,
        subprotocols=[SUBPROTOCOL] if config.offer_v1 else [],
        extra_headers=[(name.encode(), value.encode()) for name, value in config.headers],
        extensions=[PerMessageDeflate()] if config.compression else [],
    )
    try:
        await stream.send_all(ws.send(request))
        refusal: RejectConnection | None = None
        body = bytearray()
        while True:
            data = await stream.receive_some(config.receive_buffer_size)
            if not data:
                raise ConnectError(f"{url} closed the connection during the upgrade", url=url)
            ws.receive_data(bytes(data))
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    return WebSocket(
                        stream,
                        ws,
                        subprotocol=event.subprotocol,
                        receive_buffer_size=config.receive_buffer_size,
                        max_message_size=config.max_message_size,
                        compressed=bool(event.extensions),
                    )
                if isinstance(event, RejectConnection):
                    refusal = event
                    if not event.has_body:
                        raise _refused(url, event, b"")
                elif isinstance(event, RejectData) and refusal is not None:
                    body += event.data[: _MAX_REFUSAL_BODY - len(body)]
                    if event.body_finished:
                        raise _refused(url, refusal, bytes(body))
    except trio.BrokenResourceError as error:
        raise ConnectError(f"{url} dropped the connection during the upgrade", url=url) from error
    except RemoteProtocolError as error:
        raise ConnectError(f"{url} answered the upgrade wrongly: {error}", url=url) from error


def _refused(url: str, refusal: RejectConnection, body: bytes) -> HandshakeRefused:
    text = body.decode("utf-8", "replace").strip()
    return HandshakeRefused(
        url=url, status_code=refusal.status_code, reason=text.splitlines()[0] if text else ""
    )


async def _open_stream(
    url: str, address: RelayAddress, ssl_context: ssl.SSLContext | None
) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    """The TCP stream to ``address``, TLS-wrapped and handshaken for ``wss``; every
    failure to get there is a :exc:`ConnectError` that says which step failed."""
    try:
        tcp = await trio.open_tcp_stream(address.host, address.port)
    except OSError as error:
        # trio says "all attempts ... failed" and keeps the reasons in the cause.
        reasons = sorted({str(leaf) for leaf in leaves(error.__cause__ or error)})
        raise ConnectError(f"could not connect to {url}: {'; '.join(reasons)}", url=url) from error
    if not address.secure:
        return tcp
    context = ssl_context or ssl.create_default_context()
    stream = trio.SSLStream(tcp, context, server_hostname=address.host, https_compatible=True)
    try:
        # Handshake now, so that a certificate problem is reported as one.
        await stream.do_handshake()
    except trio.BrokenResourceError as error:
        await trio.aclose_forcefully(tcp)
        reason = error.__cause__ or error
        raise ConnectError(f"TLS handshake with {url} failed: {reason}", url=url) from error
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return stream


async def serve_frames(
    ws: WebSocket,
    take: Callable[[Received], Awaitable[None]],
    *,
    url: str,
    ping_interval: float | None,
    ping_timeout: float,
) -> Closed:
    """Hand each message (or piece) ``ws`` receives to ``take`` until the connection
    ends, and return how it ended. With a ``ping_interval``, pings the relay too; a ping
    unanswered for ``ping_timeout`` drops the connection (code 1006)."""
    closed: Closed = (1006, "no answer to a ping within ping_timeout")
    async with trio.open_nursery() as nursery:
        if ping_interval is not None:
            nursery.start_soon(
                keep_alive, ws, nursery.cancel_scope, url, ping_interval, ping_timeout
            )
        closed = await read(ws, take)
        nursery.cancel_scope.cancel()
    return closed


async def read(ws: WebSocket, take: Callable[[Received], Awaitable[None]]) -> Closed:
    """Hand what ``ws`` receives to ``take`` until it ends; how it ended."""
    while True:
        try:
            received = await ws.receive()
        except ConnectionEnded as ended:
            return (ended.code, ended.reason)
        await take(received)


async def keep_alive(
    ws: WebSocket,
    connection_scope: trio.CancelScope,
    url: str,
    interval: float,
    pong_timeout: float,
) -> None:
    """Ping every ``interval`` seconds; cancel ``connection_scope`` when a pong does not
    come within ``pong_timeout``. Returns when the connection closes."""
    while ws.closed is None:
        await trio.sleep(interval)
        with trio.move_on_after(pong_timeout) as waited:
            await ws.ping()
        if waited.cancelled_caught:
            logger.warning(
                "no pong from %s within %s s: dropping the connection", url, pong_timeout
            )
            connection_scope.cancel()
            return
