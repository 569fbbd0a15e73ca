"""A group as one node of a cluster sees it: the relay's :class:`Group` interface, with
what goes beyond this node carried by the backplane."""

from __future__ import annotations

import collections
import json
from collections.abc import Awaitable, Callable, Iterable, MutableSequence
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ..protocol import v1
from ..protocol.close_codes import CloseCode
from ..protocol.message import Message, StreamHead
from ..protocol.nodes import Messages, Sequenced, StreamStart
from ..protocol.resp import ConnectionLost, RedisError
from ..relay.groups import NO_OUTBOUND, Group, Member, Outbound, PresenceChange
from ..relay.history import CatchUp, History, HistoryLimits, catch_up
from .order import Action, ChannelOrder
from .streams import OutgoingStream, RemoteStream

if TYPE_CHECKING:
    from ..protocol.assembly import Piece
    from .streams import Turns

#: How long a joining member may wait for its node to catch up with the group's history
#: in Redis (behind a message streaming to the group, say) before it is closed (4004).
CATCH_UP_TIMEOUT = 10.0


#: Carries out one action of a group's channel order for the members here (the
#: backplane's channel handling: see channel.py), for a message from node ``node``.
CarryOut = Callable[["SharedGroup", bytes, Action], Awaitable[None]]


class Recovered:
    """What a node read of a group's history in Redis for a member: the messages it
    missed up to ``last`` (the history's last offset then), in order."""

    __slots__ = ("epoch", "last", "missed")

    def __init__(self, epoch: str, last: int, missed: list[Message]) -> None:
        self.epoch = epoch
        self.last = last
        self.missed = missed


class Carrier(Protocol):
    """What a shared group needs of its backplane: the way to the other nodes."""

    @property
    def turns(self) -> Turns: ...

    @property
    def congested(self) -> bool: ...

    async def wait_room(self) -> None: ...

    def publish(self, group: Group, messages: list[Message]) -> None: ...

    @property
    def up(self) -> bool: ...

    async def recover(
        self, group_name: str, since: v1.Position, member_id: str
    ) -> Recovered | str: ...


class Delivery:
    """Frames for some of a group's members, and what to do once they are queued."""

    __slots__ = ("ack", "data", "ended", "members", "stream")

    def __init__(
        self,
        data: bytes,
        members: tuple[Member, ...],
        stream: RemoteStream | None = None,
        ack: tuple[bytes, bytes] | None = None,
        ended: RemoteStream | None = None,
    ) -> None:
        self.data = data
        self.members = members
        #: The remote stream this is a piece of (None: whole messages).
        self.stream = stream
        #: (channel, message) acknowledging the piece, sent once it is queued: on the
        #: last of a piece's deliveries (one per encoding).
        self.ack = ack
        #: A remote stream whose last piece this was: it ends once that is queued.
        self.ended = ended


