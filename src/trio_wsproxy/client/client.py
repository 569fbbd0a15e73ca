"""The typed Trio client: join a group on a relay, send and receive typed messages.

One client is one nursery (opened by :func:`open_client`) holding two tasks:

- the *connection task* (:mod:`.connection_task`) connects, reads frames, answers pending
  requests, and reconnects with backoff when the connection drops — to the next of
  several relay URLs, if given — as :mod:`.policy` decides;
- the *dispatcher* (:mod:`.dispatch`) runs user code — handlers, subscriptions, hooks —
  one message at a time, in arrival order.

Over ``wsproxy.v1`` the client may join more groups on its one connection
(:meth:`Client.join`, :mod:`.groups`); each has a :class:`~.handle.GroupHandle` with a
dispatcher of its own, a task in the client's nursery. The client's own API is its URL's
group's handle.

The client offers the ``wsproxy.v1`` subprotocol and speaks it whenever the relay selects
it (:attr:`Client.protocol`), the plain protocol otherwise, behind the same API; only v1
relays tell who sent a message, who is in the group (:mod:`.membership`), and deliver a
message to one member.

Between them sits a bounded channel (``ClientConfig.read_ahead`` messages): when handlers
fall behind, the connection task stops reading the socket, so nothing is dropped and
memory stays bounded (the relay then sees a slow member; see the close-code table in
the README).

:class:`Client` is the facade over these parts; every public name of the client is
importable from here.
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar, overload

import trio

from ..protocol.exceptions import raise_sole_error
from ..protocol.typenames import TypeRegistry
from ..protocol.v1 import ALREADY_JOINED, MAX_MEMBER_HEADER, SUBPROTOCOL, Position, join_header
from .config import DEFAULT_RECONNECT_CODES, ClientConfig
from .connection import ConnectionEnded
from .connection_task import AccessToken, ConnectionTask
from .dispatch import Dispatcher
from .errors import (
    ClientClosed,
    ClientError,
    ClosedByRelay,
    ConnectError,
    HandshakeRefused,
    JoinRefused,
    MemberNotFound,
    NotConnected,
    NotInGroup,
    ReplyError,
    RequestTimeout,
    UnsupportedByRelay,
)
from .groups import Membership, Standing
from .handle import DirectReply, GroupHandle, register
from .incoming import (
    BadMessage,
    BadMessageHook,
    BadMessageKind,
    Disconnected,
    DisconnectHook,
    HandlerErrorHook,
    Incoming,
)
from .link import Lifecycle, Link
from .membership import DeliveryFailed, Joined, Left, MemberList
from .policy import reconnect_delay
from .requests import PendingRequests
from .resumption import Resumed, Resumption, position_of
from .sent import SentMessage
from .stats import ClientStats
from .streams import DEFAULT_PIECE_SIZE, BinaryStream, StreamInterrupted, StreamSource
from .urls import connection_url, connection_urls
from .wire import DotnetRuntime, encode_message

__all__ = [
    "DEFAULT_RECONNECT_CODES",
    "BadMessage",
    "BadMessageKind",
    "BinaryStream",
    "Client",
    "ClientClosed",
    "ClientConfig",
    "ClientError",
    "ClientStats",
    "ClosedByRelay",
    "ConnectError",
    "DeliveryFailed",
    "Disconnected",
    "GroupHandle",
    "HandshakeRefused",
    "Incoming",
    "JoinRefused",
    "Joined",
    "Left",
    "MemberNotFound",
    "NotConnected",
    "NotInGroup",
    "Position",
    "ReplyError",
    "RequestTimeout",
    "Resumed",
    "SentMessage",
    "StreamInterrupted",
    "StreamSource",
    "UnsupportedByRelay",
    "connection_url",
    "connection_urls",
    "open_client",
    "reconnect_delay",
]

logger = logging.getLogger("trio_wsproxy.client")

T = TypeVar("T")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., object])

#: Hook called after each connection (the first one included), with the client.
ConnectHook = Callable[["Client"], object]


class Client:
    """A member of a group on a relay (or on any of several, see :attr:`urls`). Get one
    from :func:`open_client`.

    Typed messages go through :attr:`types` (a :class:`TypeRegistry`); receive them with
    handlers (:meth:`on`), a subscription (:meth:`subscribe`) or :meth:`receive`; ask
    and answer with :meth:`request` and :meth:`Incoming.reply`. All of these are of the
    group the URL named; over ``wsproxy.v1``, :meth:`join` joins more groups on the same
    connection, each with the same API on its :class:`GroupHandle`.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        group: str | None = None,
        id: str | None = None,
        config: ClientConfig | None = None,
        types: TypeRegistry | None = None,
        ssl_context: ssl.SSLContext | None = None,
        on_connect: ConnectHook | None = None,
        on_disconnect: DisconnectHook | None = None,
        on_bad_message: BadMessageHook | None = None,
        on_handler_error: HandlerErrorHook | None = None,
        since: Position | str | None = None,
        access_token: AccessToken | None = None,
    ) -> None:
        full_urls, client_id, group_name = connection_urls(url, group=group, id=id)
        start = position_of(since)
        plain = [full for full in full_urls if not full.startswith("wss:")]
        if ssl_context is not None and plain:
            raise ValueError(f"an ssl_context needs a wss:// URL, got {', '.join(plain)}")
        #: Every relay URL the client may connect to, in the order given, ``id`` and
        #: ``groupName`` included.
        self.urls: tuple[str, ...] = full_urls
        #: This client's id in the group (kept across reconnects and relays).
        self.id: str = client_id
        #: The group this client belongs to.
        self.group: str = group_name
        #: The client's settings.
        self.config: ClientConfig = config if config is not None else ClientConfig()
        #: Wire names and payload conversion (one cattrs converter).
        self.types: TypeRegistry = types if types is not None else TypeRegistry()
        #: Counters: messages in and out, bad messages by kind, reconnects, ...
        self.stats: ClientStats = ClientStats()
        self._link = Link(self.config, self.stats)
        # The .NET version of generic names: pinned by the config, or learned from the group.
        self._runtime = DotnetRuntime(pinned=self.config.dotnet_version)
        self._on_handler_error = on_handler_error
        self._dispatcher = self._new_dispatcher()
        self._task = ConnectionTask(
            urls=self.urls,
            client_id=self.id,
            group=self.group,
            config=self.config,
            types=self.types,
            ssl_context=ssl_context,
            stats=self.stats,
            link=self._link,
            dispatcher=self._dispatcher,
            requests=PendingRequests(),
            membership=MemberList(self.id),
            sender=self,
            runtime=self._runtime,
            reply_via=self._reply_via,
            on_connect=None if on_connect is None else functools.partial(on_connect, self),
            on_disconnect=on_disconnect,
            on_bad_message=on_bad_message,
            since=start,
            access_token=access_token,
        )
        #: The URL's group's handle: the client's own API is its.
        self._home = GroupHandle(self, self._task.groups.home)
        # The handles of the groups joined (some perhaps left since), by name.
        self._joined: dict[str, GroupHandle] = {}
        self._nursery: trio.Nursery | None = None
        self._run_scope = trio.CancelScope()

    def _new_dispatcher(self) -> Dispatcher:
        return Dispatcher(
            types=self.types,
            stats=self.stats,
            read_ahead=self.config.read_ahead,
            on_handler_error=self._on_handler_error,
        )

    def _reply_via(self, member_id: str) -> DirectReply:
        return DirectReply(self._home, member_id)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "connected" if self.connected else "disconnected"
        return f"<Client id={self.id!r} group={self.group!r} {state}>"

    @property
    def url(self) -> str:
        """The relay URL the client is connected to now (or was last, while reconnecting;
        the first of :attr:`urls` before the first connection)."""
        return self._task.url

    @property
    def connected(self) -> bool:
        """Whether the client has a live connection right now."""
        return self._link.current is not None

    @property
    def protocol(self) -> str | None:
        """The protocol of the connection now (or the last one, while reconnecting):
        ``"wsproxy.v1"`` when the relay selected it, None for the plain protocol (the
        .NET middleware, a relay older than v1, ``config.offer_v1=False``)."""
        return self._task.protocol

    @property
    def members(self) -> frozenset[str]:
        """The ids of the other members of the group, as the relay last told
        (``wsproxy.v1`` only): kept current while :attr:`members_current`; otherwise as
        last known — empty if never known (a plain relay), frozen while the group is over
        the relay's presence limit or the client is reconnecting. Changes reach handlers
        and subscriptions as :class:`Joined` and :class:`Left`."""
        return self._home.members

    @property
    def member_info(self) -> Mapping[str, Mapping[str, Any]]:
        """What the application's back end gave the other members of the group (its
        connect hook's ``info``: a display name, a role...), by id: those it gave one, as
        the relay last told (``wsproxy.v1`` only). :class:`Joined` carries it too."""
        return self._home.member_info

    @property
    def member_count(self) -> int | None:
        """How many other members the group has, as the relay last told (kept by a v1
        relay even over its presence limit, when :attr:`members` is not); None if no
        relay ever told (plain)."""
        return self._home.member_count

    @property
    def members_current(self) -> bool:
        """Whether :attr:`members` is kept current right now: connected over
        ``wsproxy.v1`` to a relay that keeps the group's member list."""
        return self._home.members_current

    @property
    def position(self) -> Position | None:
        """Where the client is in its group's history (``wsproxy.v1``, a relay keeping
        history): the position of the last message handed to handlers and subscriptions
        (in a handler, the one it is handling) — or, before any, the welcome's. None
        before the welcome, on a plain relay, or when the relay keeps no history.

        ``str()`` of it (``EPOCH:OFFSET``) saved and given back as
        ``open_client(..., since=...)`` — by a program restarted, by a new client —
        gets every message after it, or a :class:`Resumed` saying why not. Messages the
        client read but has not handed out yet (up to ``config.read_ahead``) are not
        counted: they are lost when it closes, and a client started from this position
        gets them again. A subscriber that stops reading before its channel is empty
        has not handled what it left there: save ``incoming.offset`` of the last one it
        did, with this position's epoch, instead."""
        return self._home.position

    @property
    def pending_requests(self) -> int:
        """How many :meth:`request` calls are waiting for their answer right now."""
        return self._home.pending_requests

    @property
    def closed(self) -> bool:
        """Whether the client has stopped for good (closed, or ended by an error)."""
        return self._link.state is Lifecycle.CLOSED

    # -- receiving --------------------------------------------------------------------------

    @overload
    def on(self, message_type: type[T]) -> Callable[[F], F]: ...
    @overload
    def on(self, message_type: type[T], handler: Callable[[T], R]) -> Callable[[T], R]: ...
    @overload
    def on(
        self, message_type: type[T], handler: Callable[[T, Incoming[T]], R]
    ) -> Callable[[T, Incoming[T]], R]: ...

    def on(self, message_type: Any, handler: Callable[..., Any] | None = None) -> Any:
        """Call ``handler`` with every message of ``message_type``; returns ``handler``.

        Also a decorator: ``@client.on(SocketMessage)``. ``bytes`` receives binary
        messages, assembled (up to ``config.max_message_size``); :class:`BinaryStream`
        receives them as they arrive, in flat memory whatever their size — once a
        handler or subscription of :class:`BinaryStream` is registered, binary messages
        go to those only (see also :meth:`on_stream`).
        A handler is a plain or an async function taking the value — or the value and an
        :class:`Incoming` (to read the envelope fields or :meth:`~Incoming.reply`).
        Handlers run one message at a time, in arrival order, in the client's nursery;
        several handlers for one type run in registration order. What a handler raises
        goes to ``on_handler_error`` if set, else ends the client and comes out of
        ``async with open_client(...)``.
        """
        return register(self._dispatcher.add_handler, message_type, handler)

    def off(self, message_type: Any, handler: Callable[..., object]) -> None:
        """Stop calling ``handler`` for ``message_type`` (:exc:`ValueError` if it was not on)."""
        self._home.off(message_type, handler)

    @overload
    def on_stream(self, announcement_type: type[T]) -> Callable[[F], F]: ...
    @overload
    def on_stream(
        self, announcement_type: type[T], handler: Callable[[T, BinaryStream], R]
    ) -> Callable[[T, BinaryStream], R]: ...

    def on_stream(self, announcement_type: Any, handler: Callable[..., Any] | None = None) -> Any:
        """Make ``announcement_type`` announce a stream: call ``handler`` with each message
        of it *and* the :class:`BinaryStream` its sender sends next (what
        :meth:`send_stream` sends with ``announce=``). Also a decorator.

        The announcement goes to this handler only, when its stream starts; the stream's
        :attr:`~BinaryStream.announcement` is its :class:`Incoming` (its sender and
        envelope fields). Over ``wsproxy.v1`` the stream is the sender's next
        message; on a plain relay, which names no senders, the group's next binary
        message. An announcement whose stream does not follow — its sender sent
        something else, or left, or the connection ended — goes to ``on_bad_message``
        (:attr:`BadMessageKind.MISSING_STREAM`).
        """
        return register(self._dispatcher.add_stream_handler, announcement_type, handler)

    def off_stream(self, announcement_type: Any, handler: Callable[..., object]) -> None:
        """Stop calling ``handler`` for streams announced by ``announcement_type``."""
        self._home.off_stream(announcement_type, handler)

    @overload
    def subscribe(
        self, *, buffer: int = ...
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Incoming[Any]]]: ...
    @overload
    def subscribe(
        self, message_type: type[T], *, buffer: int = ...
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Incoming[T]]]: ...

    def subscribe(
        self, message_type: Any = None, *, buffer: int = 16
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Incoming[Any]]]:
        """Receive messages of ``message_type`` (every message if omitted) as a channel.

        ::

            async with client.subscribe(SocketMessage) as messages:
                async for incoming in messages:
                    print(incoming.value)

        The channel holds up to ``buffer`` messages; beyond that the client waits for
        the subscriber, as for a slow handler. Only messages dispatched while the
        subscription is open arrive: subscribe *before* sending what will be answered.
        (The client's first handler or subscription also gets what was held for it: the
        messages that came before it, up to ``config.read_ahead``.)
        """
        return self._home.subscribe(message_type, buffer=buffer)

    async def receive(self, message_type: type[T]) -> T:
        """Wait for the next message of ``message_type`` and return its value.

        The timeout is the caller's: ``with trio.fail_after(5): await client.receive(T)``.
        Messages that arrived before the call are not seen (use :meth:`subscribe` for a
        stream, :meth:`request` for an answer) — unless it is the client's first handler
        or subscription: that one gets what was held for it.
        """
        async with self.subscribe(message_type, buffer=1) as channel:
            try:
                incoming = await channel.receive()
            except trio.EndOfChannel:
                raise ClientClosed("the client closed while waiting for a message") from None
            return incoming.value

    # -- sending ----------------------------------------------------------------------------

    async def send(
        self, value: object, *, as_type: Any = None, reply_to: str | None = None
    ) -> None:
        """Send ``value`` to every other member of the group.

        ``bytes`` (or ``bytearray``, ``memoryview``) go as one binary frame, untouched;
        anything else as a typed envelope named after its type, or after ``as_type``
        (required for containers: ``send(["a", "b"], as_type=list[str])``), a type or a
        wire name (``send(2**40, as_type="System.Int64")``). ``reply_to`` sets ``ReplyId``
        (answering by hand; :meth:`Incoming.reply` does it for you): a GUID.

        Raises :exc:`ValueError`, sending nothing, for what would drop a .NET member's
        connection: a top-level ``uuid.UUID``, an ``int`` outside Int32 range (an ``int``
        is always ``System.Int32``), a ``reply_to`` that is not a GUID (see
        :func:`~trio_wsproxy.check_sendable`). A ``None`` or ``""`` payload, which .NET
        members drop without a word, is sent with a logged warning.

        While the client is reconnecting, waits up to ``config.send_timeout`` for the
        connection and then raises :exc:`NotConnected`; a connection that drops while the
        message is being written is retried on the next one. Raises
        :exc:`ClientClosed` once the client is closed. Never drops a message silently.
        """
        await self._home.send(value, as_type=as_type, reply_to=reply_to)

    async def send_stream(
        self,
        source: StreamSource,
        *,
        to: str | None = None,
        announce: object = None,
        announce_as: Any = None,
        piece_size: int = DEFAULT_PIECE_SIZE,
    ) -> int:
        """Send one binary message read from ``source``, of any size, without holding it
        in memory; returns its size in bytes.

        ``source`` is a path, a binary file (sync, read in Trio's worker threads, or
        async), or an iterable or async iterable of ``bytes`` pieces. A path or file is
        read ``piece_size`` bytes at a time; each piece is written before the one after
        the next is read, so the relay — and through it the slowest recipient — paces
        the reading. ``to`` sends it to one member only (``wsproxy.v1``), as
        :meth:`send_to` does.

        ``announce`` (a typed value, as for :meth:`send`; ``announce_as`` as ``as_type``)
        goes right before the message, with nothing else from this client between them:
        a receiver's :meth:`on_stream` handler for its type gets both together.

        Other sends wait while the message is written. Waits for a connection as
        :meth:`send` does, and sends on the next connection if it drops before the
        message started. If it drops later, raises :exc:`StreamInterrupted` (its
        recipients get :exc:`StreamInterrupted` too: the relay closes them with 4002,
        and they reconnect). Cancelled mid-message, or when ``source`` raises, the
        connection is dropped — nothing else may go on it before the message's end —
        and the client reconnects; the recipients are told the same way.
        """
        return await self._home.send_stream(
            source, to=to, announce=announce, announce_as=announce_as, piece_size=piece_size
        )

    async def send_to(
        self, member_id: str, value: object, *, as_type: Any = None, reply_to: str | None = None
    ) -> None:
        """Send ``value`` to the member ``member_id`` only (``wsproxy.v1``): the same
        payload :meth:`send` would send, addressed to one member. A plain member receives
        it as an ordinary message.

        Raises :exc:`MemberNotFound` when the client knows the member is not there — its
        member list is current (:attr:`members_current`) and has no ``member_id`` — and
        :exc:`UnsupportedByRelay` when the relay does not speak v1; nothing is sent then.
        Otherwise the relay decides: if the member has just left, it answers with a
        :class:`DeliveryFailed` event (``error="no_such_member"``) delivered to handlers
        and subscriptions of that type, not raised here. Waits for a connection as
        :meth:`send` does.
        """
        await self._home.send_to(member_id, value, as_type=as_type, reply_to=reply_to)

    async def request(
        self,
        value: object,
        reply_type: type[R],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- the .NET API's cancelAfter; see docstring
        as_type: Any = None,
        to: str | None = None,
    ) -> R:
        """Send ``value`` with a fresh ``Id`` and return the answer, structured as ``reply_type``.

        The answer is the first message whose ``ReplyId`` is that id (from any member,
        .NET or Python); it is not given to handlers. Raises :exc:`RequestTimeout` after
        ``timeout`` seconds (default ``config.request_timeout``; ``math.inf`` waits as
        long as the caller's cancel scope allows), :exc:`ReplyError` if the answer does not
        fit ``reply_type``. Many requests may wait at once; each gets its own answer.

        ``to`` addresses the request to one member, as :meth:`send_to` does (and raises
        as it does); it also raises :exc:`MemberNotFound` when the relay answers that
        there is no such member, instead of waiting out the timeout.
        """
        return await self._home.request(value, reply_type, timeout=timeout, as_type=as_type, to=to)

    # -- many groups on one connection -------------------------------------------------------

    @property
    def groups(self) -> dict[str, GroupHandle]:
        """The handle of each group the client is in, by name: the URL's group (while not
        left) and each one joined (:meth:`join`). A fresh dict each time."""
        handles = [self._home, *self._joined.values()]
        return {handle.name: handle for handle in handles if handle.joined}

    async def join(self, group: str, *, since: Position | str | None = None) -> GroupHandle:
        """Join ``group`` too, on the client's connection (``wsproxy.v1``), and return its
        :class:`GroupHandle` once the relay welcomed the client in it: its members are
        known, and its messages are held for its first handler or subscription.

        ``since`` (a position in that group, e.g. a handle's :attr:`~GroupHandle.position`
        saved earlier) gets every message of the group after it, replayed after a
        :class:`Resumed` event, or says why not, as ``open_client(..., since=...)`` does for
        the URL's group. After a reconnect the client joins the group again by itself.

        Raises :exc:`JoinRefused` (its ``code`` the relay's: ``"not_allowed"`` for a
        token that does not allow the group, ``"group_limit"``, ...) when the relay
        refuses, the client going on in its other groups; :exc:`UnsupportedByRelay` on a
        plain relay (the .NET middleware, ``config.offer_v1=False``); :exc:`NotConnected`
        when no connection comes within ``config.send_timeout``. The URL's group can be
        joined again after :meth:`GroupHandle.leave`: its handle is the client's own API.
        """
        start = position_of(since)
        _check_group_name(group)
        if self._link.stopping:
            raise ClientClosed("the client is closed")
        if self.protocol != SUBPROTOCOL:
            raise UnsupportedByRelay(
                f"the relay at {self.url} does not speak {SUBPROTOCOL} (it did not select "
                "the subprotocol), so the client cannot join another group on its connection",
                url=self.url,
            )
        held = self._task.groups.held(group)
        if held is not None and held.standing is not Standing.LEFT:
            raise JoinRefused(group, ALREADY_JOINED, f"the client is {held.standing.value}")
        if held is not None:  # the URL's group, left: its handle is the client's API
            handle, membership = self._home, held
            membership.resumption = Resumption(start)
        else:
            membership = Membership(
                group,
                False,
                MemberList(self.id),
                Resumption(start),
                self._new_dispatcher(),
                PendingRequests(),
                sender=self,  # (its handle's, just below)
                reply_via=self._reply_via,
            )
            handle = GroupHandle(self, membership)
            membership.sender = handle
            membership.reply_via = functools.partial(DirectReply, handle)
        membership.join()
        self._task.groups.add(membership)
        if not membership.home:
            assert self._nursery is not None  # (the link is not stopping)
            self._nursery.start_soon(self._serve_group, membership)
            self._joined[group] = handle
        try:
            await self._send_join(membership, start)
            await membership.answered.wait()
        except BaseException:
            if membership.standing is Standing.JOINING:
                self._task.forget(membership)  # (a welcome that comes yet is left again)
            raise
        if membership.standing is not Standing.JOINED:
            assert membership.error is not None
            raise membership.error
        return handle

    async def _send_join(self, membership: Membership, since: Position | None) -> None:
        """Send the join of ``membership``, unless a reconnect's rejoin did already (a
        connection that drops before the answer: the next one's rejoin sends it again)."""
        deadline = trio.current_time() + self.config.send_timeout
        connection = await self._link.connection(deadline)
        if not connection.v1:
            raise UnsupportedByRelay(
                f"the relay at {connection.url} does not speak {SUBPROTOCOL}: the client "
                "reconnected to it, and cannot join another group",
                url=connection.url,
            )
        if membership.joined_on is connection or membership.standing is not Standing.JOINING:
            return
        membership.joined_on = connection
        try:
            await connection.ws.send_message(join_header(membership.name, since).decode())
        except ConnectionEnded:
            pass

    async def _serve_group(self, membership: Membership) -> None:
        """Run a joined group's dispatcher until the client is no longer in the group (or
        closes) and it has handed out what it holds."""
        try:
            await membership.dispatcher.run(self._link.say_goodbye)
        finally:
            membership.dispatcher.close()

    def _encode(
        self,
        value: object,
        as_type: Any,
        *,
        request_id: str | None = None,
        reply_to: str | None = None,
    ) -> str | bytes:
        """A message's frame payload, named and checked as this client sends it (its
        type registry, the .NET runtime version of its group)."""
        return encode_message(
            self.types,
            value,
            as_type,
            request_id=request_id,
            reply_to=reply_to,
            runtime=self._runtime,
        )

    async def aclose(self) -> None:
        """Close the connection (code 1000) and stop the client; no reconnecting after it.

        Idempotent. ``async with open_client(...)`` calls it on the way out; calling it
        earlier does not cancel the ``async with`` body, but later sends raise
        :exc:`ClientClosed`. Messages read but not yet handled are dropped.
        """
        self._link.begin_closing()
        await self._link.say_goodbye()
        self._run_scope.cancel()

    # -- the client's life ------------------------------------------------------------------

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, serve, reconnect; returns when closed, raises when ended by an error."""
        failure: ClientError | None = None
        try:
            with self._run_scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._dispatcher.run, self._link.say_goodbye)
                    try:
                        failure = await self._task.run(task_status)
                    finally:
                        # Nothing more comes in; the dispatchers finish what was read.
                        self._dispatcher.stop_taking()
                        self._task.close(joined_only=True)
        finally:
            self._link.finish()
            self._dispatcher.close()
            self._task.close()
        if failure is not None:
            raise failure


def _check_group_name(group: object) -> None:
    if not isinstance(group, str):
        raise TypeError(f"a group name is a str, got {type(group).__name__}")
    if not group:
        raise ValueError("a group name is not empty")
    if len(join_header(group)) > MAX_MEMBER_HEADER:
        raise ValueError(f"group name too long: its join would exceed {MAX_MEMBER_HEADER} bytes")


@asynccontextmanager
async def open_client(
    url: str | Sequence[str],
    *,
    group: str | None = None,
    id: str | None = None,
    config: ClientConfig | None = None,
    types: TypeRegistry | None = None,
    ssl_context: ssl.SSLContext | None = None,
    on_connect: ConnectHook | None = None,
    on_disconnect: DisconnectHook | None = None,
    on_bad_message: BadMessageHook | None = None,
    on_handler_error: HandlerErrorHook | None = None,
    since: Position | str | None = None,
    access_token: AccessToken | None = None,
) -> AsyncIterator[Client]:
    """Connect to a relay, join a group, and yield the :class:`Client`; close it on exit.

    ::

        async with open_client("ws://127.0.0.1:8765/ws", group="group_1") as client:
            client.on(SocketMessage, show)
            await client.send(SocketMessage("Hello from Client 1"))

    ``url`` is the .NET-style URL with ``id`` and ``groupName`` in its query, or a base
    URL completed by ``group`` (and ``id``, a UUID4 when absent). Raises
    :exc:`HandshakeRefused` (status and the relay's reason) if the relay refuses,
    :exc:`ConnectError` if it cannot be reached within ``config.connect_timeout``.

    ``url`` may also be a sequence of relay URLs (nodes of one cluster), all joined with
    the same id and group. The client connects to the first one that answers, in order,
    and raises :exc:`ConnectError` naming each one and why if none does (a 4xx
    :exc:`HandshakeRefused` is raised at once). When a connection drops, it reconnects
    starting with the URL *after* the one it was using, trying each once per round; the
    backoff applies between rounds only. :attr:`Client.url` is the URL in use.

    ``since`` (a :class:`Position` or its ``str()``, ``EPOCH:OFFSET``: a
    :attr:`Client.position` saved by a program that ran before) is named on the first
    connection: over ``wsproxy.v1``, a relay keeping history replays every message of
    the group after it, after a :class:`Resumed` event, or says why it cannot.

    ``access_token`` (a relay with tokens on): the token, or a function (plain or
    async) that returns a fresh one. A function is called before each connection, when
    the relay says the token expires soon (over ``wsproxy.v1``: the new token is sent
    in place, without a reconnect), and before the reconnect that follows a close with
    4006 (the token expired).

    Messages (and events) that arrive before the block registers its first handler or
    subscription are held for it, up to ``config.read_ahead`` of them: register them
    before the block's first ``await`` and none is missed — a replay included.

    Hooks may be plain or async functions; they run in the dispatcher, in order with the
    messages. The block ends with the error that ended the client, if any: a handler's
    exception (without ``on_handler_error``), :exc:`ClosedByRelay` (a close code not
    reconnected on, e.g. 4000), :exc:`ConnectError` (reconnect attempts exhausted).
    """
    client = Client(
        url,
        group=group,
        id=id,
        config=config,
        types=types,
        ssl_context=ssl_context,
        on_connect=on_connect,
        on_disconnect=on_disconnect,
        on_bad_message=on_bad_message,
        on_handler_error=on_handler_error,
        since=since,
        access_token=access_token,
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(client._run)
            try:
                yield client
            finally:
                await client.aclose()
    except BaseExceptionGroup as group_error:
        raise_sole_error(group_error, ignore=(trio.Cancelled,))
