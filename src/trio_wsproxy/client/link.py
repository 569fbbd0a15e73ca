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

import attrs
import trio
import trio_websocket

from ..protocol.v1 import SUBPROTOCOL
from .config import ClientConfig
from .errors import ClientClosed, NotConnected, UnsupportedByRelay
from .stats import ClientStats
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
    ws: trio_websocket.WebSocketConnection
    #: The relay URL it goes to.
    url: str = ""
    #: The subprotocol the relay selected (``"wsproxy.v1"``), or None: plain.
    protocol: str | None = None
    #: Set when it has ended, so that a send it failed can wait for the next one.
    ended: trio.Event = attrs.Factory(trio.Event)

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

    def _set(self, connection: Connection | None) -> None:
        self.current = connection
        self._changed.set()
        self._changed = trio.Event()

    async def send(
        self, payload: str | bytes, *, to: str | None = None, or_group: bool = False
    ) -> None:
        """Write ``payload`` on the connection in use, waiting up to ``send_timeout`` for
        one: to the group, or to the member ``to`` only.

        A connection that drops while the frame is written did not deliver it: it is
        written again on the next one. Raises :exc:`NotConnected` when none comes in
        time, :exc:`ClientClosed` once the client is closing, and
        :exc:`UnsupportedByRelay` when ``to`` is given and the connection does not speak
        v1 — unless ``or_group``, which sends to the group instead.
        """
        deadline = trio.current_time() + self._config.send_timeout
        while True:
            connection = await self._wait_for_connection(deadline)
            if connection.protocol is None and (to is None or or_group):
                frame = payload  # plain: the payload is the message
            elif connection.v1:
                frame = frame_for(payload, to)
            else:
                raise UnsupportedByRelay(
                    f"the relay at {connection.url} does not speak {SUBPROTOCOL} (it did not "
                    "select the subprotocol), so it cannot send a message to one member; "
                    "nothing was sent",
                    url=connection.url,
                )
            try:
                await connection.ws.send_message(frame)
            except trio_websocket.ConnectionClosed:
                if self.stopping:
                    raise ClientClosed("the client closed before the message was sent") from None
                # Not (fully) written, so not delivered: wait for this connection to be
                # replaced and send it again.
                with trio.move_on_at(deadline):
                    await connection.ended.wait()
                continue
            self._stats.messages_sent += 1
            return

    async def _wait_for_connection(self, deadline: float) -> Connection:
        with trio.move_on_at(deadline):
            while True:
                if self.stopping:
                    raise ClientClosed("the client is closed")
                if self.current is not None:
                    return self.current
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
            # the connection is dropped without a close handshake, as trio-websocket does.
            return
        with trio.move_on_after(self._config.close_timeout):
            await connection.ws.aclose(1000)
