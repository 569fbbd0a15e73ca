"""Streamed messages across nodes: whose turn it is, and the pacing of pieces.

A message too large to hold streams through Redis in pieces of about ``FRAGMENT_SIZE``.
Which sender streams to a group first is decided by the group channel's order: every
node sees the same sequence of :class:`~trio_wsproxy.protocol.nodes.StreamStart` s, the
first one since the last stream ended wins, and the others wait for its end — so pieces
of two messages never interleave, on any node. The receiving nodes acknowledge pieces on
the sender node's channel, and the sender keeps at most ``STREAM_WINDOW`` pieces
unacknowledged: memory stays flat on every node and no subscriber outgrows Redis's
pub/sub output buffer.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import trio

from ..protocol.message import StreamHead
from ..protocol.nodes import StreamAbort, StreamPiece, StreamStart
from ..protocol.resp import ConnectionLost, RedisError
from ..relay.groups import Audience, Group, Member

if TYPE_CHECKING:
    from ..protocol.assembly import Piece
    from .connection import RedisConnection

logger = logging.getLogger("trio_wsproxy.backplane")

#: Stream pieces a sender may have published and not yet seen acknowledged by every
#: receiving node. Pieces are about 1 MiB (FRAGMENT_SIZE): this keeps a subscriber's
#: backlog under Redis's default soft pub/sub limit (8 MB).
STREAM_WINDOW = 4


class RemoteStream:
    """A message another node's member is streaming to a group, as this node forwards it."""

    __slots__ = ("delivered", "head", "node", "queued", "recipients", "stream_id")

    def __init__(
        self, node: bytes, stream_id: int, head: StreamHead, recipients: tuple[Audience, ...]
    ) -> None:
        self.node = node
        self.stream_id = stream_id
        self.head = head
        #: This node's members it goes to (those here when it started), by encoding.
        self.recipients = recipients
        #: Whether a piece went out: only then does cutting it off close the recipients.
        self.delivered = False
        #: Its pieces waiting in the group's inbox: acknowledgements keep that within
        #: the window, unless the sender stopped waiting for this node's slowest member.
        self.queued = 0

    def members(self) -> list[Member]:
        return [member for _, members in self.recipients for member in members]


class OutgoingStream:
    """A message a member of this node streams to other nodes: its acknowledgements."""

    __slots__ = ("acked", "changed", "expected", "group_name", "pieces", "stream_id")

    def __init__(self, group_name: str, stream_id: int, expected: int) -> None:
        self.group_name = group_name
        self.stream_id = stream_id
        #: How many other nodes receive it (Redis's count of subscribers, less us).
        self.expected = expected
        self.pieces = 0
        self.acked: dict[bytes, int] = {}
        self.changed = trio.Event()

    def acked_by(self, piece: int) -> int:
        return sum(1 for last in self.acked.values() if last >= piece)


class Claim:
    """A member of this node asking for its group's turn to stream; decided in channel
    order when its start comes back from Redis."""

    __slots__ = ("accepted", "decided", "group_name", "head", "member")

    def __init__(self, group_name: str, member: Member, head: StreamHead) -> None:
        self.group_name = group_name
        self.member = member
        #: The head of the message it is for (its offset is set when Redis gives one).
        self.head = head
        self.accepted = False
        self.decided = trio.Event()


class Publishing(Protocol):
    """What the turns need of the backplane: its publishing connection while it is up."""

    def publisher(self) -> RedisConnection | None:
        """The publishing connection while Redis is up and the node registered, else None."""

    def send_to_group(self, group_name: str, data: bytes) -> None:
        """Publish on a group's channel, without waiting (a no-op while Redis is away)."""

    async def publish_claim(self, group: Group, start: StreamStart) -> object:
        """Publish a stream's start on the group's channel; Redis's count of receivers
        comes back (raises ConnectionLost or RedisError)."""


