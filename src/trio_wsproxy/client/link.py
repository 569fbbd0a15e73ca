"""The client's link to the relay as its senders see it: whether the client still runs,
and the connection in use now — none while reconnecting, which sends wait out.

A message is framed for the connection that carries it, as that connection's protocol
says (:func:`~.wire.frame_for`): the payload itself on a plain connection, with a
``wsproxy.v1`` header on a v1 one. A message retried on the next connection is framed
afresh for it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import AsyncIterator
from typing import Any

import attrs
import trio

from ..protocol.v1 import SUBPROTOCOL, member_header
from .config import ClientConfig
from .connection import ConnectionEnded, WebSocket
from .errors import ClientClosed, ClientError, NotConnected, UnsupportedByRelay
from .sent import SentLog
from .stats import ClientStats
from .streams import StreamInterrupted
from .wire import frame_for

__all__ = ["Connection", "Lifecycle", "Link"]


class Lifecycle(enum.Enum):
    """Where a client is in its life; it only moves down this list."""

    #: Connected or reconnecting: sends wait for a connection.
    RUNNING = "running"
    #: :meth:`Client.aclose` was called: no more sends, no reconnecting.
    CLOSING = "closing"
    #: Stopped for good (closed, or ended by an error).
    CLOSED = "closed"


@attrs.define(eq=False)
class Connection:
    """One connection to a relay, while it lasts."""

    #: Its WebSocket.
    ws: WebSocket
    #: The relay URL it goes to.
    url: str = ""
    #: The subprotocol the relay selected (``"wsproxy.v1"``), or None: plain.
    protocol: str | None = None
    #: Set when it has ended, so that a send it failed can wait for the next one.
    ended: trio.Event = attrs.Factory(trio.Event)
    #: The messages written on it in full, reported if it is lost.
    sent: SentLog = attrs.Factory(lambda: SentLog(0, 0))
    #: Set once the joins of the groups the client was in went out on it (or it ended):
    #: a message to one of them waits for that, lest it come before the join.
    rejoined: trio.Event = attrs.Factory(trio.Event)

    @property
    def v1(self) -> bool:
        """Whether it speaks ``wsproxy.v1``."""
        return self.protocol == SUBPROTOCOL


class Link:
    """The connection a client sends on, and its :class:`Lifecycle`.

    The connection task hands each connection it makes to :meth:`attach`, and to
    :meth:`detach` when it ends; :meth:`send` writes on whichever is in use, waiting for
    one while there is none.
    """

    def __init__(self, config: ClientConfig, stats: ClientStats) -> None:
        self._config = config
        self._stats = stats
        #: Where the client is in its life.
        self.state = Lifecycle.RUNNING
        #: The connection in use now, or None.
        self.current: Connection | None = None
        self._changed = trio.Event()

    @property
    def stopping(self) -> bool:
        """Whether the client is closing or closed: nothing more may be sent."""
        return self.state is not Lifecycle.RUNNING

    def begin_closing(self) -> None:
        """:meth:`Client.aclose` was called (no effect once the client is closed)."""
        if self.state is Lifecycle.RUNNING:
            self.state = Lifecycle.CLOSING

    def finish(self) -> None:
        """The client has stopped: no connection any more, and sends raise."""
        self.state = Lifecycle.CLOSED
        self._set(None)

    def attach(self, connection: Connection) -> None:
        """``connection`` is the one in use now; waiting sends go ahead on it."""
        self._set(connection)

    def detach(self, connection: Connection) -> None:
        """``connection`` has ended: sends wait for the next one, and those it failed retry."""
        self._set(None)
        connection.ended.set()
        connection.rejoined.set()

    def _set(self, connection: Connection | None) -> None:
        self.current = connection
        self._changed.set()
        self._changed = trio.Event()

    async def send(
        self,
        payload: str | bytes,
        *,
        to: str | None = None,
        or_group: bool = False,
        group: str | None = None,
        value: object = None,
        as_type: Any = None,
        request_id: str | None = None,
        reply_to: str | None = None,
    ) -> None:
        """Write ``payload`` on the connection in use, waiting up to ``send_timeout`` for
        one: to the group, or to the member ``to`` only; in ``group``, one the client
        joined (None: the group its URL named).

        A connection that drops while the frame is written did not deliver it: it is
        written again on the next one. Once written, it is noted in the connection's
        :class:`~.sent.SentLog` (with ``value``, ``as_type``, ``request_id`` and
        ``reply_to``: what the application sent). Raises :exc:`NotConnected` when none
        comes in time, :exc:`ClientClosed` once the client is closing, and
        :exc:`UnsupportedByRelay` when ``to`` is given and the connection does not speak
        v1 — unless ``or_group``, which sends to the group instead (``group`` given: raises
        all the same).
        """
        deadline = trio.current_time() + self._config.send_timeout
        while True:
            connection = await self._wait_for_connection(deadline, group is not None)
            header = _header(connection, to, or_group, group)
            frame = payload if header is None else frame_for(payload, to, group)
            try:
                await connection.ws.send_message(frame)
            except ConnectionEnded:
                await self._written_off(connection, deadline)
                continue
            self._stats.messages_sent += 1
            connection.sent.add(
                value,
                size=len(payload),
                as_type=as_type,
                to=to if connection.v1 else None,
                request_id=request_id,
                reply_to=reply_to,
                sent_at=trio.current_time(),
            )
            return

    async def send_stream(
        self,
        pieces: AsyncIterator[bytes],
        *,
        to: str | None = None,
        group: str | None = None,
        announcement: str | None = None,
        announced: object = None,
        announced_as: Any = None,
    ) -> int:
        """Write one binary message made of ``pieces``, each as it is read (so the relay's
        pace is the reading's), and return its size. The typed
        ``announcement`` frame, if given, goes right before it, with nothing of this
        client's between them (``announced`` and ``announced_as``: the value it
        carries, and its ``as_type``, as the connection's :class:`~.sent.SentLog`
        notes it once both are written).

        Waits for a connection as :meth:`send` does, and sends again on the next one if
        the connection drops before the message's first piece is written (the
        announcement then goes again too). If it drops later, raises
        :exc:`StreamInterrupted`: the recipients were told (the relay closes them with
        4002). Cancelled, or failed by the source, mid-message, the connection is dropped
        (no message may go on it until this one ends): the client reconnects, the
        recipients are told, and the exception propagates.
        """
        deadline = trio.current_time() + self._config.send_timeout
        # The first piece is read before a connection is asked for: a source that fails
        # at once fails before anything is sent.
        first = await anext(pieces, b"")
        while True:
            connection = await self._wait_for_connection(deadline, group is not None)
            header = _header(connection, to, False, group)
            ws = connection.ws
            sent = 0
            async with ws.message_lock:
                try:
                    if announcement is not None:
                        frame = (
                            announcement if header is None else frame_for(announcement, to, group)
                        )
                        await ws.write_message(frame)
                    await ws.send_piece(first if header is None else header + first, last=not first)
                    sent = len(first)
                    if first:
                        # Each piece goes as soon as it is read; an empty frame ends the
                        # message (the end of a source is known only once it is reached).
                        async for piece in pieces:
                            await ws.send_piece(piece, last=False)
                            sent += len(piece)
                        await ws.send_piece(b"", last=True)
                except ConnectionEnded as ended:
                    if sent == 0 and not self.stopping:
                        pass  # nothing of the message went: send it on the next connection
                    else:
                        raise self._interrupted(sent, ended) from None
                except BaseException:
                    ws.drop()  # mid-message: nothing else may go on this connection
                    raise
                else:
                    self._stats.messages_sent += 1 + (announcement is not None)
                    recipient, now = (to if connection.v1 else None), trio.current_time()
                    if announcement is not None:
                        connection.sent.add(
                            announced,
                            size=len(announcement),
                            as_type=announced_as,
                            to=recipient,
                            sent_at=now,
                        )
                    connection.sent.add(None, size=sent, to=recipient, streamed=True, sent_at=now)
                    return sent
            await self._written_off(connection, deadline)

    def _interrupted(self, sent: int, ended: ConnectionEnded) -> ClientError:
        if self.stopping:
            return ClientClosed(f"the client closed after {sent} bytes of the message were sent")
        return StreamInterrupted(
            f"the connection dropped after {sent} bytes of the message were sent "
            f"(code {ended.code}); its recipients were told it was cut off",
            code=ended.code,
            reason=ended.reason,
            transferred=sent,
        )

    async def _written_off(self, connection: Connection, deadline: float) -> None:
        """A message could not be written on ``connection``, which has ended: wait for
        the next one (or raise :exc:`ClientClosed` if the client is closing)."""
        if self.stopping:
            raise ClientClosed("the client closed before the message was sent") from None
        # Not (fully) written, so not delivered: wait for this connection to be replaced
        # and send it again.
        with trio.move_on_at(deadline):
            await connection.ended.wait()

    async def connection(self, deadline: float, rejoined: bool = True) -> Connection:
        """The connection in use, once there is one (and, ``rejoined``, once the joins of
        the client's groups went out on it): raises :exc:`NotConnected` at ``deadline``,
        :exc:`ClientClosed` once the client is closing."""
        return await self._wait_for_connection(deadline, rejoined)

    async def _wait_for_connection(self, deadline: float, rejoined: bool = False) -> Connection:
        with trio.move_on_at(deadline):
            while True:
                if self.stopping:
                    raise ClientClosed("the client is closed")
                current = self.current
                if current is not None:
                    if not rejoined or current.rejoined.is_set():
                        return current
                    await current.rejoined.wait()
                    continue
                await self._changed.wait()
        raise NotConnected(
            f"not connected to the relay for {self._config.send_timeout} s; "
            "the message was not sent"
        )

    async def say_goodbye(self) -> None:
        """Close the connection with 1000 and wait (``close_timeout``) for the relay's answer."""
        connection = self.current
        if connection is None or trio.current_effective_deadline() == -math.inf:
            # Cancelled from outside: the reader goes too, so no answer would be read;
            # the connection is dropped without a close handshake.
            return
        with trio.move_on_after(self._config.close_timeout):
            await connection.ws.aclose(1000)


def _header(
    connection: Connection, to: str | None, or_group: bool, group: str | None = None
) -> bytes | None:
    """The v1 header line a message to ``to`` (None: the group) in ``group`` (None: the
    URL's) starts with on ``connection``; None on a plain connection, which can carry it
    to the URL's group only — else :exc:`UnsupportedByRelay` (unless ``or_group``: to the
    group instead)."""
    if connection.protocol is None and group is None and (to is None or or_group):
        return None  # plain: the payload is the message
    if connection.v1:
        return member_header(to, group)
    what = "to one member" if group is None else f"to the group {group!r} it joined"
    raise UnsupportedByRelay(
        f"the relay at {connection.url} does not speak {SUBPROTOCOL} (it did not select "
        f"the subprotocol), so it cannot send a message {what}; nothing was sent",
        url=connection.url,
    )
