"""Groups, and the registry interface through which members find theirs.

A session sees its group only through :class:`Group` and :class:`GroupRegistry`: the
in-process registry (the embedded default, :class:`LocalRegistry`) and a distributed
backplane implement the same interface, so a session never knows which one it is in.
What a distributed group does beyond this node — publish to other nodes, take turns
streaming with them, push back when they are behind — are methods of its group that do
nothing here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableSequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import trio

from ..protocol.close_codes import CloseCode
from ..protocol.encoding import Encoding
from ..protocol.message import Message, StreamHead
from .floor import Floor
from .history import CatchUp, Histories, HistoryLimits, HistoryPage, HistoryUsage, catch_up
from .views import Views

if TYPE_CHECKING:
    from ..protocol import v1
    from ..protocol.assembly import Piece
    from .config import RelayConfig
    from .counters import Counters
    from .history import History
    from .mailbox import Mailbox
    from .revocations import Revocation


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

    @property
    def connection_key(self) -> str:
        """Its connection's id in this process: a connection's memberships share it (a
        cluster registers them under one owner prefix, to list a member's groups)."""

    def close(self, code: int, reason: str) -> None:
        """Leave the group now and end the session with ``code``."""

    def join_also(self, group_name: str) -> None:
        """The application's back end asks (through another node) that this member's
        connection join ``group_name`` too (a plain member's cannot: nothing happens)."""


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
        "floor",
        "history",
        "holds",
        "listed",
        "listener_count",
        "members",
        "name",
        "next_announcement",
        "views",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: dict[str, Member] = {}
        #: Its members as fan-out reads them (the sender holds it: fixed for the
        #: group's life).
        self.views: Views[Member] = Views(self.members)
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
        return self.views.sessions()

    @property
    def audiences(self) -> tuple[Audience, ...]:
        """The members that messages reach now, by encoding (fan-out's view, see
        :class:`~.views.Views`)."""
        return self.views.audiences()

    def refresh_views(self) -> None:
        """Membership (or who is reachable) changed: fan-out's views are rebuilt."""
        self.views.refresh()

    @property
    def size(self) -> int:
        """Members in the group, on every node."""
        return len(self.members)

    def member_ids(self) -> list[str]:
        """The ids of the group's members, on every node."""
        return list(self.members)

    def member_infos(self, member_ids: Iterable[str]) -> dict[str, Any]:
        """What the back end gave the members ``member_ids`` (its connect hook's info),
        by id: those it gave something."""
        found: dict[str, Any] = {}
        members = self.members
        for member_id in member_ids:
            info = getattr(members.get(member_id), "info", None)
            if info is not None:
                found[member_id] = info
        return found

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

    def new_outbox(self) -> MutableSequence[Message] | None:
        """Where a member's courier collects whole messages for :meth:`publish`. In
        process nothing leaves the node: None, no outbox (nothing to collect, nor to
        hand over on the hot path)."""
        return None

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

    def watch_occupancy(self, told: GroupEvents) -> None:
        """Tell ``told`` when a group gets its first member or loses its last, on the
        whole relay (a cluster: on any node, each told by one node only), and of the
        members of a dead node this one reaped (the webhooks)."""

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

    def watch_revocations(self, revoked: Callable[[Revocation], object]) -> None:
        """Call ``revoked(revocation)`` for each revocation made on another node (or
        made while this node was away from the cluster); in-process there are none."""

    async def revoke(self, revocation: Revocation) -> None:
        """Make ``revocation`` known to the other nodes (this node applies it itself)."""

    def subject_lease(self) -> Callable[[str, float, int], Awaitable[tuple[int, float]]] | None:
        """What leases a subject's message tokens from the bucket every node shares
        (``subjects.py``); None: this node is the whole relay (its own buckets hold)."""

    async def remote_member_groups(self, group_name: str, member_id: str) -> list[str] | None:
        """The groups of the connection that is member ``member_id`` of ``group_name``
        on another node (sorted); None when no other node has it."""

    async def enter_elsewhere(self, group_name: str, member_id: str, other: str) -> bool:
        """Ask the node of the connection that is member ``member_id`` of
        ``group_name`` on another node to join ``other`` too; False when no other node
        has it."""


class GroupEvents(Protocol):
    """What a registry tells the webhooks (relay/webhooks.py's Webhooks)."""

    def occupied(self, group_name: str) -> None:
        """The group got its first member."""

    def vacated(self, group_name: str) -> None:
        """The group's last member left."""

    def reaped(self, group_name: str, member_id: str) -> None:
        """A member of a node that died is gone (told by the node that reaped it)."""


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
        #: Told of groups occupied and vacated (the webhooks), if anyone is.
        self._occupancy: GroupEvents | None = None
        # The group a join is replacing a member of (see join): not vacated meanwhile.
        self._joining: str | None = None

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
            else Histories(limits, config.max_history_bytes, config.max_history_groups, config)
        )
        task_status.started()  # nothing to connect to or keep up
        if histories is None:
            return
        # Histories of groups without members go a while after their last message.
        while True:
            await trio.sleep(histories.limits.ttl / 4)
            histories.expire(trio.current_time(), lambda name: name in self._groups)

    async def join(self, member: Member) -> Group:
        told = self._occupancy
        if told is None:
            return self._add(member)
        before = self._groups.get(member.group_name)
        occupied = before is not None and bool(before.members)
        # A member replacing another with its id leaves the group occupied: the older
        # one's leave (inside _add) does not vacate it.
        self._joining = member.group_name
        try:
            group = self._add(member)
        finally:
            self._joining = None
        if not occupied:
            told.occupied(group.name)
        return group

    async def read_history(self, group_name: str, after: int, limit: int) -> HistoryPage | None:
        return None if self.histories is None else self.histories.page(group_name, after, limit)

    def leave(self, member: Member) -> None:
        group = self._remove(member)
        told = self._occupancy
        if told is not None and group is not None and not group.members:
            if group.name != self._joining:
                told.vacated(group.name)

    def watch_occupancy(self, told: GroupEvents) -> None:
        self._occupancy = told

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

    def watch_revocations(self, revoked: Callable[[Revocation], object]) -> None:
        pass  # every revocation is made here

    def subject_lease(self) -> Callable[[str, float, int], Awaitable[tuple[int, float]]] | None:
        return None  # this node is the whole relay

    async def revoke(self, revocation: Revocation) -> None:
        pass

    async def remote_member_groups(self, group_name: str, member_id: str) -> list[str] | None:
        return None  # every member is here

    async def enter_elsewhere(self, group_name: str, member_id: str, other: str) -> bool:
        return False


