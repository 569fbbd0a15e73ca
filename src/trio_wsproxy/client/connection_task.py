"""The connection task: keep the client connected — connect, serve each connection,
reconnect — carrying out :mod:`.policy`'s decisions.

It reads each connection's frames and hands them on as :mod:`.wire` says: messages to
the dispatcher, answers to the requests waiting on them, bad frames to the count, the
log and ``on_bad_message``. When the connection drops it reports it (``on_disconnect``)
and, if the policy says so, tries again: one round of the relay URLs at a time.

A connection whose relay selected ``wsproxy.v1`` starts with the relay's welcome, read
before the connection is put to use; after it, every frame's header is taken off first —
a member's message goes on as above, with its sender, and the relay's own events update
the :class:`~.membership.Membership` and reach the handlers as ``Joined``, ``Left`` and
``DeliveryFailed``.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable

import trio
import trio_websocket

from ..protocol.typenames import TypeRegistry
from ..protocol.v1 import (
    NO_SUCH_MEMBER,
    SUBPROTOCOL,
    Error,
    Event,
    From,
    V1Error,
    Welcome,
)
from .config import ClientConfig
from .connection import Closed, connect_and_serve, serve_frames
from .dispatch import Dispatcher
from .errors import (
    ClientError,
    ClosedByRelay,
    ConnectError,
    HandshakeRefused,
    could_not_connect,
    gave_up_reconnecting,
)
from .incoming import (
    BadMessage,
    BadMessageHook,
    BadMessageKind,
    Disconnected,
    DisconnectHook,
    Incoming,
    Sender,
)
from .link import Connection, Lifecycle, Link
from .membership import DeliveryFailed, Membership
from .policy import ReconnectPolicy, RoundFailed, close_meaning, reconnects_after, refusal_is_final
from .requests import PendingRequests
from .resumption import Resumption
from .stats import ClientStats
from .urls import with_query
from .wire import Deliver, Reply, read_frame, split_relay_message

__all__ = ["ConnectionTask"]

logger = logging.getLogger("trio_wsproxy.client")

# How much of a bad frame goes into its log line.
_LOG_PREVIEW = 200


class ConnectionTask:
    """Connects one client to its relays and keeps it connected (see :meth:`run`).

    It shares the client's parts: the :class:`~.link.Link` it attaches connections to,
    the :class:`~.dispatch.Dispatcher` it submits messages and hooks to, the
    :class:`~.requests.PendingRequests` it answers, the :class:`~.membership.Membership`
    it keeps. ``sender`` is what received messages reply through, ``reply_via(member)``
    what a v1 message from ``member`` replies through; ``on_connect`` is called (in the
    dispatcher) after each connection.
    """

    def __init__(
        self,
        *,
        urls: tuple[str, ...],
        client_id: str,
        group: str,
        config: ClientConfig,
        types: TypeRegistry,
        ssl_context: ssl.SSLContext | None,
        stats: ClientStats,
        link: Link,
        dispatcher: Dispatcher,
        requests: PendingRequests,
        membership: Membership,
        sender: Sender,
        reply_via: Callable[[str], Sender],
        on_connect: Callable[[], object] | None,
        on_disconnect: DisconnectHook | None,
        on_bad_message: BadMessageHook | None,
    ) -> None:
        self._urls = urls
        self._id = client_id
        self._group = group
        self._config = config
        self._types = types
        self._ssl_context = ssl_context
        self._stats = stats
        self._link = link
        self._dispatcher = dispatcher
        self._requests = requests
        self._membership = membership
        self._sender = sender
        self._reply_via = reply_via
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._on_bad_message = on_bad_message
        #: Index in the URLs of the relay connected to now, or last.
        self.url_index = 0
        #: The subprotocol of the connection now, or last: ``"wsproxy.v1"``, or None (plain).
        self.protocol: str | None = None
        #: Where the client is in its group's history (a v1 relay with history on).
        self.resumption = Resumption()

    @property
    def url(self) -> str:
        """The relay URL connected to now, or last (the first URL before any connection)."""
        return self._urls[self.url_index]

    async def run(self, task_status: trio.TaskStatus[None]) -> ClientError | None:
        """Connect, serve, reconnect, until the client closes (returns None) or an error
        ends it (returns the error). ``task_status.started()`` comes with the first
        connection; if that cannot be made, the error is raised instead."""
        policy = ReconnectPolicy(self._config, len(self._urls))
        while True:
            plan = policy.next_round(self.url_index)
            if plan.delay is not None:
                target = self._urls[plan.order[0]]
                if len(self._urls) > 1:
                    target += f" (then the other {len(self._urls) - 1} relay URLs)"
                logger.info("reconnecting to %s in %.2f s", target, plan.delay)
                await trio.sleep(plan.delay)
            errors: list[ConnectError] = []
            for index in plan.order:
                try:
                    code, reason = await self._connect_and_serve(
                        index, None if policy.connected_once else task_status
                    )
                except ConnectError as error:
                    if isinstance(error, HandshakeRefused) and refusal_is_final(error.status_code):
                        if not policy.connected_once:
                            raise
                        return error
                    errors.append(error)
                    if policy.connected_once:
                        attempt = policy.failed_rounds + 1
                        logger.warning("reconnect attempt %d failed: %s", attempt, error)
                    elif len(self._urls) > 1:
                        logger.warning("connect attempt failed: %s", error)
                else:
                    break  # connected, then disconnected: code and reason say how
            else:
                verdict = policy.round_failed()
                if verdict is RoundFailed.NEVER_CONNECTED:
                    raise could_not_connect(errors)
                if verdict is RoundFailed.GIVE_UP:
                    return gave_up_reconnecting(errors, policy.failed_rounds)
                continue
            policy.connected()
            if self._link.state is Lifecycle.CLOSING:
                return None
            if not await self._disconnected(code, reason):
                return ClosedByRelay(code, reason)

    async def _disconnected(self, code: int, reason: str | None) -> bool:
        """Report a lost connection; returns whether the client reconnects."""
        reconnecting = reconnects_after(code, self._config)
        logger.log(
            logging.WARNING if reconnecting else logging.ERROR,
            "disconnected from %s: code %d (%s)%s; %s",
            self.url,
            code,
            close_meaning(code),
            f": {reason}" if reason else "",
            "will reconnect" if reconnecting else "not reconnecting",
        )
        self._stats.disconnects += 1
        if self._on_disconnect is not None:
            event = Disconnected(code, reason, reconnecting)
            await self._dispatcher.call_soon(self._on_disconnect, event)
        return reconnecting

    async def _connect_and_serve(
        self, index: int, task_status: trio.TaskStatus[None] | None
    ) -> Closed:
        """One connection to URL ``index``, from handshake to close: returns the close code
        and reason."""

        async def serve(ws: trio_websocket.WebSocketConnection) -> Closed:
            return await self._serve(index, ws, task_status)

        url = self._urls[index]
        since = self.resumption.since()
        if since is not None:
            url = with_query(url, "since", since)  # to get what was missed meanwhile
        return await connect_and_serve(
            url, config=self._config, ssl_context=self._ssl_context, serve=serve
        )

    async def _serve(
        self,
        index: int,
        ws: trio_websocket.WebSocketConnection,
        task_status: trio.TaskStatus[None] | None,
    ) -> Closed:
        """Make ``ws`` the client's connection and read it until it ends.

        Over v1 the relay's welcome is read first, so that the members are known by the
        time ``on_connect`` runs and ``open_client`` returns. The connection is in use
        (sends go ahead) while it is read: taking it in may wait for the dispatcher, and
        a handler there may be waiting to send."""
        url = self._urls[index]
        if self._stats.connects and index != self.url_index:
            logger.info("failed over from %s to %s", self.url, url)
        self.url_index = index
        self.protocol = ws.subprotocol
        connection = Connection(ws, url, ws.subprotocol)
        self._link.attach(connection)
        try:
            take = self._take
            ended: Closed | None = None
            if connection.v1:
                ended = await self._welcome(ws, url)
                take = self._take_v1
            else:
                self.resumption.lost()
            self._stats.connects += 1
            logger.info(
                "connected to %s as %r in group %r%s",
                url,
                self._id,
                self._group,
                f" ({SUBPROTOCOL})" if connection.v1 else "",
            )
            if self._on_connect is not None:
                await self._dispatcher.call_soon(self._on_connect)
            if task_status is not None:
                task_status.started()
            if ended is not None:
                return ended
            return await serve_frames(
                ws,
                take,
                url=url,
                ping_interval=self._config.ping_interval,
                ping_timeout=self._config.ping_timeout,
            )
        finally:
            self._link.detach(connection)
            self._membership.connection_ended()

    async def _welcome(self, ws: trio_websocket.WebSocketConnection, url: str) -> Closed | None:
        """Read a v1 connection's first message, the relay's welcome, within
        ``connect_timeout`` and take it in; returns how the connection ended if it ended
        first. Raises :exc:`ConnectError` when nothing came in time."""
        first: str | bytes | None = None
        with trio.move_on_after(self._config.connect_timeout):
            try:
                first = await ws.get_message()
            except trio_websocket.ConnectionClosed as closed:
                if closed.reason is None:
                    return (1006, None)
                return (closed.reason.code, closed.reason.reason)
        if first is None:
            raise ConnectError(
                f"{url} selected {SUBPROTOCOL} but sent no welcome within "
                f"{self._config.connect_timeout} s",
                url=url,
            )
        await self._take_v1(first, welcome_from=url)
        return None

    async def _take(self, frame: str | bytes) -> None:
        """Turn one frame into a dispatcher job, a resolved request, or a bad message."""
        self._stats.messages_received += 1
        verdict = read_frame(frame, types=self._types, awaiting=self._requests, sender=self._sender)
        # The plain hot path: what _carry_out does, without one more coroutine per message.
        if isinstance(verdict, Deliver):
            await self._dispatcher.deliver(verdict.incoming, verdict.message_type)
        else:
            await self._carry_out(verdict)

    async def _take_v1(self, frame: str | bytes, *, welcome_from: str | None = None) -> None:
        """Take a v1 frame's header off, then carry out what it says: a member's message
        as :meth:`_take` does, with its sender; one of the relay's events. ``welcome_from``:
        the frame is the first from that relay URL, which should be its welcome."""
        try:
            header, payload = split_relay_message(frame)
        except V1Error as error:
            self._stats.messages_received += 1
            text = (
                frame if isinstance(frame, str) else frame[:_LOG_PREVIEW].decode("utf-8", "replace")
            )
            await self._reject(
                BadMessage(BadMessageKind.INVALID_HEADER, f"a {SUBPROTOCOL} message {error}", text)
            )
            return
        if welcome_from is not None and not isinstance(header, Welcome):
            logger.warning(
                "%s selected %s but its first message was not a welcome: "
                "the members stay unknown until it says who they are",
                welcome_from,
                SUBPROTOCOL,
            )
        if isinstance(header, From):
            self._stats.messages_received += 1
            if header.offset is not None:
                self.resumption.heard(header.offset)
            sender = header.sender
            if sender is not None:
                self._membership.heard_from(sender)
            verdict = read_frame(
                payload,
                types=self._types,
                awaiting=self._requests,
                # A message the back end posted (no sender) is answered to the group.
                sender=self._sender if sender is None else self._reply_via(sender),
                origin=header,
            )
            await self._carry_out(verdict)
        else:
            await self._event(header)

    async def _event(self, event: Event) -> None:
        """Take in one of the relay's own events and hand the handlers what it means."""
        self._stats.events_received += 1
        if isinstance(event, Error):
            logger.info(
                "the relay could not deliver a message%s: %s (%s)",
                "" if event.to is None else f" to {event.to!r}",
                event.detail,
                event.error,
            )
            if event.error == NO_SUCH_MEMBER and event.to is not None:
                self._requests.member_not_found(event.to, event.detail)
            failed = DeliveryFailed(event.to, event.error, event.detail)
            await self._dispatcher.deliver_event(Incoming(failed, None, None, None, self._sender))
            return
        if isinstance(event, Welcome):
            resumed = self.resumption.welcomed(event)
            if resumed is not None:
                if resumed.recovered:
                    logger.info("recovering %d missed messages", resumed.missed)
                else:
                    logger.warning("could not recover missed messages: %s", resumed.reason)
                await self._dispatcher.deliver_event(
                    Incoming(resumed, None, None, None, self._sender)
                )
        for change in self._membership.apply(event):
            await self._dispatcher.deliver_event(Incoming(change, None, None, None, self._sender))

    async def _carry_out(self, verdict: Deliver | Reply | BadMessage) -> None:
        """Hand a read frame on: to the dispatcher, a waiting request, or the rejects."""
        if isinstance(verdict, Deliver):
            await self._dispatcher.deliver(verdict.incoming, verdict.message_type)
        elif isinstance(verdict, Reply):
            bad = self._requests.answer(verdict, self._types)
            if bad is not None:
                await self._reject(bad)
        else:
            await self._reject(verdict)

    async def _reject(self, bad: BadMessage) -> None:
        """Count, log and report (``on_bad_message``) a frame the client had to ignore."""
        self._stats.bad_messages += 1
        setattr(self._stats, bad.kind.value, getattr(self._stats, bad.kind.value) + 1)
        preview = bad.text if len(bad.text) <= _LOG_PREVIEW else bad.text[:_LOG_PREVIEW] + "..."
        # An unknown type is routine in a group shared with other applications.
        level = logging.INFO if bad.kind is BadMessageKind.UNKNOWN_TYPE else logging.WARNING
        logger.log(
            level, "ignored a message in group %r: %s; frame: %r", self._group, bad.reason, preview
        )
        if self._on_bad_message is not None:
            await self._dispatcher.call_soon(self._on_bad_message, bad)
