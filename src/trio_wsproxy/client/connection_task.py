"""The connection task: keep the client connected — connect, serve each connection,
reconnect — carrying out :mod:`.policy`'s decisions.

It reads each connection's frames and hands them on as :mod:`.wire` says: messages to
the dispatcher, answers to the requests waiting on them, bad frames to the count, the
log and ``on_bad_message``. When the connection drops it reports it (``on_disconnect``)
and, if the policy says so, tries again: one round of the relay URLs at a time.

A connection whose relay selected ``wsproxy.v1`` starts with the relay's welcome, read
before the connection is put to use; after it, every frame's header is taken off first —
a member's message goes on as above, with its sender, and the relay's own events update
the :class:`~.membership.MemberList` and reach the handlers as ``Joined``, ``Left`` and
``DeliveryFailed``.

Over v1 the client may be in several groups (:mod:`.groups`): each message and event
goes to the :class:`~.groups.Membership` of the group it names (none: the URL's), and
each new connection rejoins the groups the client was in before anything is sent to
them, naming each one's own position.
"""

from __future__ import annotations

import inspect
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs
import trio

from ..protocol.typenames import TypeRegistry
from ..protocol.v1 import (
    ALREADY_JOINED,
    JOIN_REFUSALS,
    NO_SUCH_MEMBER,
    NOT_IN_GROUP,
    REFUSED,
    SUBPROTOCOL,
    Error,
    Event,
    From,
    HeaderReader,
    Members,
    Position,
    Presence,
    TokenExpiring,
    TokenRefreshed,
    V1Error,
    Welcome,
    join_header,
    leave_header,
    refresh_header,
)
from ..protocol.v1 import Left as V1Left
from .config import ClientConfig
from .connection import (
    BinaryPiece,
    Closed,
    ConnectionEnded,
    Received,
    WebSocket,
    connect_and_serve,
    serve_frames,
)
from .dispatch import Dispatcher
from .errors import (
    ClientClosed,
    ClientError,
    ClosedByRelay,
    ConnectError,
    HandshakeRefused,
    JoinRefused,
    NotInGroup,
    could_not_connect,
    gave_up_reconnecting,
)
from .groups import Groups, Membership, Standing
from .incoming import (
    BadMessage,
    BadMessageHook,
    BadMessageKind,
    Disconnected,
    DisconnectHook,
    Incoming,
    Replier,
)
from .link import Connection, Lifecycle, Link
from .membership import DeliveryFailed, Left, MemberList
from .policy import ReconnectPolicy, RoundFailed, close_meaning, reconnects_after, refusal_is_final
from .requests import PendingRequests
from .resumption import Resumed, Resumption
from .sent import SentLog
from .stats import ClientStats
from .streams import BinaryStream
from .urls import with_query
from .wire import Deliver, DotnetRuntime, Reply, read_frame, split_relay_message

#: An access token, or a function (plain or async) that gives a fresh one.
AccessToken = str | Callable[[], str | Awaitable[str]]

__all__ = ["Connect", "ConnectionTask"]

logger = logging.getLogger("trio_wsproxy.client")

# How much of a bad frame goes into its log line.
_LOG_PREVIEW = 200


class Connect(Protocol):
    """How the connection task makes one connection to ``url`` and serves it: opens it,
    hands its :class:`~.connection.WebSocket` to ``serve``, closes it, and returns what
    ``serve`` returned; a failure to connect is a :exc:`~.errors.ConnectError`.
    :func:`~.connection.connect_and_serve` does it over the network; a test stands in a
    relay of its own, to drive the task's decisions without one."""

    def __call__(
        self,
        url: str,
        *,
        config: ClientConfig,
        ssl_context: ssl.SSLContext | None,
        serve: Callable[[WebSocket], Awaitable[Closed]],
    ) -> Awaitable[Closed]: ...


@attrs.define
class _Announced:
    """A typed message that announced a stream, waiting for it."""

    deliver: Deliver
    frame: str


