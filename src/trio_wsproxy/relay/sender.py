"""What one sender sends into one group: the one way a message is delivered.

A member's session and a message the back end posts through the HTTP API deliver the
same way, with a :class:`Sender` each: a whole message (to the group, or to one member
of it), or one streamed in pieces. The rules are decided here, once:

- **The floor** (see floor.py): a whole message waits while another sender's message
  streams to the group; a streamed one takes the floor from its first piece to its end.
- **The history** (see history.py): a whole message gets its offset before it is
  offered to anyone; a streamed one, too large to keep, gets an offset that is not kept.
- **Sequenced groups** (see Group.sequenced): the group delivers what its sender hands
  over (the courier's outbox), here too, in its history's order.
- **Direct addressing** (v1): a message to one member goes to it here, or travels with
  the group's other messages to the node it is on, or is refused.
- **Waits**: the relay's fan-out budget per scheduling turn, the group's room towards its
  other nodes, full mailboxes (the courier). Every wait goes through the sender's
  :data:`Pause`, so that a session can keep answering its member meanwhile.

The hot path is synchronous: :meth:`Sender.clear` then :meth:`Sender.offer` deliver a
whole message that needs no wait without a coroutine; :meth:`Sender.send` waits first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..protocol.message import Message, StreamHead
from .fanout import Courier, cut_off
from .groups import NO_OUTBOUND, Audience, Group, Member, Outbound

if TYPE_CHECKING:
    from ..protocol.assembly import Piece
    from .budget import TurnBudget
    from .counters import Counters

#: Offers that found mailboxes full: each frame with the members it still waits for.
Blocked = list[tuple[bytes, list[Member]]]


class Pause(Protocol):
    """How a sender waits: ``await pause(wait, *args)`` returns what ``wait(*args)``
    does. ``read_ahead``: whether the wait may be long enough for a session to read
    ahead meanwhile (not a scheduling turn's)."""

    def __call__(
        self, wait: Callable[..., Awaitable[Any]], *args: Any, read_ahead: bool = True
    ) -> Awaitable[Any]: ...


async def unpaused(wait: Callable[..., Awaitable[Any]], *args: Any, read_ahead: bool = True) -> Any:
    """A :data:`Pause` that only waits (a sender with nothing to do meanwhile)."""
    return await wait(*args)


#: What a sender does with a message to a member the group does not have (here or,
#: as far as this node knows, elsewhere): given that member's id and whether it is the
#: sender itself, the audiences to deliver to instead (``()``: on to the group's other
#: nodes), or None to drop the message (having told its sender why).
Unknown = Callable[[str, bool], "tuple[Audience, ...] | None"]


class Sender:
    """Delivers what ``member`` sends into ``group``: whole messages and streamed ones.

    ``member`` is who holds the group's floor while its message streams, and who is
    skipped among the recipients (a member never gets its own messages); ``in_group``:
    it is one of the group's members (a session), not a stand-in (the API's poster).
    """

    __slots__ = (
        "_budget",
        "_counters",
        "_cut_off_reason",
        "_floor",
        "_head",
        "_in_group",
        "_members",
        "_outbound",
        "_pause",
        "_sequenced",
        "_stream_out",
        "_stream_to",
        "_unknown",
        "_views",
        "blocked",
        "courier",
        "found_here",
        "group",
        "member",
        "outbox",
        "publish_hook",
        "read_only",
    )

    def __init__(
        self,
        member: Member,
        group: Group,
        courier: Courier,
        counters: Counters,
        budget: TurnBudget,
        *,
        in_group: bool,
        unknown: Unknown,
        cut_off_reason: str,
        pause: Pause = unpaused,
        read_only: bool = False,
        publish_hook: tuple[str, bool] | None = None,
    ) -> None:
        self.member = member
        #: Whether its member may not publish into the group (the group's namespace
        #: takes messages from the back end only): the session refuses them before
        #: anything is offered.
        self.read_only = read_only
        #: The back end's publish hook asked before each of its member's messages goes
        #: out: its URL, and whether a failure to ask it allows (None: none).
        self.publish_hook = publish_hook
        self.group = group
        # What the hot path reads of the group that is fixed for the group's life: its
        # floor, its member table (a dict, changed in place), its views and whether it
        # is sequenced. (Read here, they are the sender's own attributes: native ones in
        # a compiled build, where the group's would be looked up by name.)
        self._floor = group.floor
        self._members = group.members
        self._views = group.views
        self._sequenced = group.sequenced
        #: Queues this sender's frames in their recipients' mailboxes (a session's one
        #: courier serves all its memberships); the outbox is what goes to the group's
        #: other nodes.
        self.courier = courier
        self.outbox = courier.serve(group)
        self._counters = counters
        self._budget = budget
        self._in_group = 1 if in_group else 0
        self._unknown = unknown
        self._cut_off_reason = cut_off_reason
        self._pause = pause
        #: Offers of a whole message that found mailboxes full, with the floor marked
        #: as passed by a message still in flight: :meth:`finish` queues them.
        self.blocked: Blocked | None = None
        #: Whether the member a message was addressed to was found on this node.
        self.found_here = False
        # The message streaming now: its head, who it goes to here (by encoding),
        # whether its pieces go to the other nodes, and what carries them there.
        self._head: StreamHead | None = None
        self._stream_to: tuple[Audience, ...] = ()
        self._stream_out = True
        self._outbound: Outbound = NO_OUTBOUND

    # -- whole messages ---------------------------------------------------------------

    def clear(self) -> bool:
        """Whether a whole message may go out now, without any wait: no other sender's
        message streams, the group is not congested, and the scheduling turn has room
        for its recipients (charged to it then). False charges nothing."""
        if self.group.congested:
            return False
        holder = self._floor.holder
        if holder is not None and holder is not self.member:
            return False
        return self._budget.charge(len(self._members) - self._in_group)

    async def send(self, message: Message) -> None:
        """Deliver a whole message, waiting for what it must wait for first (the
        scheduling turn, the group's room towards its other nodes, the floor) and for
        room in full mailboxes after."""
        group, pause = self.group, self._pause
        flush = self.courier.flush
        recipients = len(group.members) - self._in_group
        if not self._budget.charge(recipients):
            flush()
            await pause(self._budget.wait_turn, recipients, read_ahead=False)
        if group.congested:
            flush()
            await pause(group.wait_uncongested)
        # Last, with nothing awaited between it and the offers: while another sender's
        # message streams to the group, this one must not go between its pieces. (A
        # loop: ending a pause is a schedule point, and another stream may start.)
        floor = group.floor
        while floor.holder is not None and floor.holder is not self.member:
            await pause(floor.wait, self.member, flush)
        self.offer(message)
        if self.blocked is not None:
            await self.finish()

    def offer(self, message: Message) -> None:
        """Offer a whole message that passed the floor to its recipients, without
        waiting; what found mailboxes full is left in :attr:`blocked`."""
        counters = self._counters
        counters.messages += 1
        group = self.group
        if message.to is None:
            audiences = self._views.audiences()
            recipients = len(self._members) - self._in_group
        else:
            addressed = self.addressee(message.to)
            if addressed is None:
                return
            audiences, recipients = addressed, 1
        outbox = self.outbox
        if self._sequenced:
            assert outbox is not None  # (a sequenced group is on several nodes)
            outbox.append(message)  # the group delivers it, here too, in order
            return
        history = group.history
        if history is not None:
            history.record(message)  # (its offset, before the offers: see history.py)
        counters.deliveries += recipients
        if outbox is not None and (message.to is None or not audiences):
            # For the group's members on other nodes (a message to one member there
            # travels in order with the sender's other messages).
            outbox.append(message)
        blocked: Blocked | None = None
        courier, skip = self.courier, self.member
        for encoding, members in audiences:
            data = encoding.message(message)
            full = courier.offer(data, members, skip)
            if full is not None:
                if blocked is None:
                    blocked = []
                blocked.append((data, full))
        if blocked is not None:
            # Waiting for room with the floor passed: a stream starting meanwhile waits
            # until this message is queued everywhere (Floor.in_flight).
            group.floor.passing()
            self.blocked = blocked

    async def finish(self) -> None:
        """Queue the frames :meth:`offer` found mailboxes full for, waiting for room."""
        blocked, self.blocked = self.blocked, None
        assert blocked is not None
        courier, pause = self.courier, self._pause
        try:
            for data, members in blocked:
                await pause(courier.wait_for_room, data, members)
        finally:
            self.group.floor.passed()

    def addressee(self, to: str) -> tuple[Audience, ...] | None:
        """Who a message addressed to the member ``to`` goes to here: that member, with
        its encoding; nobody (``()``) when it is a member of the group on another node
        (the message travels there with the group's others). Otherwise what the
        sender's :data:`Unknown` says."""
        group = self.group
        target = group.locate(to)
        if target is not None and target is not self.member:
            self.found_here = True
            return ((target.encoding, (target,)),)
        if target is None and group.elsewhere(to):
            return ()
        return self._unknown(to, target is not None)

    # -- streamed messages ------------------------------------------------------------

    @property
    def streaming(self) -> bool:
        """Whether this sender's message streams to the group now (it has the floor)."""
        return self.group.floor.holder is self.member

    async def start(self, head: StreamHead) -> None:
        """Take the group's floor for a streamed message, and fix who receives it: the
        recipients there when its first piece goes out."""
        group = self.group
        self.courier.flush()
        self._outbound = await self._pause(group.open_stream, self.member, head)
        self._head = head
        member = self.member
        audiences: tuple[Audience, ...] | None
        if head.to is not None:
            audiences = self.addressee(head.to)
            self._stream_to = () if audiences is None else audiences
            # Beyond this node only for a member there: a message to one member here
            # only takes its turn on the others, so that streams stay in one order.
            self._stream_out = audiences == ()
        else:
            audiences = self._stream_to = tuple(
                (encoding, tuple(each for each in members if each is not member))
                for encoding, members in group.audiences
            )
            self._stream_out = True
        if group.history is not None and audiences is not None:
            head.offset = group.history.record_unkept()  # (too large to keep)
        self._counters.deliveries += sum(len(members) for _, members in self._stream_to)

    async def forward(self, piece: Piece) -> bool:
        """Deliver one piece of the streaming message to the recipients it started
        with; True when it was the last (the message ended, the floor is free)."""
        head, courier, pause, budget = self._head, self.courier, self._pause, self._budget
        assert head is not None
        for encoding, members in self._stream_to:
            data = encoding.piece(head, piece.payload, piece.first, piece.last)
            if not budget.charge(len(members)):
                courier.flush()
                await pause(budget.wait_turn, len(members), read_ahead=False)
            blocked = courier.offer(data, members)
            if blocked is not None:
                await pause(courier.wait_for_room, data, blocked)
        courier.flush()
        if self._stream_out:
            await pause(self._outbound.forward, piece)
        if not piece.last:
            return False
        self._counters.messages += 1
        self.end(truncated=False)
        return True

    def end(self, truncated: bool) -> None:
        """End the streaming message, if one streams; ``truncated``: it did not arrive
        whole, and the members that got its start are closed with 4002."""
        if not self.streaming:
            return  # (it has the floor from its first piece to its last)
        group = self.group
        outbound, self._outbound = self._outbound, NO_OUTBOUND
        stream_to, self._stream_to = self._stream_to, ()
        self._head = None
        try:
            outbound.end(truncated)
            if truncated:
                cut_off(stream_to, self._cut_off_reason)
        finally:
            group.floor.release(self.member)  # (whatever failed: the group goes on)
