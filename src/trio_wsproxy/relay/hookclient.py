"""The HTTP client the hooks are asked with: h11 over a pool of kept-alive connections.

Why not httpx, which the relay fetches an identity provider's keys with: a publish hook
is asked once per message, so what a call costs the relay is what every such message
costs. Measured on this machine (``benchmarks/publish_hook.py``, and a loop of POSTs to a
local back end): an httpx call on Trio (through anyio and httpcore) took about 400 µs
of CPU; the same request written and read with h11 (the HTTP/1.1 state machine the
relay already parses its own requests with) about 85 µs. What is left here is the
part h11 leaves to its user: the sockets, TLS, and keeping connections alive for
reuse — a pool per back end (scheme, host, port), each connection serving one call at
a time, bounded by the caller (``Hooks`` allows ``max_hook_calls`` at once).

A connection the back end closed while it sat idle is found out when it is reused: that
call is made once more on a new connection. (A back end that read the request and then
closed without answering looks the same from here, so it may get that request twice: a
hook's answer must not depend on being asked once.) A call cancelled midway (its
timeout) closes its connection, which is never reused half-read.
"""

from __future__ import annotations

import ssl
from collections import defaultdict, deque
from urllib.parse import urlsplit

import attrs
import h11
import trio

#: The most bytes of an answer read: an answer is a small JSON object (a publish
#: hook's replacement payload included, up to a fragment, base64: 1.4 MiB).
MAX_ANSWER = 2 * 1024 * 1024
#: Idle connections kept per back end; more are closed as their calls end.
MAX_IDLE = 64


class HookCallError(Exception):
    """The call could not be made or answered (no connection, a broken one, an answer
    that is not HTTP, or too large)."""


@attrs.frozen
class Target:
    """Where a hook's URL points: the pool's key, and the request's target and Host."""

    scheme: str
    host: str
    port: int
    target: str
    host_header: str

    @classmethod
    def of(cls, url: str) -> Target:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        host = parts.hostname or ""
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, host, port, target, parts.netloc.rsplit("@", 1)[-1])


class _Connection:
    __slots__ = ("conn", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)


class HookClient:
    """POSTs JSON bodies to the back end, over kept-alive connections."""

    def __init__(self) -> None:
        self._idle: defaultdict[tuple[str, str, int], deque[_Connection]] = defaultdict(deque)
        self._targets: dict[str, Target] = {}
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    async def post(self, url: str, body: bytes) -> tuple[int, bytes]:
        """POST ``body`` (JSON) to ``url``: the answer's status and body."""
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = Target.of(url)
        key = (target.scheme, target.host, target.port)
        idle = self._idle[key]
        while idle:
            connection = idle.pop()
            try:
                return await self._call(connection, key, target, body)
            except _Stale:
                continue  # closed by the back end while idle: asked again on a new one
        connection = await self._connect(target)
        try:
            return await self._call(connection, key, target, body)
        except _Stale:
            raise HookCallError("the back end closed the connection without answering") from None

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            while idle:
                await trio.aclose_forcefully(idle.pop().stream)

    async def _connect(self, target: Target) -> _Connection:
        try:
            stream: trio.abc.Stream = await trio.open_tcp_stream(target.host, target.port)
        except OSError as exc:
            raise HookCallError(f"cannot connect: {exc}") from None
        if target.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            stream = trio.SSLStream(stream, self._ssl, server_hostname=target.host)
        return _Connection(stream)

    async def _call(
        self, connection: _Connection, key: tuple[str, str, int], target: Target, body: bytes
    ) -> tuple[int, bytes]:
        conn, stream = connection.conn, connection.stream
        request = h11.Request(
            method="POST",
            target=target.target,
            headers=[
                ("host", target.host_header),
                ("content-type", "application/json"),
                ("content-length", str(len(body))),
                ("user-agent", "trio-wsproxy"),
            ],
        )
        done = False
        try:
            sent = False
            try:
                head = conn.send(request)
                await stream.send_all(
                    head + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
                )
                sent = True
                status, answer = await self._answer(conn, stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                if not sent or conn.their_state is h11.SEND_RESPONSE:
                    raise _Stale from None
                raise HookCallError(f"connection lost: {exc}") from None
            except h11.RemoteProtocolError as exc:
                raise HookCallError(f"not an HTTP answer: {exc}") from None
            done = True
        finally:
            if done and conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
                idle = self._idle[key]
                if len(idle) < MAX_IDLE and not self._closed:
                    idle.append(connection)
                else:
                    await trio.aclose_forcefully(stream)
            else:
                await trio.aclose_forcefully(stream)
        return status, answer

    async def _answer(self, conn: h11.Connection, stream: trio.abc.Stream) -> tuple[int, bytes]:
        status = 0
        chunks: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = bytes(await stream.receive_some(65536))
                if not data and status == 0 and not chunks:
                    raise trio.BrokenResourceError("closed")
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_ANSWER:
                    raise HookCallError(f"an answer over {MAX_ANSWER} bytes")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return status, b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                raise HookCallError("the back end closed the connection mid-answer")


class _Stale(Exception):
    """The connection was closed before the back end read the request."""
