"""What a node does with what arrives on its channels: its own (replace, remove, ack)
and its groups' (joins and leaves, whole messages, streams, splits, and — with history
on — the sequenced messages that carry their offsets).

Redis delivers one channel's messages in the order they were published, which is what
keeps every sender's order: a group's :class:`~trio_wsproxy.backplane.order.ChannelOrder`
decides what each message means for the members here (which stream owns the floor, which
whole messages wait for its end), and this carries it out, never waiting on one member
(``inbox.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import trio

from ..protocol.close_codes import CloseCode
from ..protocol.nodes import (
    Ack,
    Enter,
    MemberJoined,
    MemberLeft,
    Messages,
    NodeMessage,
    NodeMessageError,
    Remove,
    Replace,
    Revoke,
    Sequenced,
    Split,
    StreamAbort,
    StreamPiece,
    StreamStart,
    decode,
)
from ..relay.config import RelayConfig
from ..relay.counters import Counters
from ..relay.fanout import Courier
from ..relay.groups import REPLACED_REASON
from ..relay.revocations import Revocation
from .group import Delivery, SharedGroup, parse_info
from .history import RedisHistory
from .inbox import Deliveries
from .link import RedisLink
from .names import Names
from .order import (
    Action,
    Decline,
    DeliverHere,
    DeliverPiece,
    EndRemote,
    FloorHolder,
    Grant,
    Overflow,
    StartRemote,
)
from .registry import Roster
from .streams import RemoteStream, Turns

logger = logging.getLogger("trio_wsproxy.backplane")


def _floor(group: SharedGroup) -> FloorHolder:
    holder = group.floor.holder
    if holder is None:
        return FloorHolder.FREE
    if isinstance(holder, RemoteStream):
        return FloorHolder.REMOTE
    return FloorHolder.LOCAL


class Channels:
    """Receives this node's channels in order, and carries out what they say."""

    def __init__(
        self,
        link: RedisLink,
        roster: Roster,
        history: RedisHistory,
        turns: Turns,
        names: Names,
        node: bytes,
        groups: Mapping[str, SharedGroup],
    ) -> None:
        self._link = link
        self._roster = roster
        self._history = history
        self._turns = turns
        self._names = names
        self._node = node
        self._node_channel = names.node_channel()
        self._groups = groups
        # (The roster's own set: it is cleared when Redis is lost, never replaced.)
        self._known_nodes = roster.known_nodes
        #: Nodes found to keep history where this one does not (or the other way round).
        self._mismatched: set[bytes] = set()
        self._counters = Counters()
        self.courier: Courier | None = None
        self.deliveries: Deliveries | None = None

    def configure(self, config: RelayConfig, counters: Counters) -> None:
        """Deliver with the relay's ``config`` and count in its ``counters`` (run())."""
        self._counters = counters
        self.courier = Courier(config.slow_member_timeout, counters)
        self.deliveries = Deliveries(config, counters, self.courier, self._delivered)

    # -- receiving -----------------------------------------------------------------------

    async def on_message(self, channel: bytes, data: bytes) -> None:
        """One message from Redis, on this node's channel or a group's."""
        try:
            message = decode(data)
            group_name = None if channel == self._node_channel else self._names.group_of(channel)
        except (NodeMessageError, UnicodeDecodeError) as exc:
            # Not ours (another program on our channels?): never let it cost the node.
            logger.debug("ignored a malformed backplane message on %r: %s", channel, exc)
            return
        if group_name is None:
            self._on_node_message(message)
        else:
            await self._on_group_message(channel, group_name, message)

    def _on_node_message(self, message: NodeMessage) -> None:
        """What another node says to this one on its own channel."""
        if type(message) is Replace:
            member = self._roster.by_owner.get(message.owner)
            if member is not None:
                member.close(CloseCode.REPLACED, REPLACED_REASON)
        elif type(message) is Remove:
            member = self._roster.by_owner.get(message.owner)
            if member is not None:
                member.close(CloseCode.REMOVED, message.reason)
        elif type(message) is Revoke:
            self._roster.revoked(Revocation(message.kind, message.value, message.at, message.until))
        elif type(message) is Enter:
            member = self._roster.by_owner.get(message.owner)
            if member is not None:
                member.join_also(message.group)
        elif type(message) is Ack:
            self._turns.acknowledged(message.node, message.stream_id, message.piece)

    async def _on_group_message(self, channel: bytes, name: str, message: NodeMessage) -> None:
        """One message on a group's channel, in channel order. The group's
        :class:`~trio_wsproxy.backplane.order.ChannelOrder` decides what it means for the
        members here (which stream owns the floor, which whole messages wait for its end);
        this carries it out. Announcements update this node's view of the group's
        members elsewhere."""
        node = message.node
        group = self._groups.get(name)
        if group is None:
            # Left over from a group this node no longer has: never hold up a sender.
            if type(message) is StreamPiece and node != self._node:
                self._ack(node, message.stream_id, message.piece)
            self._link.send_sub("UNSUBSCRIBE", channel)
            return
        if node != self._node:
            self._known_nodes.add(node)
        if type(message) is MemberJoined:
            if node != self._node:
                changed = self._roster.presence_changed
                if message.info:
                    info = parse_info(message.info)
                    if info is not None:
                        group.remote_info[message.owner] = info
                group.joined_elsewhere(message.owner, message.member_id, changed)
        elif type(message) is MemberLeft:
            group.left_elsewhere(message.owner, message.member_id, self._roster.presence_changed)
        elif type(message) is Split:
            if node != self._node:
                self._split(group, message.seconds)
        elif type(message) is Sequenced:
            if group.sequenced:
                await self._sequenced(group, message)
            else:
                self._history_differs(group, node)
        elif group.sequenced and type(message) in (Messages, StreamStart):
            self._history_differs(group, node)  # (never our own: ours are sequenced)
        else:
            await group.carry(node, group.order.receive(message, _floor(group)), self._carry_out)

    def _history_differs(self, group: SharedGroup, node: bytes) -> None:
        """``node`` keeps history and this one does not, or the other way round: their
        members cannot be given one order, and would miss each other's messages. The
        members here are closed (4004), and the misconfiguration logged once per node."""
        if node not in self._mismatched:
            self._mismatched.add(node)
            logger.error(
                "node %s %s history and this node %s: give every node of a cluster the "
                "same --history-size; closing the members of the groups they share",
                node.decode(errors="replace"), "keeps no" if group.sequenced else "keeps",
                "does" if group.sequenced else "does not",
            )  # fmt: skip
        group.close_members("the relay's nodes disagree on history: messages may be missing")

    async def _sequenced(self, group: SharedGroup, message: Sequenced) -> None:
        """Messages (or a stream's start) with their offsets in the group's history: in
        the mirror, then to the members here, the sender's node included."""
        inner = message.inner
        granted = group.order.owner is None
        if type(inner) is Messages:
            offset = message.offset
            for item in inner.messages:
                item.offset = offset
                offset += 1
        elif type(inner) is StreamStart:
            inner.head.offset = message.offset
            claim = self._turns.claims.get(inner.stream_id) if inner.node == self._node else None
            if claim is not None:
                claim.head.offset = message.offset  # (its member's own head)
            if not granted and inner.node == self._node:
                # The gap our claim left in the history is no message.
                self._history.declined(group.name, message.offset)
        if not group.record(message, granted):
            group.close_members("the group's history was lost in Redis: epoch changed")
        actions = [] if inner is None else group.order.receive(inner, _floor(group), True)
        await group.carry(message.node, actions, self._carry_out)  # (the mirror moved, too)

    async def _carry_out(self, group: SharedGroup, node: bytes, action: Action) -> None:
        """Do what the group's channel order decided, for the members here."""
        deliveries = self._deliveries_or_fail()
        if type(action) is DeliverHere:
            await deliveries.messages(group, action.messages)
        elif type(action) is DeliverPiece:
            stream = group.floor.holder
            if not isinstance(stream, RemoteStream):
                raise RuntimeError(f"a piece for {group.name!r} came with no stream to take it")
            ack = Ack(self._node, stream.stream_id, action.number).encode()
            await deliveries.piece(
                group,
                stream,
                action.payload,
                action.first,
                action.last,
                (self._names.node_channel(node), ack),
            )
        elif type(action) is StartRemote:
            recipients = group.audiences
            if action.head.to is not None:
                # Addressed to one member: to it alone, if it is here (else nobody:
                # the stream only takes its turn on this node).
                target = group.reachable(action.head.to)
                recipients = () if target is None else ((target.encoding, (target,)),)
            if action.conflict:
                group.close_members("two messages streamed at once across an outage")
                recipients = ()
            stream = RemoteStream(action.node, action.stream_id, action.head, recipients)
            group.floor.take(stream)
            self._counters.deliveries += len(stream.members())
        elif type(action) is EndRemote:
            stream = group.floor.holder
            if isinstance(stream, RemoteStream):
                if action.truncated and stream.delivered:
                    for member in stream.members():
                        member.close(
                            CloseCode.MESSAGE_TRUNCATED,
                            "a message was cut off: its sender left mid-message",
                        )
                group.floor.release(stream)
        elif type(action) is Grant:
            claim = self._turns.decide(action.stream_id, accepted=True)
            if claim is None:
                # A claim its member gave up on before the answer came: release it.
                abort = StreamAbort(self._node, action.stream_id).encode()
                self._link.send("PUBLISH", self._names.group_channel(group.name), abort)
            else:
                group.floor.take(claim.member)
        elif type(action) is Decline:
            self._turns.decide(action.stream_id, accepted=False)  # another streams first
        elif type(action) is Overflow:
            group.close_members("messages arrived faster than the relay could order them")
        # EndOwn: nothing more to do here (this node's pieces went out as they were sent).

    def _split(self, group: SharedGroup, seconds: float) -> None:
        """Another node lost Redis with messages maybe unsent: close the members here
        that were there before then."""
        before = trio.current_time() - seconds
        for member in group.sessions:
            if member.joined_at <= before:
                member.close(
                    CloseCode.BACKPLANE_UNAVAILABLE,
                    "another node lost the backplane: messages may be missing",
                )

    def _ack(self, node: bytes, stream_id: int, piece: int) -> None:
        message = Ack(self._node, stream_id, piece).encode()
        self._link.send("PUBLISH", self._names.node_channel(node), message)

    async def _delivered(self, group: SharedGroup, delivery: Delivery) -> None:
        """A stream piece is queued: acknowledge it, and end its stream after the last."""
        if delivery.ack is not None:
            self._link.send("PUBLISH", *delivery.ack)
        if delivery.ended is not None:
            group.floor.release(delivery.ended)
            await group.carry(self._node, group.order.floor_freed(), self._carry_out)

    def _deliveries_or_fail(self) -> Deliveries:
        if self.deliveries is None:
            raise RuntimeError("the backplane runs through run()")
        return self.deliveries
