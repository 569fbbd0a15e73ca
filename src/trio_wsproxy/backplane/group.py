"""A group as one node of a cluster sees it: the relay's :class:`Group` interface, with
what goes beyond this node carried by the backplane."""

from __future__ import annotations

import collections
from collections.abc import MutableSequence
from typing import TYPE_CHECKING, Protocol

import trio

from ..protocol.message import Message, StreamHead
from ..relay.groups import NO_OUTBOUND, Group, Member, Outbound
from .order import ChannelOrder
from .streams import OutgoingStream, RemoteStream

if TYPE_CHECKING:
    from ..protocol.assembly import Piece
    from .streams import Turns


class Carrier(Protocol):
    """What a shared group needs of its backplane: the way to the other nodes."""

    @property
    def turns(self) -> Turns: ...

    @property
    def congested(self) -> bool: ...

    async def wait_room(self) -> None: ...

    def publish(self, group: Group, messages: list[Message]) -> None: ...


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
        "backplane",
        "inbox",
        "inbox_bytes",
        "inbox_drained",
        "order",
        "remote",
        "subscribed",
    )

    def __init__(self, name: str, backplane: Carrier, node: bytes, limit: int) -> None:
        super().__init__(name)
        self.backplane = backplane
        #: The group's members on other nodes, as far as this node knows: owner token
        #: of each connection -> its member id.
        self.remote: dict[str, str] = {}
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