# -- who may not come back (yet) -------------------------------------------------------------

#: A connection replaced by its own id sooner than this (seconds) after it joined was
#: replaced "at once". A client that reconnects after a half-open TCP drop replaces a
#: connection that lived far longer (its keepalive had to fail first); two clients that
#: share one id and reconnect as soon as they are closed (the .NET client does, within
#: milliseconds) replace connections a few milliseconds old.
STORM_LIFETIME = 1.0
#: Replacements at once in a row, each within STORM_LIFETIME of the one before, that
#: make an eviction storm: after these, the next comeback that would replace a connection
#: still younger than STORM_LIFETIME is refused (409). Two .NET clients fighting over an
#: id pass it within about 60 ms; a lone .NET client that drops its connection on every
#: message it cannot read (and comes back, replacing the socket it left open) does not,
#: unless it is sent such a message every second for twenty seconds on end (with 5 in
#: 2 s, six plain-text API posts locked one out for good).
STORM_REPLACEMENTS = 20
#: Why such a comeback is refused (one line, the body of the 409).
STORM_REASON = (
    "this id keeps replacing itself in this group (two clients with one id?): "
    "the connection now in the group keeps it"
)


class Storm:
    """One id's run of replacements at once in one group (see :class:`EvictionStorms`)."""

    __slots__ = ("first", "last", "refused", "replacements")

    def __init__(self, now: float) -> None:
        #: When the run began and when its latest replacement was (trio clock).
        self.first = now
        self.last = now
        #: Replacements at once in the run; comebacks refused since it became a storm.
        self.replacements = 0
        self.refused = 0