class Turns:
    """The streams of one node: its members' claims, and the messages they stream."""

    def __init__(
        self, link: Publishing, node: bytes, group_channel: _ChannelOf, patience: float
    ) -> None:
        self._link = link
        self._node = node
        self._channel = group_channel
        #: How long a sender waits for a receiving node's acknowledgement.
        self.patience = patience
        self._ids = itertools.count(1)
        self.claims: dict[int, Claim] = {}
        self.streams: dict[int, OutgoingStream] = {}

    async def claim(
        self,
        group: Group,
        member: Member,
        head: StreamHead,
        drained: Callable[[], Awaitable[None]],
    ) -> OutgoingStream | None:
        """Wait until ``member`` may stream a message to ``group``: the group channel's
        order decides between senders on different nodes. Returns with the group's
        floor held by ``member``, or None while Redis is down (the group then lives on
        this node only)."""
        node = self._node
        while self._link.publisher() is not None:
            stream_id = next(self._ids)
            claim = self.claims[stream_id] = Claim(group.name, member, head)
            try:
                receivers = await self._link.publish_claim(
                    group, StreamStart(node, stream_id, head)
                )
                await claim.decided.wait()
                if claim.accepted:
                    # What came before our start in the channel may still wait in the
                    # group's inbox (the tail of another message): it goes out first.
                    await drained()
            except BaseException as exc:
                if claim.accepted:
                    self._give_up(group, member, stream_id)
                if isinstance(exc, ConnectionLost | RedisError):
                    return None
                raise
            finally:
                del self.claims[stream_id]
            if claim.accepted:
                expected = receivers - 1 if isinstance(receivers, int) else 0
                stream = OutgoingStream(group.name, stream_id, expected)
                self.streams[stream_id] = stream
                return stream
            # Another member's message goes first: wait for its end, then ask again.
            await group.floor.wait(member)
        return None

    def decide(self, stream_id: int, accepted: bool) -> Claim | None:
        """Our start came back in channel order: ``accepted`` if the group was free.
        Returns the claim, or None when its member gave up on it before the answer."""
        claim = self.claims.get(stream_id)
        if claim is not None:
            claim.accepted = accepted
            claim.decided.set()
        return claim

    def _give_up(self, group: Group, member: Member, stream_id: int) -> None:
        """A claim was granted to a member that went away before streaming: release it."""
        group.floor.release(member)
        self._link.send_to_group(group.name, StreamAbort(self._node, stream_id).encode())

    async def publish_piece(self, group: Group, stream: OutgoingStream, piece: Piece) -> None:
        """Publish one piece of ``stream`` once the receivers have caught up."""
        stream.pieces += 1
        number = stream.pieces
        await self._wait_acks(stream, number - STREAM_WINDOW)
        pub = self._link.publisher()
        if pub is None or stream.stream_id not in self.streams:
            return  # Redis went away meanwhile: the other nodes were told to drop it
        message = StreamPiece(self._node, stream.stream_id, number, piece.payload, piece.last)
        try:
            receivers = await pub.call("PUBLISH", self._channel(group.name), message.encode())
        except (ConnectionLost, RedisError):
            return
        if isinstance(receivers, int):
            stream.expected = min(stream.expected, receivers - 1)
        if piece.last:
            self.streams.pop(stream.stream_id, None)

    def end(self, group: Group, stream: OutgoingStream, truncated: bool) -> None:
        """The member's streamed message ended; tell the other nodes if it was cut off."""
        self.streams.pop(stream.stream_id, None)
        if truncated:
            self._link.send_to_group(group.name, StreamAbort(self._node, stream.stream_id).encode())

    def acknowledged(self, node: bytes, stream_id: int, piece: int) -> None:
        """``node`` has queued pieces up to ``piece`` of our stream ``stream_id``."""
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.acked[node] = max(piece, stream.acked.get(node, 0))
            stream.changed.set()

    async def _wait_acks(self, stream: OutgoingStream, piece: int) -> None:
        if piece < 1:
            return
        deadline = trio.current_time() + self.patience
        while self._link.publisher() is not None and stream.stream_id in self.streams:
            if stream.acked_by(piece) >= stream.expected:
                return
            with trio.move_on_at(deadline):
                await stream.changed.wait()
                stream.changed = trio.Event()
                continue
            # A receiving node that does not keep up is not waited for any longer: if
            # it falls too far behind, Redis drops its subscription and it closes its
            # members with 4004. Nothing is lost silently either way.
            logger.debug(
                "stream %d: a node did not acknowledge in %gs", stream.stream_id, self.patience
            )
            stream.expected = stream.acked_by(piece)

    def lose(self) -> list[tuple[str, int]]:
        """Redis is gone: every claim and stream of ours ends here; the (group, stream
        id) pairs the other nodes may still wait on come back, to be aborted once Redis
        is back (or when this node expires, if it never is)."""
        due = [(claim.group_name, stream_id) for stream_id, claim in self.claims.items()]
        for claim in self.claims.values():
            claim.decided.set()
        for stream in self.streams.values():
            due.append((stream.group_name, stream.stream_id))
            stream.changed.set()
        self.streams.clear()
        return due

    def unfinished(self) -> list[tuple[str, int]]:
        """(group, stream id) of every stream and claim of ours still going (shutdown)."""
        streams = [(s.group_name, s.stream_id) for s in self.streams.values()]
        return streams + [(c.group_name, stream_id) for stream_id, c in self.claims.items()]


class _ChannelOf(Protocol):
    def __call__(self, group_name: str) -> bytes: ...
