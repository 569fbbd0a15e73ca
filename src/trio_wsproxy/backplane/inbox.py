"""Delivering what other nodes sent to this node's members, without waiting on any one.

The subscriber reads the group channels in order and hands each message here. If every
recipient's mailbox has room, it is queued at once (and written out once per read from
Redis, as on the local path). If a mailbox is full, the rest of that delivery and the
group's next ones wait in the group's inbox, worked off by a task of the group's own: one
slow member holds up its group (for ``slow_member_timeout`` at most), never the node's
other groups.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from ..protocol.close_codes import CloseCode
from ..protocol.message import Message
from ..relay.fanout import Courier
from ..relay.groups import Member
from .group import Delivery, SharedGroup
from .streams import STREAM_WINDOW, RemoteStream

if TYPE_CHECKING:
    from ..relay.config import RelayConfig
    from ..relay.counters import Counters


#: Called once a delivery with an acknowledgement or an end is queued for everyone.
Delivered = Callable[[SharedGroup, Delivery], Awaitable[None]]


class Deliveries:
    """This node's deliveries from Redis, and the inboxes of groups that wait."""

    def __init__(
        self, config: RelayConfig, counters: Counters, courier: Courier, delivered: Delivered
    ) -> None:
        self._config = config
        self._counters = counters
        self._courier = courier
        self._delivered = delivered
        #: Where inbox tasks run: the current connection's nursery (None while down).
        self.nursery: trio.Nursery | None = None

    async def messages(self, group: SharedGroup, messages: tuple[Message, ...]) -> None:
        """Deliver a batch of whole messages to the group's members here, framed once
        per encoding; one addressed to a member (v1) goes to it alone, if it is here."""
        for message in messages:
            if message.to is not None:
                await self._with_addressed(group, messages)
                return
        await self._broadcast(group, messages)

    async def _broadcast(self, group: SharedGroup, messages: tuple[Message, ...]) -> None:
        # A sequenced group's messages come back to their sender's node too (a batch is
        # one member's): every member here but their sender gets them.
        sender = group.members.get(messages[0].sender) if group.sequenced else None
        count = len(messages)
        for encoding, members in group.audiences:
            self._counters.deliveries += count * (len(members) - (sender in members))
            frame = encoding.message
            data = b"".join([frame(message) for message in messages])
            await self.deliver(group, Delivery(data, members), sender)

    async def _with_addressed(self, group: SharedGroup, messages: tuple[Message, ...]) -> None:
        """A batch with messages addressed to one member: runs of messages to the whole
        group and each addressed one in turn, so every member gets its own in order.
        (One addressed to a member not here is another node's; one to a member that
        left while it travelled is dropped, as a broadcast to it would be.)"""
        run: list[Message] = []
        for message in messages:
            if message.to is None:
                run.append(message)
                continue
            if run:
                await self._broadcast(group, tuple(run))
                run = []
            target = group.reachable(message.to)
            if target is not None:
                self._counters.deliveries += 1
                await self.deliver(group, Delivery(target.encoding.message(message), (target,)))
        if run:
            await self._broadcast(group, tuple(run))

    async def piece(
        self,
        group: SharedGroup,
        stream: RemoteStream,
        payload: bytes,
        first: bool,
        last: bool,
        ack: tuple[bytes, bytes],
    ) -> None:
        """Deliver one piece of a remote stream to the members it started with; the
        acknowledgement (and the stream's end, after its last piece) follows once every
        one of them has it queued."""
        stream.delivered = True
        ended = stream if last else None
        audiences = stream.recipients or ((None, ()),)
        for index, (encoding, members) in enumerate(audiences):
            data = b"" if encoding is None else encoding.piece(stream.head, payload, first, last)
            if index == len(audiences) - 1:
                await self.deliver(group, Delivery(data, members, stream, ack, ended))
            else:
                await self.deliver(group, Delivery(data, members, stream))

    async def deliver(
        self, group: SharedGroup, delivery: Delivery, skip: Member | None = None
    ) -> None:
        """Queue a delivery for the group's members here (but ``skip``), without waiting
        on anyone."""
        if group.inbox is not None:
            if skip is not None:
                delivery.members = tuple(m for m in delivery.members if m is not skip)
            self._enqueue(group, delivery)
            return
        if delivery.stream is not None and group.floor.in_flight:
            # A local message that passed the floor is still being queued: the piece
            # waits for it in the inbox, or it could overtake it at some recipient.
            blocked: list[Member] | None = list(delivery.members)
        else:
            blocked = self._courier.offer(delivery.data, delivery.members, skip)
        if blocked is None:
            if delivery.ack is not None or delivery.ended is not None:
                await self._delivered(group, delivery)
            return
        delivery.members = tuple(blocked)
        group.open_inbox()
        self._enqueue(group, delivery)
        if self.nursery is None:  # (the backplane is down: losing Redis empties the inbox)
            return
        self.nursery.start_soon(self._work_off_inbox, group)

    def _enqueue(self, group: SharedGroup, delivery: Delivery) -> None:
        inbox = group.inbox
        if inbox is None:  # (callers make one first)
            raise RuntimeError("no inbox to queue in")
        inbox.append(delivery)
        if delivery.stream is not None:
            if delivery.ack is None:
                return  # (a piece counts once: on its acknowledging delivery)
            # A stream piece: acknowledgements pace them, up to the window. More means
            # the sender gave up waiting for this node's slowest member.
            delivery.stream.queued += 1
            overflow = delivery.stream.queued > STREAM_WINDOW + 1
        else:
            group.inbox_bytes += len(delivery.data)
            overflow = group.inbox_bytes > self._config.mailbox_bytes
        if overflow and len(inbox) > 1:
            # The group's backlog from other nodes is full too: whoever it waits for is
            # too slow for the group, as if its timeout had passed.
            head = inbox[0]
            for member in head.members:
                mailbox = member.mailbox
                if not mailbox.fits(len(head.data)):
                    member.close(
                        CloseCode.SLOW_CONSUMER,
                        "mailbox full and the group's messages from other nodes piling up",
                    )

    async def _work_off_inbox(self, group: SharedGroup) -> None:
        courier = Courier(self._config.slow_member_timeout, self._counters)
        inbox = group.inbox
        try:
            while inbox is not None and inbox and group.inbox is inbox:
                delivery = inbox[0]
                if delivery.stream is not None:
                    await group.floor.settled()
                blocked = courier.offer(delivery.data, delivery.members)
                if blocked is not None:
                    await courier.wait_for_room(delivery.data, blocked)
                courier.flush()
                if group.inbox is not inbox:
                    return  # the backplane went away meanwhile
                inbox.popleft()
                if delivery.stream is None:
                    group.inbox_bytes -= len(delivery.data)
                elif delivery.ack is not None:
                    delivery.stream.queued -= 1
                if delivery.ack is not None or delivery.ended is not None:
                    await self._delivered(group, delivery)
        finally:
            courier.flush()
            # Cancelled with deliveries left (Redis went away): SharedGroup.lose_redis drops them.
            if group.inbox is inbox and not inbox:
                group.close_inbox()
