"""How one node orders what arrives on a group's channel: the decisions, without I/O.

Redis delivers a channel's messages to every subscriber in the order they were
published, so every node sees one sequence per group. From it each node decides the
same things the same way:

- Stream starts are claims: the first start since the last stream ended owns the
  group's floor; a start that comes while another stream owns it is declined (its
  sender waits for the end and claims again). Pieces and aborts of any stream but the
  owner are ignored.
- Whole messages from other nodes go out at once unless a message is streaming to the
  group (from any node): then they wait, in order, and go out after its end — they
  cannot be put between two fragments of one WebSocket message.
- What waits is bounded (``limit`` payload bytes): beyond it the group's members here
  are closed (4004), since they would otherwise miss messages silently.

:class:`ChannelOrder` turns each channel message into :data:`Action` s that the
backplane carries out (``backplane/channel.py``). It imports no trio and is tested on its
own (``tests/test_order.py``).
"""

from __future__ import annotations

import collections
import enum

import attrs

from ..protocol.message import Message, StreamHead
from ..protocol.nodes import Messages, NodeMessage, StreamAbort, StreamPiece, StreamStart


class FloorHolder(enum.Enum):
    """Who holds the group's floor on this node, as the backplane tells the order."""

    FREE = "free"
    #: A remote stream (possibly one whose last piece is still in the group's inbox).
    REMOTE = "remote"
    #: A member of this node (a stream begun while Redis was away, or a granted claim).
    LOCAL = "local"


@attrs.frozen
class DeliverHere:
    """Deliver these whole messages to the group's members here, now."""

    messages: tuple[Message, ...]


@attrs.frozen
class Overflow:
    """Too much waited for a stream's end: close the group's members here (4004)."""


@attrs.frozen
class Grant:
    """This node's claim ``stream_id`` owns the floor: its member streams now."""

    stream_id: int


@attrs.frozen
class Decline:
    """This node's claim ``stream_id`` came while another stream owned the floor."""

    stream_id: int


@attrs.frozen
class StartRemote:
    """Another node's member streams to the group now. ``conflict``: a member of this
    node is still streaming a message begun while Redis was away, which the group's
    members here cannot have interrupted — close them."""

    node: bytes
    stream_id: int
    head: StreamHead
    conflict: bool


@attrs.frozen
class DeliverPiece:
    """Deliver the next piece of the remote stream that owns the floor."""

    payload: bytes
    first: bool
    last: bool
    #: The piece's number, for its acknowledgement to the sending node.
    number: int


@attrs.frozen
class EndRemote:
    """The remote stream that owned the floor ended here (``truncated``: cut off)."""

    truncated: bool


@attrs.frozen
class EndOwn:
    """This node's own stream ended in channel order (its pieces went out directly)."""


Action = DeliverHere | Overflow | Grant | Decline | StartRemote | DeliverPiece | EndRemote | EndOwn


class ChannelOrder:
    """One group's channel, as one node (``node``) orders it."""

    __slots__ = ("limit", "node", "owner", "pending", "pending_bytes")

    def __init__(self, node: bytes, limit: int) -> None:
        self.node = node
        #: Payload bytes that may wait for a stream's end before the group overflows.
        self.limit = limit
        #: (node, stream id) of the stream that owns the floor, in channel order.
        self.owner: tuple[bytes, int] | None = None
        #: Batches of whole messages waiting for the end of a stream, in order.
        self.pending: collections.deque[tuple[Message, ...]] = collections.deque()
        self.pending_bytes = 0

    def receive(
        self, message: NodeMessage, floor: FloorHolder, sequenced: bool = False
    ) -> list[Action]:
        """What to do with ``message``, the next one on the group's channel, with the
        floor of the group here as it is now. Messages other than whole messages and
        stream messages (announcements) need no ordering: nothing to do.

        ``sequenced``: the message came from Redis's history (inside an ``O``), and is
        delivered here too when this node sent it."""
        actions: list[Action] = []
        if self.pending and self.owner is None and floor is FloorHolder.FREE:
            self._release(actions)
        mine = message.node == self.node
        if type(message) is Messages:
            if mine and not sequenced:
                pass  # delivered here when it was sent
            elif self.owner is not None or floor is not FloorHolder.FREE or self.pending:
                self._hold(message.messages, actions)
            else:
                actions.append(DeliverHere(message.messages))
        elif type(message) is StreamStart:
            if self.owner is not None:
                if mine:
                    actions.append(Decline(message.stream_id))
            else:
                self.owner = (message.node, message.stream_id)
                if mine:
                    actions.append(Grant(message.stream_id))
                else:
                    conflict = floor is FloorHolder.LOCAL
                    actions.append(
                        StartRemote(message.node, message.stream_id, message.head, conflict)
                    )
        elif type(message) is StreamPiece:
            if self.owner == (message.node, message.stream_id):
                if mine:
                    if message.last:
                        self.owner = None
                        actions.append(EndOwn())
                        self._release(actions)
                else:
                    first = message.piece == 1
                    if message.last:
                        self.owner = None
                    actions.append(
                        DeliverPiece(message.payload, first, message.last, message.piece)
                    )
                    if message.last:
                        self._release(actions)
        elif type(message) is StreamAbort:
            if self.owner == (message.node, message.stream_id):
                self.owner = None
                actions.append(EndOwn() if mine else EndRemote(truncated=True))
                self._release(actions)
        return actions

    def floor_freed(self) -> list[Action]:
        """The floor here became free (a remote stream's last piece went out from the
        group's inbox): what waited for it goes out now."""
        actions: list[Action] = []
        self._release(actions)
        return actions

    def reset(self) -> None:
        """Redis is gone: the channel's order starts over when it is back (what waited
        here is dropped; the backplane closes the members who may miss it)."""
        self.owner = None
        self.pending.clear()
        self.pending_bytes = 0

    def _hold(self, messages: tuple[Message, ...], actions: list[Action]) -> None:
        size = sum(len(message.payload) for message in messages)
        if self.pending_bytes + size > self.limit:
            self.pending.clear()
            self.pending_bytes = 0
            actions.append(Overflow())
            return
        self.pending.append(messages)
        self.pending_bytes += size

    def _release(self, actions: list[Action]) -> None:
        while self.pending and self.owner is None:
            messages = self.pending.popleft()
            self.pending_bytes -= sum(len(message.payload) for message in messages)
            actions.append(DeliverHere(messages))