class EvictionStorms:
    """Same id, same group, replacing itself again and again: a storm, stopped here.

    "Newest wins" (close 4000 to the older connection) lets a client come back after a
    half-open drop. Two clients that share one id and reconnect at once on any close (the
    .NET WsProxyClient does) turn it into an endless exchange of evictions, hundreds a
    second. A storm is :data:`STORM_REPLACEMENTS` replacements in a row of a connection
    younger than :data:`STORM_LIFETIME`, each within STORM_LIFETIME of the one before.
    Once there is one, a comeback that would replace a connection younger than
    STORM_LIFETIME is refused, and the connection in the group keeps its place; the storm
    ends by itself once that connection is STORM_LIFETIME old, after which a comeback
    replaces it as any reconnect does. Replacing an older connection is never refused,
    and ends any run. Sans-I/O: the caller gives the time.
    """

    def __init__(self) -> None:
        self._runs: dict[tuple[str, str], Storm] = {}

    def comeback(
        self, group: str, member_id: str, replaces: float | None, now: float
    ) -> Storm | None:
        """A connection with ``member_id`` asks to join ``group``, where the connection it
        would replace joined at ``replaces`` (None: it replaces nobody here). Returns the
        storm to refuse it for, or None to admit it (counted if it replaces at once)."""
        if replaces is None:
            return None
        key = (group, member_id)
        run = self._runs.get(key)
        if now - replaces >= STORM_LIFETIME:
            # A connection that lived: a reconnect after a drop, or the storm is over.
            if run is not None:
                del self._runs[key]
            return None
        if run is None or now - run.last >= STORM_LIFETIME:
            run = self._runs[key] = Storm(now)
        if run.replacements >= STORM_REPLACEMENTS:
            run.refused += 1
            return run
        run.replacements += 1
        run.last = now
        return None

    def expire(self, now: float) -> None:
        """Forget runs that can no longer go on (their last replacement is
        STORM_LIFETIME old): memory stays bounded by the ids replaced lately."""
        stale = [key for key, run in self._runs.items() if now - run.last >= STORM_LIFETIME]
        for key in stale:
            del self._runs[key]

    def __len__(self) -> int:
        return len(self._runs)


class Ban:
    """A member removed by the back end and kept out of its group until ``until``."""

    __slots__ = ("since", "until")

    def __init__(self, until: float, since: float) -> None:
        #: When the ban ends (trio clock).
        self.until = until
        #: When it began, in seconds since the epoch: a token issued later lifts it.
        self.since = since


class Bans:
    """Members the back end removed (``DELETE .../members/{id}``) and keeps out for a
    while, by (group, id): their joins are refused (403) until the ban ends, is lifted
    through the API, or the member brings a token issued after the ban began.

    Held by this relay process only: on a cluster a ban holds on the node that answered
    the API call (docs/api.md says so). Sans-I/O: the caller gives the times."""

    def __init__(self) -> None:
        self._bans: dict[tuple[str, str], Ban] = {}

    def ban(
        self, group: str, member_id: str, seconds: float, now: float, wall: float
    ) -> Ban | None:
        """Keep ``member_id`` out of ``group`` for ``seconds`` from ``now`` (trio clock);
        ``wall`` is the same moment in seconds since the epoch. 0 seconds: no ban (and
        none left from before). Returns the ban it replaces, for :meth:`restore`."""
        key = (group, member_id)
        before = self._bans.pop(key, None)
        if seconds > 0:
            self._bans[key] = Ban(now + seconds, wall)
        return before

    def restore(self, group: str, member_id: str, before: Ban | None) -> None:
        """Undo :meth:`ban`: ``before`` is what it returned."""
        key = (group, member_id)
        if before is None:
            self._bans.pop(key, None)
        else:
            self._bans[key] = before

    def lift(self, group: str, member_id: str, now: float) -> bool:
        """End the ban on ``member_id`` in ``group``; False when there was none."""
        ban = self._bans.pop((group, member_id), None)
        return ban is not None and ban.until > now

    def current(self, group: str, member_id: str, now: float) -> Ban | None:
        """The ban on ``member_id`` in ``group`` now, if any."""
        ban = self._bans.get((group, member_id))
        if ban is not None and ban.until <= now:
            del self._bans[group, member_id]
            return None
        return ban

    def expire(self, now: float) -> None:
        """Forget the bans that have ended."""
        ended = [key for key, ban in self._bans.items() if ban.until <= now]
        for key in ended:
            del self._bans[key]

    def __len__(self) -> int:
        return len(self._bans)
