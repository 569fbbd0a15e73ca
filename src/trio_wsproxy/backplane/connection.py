"""One Trio connection to Redis for the backplane: pipelined commands, and pub/sub pushes
read with backpressure.

Why not a general-purpose client: the relay needs two things such clients do not give.
Publishes must be pipelined without a round trip each (a relay publishes every message),
and a subscriber must read no faster than it delivers, so that Redis's pub/sub
output-buffer limit — not this process's memory — absorbs a node that falls behind.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable

import trio

from ..protocol.resp import (
    ConnectionLost,
    Parser,
    ProtocolViolation,
    RedisAddress,
    RedisError,
    Reply,
    encode,
)


class _Waiter:
    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.reply: Reply | ConnectionLost = None


#: Called with (channel, data) for each pub/sub message; awaited before reading on.
PushHandler = Callable[[bytes, bytes], Awaitable[None]]


class RedisConnection:
    """One connection to Redis. :meth:`run` owns its reader and writer tasks.

    Commands are buffered and written by one writer task, so everything queued while
    a write is in flight goes out together (pipelining). Replies resolve callers in
    order. In subscriber mode, pushes go to the ``on_message`` handler, and the reader
    waits for it before reading on: TCP pushes back on Redis.
    """

    def __init__(
        self,
        stream: trio.SocketStream,
        on_message: PushHandler | None = None,
        on_batch: Callable[[], None] | None = None,
    ) -> None:
        self._stream = stream
        self._on_message = on_message
        self._on_batch = on_batch
        self._parser = Parser()
        self._out: list[bytes] = []
        self._waiters: collections.deque[_Waiter | None] = collections.deque()
        self._subscribing: dict[bytes, list[trio.Event]] = {}
        self._wake = trio.Event()
        self._room = trio.Event()
        self._lost: ConnectionLost | None = None
        #: Bytes queued and not yet written.
        self.pending = 0
        #: Set when this connection failed by itself (not when it was cancelled): what
        #: was sent on it may or may not have been carried out.
        self.broken = False

    @classmethod
    async def connect(
        cls,
        address: RedisAddress,
        within: float,
        on_message: PushHandler | None = None,
        on_batch: Callable[[], None] | None = None,
    ) -> RedisConnection:
        """Open a connection (TCP_NODELAY is Trio's default); call :meth:`run` next.

        A subscriber gets each message through ``on_message``, and ``on_batch`` once the
        messages of one read are all handled (before the next read waits)."""
        with trio.fail_after(within):
            stream = await trio.open_tcp_stream(address.host, address.port)
        return cls(stream, on_message, on_batch)

    async def run(
        self,
        address: RedisAddress,
        silence: float,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Log in, then read and write until the connection fails (ConnectionLost).

        ``silence`` bounds the login, and how long the reader waits for a byte: callers
        keep the connection talking (a PING) more often than that."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop)
                nursery.start_soon(self._read_loop, silence)
                with trio.fail_after(silence):
                    if address.password is not None:
                        login = [address.password]
                        if address.username is not None:
                            login.insert(0, address.username)
                        await self.call("AUTH", *login)
                    if address.db and self._on_message is None:
                        await self.call("SELECT", address.db)
                task_status.started()
        finally:
            self._fail(ConnectionLost("connection to Redis closed"))
            self._stream.socket.close()

    def send_nowait(self, *args: bytes | str | int, wait: bool = True) -> _Waiter | None:
        """Queue a command; its reply resolves the returned waiter (none for ``wait=False``:
        the reply is read and dropped)."""
        if self._lost is not None:
            raise self._lost
        data = encode(*args)
        self._out.append(data)
        self.pending += len(data)
        waiter = _Waiter() if wait else None
        if self._on_message is None:
            self._waiters.append(waiter)
        self._wake.set()
        return waiter

    async def call(self, *args: bytes | str | int) -> Reply:
        """Send a command and wait for its reply; an error reply raises RedisError."""
        waiter = self.send_nowait(*args)
        assert waiter is not None
        await waiter.event.wait()
        reply = waiter.reply
        if isinstance(reply, ConnectionLost | RedisError):
            raise reply
        return reply

    async def wait_room(self, limit: int) -> None:
        """Wait until fewer than ``limit`` bytes are queued for writing."""
        while self.pending >= limit:
            if self._lost is not None:
                raise self._lost
            await self._room.wait()

    async def subscribe(self, channel: bytes) -> None:
        """Subscribe (subscriber mode) and wait for Redis to confirm it."""
        confirmed = trio.Event()
        self._subscribing.setdefault(channel, []).append(confirmed)
        self.send_nowait("SUBSCRIBE", channel)
        await confirmed.wait()
        if self._lost is not None:
            raise self._lost

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            out, self._out = self._out, []
            if not out:
                continue
            data = out[0] if len(out) == 1 else b"".join(out)
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self.broken = True
                raise ConnectionLost(f"writing to Redis failed: {exc}") from exc
            self.pending -= len(data)
            self._room.set()
            self._room = trio.Event()

    async def _read_loop(self, silence: float) -> None:
        parser = self._parser
        while True:
            try:
                with trio.fail_after(silence):
                    data = await self._stream.receive_some(262144)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self.broken = True
                raise ConnectionLost(f"reading from Redis failed: {exc}") from exc
            except trio.TooSlowError as exc:
                self.broken = True
                raise ConnectionLost(f"Redis said nothing for {silence:g}s") from exc
            if not data:
                self.broken = True
                raise ConnectionLost("Redis closed the connection")
            parser.feed(data)
            for reply in parser.replies():
                if self._on_message is not None:
                    await self._push(reply)
                else:
                    waiter = self._waiters.popleft()
                    if waiter is not None:
                        waiter.reply = reply
                        waiter.event.set()
                    elif isinstance(reply, RedisError):
                        self.broken = True
                        raise ConnectionLost(f"Redis refused a pipelined command: {reply}")
            if self._on_batch is not None:
                self._on_batch()

    async def _push(self, reply: Reply) -> None:
        if isinstance(reply, RedisError):
            raise ConnectionLost(f"Redis refused a subscriber command: {reply}")
        if not isinstance(reply, list) or not reply or not isinstance(reply[0], bytes):
            raise ProtocolViolation(f"unexpected reply in subscriber mode: {reply!r}")
        kind = reply[0]
        if kind == b"message":
            channel, data = reply[1:] if len(reply) == 3 else (None, None)
            if not isinstance(channel, bytes) or not isinstance(data, bytes):
                raise ProtocolViolation(f"malformed pub/sub message: {reply!r}")
            if self._on_message is None:
                raise ProtocolViolation("a pub/sub message on a connection that subscribed to none")
            await self._on_message(channel, data)
        elif kind == b"subscribe":
            channel = reply[1] if len(reply) > 1 else None
            if not isinstance(channel, bytes):
                raise ProtocolViolation(f"malformed subscribe confirmation: {reply!r}")
            waiting = self._subscribing.get(channel)
            if waiting:
                waiting.pop(0).set()
                if not waiting:
                    del self._subscribing[channel]
        # unsubscribe confirmations and pongs need no action

    def _fail(self, error: ConnectionLost) -> None:
        if self._lost is not None:
            return
        self._lost = error
        for waiter in self._waiters:
            if waiter is not None:
                waiter.reply = error
                waiter.event.set()
        self._waiters.clear()
        for events in self._subscribing.values():
            for event in events:
                event.set()
        self._subscribing.clear()
        self._room.set()


def cancelled_first(error: BaseException) -> None:
    """Re-raise the cancellations in ``error``, a group from a nursery: a connection
    that failed while its task was being cancelled (the relay stopping as Redis or a
    sentinel goes away) is no failure to handle, and must not outlive the cancellation
    (the scope that cancelled takes its Cancelled out of the group, and a group of the
    failures alone would escape it)."""
    if isinstance(error, BaseExceptionGroup):
        cancelled, _ = error.split(trio.Cancelled)
        if cancelled is not None:
            raise cancelled from None
