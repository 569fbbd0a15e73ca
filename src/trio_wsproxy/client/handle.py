"""One group a client is in, as its program sees it: :class:`GroupHandle`.

``await client.join("room-2")`` gives one (``wsproxy.v1``); the group the client's URL
named has one too, and the :class:`~.client.Client`'s own API — ``client.on``,
``client.send``, ``client.members``, ... — is that handle's. Each handle has the parts of
its group (:class:`~.groups.Membership`): its members, its position, its handlers and
subscriptions, its requests; all handles share the client's one connection.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar, overload

import attrs
import trio

from ..protocol.envelope import new_message_id
from ..protocol.v1 import Position, leave_header
from .config import ClientConfig
from .connection import ConnectionEnded
from .connection_task import ConnectionTask
from .errors import ClientClosed, MemberNotFound, NotInGroup, UnsupportedByRelay
from .groups import Membership, Standing
from .incoming import Incoming
from .link import Link
from .streams import DEFAULT_PIECE_SIZE, BinaryStream, StreamSource, pieces_of
from .wire import check_member_id, type_label

__all__ = ["DirectReply", "GroupHandle", "Owner", "register"]

T = TypeVar("T")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., object])


class Owner(Protocol):
    """What a handle uses of the :class:`~.client.Client` it belongs to."""

    id: str
    config: ClientConfig
    _link: Link
    _task: ConnectionTask

    @property
    def protocol(self) -> str | None: ...

    def _encode(
        self,
        value: object,
        as_type: Any,
        *,
        request_id: str | None = None,
        reply_to: str | None = None,
    ) -> str | bytes: ...


class GroupHandle:
    """A group the client is in: ``handle = await client.join("room-2")``, or
    ``client.groups[name]`` (the URL's group included).

    It has what :class:`~trio_wsproxy.Client` has for the URL's group, for this one:
    :attr:`members`, :attr:`position`, handlers (:meth:`on`), subscriptions
    (:meth:`subscribe`), :meth:`send`, :meth:`send_to`, :meth:`request`; each works as
    the client's method of that name, in this group. Its handlers run one message at a
    time in arrival order, as the client's do — in a task of their own, so no order is
    promised between groups (nor does the relay promise one). The messages that come
    before its first handler or subscription (what a join with ``since`` replays) are
    held for it, up to ``config.read_ahead``.

    After a reconnect the client joins the group again by itself, naming the handle's
    :attr:`position`: its handlers get their own :class:`~trio_wsproxy.Resumed`. Once
    the client is no longer in the group (:meth:`leave`, or the relay refused the
    rejoin), :attr:`joined` is False, its subscriptions end, and sending raises
    :exc:`~trio_wsproxy.NotInGroup`.
    """

    def __init__(self, client: Owner, membership: Membership) -> None:
        self._client = client
        self._membership = membership
        #: The group's name.
        self.name: str = membership.name

    def __repr__(self) -> str:
        return f"<GroupHandle {self.name!r} of client {self._client.id!r} {self.standing}>"

    @property
    def client(self) -> Owner:
        """The client the group is joined on."""
        return self._client

    @property
    def standing(self) -> str:
        """``"joined"``, ``"joining"``, ``"leaving"`` or ``"left"``."""
        return self._membership.standing.value

    @property
    def joined(self) -> bool:
        """Whether the client is in the group (rejoining it after a reconnect included)."""
        return self._membership.standing is Standing.JOINED

    @property
    def left_because(self) -> str | None:
        """Why the client is no longer in the group, when the relay decided it (the
        rejoin's refusal code, the back end's reason); None while in it, or when the
        client left it."""
        return self._membership.reason

    @property
    def members(self) -> frozenset[str]:
        """The ids of the other members of the group, as the relay last told (see
        :attr:`Client.members <trio_wsproxy.Client.members>`)."""
        return self._membership.members.members

    @property
    def member_info(self) -> Mapping[str, Mapping[str, Any]]:
        """What the application's back end gave the other members, by id (see
        :attr:`Client.member_info <trio_wsproxy.Client.member_info>`)."""
        return self._membership.members.info

    @property
    def member_count(self) -> int | None:
        """How many other members the group has, as the relay last told."""
        return self._membership.members.count

    @property
    def members_current(self) -> bool:
        """Whether :attr:`members` is kept current right now."""
        return self._membership.members.current

    @property
    def position(self) -> Position | None:
        """Where the client is in this group's history (see
        :attr:`Client.position <trio_wsproxy.Client.position>`): what a join names to
        recover, ``client.join(name, since=...)``."""
        return self._membership.dispatcher.position

    @property
    def pending_requests(self) -> int:
        """How many :meth:`request` calls in this group wait for their answer."""
        return len(self._membership.requests)

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
        """Call ``handler`` with every message of ``message_type`` of this group (also a
        decorator); as :meth:`Client.on <trio_wsproxy.Client.on>`."""
        return register(self._membership.dispatcher.add_handler, message_type, handler)

    def off(self, message_type: Any, handler: Callable[..., object]) -> None:
        """Stop calling ``handler`` for ``message_type`` (:exc:`ValueError` if it was not on)."""
        self._membership.dispatcher.remove_handler(message_type, handler)

    @overload
    def on_stream(self, announcement_type: type[T]) -> Callable[[F], F]: ...
    @overload
    def on_stream(
        self, announcement_type: type[T], handler: Callable[[T, BinaryStream], R]
    ) -> Callable[[T, BinaryStream], R]: ...

    def on_stream(self, announcement_type: Any, handler: Callable[..., Any] | None = None) -> Any:
        """As :meth:`Client.on_stream <trio_wsproxy.Client.on_stream>`, in this group."""
        return register(self._membership.dispatcher.add_stream_handler, announcement_type, handler)

    def off_stream(self, announcement_type: Any, handler: Callable[..., object]) -> None:
        """Stop calling ``handler`` for streams announced by ``announcement_type``."""
        self._membership.dispatcher.remove_stream_handler(announcement_type, handler)

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
        """This group's messages of ``message_type`` (every message if omitted) as a
        channel, as :meth:`Client.subscribe <trio_wsproxy.Client.subscribe>`; it ends
        when the client is no longer in the group."""
        return self._membership.dispatcher.subscription(message_type, buffer)

    async def receive(self, message_type: type[T]) -> T:
        """Wait for this group's next message of ``message_type`` and return its value."""
        async with self.subscribe(message_type, buffer=1) as channel:
            try:
                incoming = await channel.receive()
            except trio.EndOfChannel:
                raise self._gone("while waiting for a message") from None
            return incoming.value

    # -- sending ----------------------------------------------------------------------------

    async def send(
        self, value: object, *, as_type: Any = None, reply_to: str | None = None
    ) -> None:
        """Send ``value`` to every other member of this group, as
        :meth:`Client.send <trio_wsproxy.Client.send>` does."""
        self._check_in()
        frame = self._client._encode(value, as_type, reply_to=reply_to)
        await self._client._link.send(
            frame,
            group=self._membership.wire_name,
            value=value,
            as_type=as_type,
            reply_to=reply_to,
        )

    async def send_to(
        self, member_id: str, value: object, *, as_type: Any = None, reply_to: str | None = None
    ) -> None:
        """Send ``value`` to the member ``member_id`` of this group only, as
        :meth:`Client.send_to <trio_wsproxy.Client.send_to>` does."""
        self._check_in()
        self._check_present(check_member_id(member_id))
        frame = self._client._encode(value, as_type, reply_to=reply_to)
        await self._client._link.send(
            frame,
            to=member_id,
            group=self._membership.wire_name,
            value=value,
            as_type=as_type,
            reply_to=reply_to,
        )

    async def send_stream(
        self,
        source: StreamSource,
        *,
        to: str | None = None,
        announce: object = None,
        announce_as: Any = None,
        piece_size: int = DEFAULT_PIECE_SIZE,
    ) -> int:
        """Send one binary message read from ``source`` to this group (or to its member
        ``to``), as :meth:`Client.send_stream <trio_wsproxy.Client.send_stream>` does."""
        self._check_in()
        if to is not None:
            self._check_present(check_member_id(to))
        if piece_size < 1:
            raise ValueError(f"piece_size must be positive, got {piece_size}")
        announcement = None
        if announce is not None:
            if isinstance(announce, bytes | bytearray | memoryview):
                raise TypeError("a stream is announced by a typed message, not bytes")
            encoded = self._client._encode(announce, announce_as)
            assert isinstance(encoded, str)
            announcement = encoded
        pieces = pieces_of(source, piece_size)
        try:
            return await self._client._link.send_stream(
                pieces,
                to=to,
                group=self._membership.wire_name,
                announcement=announcement,
                announced=announce,
                announced_as=announce_as,
            )
        finally:
            await pieces.aclose()

    async def request(
        self,
        value: object,
        reply_type: type[R],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- as Client.request's
        as_type: Any = None,
        to: str | None = None,
    ) -> R:
        """Ask this group (or its member ``to``) and return the answer, as
        :meth:`Client.request <trio_wsproxy.Client.request>` does. Raises
        :exc:`~trio_wsproxy.NotInGroup` if the client leaves the group first."""
        if reply_type is bytes:
            raise ValueError("replies are typed messages; binary frames carry no ReplyId")
        self._check_in()
        if to is not None:
            self._check_present(check_member_id(to))
        client = self._client
        limit = client.config.request_timeout if timeout is None else timeout
        request_id = new_message_id()
        frame = client._encode(value, as_type, request_id=request_id)
        return await self._membership.requests.ask(
            request_id,
            reply_type,
            functools.partial(
                client._link.send,
                frame,
                to=to,
                group=self._membership.wire_name,
                value=value,
                as_type=as_type,
                request_id=request_id,
            ),
            limit=limit,
            label=type_label(value, as_type),
            to=to,
        )

    # -- leaving ----------------------------------------------------------------------------

    async def leave(self) -> None:
        """Leave the group, and wait for the relay's answer: nothing of the group is
        delivered after it, its subscriptions end, and the client does not rejoin it on
        reconnecting. The URL's group can be left too (the client's own API then sends
        nothing, raising :exc:`~trio_wsproxy.NotInGroup`, until ``client.join`` of it).
        Returns at once if the client is not in the group; raises
        :exc:`~trio_wsproxy.UnsupportedByRelay` on a plain relay."""
        membership = self._membership
        if membership.standing is Standing.LEFT:
            return
        if membership.standing is not Standing.LEAVING:
            connection = self._client._link.current
            if connection is not None and not connection.v1:
                raise UnsupportedByRelay(
                    f"the relay at {connection.url} does not speak wsproxy.v1, so a group "
                    "cannot be left but by closing the client",
                    url=connection.url,
                )
            if connection is None:
                # The relay dropped the connection, and with it the client from every
                # group; the next one rejoins none but the URL's (which it then leaves).
                self._client._task.forget(membership)
                return
            membership.standing = Standing.LEAVING
            try:
                await connection.ws.send_message(leave_header(self.name).decode())
            except ConnectionEnded:
                pass  # (and so the client is out of the group)
        await membership.ended.wait()

    async def wait_left(self) -> str | None:
        """Wait until the client is no longer in the group — it left it, the back end
        removed it, a rejoin was refused, the client closed — and return why
        (:attr:`left_because`)."""
        membership = self._membership
        while membership.standing is not Standing.LEFT:
            await membership.ended.wait()
        return membership.reason

    # -- checks -----------------------------------------------------------------------------

    def _check_in(self) -> None:
        if self._membership.standing is not Standing.JOINED:
            raise self._gone("nothing was sent")

    def _gone(self, what: str) -> NotInGroup | ClientClosed:
        if self._client._link.stopping:
            return ClientClosed(f"the client is closed: {what}")
        error = self._membership.error
        why = f" ({error})" if error is not None else ""
        return NotInGroup(
            f"the client is not in the group {self.name!r}{why}: {what}", group=self.name
        )

    def _check_present(self, member_id: str) -> None:
        if self._membership.members.known_absent(member_id):
            raise MemberNotFound(
                f"no member {member_id!r} in group {self.name!r}: the relay's member list "
                "does not have it (see members); nothing was sent",
                member_id=member_id,
            )


def register(add: Callable[[Any, Callable[..., Any]], None], key: Any, handler: Any) -> Any:
    """``add(key, handler)`` and return ``handler``; without one, a decorator that does."""
    if handler is None:

        def decorator(function: F) -> F:
            add(key, function)
            return function

        return decorator
    add(key, handler)
    return handler


@attrs.frozen
class DirectReply:
    """What :meth:`Incoming.reply` answers a v1 message through: the group's handle,
    sending to its sender only — or to the group where the connection cannot address one
    member (reconnected to a plain relay), as a plain relay's members always answer."""

    handle: GroupHandle
    member_id: str

    async def send(
        self, value: object, *, as_type: Any = None, reply_to: str | None = None
    ) -> None:
        handle = self.handle
        client = handle._client
        frame = client._encode(value, as_type, reply_to=reply_to)
        # Not checked against the members: the requester may have left meanwhile, and
        # the relay's answer to that is an event, never an exception in the handler.
        await client._link.send(
            frame,
            to=self.member_id,
            or_group=True,
            group=handle._membership.wire_name,
            value=value,
            as_type=as_type,
            reply_to=reply_to,
        )