@attrs.define
class _Arriving:
    """A binary message arriving in pieces: streamed to its :class:`BinaryStream`, or
    assembled (for ``bytes`` handlers) until its last piece."""

    #: The v1 header's reader while its line is incomplete (None once read, or plain).
    header: HeaderReader | None = None
    #: The group it is of, once its header is read.
    group: Membership | None = None
    origin: From | None = None
    stream: BinaryStream | None = None
    parts: list[bytes] | None = None
    size: int = 0
    #: Whether the rest is dropped (its header was bad).
    skip: bool = False


class ConnectionTask:
    """Connects one client to its relays and keeps it connected (see :meth:`run`).

    It shares the client's parts: the :class:`~.link.Link` it attaches connections to,
    the :class:`~.dispatch.Dispatcher` it submits messages and hooks to, the
    :class:`~.requests.PendingRequests` it answers, the :class:`~.membership.MemberList`
    it keeps. ``sender`` is what received messages reply through, ``reply_via(member)``
    what a v1 message from ``member`` replies through; ``on_connect`` is called (in the
    dispatcher) after each connection. ``since`` is the position the first connection
    names (a program starting where an earlier one left off). ``connect`` makes each
    connection (:class:`Connect`: over the network unless a test says otherwise).

    Those parts are the URL's group's; :attr:`groups` holds them (its
    :attr:`~.groups.Groups.home`) and the memberships of the groups the client joins.
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
        membership: MemberList,
        sender: Replier,
        runtime: DotnetRuntime,
        reply_via: Callable[[str], Replier],
        on_connect: Callable[[], object] | None,
        on_disconnect: DisconnectHook | None,
        on_bad_message: BadMessageHook | None,
        since: Position | None = None,
        connect: Connect = connect_and_serve,
        access_token: AccessToken | None = None,
    ) -> None:
        self._urls = urls
        # The access token, or what gives a fresh one (called before each connection
        # and when the relay says the token expires soon).
        self._access_token = access_token
        self._id = client_id
        self._group = group
        self._config = config
        self._types = types
        self._ssl_context = ssl_context
        self._stats = stats
        self._link = link
        self._dispatcher = dispatcher
        self._requests = requests
        self._sender = sender
        self._runtime = runtime
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._on_bad_message = on_bad_message
        self._connect = connect
        #: Index in the URLs of the relay connected to now, or last.
        self.url_index = 0
        #: The subprotocol of the connection now, or last: ``"wsproxy.v1"``, or None (plain).
        self.protocol: str | None = None
        self._home = Membership(
            group,
            True,
            membership,
            Resumption(since),
            dispatcher,
            requests,
            sender,
            reply_via,
        )
        #: The groups the client is in, the URL's first.
        self.groups = Groups(self._home)
        self._ws: WebSocket | None = None
        # Announcements waiting for their streams, by group and sender (None: on a plain
        # relay).
        self._announced: dict[tuple[str, str | None], _Announced] = {}
        # The binary message arriving in pieces now, if any.
        self._arriving: _Arriving | None = None
        # What was written on the connections that ended since the last report.
        self._sent_on_lost: SentLog | None = None

    @property
    def url(self) -> str:
        """The relay URL connected to now, or last (the first URL before any connection)."""
        return self._urls[self.url_index]

    @property
    def resumption(self) -> Resumption:
        """Where the client is in its URL's group's history (a v1 relay with history on)."""
        return self._home.resumption

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
        """Report a lost connection, and what was sent on it unconfirmed; returns
        whether the client reconnects."""
        reconnecting = reconnects_after(code, self._config)
        sent, self._sent_on_lost = self._sent_on_lost, None
        unconfirmed = 0 if sent is None else sent.count
        logger.log(
            logging.WARNING if reconnecting else logging.ERROR,
            "disconnected from %s: code %d (%s)%s; %s%s",
            self.url,
            code,
            close_meaning(code),
            f": {reason}" if reason else "",
            f"{unconfirmed} messages sent on it unconfirmed; " if unconfirmed else "",
            "will reconnect" if reconnecting else "not reconnecting",
        )
        self._stats.disconnects += 1
        self._stats.unconfirmed += unconfirmed
        if self._on_disconnect is not None:
            event = Disconnected(
                code,
                reason,
                reconnecting,
                unconfirmed,
                () if sent is None else sent.messages(),
            )
            await self._dispatcher.call_soon(self._on_disconnect, event)
        return reconnecting

    async def _connect_and_serve(
        self, index: int, task_status: trio.TaskStatus[None] | None
    ) -> Closed:
        """One connection to URL ``index``, from handshake to close: returns the close code
        and reason."""

        async def serve(ws: WebSocket) -> Closed:
            return await self._serve(index, ws, task_status)

        url = self._urls[index]
        since = self.resumption.since()
        if since is not None:
            url = with_query(url, "since", since)  # to get what was missed meanwhile
        if self._access_token is not None:
            url = with_query(url, "access_token", await self._token())
        return await self._connect(
            url, config=self._config, ssl_context=self._ssl_context, serve=serve
        )

    async def _serve(
        self,
        index: int,
        ws: WebSocket,
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
        self._ws = ws
        config = self._config
        connection = Connection(
            ws,
            url,
            ws.subprotocol,
            sent=SentLog(config.unconfirmed_limit, config.unconfirmed_bytes),
        )
        self._link.attach(connection)
        try:
            take = self._take
            ended: Closed | None = None
            if connection.v1:
                ended = await self._welcome(connection)
                take = self._take_v1
            else:
                self._in_no_joined_group(f"{url} does not speak {SUBPROTOCOL}")
                connection.rejoined.set()
                self.resumption.lost()
                await self._dispatcher.moved(None, at_once=not self._stats.connects)
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
            if ended is None:
                ended = await serve_frames(
                    ws,
                    take,
                    url=url,
                    ping_interval=self._config.ping_interval,
                    ping_timeout=self._config.ping_timeout,
                )
            for key in list(self._announced):
                await self._stream_missing(key, "the connection ended first")
            return ended
        finally:
            self._link.detach(connection)
            if self._sent_on_lost is None:
                self._sent_on_lost = connection.sent
            else:  # (the last one ended unreported: no welcome came on it)
                self._sent_on_lost.extend(connection.sent)
            for group in self.groups:
                group.members.connection_ended()
                if group.standing is Standing.LEAVING:
                    self._drop(group, None)  # (a new connection is in none but the URL's)
            arriving, self._arriving = self._arriving, None
            if arriving is not None and arriving.stream is not None:
                arriving.stream.interrupt(*(ws.closed or (1006, None)))
            self._announced.clear()

    async def _welcome(self, connection: Connection) -> Closed | None:
        """Read a v1 connection's first message, the relay's welcome, within
        ``connect_timeout``, rejoin the groups the client was in, and take the welcome
        in; returns how the connection ended if it ended first. Raises
        :exc:`ConnectError` when nothing came in time."""
        ws, url = connection.ws, connection.url
        first: Received | None = None
        with trio.move_on_after(self._config.connect_timeout):
            try:
                first = await ws.receive()
            except ConnectionEnded as ended:
                return (ended.code, ended.reason)
        if first is None:
            raise ConnectError(
                f"{url} selected {SUBPROTOCOL} but sent no welcome within "
                f"{self._config.connect_timeout} s",
                url=url,
            )
        # Before anything is handed to the dispatchers, which may be full while a
        # handler waits to send to a group (that waits for these joins).
        await self._rejoin(connection)
        await self._take_v1(first, welcome_from=url)
        return None

    async def _rejoin(self, connection: Connection) -> None:
        """Join on ``connection`` each group the client was in (or was joining), naming
        the last position it saw in each; then messages to them may go."""
        try:
            for group in self.groups.to_rejoin(connection):
                named = group.resumption.named()
                await connection.ws.send_message(join_header(group.name, named).decode())
        except ConnectionEnded:
            pass  # (read next, the end says so)
        finally:
            connection.rejoined.set()

    def _in_no_joined_group(self, why: str) -> None:
        """The connection is in the URL's group only (a plain relay): the other groups
        are lost."""
        for group in self.groups:
            if group.home:
                if group.standing is not Standing.JOINED:
                    group.welcome()  # the URL names it
            else:
                self._drop(group, why)

    def forget(self, group: Membership) -> None:
        """The client is out of ``group`` without the relay's answer: it left it while
        disconnected, or gave up joining it (a welcome that comes yet is left again)."""
        self._drop(group, None)

    def close(self, *, joined_only: bool = False) -> None:
        """The client closed: it is in no group any more (``joined_only``: but the URL's,
        whose dispatcher is the client's own, stopped by the client)."""
        error = ClientClosed("the client closed")
        for group in self.groups:
            if not (joined_only and group.home):
                self._end(group, "the client closed", error)

    def _drop(self, group: Membership, reason: str | None) -> None:
        """The client is no longer in ``group`` (``reason``: why, None: it left it)."""
        if reason is None:
            error = NotInGroup(f"the client left the group {group.name!r}", group=group.name)
        else:
            error = NotInGroup(
                f"the client is no longer in the group {group.name!r}: {reason}", group=group.name
            )
        self._end(group, reason, error)

    def _end(self, group: Membership, reason: str | None, error: ClientError) -> None:
        if group.routed:
            logger.info(
                "no longer in group %r%s", group.name, "" if reason is None else f": {reason}"
            )
        for key in [key for key in self._announced if key[0] == group.name]:
            del self._announced[key]  # (its dispatcher stops: nobody to tell)
        group.end(reason, error)
        self.groups.drop(group)

    async def _take(self, received: Received) -> None:
        """Turn one message into a dispatcher job, a resolved request, or a bad message."""
        if isinstance(received, BinaryPiece):
            await self._piece(received, v1=False)
            return
        self._stats.messages_received += 1
        if isinstance(received, bytes) and self._not_plain(self._home, len(received)):
            await self._whole_binary(self._home, received, None)
            return
        verdict = read_frame(
            received,
            types=self._types,
            awaiting=self._requests,
            sender=self._sender,
            runtime=self._runtime,
        )
        # The plain hot path: what _carry_out does, without one more coroutine per message.
        if isinstance(verdict, Deliver) and not self._dispatcher.announces(verdict.message_type):
            await self._dispatcher.deliver(verdict.incoming, verdict.message_type)
        else:
            await self._carry_out(self._home, verdict, received)

    async def _take_v1(self, received: Received, *, welcome_from: str | None = None) -> None:
        """Take a v1 message's header off, then carry out what it says: a member's message
        as :meth:`_take` does, with its sender, for the group it is of; one of the relay's
        events. ``welcome_from``: the message is the first from that relay URL, which
        should be its welcome."""
        if isinstance(received, BinaryPiece):
            await self._piece(received, v1=True)
            return
        try:
            header, payload = split_relay_message(received)
        except V1Error as error:
            self._stats.messages_received += 1
            await self._bad_header(received, error)
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
            group = self.groups.get(header.group)
            if group is None:
                _not_in(header.group)
                return
            self._heard(group, header)
            if isinstance(payload, bytes):
                if self._not_plain(group, len(received)):
                    await self._whole_binary(group, payload, header)
                    return
            elif (group.name, header.sender) in self._announced:
                await self._stream_missing(
                    (group.name, header.sender), "its sender's next message was text"
                )
            verdict = read_frame(
                payload,
                types=self._types,
                awaiting=group.requests,
                sender=self._reply_path(group, header.sender),
                origin=header,
                runtime=self._runtime,
            )
            await self._carry_out(group, verdict, payload)
            if header.offset is not None and not isinstance(verdict, Deliver):
                await group.dispatcher.passed(header.offset)  # (a reply, a bad message)
        else:
            await self._event(header)

    def _heard(self, group: Membership, header: From) -> None:
        """A member's message came with ``header``: where it is in the history, and from whom."""
        if header.offset is not None:
            group.resumption.heard(header.offset)
        if header.sender is not None:
            group.members.heard_from(header.sender)

    def _reply_path(self, group: Membership, sender: str | None) -> Replier:
        # A message the back end posted (no sender) is answered to the group.
        return group.sender if sender is None else group.reply_via(sender)

    async def _bad_header(self, frame: str | bytes, error: V1Error) -> None:
        text = frame if isinstance(frame, str) else frame[:_LOG_PREVIEW].decode("utf-8", "replace")
        await self._reject(
            BadMessage(BadMessageKind.INVALID_HEADER, f"a {SUBPROTOCOL} message {error}", text)
        )

    # -- binary messages as streams -------------------------------------------------------

    def _new_stream(
        self, group: Membership, origin: From | None, size: int | None
    ) -> tuple[Incoming[BinaryStream], object]:
        """The stream of a binary message from ``origin``'s sender, tied to the
        announcement that sender made, if any; and the announcement's type."""
        sender, direct, offset = (
            (None, False, None) if origin is None else (origin.sender, origin.direct, origin.offset)
        )
        announced = self._announced.pop((group.name, sender), None)
        stream = BinaryStream(
            sender=sender,
            direct=direct,
            size=size,
            announcement=None if announced is None else announced.deliver.incoming,
        )
        incoming = Incoming(
            stream, None, None, None, self._reply_path(group, sender), sender, direct, offset
        )
        return incoming, None if announced is None else announced.deliver.message_type

    def _not_plain(self, group: Membership, size: int) -> bool:
        """Whether a binary message that arrived whole (``size`` bytes) is not simply
        delivered to ``bytes`` handlers: it goes to a stream, or is over the limit."""
        return bool(self._announced) or group.dispatcher.wants_streams or self._too_big(size)

    async def _whole_binary(self, group: Membership, payload: bytes, origin: From | None) -> None:
        """A binary message that arrived whole and is not simply delivered: to a stream
        (whatever its size), else closed over (1009, over ``max_message_size``)."""
        if not (self._announced or group.dispatcher.wants_streams):
            await self._close_too_big()
            return
        incoming, announced_as = self._new_stream(group, origin, len(payload))
        await group.dispatcher.deliver_stream(incoming, announced_as)
        await incoming.value.feed(payload, True)

    async def _piece(self, piece: BinaryPiece, *, v1: bool) -> None:
        """Take in a piece of a binary message arriving in pieces: stream it, or assemble
        it for ``bytes`` handlers (up to ``max_message_size``: closed with 1009 beyond)."""
        if piece.first:
            self._stats.messages_received += 1
            self._arriving = arriving = _Arriving(header=HeaderReader() if v1 else None)
            if not v1:
                await self._begin(arriving, self._home, None)
        elif self._arriving is None:
            return  # the rest of a message the connection was closed over
        else:
            arriving = self._arriving
        data = piece.data
        reader = arriving.header
        if reader is not None:
            try:
                read = reader.feed(data, piece.last)
            except V1Error:
                read = None
                arriving.skip = True
                arriving.header = None
                await self._bad_header(reader.held[:_LOG_PREVIEW], V1Error("no header line"))
            if read is not None:
                message, end = read
                line, data = message[:end], message[end:]
                arriving.header = None
                await self._begin_v1(arriving, line)
            elif not arriving.skip:
                return
        if arriving.skip:
            pass
        elif arriving.stream is not None:
            await arriving.stream.feed(data, piece.last)
        elif arriving.parts is not None and arriving.group is not None:
            arriving.size += len(data)
            if self._too_big(arriving.size):
                arriving.skip = True
                await self._close_too_big()
                return
            arriving.parts.append(data)
            if piece.last:
                group, origin = arriving.group, arriving.origin
                verdict = read_frame(
                    b"".join(arriving.parts),
                    types=self._types,
                    awaiting=group.requests,
                    sender=self._reply_path(group, None if origin is None else origin.sender),
                    origin=origin,
                    runtime=self._runtime,
                )
                await self._carry_out(group, verdict, "")
        if piece.last:
            self._arriving = None

    def _too_big(self, size: int) -> bool:
        limit = self._config.max_message_size
        return limit is not None and size > limit

    async def _close_too_big(self) -> None:
        """A binary message for ``bytes`` handlers is over ``max_message_size``: close 1009."""
        if self._ws is not None:
            await self._ws.too_big()

    async def _begin_v1(self, arriving: _Arriving, line: bytes) -> None:
        try:
            header, _ = split_relay_message(line)
            if not isinstance(header, From):
                raise V1Error("is a relay event, which has no binary payload")
        except V1Error as error:
            arriving.skip = True
            await self._bad_header(line, error)
            return
        group = self.groups.get(header.group)
        if group is None:
            _not_in(header.group)
            arriving.skip = True
            return
        self._heard(group, header)
        await self._begin(arriving, group, header)

    async def _begin(self, arriving: _Arriving, group: Membership, origin: From | None) -> None:
        """A binary message from ``origin`` starts arriving: as a stream if its sender
        announced one, or streams are wanted; else to be assembled."""
        arriving.group, arriving.origin = group, origin
        sender = None if origin is None else origin.sender
        if (group.name, sender) in self._announced or group.dispatcher.wants_streams:
            incoming, announced_as = self._new_stream(group, origin, None)
            arriving.stream = incoming.value
            await group.dispatcher.deliver_stream(incoming, announced_as)
        else:
            arriving.parts = []

    async def _hold(self, group: Membership, verdict: Deliver, frame: str) -> None:
        """Keep an announcement until its sender's stream comes."""
        key = (group.name, verdict.incoming.sender)
        if key in self._announced:
            await self._stream_missing(key, "another announcement came first")
        self._announced[key] = _Announced(verdict, frame)

    async def _stream_missing(self, key: tuple[str, str | None], why: str) -> None:
        """The announcement of ``key`` will get no stream: report it as a bad message."""
        announced = self._announced.pop(key)
        kind = announced.deliver.incoming.message_type
        reason = f"a {kind} message announced a stream that did not follow: {why}"
        await self._reject(BadMessage(BadMessageKind.MISSING_STREAM, reason, announced.frame))

    # -- the access token ---------------------------------------------------------------

    async def _token(self) -> str:
        """The access token to present now: the one given, or a fresh one."""
        given = self._access_token
        if given is None or isinstance(given, str):
            return given or ""
        token = given()
        if inspect.isawaitable(token):
            token = await token
        if not isinstance(token, str) or not token:
            raise TypeError(f"access_token() must return a non-empty str, not {token!r}")
        return token

    async def _refresh_token(self, event: TokenExpiring) -> None:
        """The relay says the connection's token expires at ``event.exp``: send a fresh
        one in place (only a function can give one; a fixed token runs out, and the
        relay closes with 4006)."""
        if self._access_token is None or isinstance(self._access_token, str):
            logger.warning(
                "the access token expires in %.0fs and the client has no function to "
                "renew it (access_token=): the relay will close the connection (4006)",
                event.exp - time.time(),
            )
            return
        token = await self._token()
        ws = self._ws
        if ws is not None:
            await ws.send_message(refresh_header(token).decode())

    # -- the relay's events ---------------------------------------------------------------

    async def _event(self, event: Event) -> None:
        """Take in one of the relay's own events and hand the handlers of its group what
        it means."""
        self._stats.events_received += 1
        if isinstance(event, Error):
            await self._error(event)
        elif isinstance(event, Welcome):
            await self._welcomed(event)
        elif isinstance(event, V1Left):
            group = self.groups.get(event.group)
            if group is not None:
                self._drop(group, event.reason)
        elif isinstance(event, TokenExpiring):
            await self._refresh_token(event)
        elif isinstance(event, TokenRefreshed):
            logger.debug("the relay took the new access token (until %d)", event.exp)
        else:
            group = self.groups.get(event.group)
            if group is None:
                _not_in(event.group)
            else:
                await self._membership_changed(group, event)

    async def _welcomed(self, welcome: Welcome) -> None:
        """A group's welcome: the URL's on each connection, or the answer to a join."""
        group = self.groups.held(welcome.group)
        if group is not None and group.home and group.reason is not None:
            # The relay took the client out of the URL's group, which the client did not
            # leave: the relay let it in again with the URL.
            group.join()
        if group is None or group.standing not in (Standing.JOINING, Standing.JOINED):
            # A group the client is not in: the URL's, left before this connection, or
            # one whose join() was given up. Leave it again; drop what comes meanwhile.
            logger.debug("welcomed into group %r, which the client left: leaving", welcome.group)
            if self._ws is not None:
                try:
                    await self._ws.send_message(leave_header(welcome.group).decode())
                except ConnectionEnded:
                    pass
            return
        resumed = group.resumption.welcomed(welcome)
        # Where the application is, once what was read before is handed out (at once on
        # the group's first welcome: nothing was; for the URL's group, on the client's
        # first connection).
        first = not self._stats.connects if group.home else not group.welcomed
        group.welcome()
        await group.dispatcher.moved(group.resumption.position, at_once=first)
        if resumed is not None:
            await self._resumed(group, resumed)
        await self._membership_changed(group, welcome)

    async def _resumed(self, group: Membership, resumed: Resumed) -> None:
        where = "" if group.home else f" in group {group.name!r}"
        if resumed.recovered:
            logger.info("recovering %d missed messages%s", resumed.missed, where)
        else:
            logger.warning("could not recover missed messages%s: %s", where, resumed.reason)
        await group.dispatcher.deliver_event(Incoming(resumed, None, None, None, group.sender))

    async def _membership_changed(
        self, group: Membership, event: Welcome | Presence | Members
    ) -> None:
        for change in group.members.apply(event):
            key = (group.name, change.id)
            if isinstance(change, Left) and key in self._announced:
                await self._stream_missing(key, "its sender left")
            await group.dispatcher.deliver_event(Incoming(change, None, None, None, group.sender))

    async def _error(self, event: Error) -> None:
        """Something the relay could not do: a join it refused, the answer to a leave of
        a group the client was not in, or a message it could not deliver."""
        name = self._home.name if event.group is None else event.group
        group = self.groups.held(name)
        if event.error in JOIN_REFUSALS and not _refuses_a_message(group, event):
            if group is not None and (
                group.standing is Standing.JOINING
                or (group.standing is Standing.JOINED and event.error != ALREADY_JOINED)
            ):
                logger.info("the relay refused to let the client join %r: %s", name, event.detail)
                self._end(group, event.error, JoinRefused(name, event.error, event.detail))
            return  # (the answer to a join given up on, or one sent twice)
        if event.error == NOT_IN_GROUP and group is not None:
            if group.standing is Standing.LEAVING:
                self._drop(group, None)  # the answer to its leave: out of it already
                return
        if group is None or not group.routed:
            group = self._home
        logger.info(
            "the relay could not deliver a message%s%s: %s (%s)",
            "" if event.to is None else f" to {event.to!r}",
            "" if group.home else f" in group {group.name!r}",
            event.detail,
            event.error,
        )
        if event.error == NO_SUCH_MEMBER and event.to is not None:
            group.requests.member_not_found(event.to, event.detail)
        failed = DeliveryFailed(event.to, event.error, event.detail)
        await group.dispatcher.deliver_event(Incoming(failed, None, None, None, group.sender))

    async def _carry_out(
        self, group: Membership, verdict: Deliver | Reply | BadMessage, frame: str | bytes
    ) -> None:
        """Hand a read message of ``group`` on: to its dispatcher (or held, if it
        announces a stream), a waiting request, or the rejects."""
        if isinstance(verdict, Deliver):
            if isinstance(frame, str) and group.dispatcher.announces(verdict.message_type):
                await self._hold(group, verdict, frame)
            else:
                await group.dispatcher.deliver(verdict.incoming, verdict.message_type)
        elif isinstance(verdict, Reply):
            bad = group.requests.answer(verdict, self._types)
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


def _refuses_a_message(group: Membership | None, event: Error) -> bool:
    """Whether ``event``, a ``refused``, answers a message of the client's rather than a
    join: the application's back end (its publish hook) refused a message to a group
    the client is in and not rejoining. The client stays in the group; handlers of
    DeliveryFailed are told."""
    return (
        event.error == REFUSED
        and group is not None
        and group.standing is Standing.JOINED
        and not group.rejoining
    )


def _not_in(group: str | None) -> None:
    logger.debug(
        "dropped what came of group %r: the client is not in it",
        "(the URL's)" if group is None else group,
    )
