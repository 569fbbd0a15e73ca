"""Groups, and the registry interface through which members find theirs.

A session sees its group only through :class:`Group` and :class:`GroupRegistry`: the
in-process registry (the embedded default, :class:`LocalRegistry`) and a distributed
backplane implement the same interface, so a session never knows which one it is in.
What a distributed group does beyond this node — publish to other nodes, take turns
streaming with them, push back when they are behind — are methods of its group that do
nothing here.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Callable, Iterable, MutableSequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import trio

from ..protocol.close_codes import CloseCode
from ..protocol.encoding import Encoding
from ..protocol.message import Message, StreamHead
from .floor import Floor
from .history import CatchUp, Histories, HistoryLimits, HistoryPage, HistoryUsage, catch_up

if TYPE_CHECKING:
    from ..protocol import v1
    from ..protocol.assembly import Piece
    from .config import RelayConfig
    from .counters import Counters
    from .history import History
    from .mailbox import Mailbox


class Member(Protocol):
    """What a group and fan-out need of a connected member (a relay session)."""

    @property
    def id(self) -> str: ...

    @property
    def group_name(self) -> str: ...

    @property
    def mailbox(self) -> Mailbox: ...

    @property
    def encoding(self) -> Encoding: ...

    @property
    def joined_at(self) -> float:
        """When the member joined, on the trio clock."""

    def close(self, code: int, reason: str) -> None:
        """Leave the group now and end the session with ``code``."""


#: Members that share one encoding, with it: fan-out frames a message once per audience.
Audience = tuple[Encoding, tuple[Member, ...]]


class Outbound:
    """The part of one streamed message that leaves this node, from its sender's side.

    In-process there is none: every recipient is here, and the session delivers to them
    itself. A distributed group returns its own, which carries the pieces to the other
    nodes."""

    __slots__ = ()

    async def forward(self, piece: Piece) -> None:
        """Carry ``piece`` to the recipients on other nodes, once they have room."""

    def end(self, truncated: bool) -> None:
        """The message ended; ``truncated``: its sender left mid-message."""


#: The outbound side of a group that has no other nodes.
NO_OUTBOUND = Outbound()


class Group:
    """The members of one group on this node, by id, and its streaming floor."""

    __slots__ = (
        "_audiences",
        "_listeners",
        "_sessions",
        "floor",
        "history",
        "holds",
        "listed",
        "listener_count",
        "members",
        "name",
        "next_announcement",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: dict[str, Member] = {}
        self._sessions: tuple[Member, ...] | None = ()
        self._audiences: tuple[Audience, ...] | None = ()
        self._listeners: tuple[Member, ...] | None = ()
        #: Who streams a message to the group now (see :class:`Floor`).
        self.floor = Floor()
        #: Whether its v1 members were last told its member list (not its size only:
        #: see relay/presence.py), how many v1 members it has here, and when (trio
        #: clock) its next presence event may go out.
        self.listed = True
        self.listener_count = 0
        self.next_announcement = 0.0
        #: How many posts of the HTTP API hold the group here (it stays while held,
        #: members or not: see GroupRegistry.hold).
        self.holds = 0
        #: Its recent messages, for members that reconnect (None: history is off).
        self.history: History | None = None

    @property
    def sessions(self) -> tuple[Member, ...]:
        """The members as a tuple, rebuilt only when membership changes (fan-out's view)."""
        sessions = self._sessions
        if sessions is None:
            sessions = self._sessions = tuple(self.members.values())
        return sessions

    @property
    def audiences(self) -> tuple[Audience, ...]:
        """The members by encoding, rebuilt only when membership changes: fan-out frames
        each message once per audience."""
        audiences = self._audiences
        if audiences is None:
            by_encoding: dict[Encoding, list[Member]] = {}
            for member in self._reachable():
                by_encoding.setdefault(member.encoding, []).append(member)
            audiences = tuple((enc, tuple(members)) for enc, members in by_encoding.items())
            self._audiences = audiences
        return audiences

    @property
    def listeners(self) -> tuple[Member, ...]:
        """The members here that hear of joins and leaves (v1), rebuilt only when
        membership changes."""
        listeners = self._listeners
        if listeners is None:
            listeners = tuple(m for m in self._reachable() if m.encoding.presence)
            self._listeners = listeners
        return listeners

    def _reachable(self) -> Iterable[Member]:
        """The members that messages and presence events go to now (all of them here;
        a distributed group leaves out those still catching up with its history)."""
        return self.members.values()

    def refresh_views(self) -> None:
        """Membership (or who is reachable) changed: fan-out's views are rebuilt."""
        self._sessions = self._audiences = self._listeners = None

    @property
    def size(self) -> int:
        """Members in the group, on every node."""
        return len(self.members)

    def member_ids(self) -> list[str]:
        """The ids of the group's members, on every node."""
        return list(self.members)

    def locate(self, member_id: str) -> Member | None:
        """The member ``member_id`` of this group here, to address one message to; None
        when there is none here."""
        return self.members.get(member_id)

    def elsewhere(self, member_id: str) -> bool:
        """Whether ``member_id`` is a member of this group on another node (a message
        addressed to it then travels with the group's others, in order)."""
        return False

    def add(self, member: Member) -> None:
        self.members[member.id] = member
        self.refresh_views()
        self.listener_count += member.encoding.presence

    def remove(self, member: Member) -> bool:
        if self.members.get(member.id) is not member:
            return False
        del self.members[member.id]
        self.refresh_views()
        self.listener_count -= member.encoding.presence
        return True

    async def catch_up(self, member: Member, since: v1.Position | None) -> CatchUp:
        """``member`` has just joined: where the group's history is, and, if it named a
        position (``since``), what it missed since. Whatever comes back is queued for it
        before anything live (here: nothing is awaited, so nothing comes between)."""
        return catch_up(self.history, since, member.id)

    # -- beyond this node: nothing to do in-process -------------------------------------

    #: Whether the group itself delivers its messages to its members here, in the order
    #: its history gives them, the sender's node included (a cluster keeping history):
    #: then a sender only hands its messages over (the courier's outbox). (A class
    #: attribute, as :attr:`congested` is.)
    sequenced: bool = False

    #: Whether what this node sends the group's other nodes has backed up, so that
    #: senders should wait (:meth:`wait_uncongested`) before they send more. (A class
    #: attribute: reading it costs the hot path nothing; a distributed group makes it a
    #: property.)
    congested: bool = False

    async def wait_uncongested(self) -> None:
        """Wait until the group's other nodes have room for more."""

    def new_outbox(self) -> MutableSequence[Message]:
        """Where a member's courier collects whole messages for :meth:`publish`. In
        process nothing leaves the node: a container that keeps nothing (appending to
        it costs the hot path no more than that)."""
        return collections.deque(maxlen=0)

    def publish(self, messages: list[Message]) -> None:
        """Carry whole messages, in order, to the group's members on other nodes."""

    async def open_stream(self, sender: Member, head: StreamHead) -> Outbound:
        """Wait for the floor and take it for ``sender``'s streamed message; what carries
        it beyond this node comes back. The sender releases the floor at the end."""
        await self.floor.wait(sender)
        self.floor.take(sender)
        await self.floor.settled()
        return NO_OUTBOUND


class GroupRegistry(Protocol):
    """Where members find their group. The in-process registry is the default; a
    distributed backplane implements the same interface."""

    @property
    def metric_label(self) -> str:
        """What ``/metrics`` calls this kind of registry (a stable label)."""

    @property
    def up(self) -> bool:
        """Whether the registry can deliver to every node now (always, in-process)."""

    @property
    def down_reason(self) -> str | None:
        """Why the registry cannot take every join now, in one line for an operator (the
        relay's readiness check answers 503 with it); None while it can."""

    async def run(
        self,
        config: RelayConfig,
        counters: Counters,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the registry for a relay until cancelled (``nursery.start``): started
        once it can take joins (or knows it cannot yet)."""

    async def join(self, member: Member) -> Group:
        """Add ``member`` to its group, closing an older member with the same id
        (``CloseCode.REPLACED``); return the group."""

    def leave(self, member: Member) -> None:
        """Remove ``member`` from its group if it is still there; drop empty groups."""

    @property
    def group_count(self) -> int:
        """Groups with at least one member."""

    @property
    def member_count(self) -> int:
        """Members in all groups."""

    @property
    def history_usage(self) -> HistoryUsage:
        """The histories this process keeps (in-process; a cluster's are in Redis)."""

    def group(self, name: str) -> Group | None:
        """The group called ``name``, or None when it has no members."""

    def unavailable(self, group_name: str) -> str | None:
        """Why a member cannot join ``group_name`` now (a backplane outage), or None."""

    def watch_presence(self, changed: PresenceChange) -> None:
        """Call ``changed(group, member_id, joined)`` when a member of a group here joins
        or leaves on another node (in-process there are none)."""

    def hold(self, name: str) -> AbstractAsyncContextManager[Group]:
        """Keep the group ``name`` on this node, members or not, while the context lasts
        (a back end's post through the HTTP API goes through it): on a backplane, this
        node then follows the group's channel as if it had members here."""

    # -- the whole cluster's view (the HTTP API's; in-process, this node's) --------------
    # Each raises RegistryUnavailable when the registry cannot answer for every node.

    async def read_history(self, group_name: str, after: int, limit: int) -> HistoryPage | None:
        """Up to ``limit`` entries of the group's history after offset ``after`` (None:
        the relay keeps no history)."""

    async def cluster_groups(self) -> dict[str, int]:
        """Every group with members, on any node, with its number of members."""

    async def cluster_members(self, group_name: str) -> list[str]:
        """The ids of the members of ``group_name`` on every node."""

    async def cluster_size(self, group_name: str) -> int:
        """The number of members of ``group_name`` on every node."""

    async def has_member(self, group_name: str, member_id: str) -> bool:
        """Whether ``member_id`` is a member of ``group_name`` on any node."""

    async def remove_member(self, group_name: str, member_id: str, reason: str) -> bool:
        """Close the member ``member_id`` of ``group_name`` with 4005 (removed by the
        back end) and ``reason``, on whichever node it is; False when there is none."""


class RegistryUnavailable(Exception):
    """The registry cannot answer for the whole cluster now (the backplane is down)."""


GroupT = TypeVar("GroupT", bound=Group)

#: ``changed(group, member_id, joined)``: a member joined (or left) ``group`` elsewhere.
PresenceChange = Callable[[Group, str, bool], None]

#: Why an older connection is closed when a newer one joins with its id.
REPLACED_REASON = "replaced by a newer connection with the same id"


class NodeGroups(Generic[GroupT]):
    """What every registry keeps in this process: the groups with members here."""

    def __init__(self) -> None:
        self._groups: dict[str, GroupT] = {}
        self._members = 0
        # Groups kept here by a hold with no member here (not counted as groups).
        self._empty = 0

    def _new_group(self, name: str) -> GroupT:
        raise NotImplementedError

    def _add(self, member: Member) -> GroupT:
        """Put ``member`` in its group here, closing an older member with its id."""
        existing = self._groups.get(member.group_name)
        if existing is not None:
            older = existing.members.get(member.id)
            if older is not None:
                # Newest wins: a client that reconnects after a half-open drop must not
                # be locked out by its own ghost. close() calls leave().
                older.close(CloseCode.REPLACED, REPLACED_REASON)
        group = self._groups.get(member.group_name)
        if group is None:
            group = self._groups[member.group_name] = self._new_group(member.group_name)
        elif not group.members:
            self._empty -= 1  # (held, and now it has a member)
        group.add(member)
        self._members += 1
        return group

    def _remove(self, member: Member) -> GroupT | None:
        """Take ``member`` out of its group if it is still there, dropping the group
        when it empties; the group, or None when the member was not in it."""
        group = self._groups.get(member.group_name)
        if group is None or not group.remove(member):
            return None
        self._members -= 1
        if not group.members:
            if group.holds:
                self._empty += 1
            else:
                del self._groups[group.name]
                self._dropped(group)
        return group

    def _hold(self, name: str) -> tuple[GroupT, bool]:
        """Hold the group ``name`` here (see GroupRegistry.hold); True: it was not here."""
        group = self._groups.get(name)
        created = group is None
        if group is None:
            group = self._groups[name] = self._new_group(name)
            self._empty += 1
        group.holds += 1
        return group, created

    def _release(self, group: GroupT) -> bool:
        """End one hold of ``group``; True when that dropped the group from this node."""
        group.holds -= 1
        if group.holds or group.members or self._groups.get(group.name) is not group:
            return False
        del self._groups[group.name]
        self._empty -= 1
        self._dropped(group)
        return True

    def _dropped(self, group: GroupT) -> None:
        """``group`` is gone from this node (no member, no hold is left)."""

    @property
    def group_count(self) -> int:
        return len(self._groups) - self._empty

    @property
    def member_count(self) -> int:
        return self._members

    @property
    def history_usage(self) -> HistoryUsage:
        return HistoryUsage()  # (kept elsewhere, if at all: a registry that keeps its own says)

    def group(self, name: str) -> Group | None:
        return self._groups.get(name)


class LocalRegistry(NodeGroups[Group]):
    """The in-process registry: every member of every group is in this process, and so
    is every group's history (with ``RelayConfig.history_size``)."""

    metric_label = "LocalRegistry"
    up = True
    down_reason = None

    def __init__(self) -> None:
        super().__init__()
        #: The groups' recent messages, for members that reconnect (see history.py).
        self.histories: Histories | None = None

    def _new_group(self, name: str) -> Group:
        group = Group(name)
        if self.histories is not None:
            self.histories.attach(group)
        return group

    def _dropped(self, group: Group) -> None:
        if self.histories is not None:
            self.histories.release(group)  # (kept for the ttl, first to go for room)

    @property
    def history_usage(self) -> HistoryUsage:
        return HistoryUsage() if self.histories is None else self.histories.usage

    async def run(
        self,
        config: RelayConfig,
        counters: Counters,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        limits = HistoryLimits.of(config)
        histories = self.histories = (
            None
            if limits is None
            else Histories(limits, config.max_history_bytes, config.max_history_groups)
        )
        task_status.started()  # nothing to connect to or keep up
        if histories is None:
            return
        # Histories of groups without members go a while after their last message.
        while True:
            await trio.sleep(histories.limits.ttl / 4)
            histories.expire(trio.current_time(), lambda name: name in self._groups)

    async def join(self, member: Member) -> Group:
        return self._add(member)

    async def read_history(self, group_name: str, after: int, limit: int) -> HistoryPage | None:
        return None if self.histories is None else self.histories.page(group_name, after, limit)

    def leave(self, member: Member) -> None:
        self._remove(member)

    def unavailable(self, group_name: str) -> str | None:
        return None

    def watch_presence(self, changed: PresenceChange) -> None:
        pass  # every member is here: sessions report their own joins and leaves

    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[Group]:
        group, _ = self._hold(name)
        try:
            yield group
        finally:
            self._release(group)

    async def cluster_groups(self) -> dict[str, int]:
        return {name: len(g.members) for name, g in self._groups.items() if g.members}

    async def cluster_members(self, group_name: str) -> list[str]:
        group = self._groups.get(group_name)
        return [] if group is None else list(group.members)

    async def cluster_size(self, group_name: str) -> int:
        group = self._groups.get(group_name)
        return 0 if group is None else len(group.members)

    async def has_member(self, group_name: str, member_id: str) -> bool:
        group = self._groups.get(group_name)
        return group is not None and member_id in group.members

    async def remove_member(self, group_name: str, member_id: str, reason: str) -> bool:
        group = self._groups.get(group_name)
        member = None if group is None else group.members.get(member_id)
        if member is None:
            return False
        member.close(CloseCode.REMOVED, reason)
        return True