class SharedGroup(Group):
    """A group's members here, the members elsewhere this node knows of, and what this
    node has received for the group from other nodes and not yet delivered."""

    __slots__ = (
        "_changed",
        "backplane",
        "catching",
        "early",
        "handing",
        "history_keys",
        "history_limits",
        "inbox",
        "inbox_bytes",
        "inbox_drained",
        "mirror",
        "order",
        "remote",
        "remote_info",
        "sequenced",
        "subscribed",
    )

    def __init__(
        self,
        name: str,
        backplane: Carrier,
        node: bytes,
        limit: int,
        history: HistoryLimits | None = None,
        history_keys: tuple[str, str, str, bytes] | None = None,
    ) -> None:
        super().__init__(name)
        self.backplane = backplane
        #: With history on, the group's messages are given offsets by Redis and reach
        #: every node's members (the sender's too) from the group's channel, in order.
        self.sequenced = history is not None
        self.history_limits = history
        #: The leading arguments of the history scripts for this group (given by the
        #: backplane: its keys and channel).
        self.history_keys = history_keys
        #: This node's copy of the tail of the group's history in Redis, from what the
        #: channel brought since the node subscribed (None: not known yet), and what
        #: the channel brought before that was known.
        self.mirror: History | None = None
        self.early: list[tuple[Sequenced, bool]] = []
        #: Members that joined and are not yet caught up with the history: nothing live
        #: goes to them (it is in what they are given when they are). Fan-out's views
        #: hold them back.
        self.catching: set[Member] = set()
        self.views.held_back = self.catching
        #: How many channel messages are being carried out here right now.
        self.handing = 0
        self._changed = trio.Event()
        #: The group's members on other nodes, as far as this node knows: owner token
        #: of each connection -> its member id.
        self.remote: dict[str, str] = {}
        #: What the back end gave those connections (owner token -> info), where it
        #: gave any (the connect hook's; shown in presence).
        self.remote_info: dict[str, dict[str, Any]] = {}
        #: What the group's channel says, in order: which stream owns the floor, and the
        #: whole messages from other nodes that wait for its end.
        self.order = ChannelOrder(node, limit)
        self.subscribed = trio.Event()
        #: Deliveries waiting for a full mailbox, worked off by a task of the group's
        #: own so that the node's other groups go on; None when nothing waits.
        #: inbox_bytes counts its whole messages (stream pieces: RemoteStream.queued).
        self.inbox: collections.deque[Delivery] | None = None
        self.inbox_bytes = 0
        #: Set whenever the inbox is worked off (a granted stream waits for that).
        self.inbox_drained = trio.Event()

    @property
    def size(self) -> int:
        return len(self.members.keys() | set(self.remote.values()))

    # -- what the backplane hears of the group, and losing Redis ------------------------

    def joined_elsewhere(self, owner: str, member_id: str, changed: PresenceChange) -> bool:
        """Member ``member_id`` joined on another node (its connection ``owner``); True
        when this node did not know that connection (the presence is told first)."""
        unknown = owner not in self.remote
        if unknown:
            changed(self, member_id, True)
        self.remote[owner] = member_id
        return unknown

    def left_elsewhere(self, owner: str, member_id: str, changed: PresenceChange) -> None:
        """Member ``member_id`` (its connection ``owner``) left on another node."""
        self.remote_info.pop(owner, None)
        if self.remote.pop(owner, None) is not None:
            changed(self, member_id, False)

    def member_infos(self, member_ids: Iterable[str]) -> dict[str, Any]:
        """What the back end gave the members ``member_ids`` (here, or on other nodes),
        by id: those it gave something."""
        found = super().member_infos(member_ids)
        if self.remote_info:
            elsewhere = {
                self.remote[owner]: info
                for owner, info in self.remote_info.items()
                if owner in self.remote
            }
            for member_id in member_ids:
                if member_id not in found and member_id in elsewhere:
                    found[member_id] = elsewhere[member_id]
        return found

    def close_members(self, reason: str) -> None:
        """Close every member here with 4004: they may have missed messages."""
        for member in self.sessions:
            member.close(CloseCode.BACKPLANE_UNAVAILABLE, reason)

    def resubscribe(self) -> None:
        """The node subscribes to the group's channel again (Redis is back): joins wait
        for that."""
        self.subscribed = trio.Event()

    def forget_mirror(self) -> None:
        """The node (re)subscribes to the group's channel: what it knew of the group's
        history in Redis is to be read again."""
        self.mirror, self.early = None, []

    def open_inbox(self) -> None:
        """A delivery from other nodes waits for a full mailbox: so will the next ones."""
        self.inbox = collections.deque()
        self.inbox_drained = trio.Event()

    def close_inbox(self) -> None:
        """The inbox is worked off (or dropped with Redis): deliveries go straight on."""
        self.inbox = None
        self.inbox_bytes = 0
        self.inbox_drained.set()

    def lose_redis(self, reason: str, changed: PresenceChange) -> bool:
        """Redis is gone. Members here who may have missed messages are closed (4004,
        ``reason``) — all of them if the group spans nodes, is held for the HTTP API,
        has deliveries from other nodes waiting, or takes its order from Redis — and
        True comes back; the group forgets the rest of the cluster (``changed`` hears
        each member elsewhere leave), drops what waited from other nodes, and wakes
        joins and catching-up members waiting on Redis: they see the outage."""
        self.subscribed.set()
        exposed = bool(
            self.spans_nodes or self.holds or self.inbox or self.order.pending or self.sequenced
        )
        if exposed:
            # (Messages from other nodes still waiting here are dropped with Redis.)
            self.close_members(reason)
        for member_id in set(self.remote.values()):
            changed(self, member_id, False)
        self.remote.clear()
        self.remote_info.clear()
        self.order.reset()
        self.close_inbox()
        if isinstance(self.floor.holder, RemoteStream):
            self.floor.release(self.floor.holder)
        self.forget_mirror()
        self.changed()
        return exposed

    # -- history: the mirror, and members catching up with it ---------------------------

    def reachable(self, member_id: str) -> Member | None:
        """The member ``member_id`` here, if messages go to it now (caught up)."""
        member = self.members.get(member_id)
        return None if member is None or member in self.catching else member

    def add(self, member: Member) -> None:
        if member.encoding.presence:
            # A v1 member (plain ones have no welcome, nor a position to keep) catches up
            # first: its welcome is the first thing it gets. Its join awaits Redis (the
            # registration, with history the mirror), and nothing live — a message, a
            # presence change — may reach it meanwhile.
            self.catching.add(member)
        super().add(member)

    def remove(self, member: Member) -> bool:
        removed = super().remove(member)
        if removed and member in self.catching:
            self.catching.discard(member)
            self.changed()
        return removed

    def changed(self) -> None:
        """Something a member catching up may wait for happened (the mirror moved, a
        channel message was carried out, a member left, Redis went away)."""
        if self.catching:
            self._changed.set()
            self._changed = trio.Event()

    def start_mirror(self, epoch: str, last: int) -> None:
        """Redis says where the group's history is now that the node follows its
        channel: the mirror starts there, with what the channel brought meanwhile."""
        assert self.history_limits is not None
        self.mirror = History(self.history_limits, epoch, last)
        early, self.early = self.early, []
        for message, granted in early:
            self.record(message, granted)
        self.changed()

    def record(self, message: Sequenced, granted: bool) -> bool:
        """Note a sequenced channel message in the mirror (``granted``: a stream's start
        that took the floor; one that did not is no message). Returns False when it
        belongs to another epoch than the mirror's: the history was lost in Redis, and
        the mirror starts over at it (the caller closes the members here)."""
        mirror = self.mirror
        if mirror is None:
            self.early.append((message, granted))
            return True
        same = message.epoch == mirror.epoch
        if not same:
            assert self.history_limits is not None
            mirror = self.mirror = History(
                self.history_limits, message.epoch, max(0, message.offset - 1)
            )
        inner = message.inner
        if type(inner) is Messages:
            mirror.put_all(message.offset, inner.messages)
        elif type(inner) is StreamStart and message.offset > mirror.last:
            if granted:
                mirror.put(message.offset, None)
            else:
                mirror.skip(message.offset)
        return same

    async def carry(self, node: bytes, actions: list[Action], carry_out: CarryOut) -> None:
        """Carry out what the channel order decided for a message from ``node``; members
        catching up with the group's history wait meanwhile (see quiet), and look again
        after."""
        if actions:
            self.handing += 1
            try:
                for action in actions:
                    await carry_out(self, node, action)
            finally:
                self.handing -= 1
        self.changed()

    @property
    def quiet(self) -> bool:
        """Whether everything the mirror holds has gone to the members' audiences here
        (nothing waits for a stream's end, no channel message is half carried out)."""
        return not self.order.pending and not self.handing

    async def catch_up(self, member: Member, since: v1.Position | None) -> CatchUp:
        if member not in self.catching:
            return await super().catch_up(member, since)  # (plain, or it left meanwhile)
        if not self.sequenced:  # (no history in Redis: what this node keeps, if any)
            return self._caught_up(member, await super().catch_up(member, since))
        fetched: Recovered | str | None = None
        with trio.move_on_after(CATCH_UP_TIMEOUT):
            while self.members.get(member.id) is member:
                mirror = self.mirror
                if mirror is not None and self.quiet:
                    if since is None or mirror.covers(since):
                        return self._caught_up(member, catch_up(mirror, since, member.id))
                    if isinstance(fetched, str):
                        recovery = v1.Recovery(False, 0, fetched)
                        return self._caught_up(member, CatchUp(mirror.position, recovery, []))
                    if fetched is not None and fetched.epoch == mirror.epoch:
                        seam = v1.Position(fetched.epoch, fetched.last)
                        if mirror.last >= fetched.last and mirror.covers(seam):
                            rest = mirror.since(seam, member.id)
                            if isinstance(rest, str):
                                recovery = v1.Recovery(False, 0, rest)
                                missed: list[Message] = []
                            else:
                                missed = fetched.missed + rest
                                recovery = v1.Recovery(True, len(missed))
                            return self._caught_up(
                                member, CatchUp(mirror.position, recovery, missed)
                            )
                        if mirror.last >= fetched.last:
                            fetched = None  # the mirror moved past it: read again
                if fetched is None and since is not None and self.backplane.up:
                    try:
                        fetched = await self.backplane.recover(self.name, since, member.id)
                    except (ConnectionLost, RedisError) as exc:
                        member.close(
                            CloseCode.BACKPLANE_UNAVAILABLE, f"backplane unavailable: {exc}"
                        )
                        break
                    continue
                await self._changed.wait()
                if isinstance(fetched, Recovered) and fetched.epoch != getattr(
                    self.mirror, "epoch", None
                ):
                    fetched = None  # of another epoch than the mirror's now: read again
            return CatchUp(None, None, [])  # it left (it was closed) meanwhile
        member.close(
            CloseCode.BACKPLANE_UNAVAILABLE,
            f"could not catch up with the group's history within {CATCH_UP_TIMEOUT:g}s",
        )
        return CatchUp(None, None, [])

    def _caught_up(self, member: Member, catch: CatchUp) -> CatchUp:
        """``member`` gets ``catch`` now, and from here on what is live."""
        self.catching.discard(member)
        self.refresh_views()
        return catch

    def member_ids(self) -> list[str]:
        return list(dict.fromkeys([*self.members, *self.remote.values()]))

    def elsewhere(self, member_id: str) -> bool:
        # (A scan, only for a message addressed to a member not on this node.)
        return member_id in self.remote.values()

    @property
    def spans_nodes(self) -> bool:
        """Whether members on other nodes are (or may be) involved right now."""
        return bool(self.remote) or isinstance(self.floor.holder, RemoteStream)

    async def wait_inbox_drained(self) -> None:
        """Wait until what other nodes sent the group before now has gone out here."""
        while self.inbox is not None:
            await self.inbox_drained.wait()

    # -- the relay's Group interface, beyond this node ---------------------------------

    @property
    def congested(self) -> bool:  # type: ignore[override]  # (Group's is a class attribute)
        return self.backplane.congested

    async def wait_uncongested(self) -> None:
        await self.backplane.wait_room()

    def new_outbox(self) -> MutableSequence[Message]:
        return []

    def publish(self, messages: list[Message]) -> None:
        self.backplane.publish(self, messages)

    async def open_stream(self, sender: Member, head: StreamHead) -> Outbound:
        await self.floor.wait(sender)
        # Other nodes' members may be streaming to this group too: the channel's order
        # decides who goes first, and may make this member wait its turn.
        stream = await self.backplane.turns.claim(self, sender, head, self.wait_inbox_drained)
        self.floor.take(sender)
        await self.floor.settled()
        if stream is None:
            return NO_OUTBOUND  # Redis is away: the group lives on this node only
        return _RedisOutbound(self, stream)


class _RedisOutbound(Outbound):
    """Carries one streamed message of a member here to the group's other nodes."""

    __slots__ = ("_group", "_stream")

    def __init__(self, group: SharedGroup, stream: OutgoingStream) -> None:
        self._group = group
        self._stream = stream

    async def forward(self, piece: Piece) -> None:
        await self._group.backplane.turns.publish_piece(self._group, self._stream, piece)

    def end(self, truncated: bool) -> None:
        self._group.backplane.turns.end(self._group, self._stream, truncated)


def parse_info(text: bytes) -> dict[str, Any] | None:
    """A member's info as another node gave it (None: none, or not a JSON object)."""
    try:
        info = json.loads(text)
    except ValueError:
        return None
    return info if isinstance(info, dict) else None
