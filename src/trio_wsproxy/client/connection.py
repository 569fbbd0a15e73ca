"""One connection to a relay, from TCP connect to close: the I/O.

:func:`connect_and_serve` opens it (TCP, TLS for ``wss``, the WebSocket upgrade), hands
it to the connection task, and closes it; :func:`serve_frames` reads it, with client
pings (:func:`keep_alive`) if configured. Failures to connect come out as
:exc:`~.errors.ConnectError` (:exc:`~.errors.HandshakeRefused` for an HTTP refusal).
"""

from __future__ import annotations

import logging
import ssl
import sys
from collections.abc import Awaitable, Callable

import trio
import trio_websocket

from ..protocol.exceptions import leaves, sole_error
from ..protocol.v1 import SUBPROTOCOL
from .config import ClientConfig
from .errors import ConnectError, HandshakeRefused
from .urls import RelayAddress, relay_address

__all__ = ["Closed", "connect_and_serve", "keep_alive", "open_websocket", "serve_frames"]

logger = logging.getLogger("trio_wsproxy.client")

#: How a connection ended: the close code (1006 without a close frame) and the reason.
Closed = tuple[int, str | None]

# trio-websocket wants an int; "no limit" is the largest one.
_NO_LIMIT = sys.maxsize


async def connect_and_serve(
    url: str,
    *,
    config: ClientConfig,
    ssl_context: ssl.SSLContext | None,
    serve: Callable[[trio_websocket.WebSocketConnection], Awaitable[Closed]],
) -> Closed:
    """Connect to the relay at ``url``, run ``serve`` on the WebSocket, close it, and
    return how the connection ended (what ``serve`` returned)."""
    # trio-websocket's reader task runs in a nursery of ours rather than inside
    # open_websocket_url, whose nursery waits forever on a server that accepts the TCP
    # connection but never answers the upgrade.
    closed: Closed = (1006, None)
    try:
        async with trio.open_nursery() as reader_nursery:
            stream, ws = await open_websocket(
                url, config=config, ssl_context=ssl_context, reader_nursery=reader_nursery
            )
            try:
                closed = await serve(ws)
            finally:
                # The reader still has to read the relay's close frame and the TCP close;
                # give it (and our own close, if still due) close_timeout to do so.
                reader_nursery.cancel_scope.deadline = trio.current_time() + config.close_timeout
                try:
                    await ws.aclose()
                finally:
                    # trio-websocket leaves the socket open when the relay closed first.
                    await trio.aclose_forcefully(stream)
    except BaseExceptionGroup as group:
        error = sole_error(group, ignore=(trio.Cancelled,))
        if error is None:
            raise
        if isinstance(error, trio_websocket.ConnectionRejected):
            body = (error.body or b"").decode("utf-8", "replace").strip()
            raise HandshakeRefused(
                url=url,
                status_code=error.status_code,
                reason=body.splitlines()[0] if body else "",
            ) from None
        if isinstance(error, ConnectError):
            raise error from error.__cause__
        raise
    return closed


async def open_websocket(
    url: str,
    *,
    config: ClientConfig,
    ssl_context: ssl.SSLContext | None,
    reader_nursery: trio.Nursery,
) -> tuple[trio.abc.Stream, trio_websocket.WebSocketConnection]:
    """Open the stream to ``url`` and complete the WebSocket upgrade on it, within
    ``connect_timeout``; trio-websocket's reader task goes into ``reader_nursery``. The
    upgrade offers ``wsproxy.v1`` (``config.offer_v1``); ``ws.subprotocol`` says whether
    the relay selected it."""
    address = relay_address(url)
    with trio.move_on_after(config.connect_timeout):
        stream = await _open_stream(url, address, ssl_context)
        try:
            ws = await trio_websocket.wrap_client_stream(
                reader_nursery,
                stream,
                address.authority,
                address.resource,
                subprotocols=(SUBPROTOCOL,) if config.offer_v1 else None,
                max_message_size=config.max_message_size or _NO_LIMIT,
                receive_buffer_size=config.receive_buffer_size,
            )
            return stream, ws
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    raise ConnectError(f"could not connect to {url} within {config.connect_timeout} s", url=url)


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
    ws: trio_websocket.WebSocketConnection,
    take: Callable[[str | bytes], Awaitable[None]],
    *,
    url: str,
    ping_interval: float | None,
    ping_timeout: float,
) -> Closed:
    """Hand each frame ``ws`` receives to ``take`` until the connection ends, and return
    how it ended. With a ``ping_interval``, pings the relay too; a ping unanswered for
    ``ping_timeout`` drops the connection (code 1006)."""
    closed: Closed = (1006, "no answer to a ping within ping_timeout")
    async with trio.open_nursery() as nursery:
        if ping_interval is not None:
            nursery.start_soon(
                keep_alive, ws, nursery.cancel_scope, url, ping_interval, ping_timeout
            )
        closed = await _read(ws, take)
        nursery.cancel_scope.cancel()
    return closed


async def keep_alive(
    ws: trio_websocket.WebSocketConnection,
    connection_scope: trio.CancelScope,
    url: str,
    interval: float,
    pong_timeout: float,
) -> None:
    """Ping every ``interval`` seconds; cancel ``connection_scope`` when a pong does not
    come within ``pong_timeout``. Returns when the connection closes."""
    while True:
        await trio.sleep(interval)
        with trio.move_on_after(pong_timeout) as waited:
            try:
                await ws.ping()
            except trio_websocket.ConnectionClosed:
                return
        if waited.cancelled_caught:
            logger.warning(
                "no pong from %s within %s s: dropping the connection", url, pong_timeout
            )
            connection_scope.cancel()
            return


async def _read(
    ws: trio_websocket.WebSocketConnection, take: Callable[[str | bytes], Awaitable[None]]
) -> Closed:
    while True:
        try:
            frame = await ws.get_message()
        except trio_websocket.ConnectionClosed as closed:
            if closed.reason is None:
                return (1006, None)
            return (closed.reason.code, closed.reason.reason)
        await take(frame)
