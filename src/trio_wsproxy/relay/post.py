"""One message a back end posts to a group through the HTTP API, delivered like a
member's: framed once per encoding, queued in the recipients' mailboxes with the same
backpressure, carried to the group's other nodes by the group, and streamed in pieces
with flat memory when it is large (taking the group's floor as a member's would).

The poster is no member: it is in no group's member list, gets nothing, and its sender
id is :data:`~trio_wsproxy.protocol.message.BACK_END` (v1 members see ``"from":null``).
It is held to a streaming member's pace, though (:attr:`Poster.piece_due`): a body
cannot hold its group's floor, nor its request the relay, by trickling in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ..protocol.assembly import Assembly, Piece
from ..protocol.encoding import PLAIN
from ..protocol.frames import Data
from ..protocol.message import BACK_END, Message, StreamHead
from .fanout import Courier, cut_off
from .groups import NO_OUTBOUND, Audience, Group, Outbound
from .mailbox import Mailbox

if TYPE_CHECKING:
    from .host import RelayCore


class Poster:
    """Posts one message, fed in chunks as its body arrives, to ``group`` (to the member
    ``to`` alone, if given). It takes the place of a member where the group needs one
    (its streaming floor); it has the :class:`~.groups.Member` attributes for that."""

    encoding = PLAIN

    def __init__(self, relay: RelayCore, group: Group, text: bool, to: str | None) -> None:
        counters = relay.counters
        self.id = BACK_END
        self.group_name = group.name
        self.mailbox = Mailbox(0)  # (never a recipient: it is in no member list)
        self.joined_at = trio.current_time()
        self._group = group
        self._text = text
        self._first = True
        self._counters = counters
        self._budget = relay.budget
        self._assembly = Assembly(BACK_END)
        self._assembly.to = to
        self._courier = Courier(relay.config.slow_member_timeout, counters)
        self._courier.serve(group)
        self._stream_timeout = relay.config.stream_timeout
        #: When the body's next piece (FRAGMENT_SIZE bytes, or its end) is due at the
        #: latest, on Trio's clock: the pace a member's streaming message is held to
        #: (Session.piece_due), from the body's start, so that a slow body holds nothing
        #: for long before it streams either. The feeder gives up then (the HTTP API
        #: answers 408) and calls :meth:`end`. Time the relay keeps the poster waiting
        #: (for the floor, a full mailbox, the fan-out budget) is not counted: it is
        #: due anew once a piece has gone out.
        self.piece_due = trio.current_time() + self._stream_timeout
        # The message streaming now: who it goes to here, whether its pieces go to the
        # other nodes, and what carries them there.
        self._stream_to: tuple[Audience, ...] = ()
        self._stream_out = True
        self._outbound: Outbound = NO_OUTBOUND
        #: Whether the member the message is for (if one) was found on this node.
        self.found_here = False

    def close(self, code: int, reason: str) -> None:
        """(The Member interface; nothing closes a poster: its request ends it.)"""

    async def feed(self, chunk: bytes, last: bool) -> None:
        """The next chunk of the body; ``last``: the body ends with it."""
        first, self._first = self._first, False
        forward = self._assembly.feed(Data(chunk, self._text, first, last))
        if forward is None:
            return
        if isinstance(forward, Message):
            await self._whole(forward)
            return
        for piece in forward:
            if piece.first:
                await self._start(self._assembly.head)
            await self._forward(piece)
        self.piece_due = trio.current_time() + self._stream_timeout

    async def _whole(self, message: Message) -> None:
        group, courier, floor = self._group, self._courier, self._group.floor
        self._counters.messages += 1
        self._counters.bytes += len(message.payload)
        await self._take_turn(len(group.members))
        if group.congested:
            await group.wait_uncongested()
        while floor.holder is not None and floor.holder is not self:
            await floor.wait(self)
        # Nothing awaited from here to the offers: no stream can start between them.
        audiences = self._audiences(message.to)
        if group.history is not None:
            group.history.record(message)
        if group.sequenced:
            # The group delivers it, here too, in its history's order (see Group).
            audiences = ()
        if message.to is None or not audiences:
            courier.outbox.append(message)  # to the group's members on other nodes
        for encoding, members in audiences:
            self._counters.deliveries += len(members)
            data = encoding.message(message)
            blocked = courier.offer(data, members)
            if blocked is not None:
                floor.passing()
                try:
                    await courier.wait_for_room(data, blocked)
                finally:
                    floor.passed()
        courier.flush()

    def _audiences(self, to: str | None) -> tuple[Audience, ...]:
        """Who gets the message here: the group's members, or the one it is for (none
        here: it is on another node, or it left meanwhile)."""
        if to is None:
            return self._group.audiences
        target = self._group.locate(to)
        if target is None:
            return ()
        self.found_here = True
        return ((target.encoding, (target,)),)

    async def _take_turn(self, recipients: int) -> None:
        if not self._budget.charge(recipients):
            self._courier.flush()
            await self._budget.wait_turn(recipients)

    async def _start(self, head: StreamHead) -> None:
        """Take the group's floor for the message; who receives it is fixed now."""
        group = self._group
        self._courier.flush()
        self._outbound = await group.open_stream(self, head)
        if group.history is not None:
            head.offset = group.history.record_unkept()
        self._stream_to = self._audiences(head.to)
        # (To one member here: the other nodes only see the stream take its turn.)
        self._stream_out = head.to is None or not self._stream_to
        self._counters.deliveries += sum(len(members) for _, members in self._stream_to)

    async def _forward(self, piece: Piece) -> None:
        head, courier = self._assembly.head, self._courier
        self._counters.bytes += len(piece.payload)
        for encoding, members in self._stream_to:
            data = encoding.piece(head, piece.payload, piece.first, piece.last)
            await self._take_turn(len(members))
            blocked = courier.offer(data, members)
            if blocked is not None:
                await courier.wait_for_room(data, blocked)
        courier.flush()
        if self._stream_out:
            await self._outbound.forward(piece)
        if piece.last:
            self._counters.messages += 1
            self.end(truncated=False)

    def end(self, truncated: bool) -> None:
        """End the streaming message, if one is streaming; ``truncated``: its body did
        not arrive whole, and the members that got its start are closed with 4002."""
        group = self._group
        if group.floor.holder is not self:
            return  # (not streaming: it has the floor from its first piece to its last)
        outbound, self._outbound = self._outbound, NO_OUTBOUND
        stream_to, self._stream_to = self._stream_to, ()
        try:
            outbound.end(truncated)
            if truncated:
                cut_off(stream_to, "a message was cut off: the back end's post ended early")
        finally:
            group.floor.release(self)  # (whatever failed: the group goes on)
