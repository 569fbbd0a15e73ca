"""What one sender sends into one group (relay/sender.py), against a real in-process
group with fake members: no sockets, and no real time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableSequence
from typing import Any

import trio
import trio.testing

from trio_wsproxy.protocol.assembly import Piece
from trio_wsproxy.protocol.close_codes import CloseCode
from trio_wsproxy.protocol.encoding import PLAIN, V1, Encoding, V1Encoding
from trio_wsproxy.protocol.message import Message, StreamHead
from trio_wsproxy.relay.budget import TurnBudget
from trio_wsproxy.relay.counters import Counters
from trio_wsproxy.relay.fanout import Courier
from trio_wsproxy.relay.groups import Audience, Group, Member, Outbound
from trio_wsproxy.relay.history import History, HistoryLimits
from trio_wsproxy.relay.mailbox import Mailbox
from trio_wsproxy.relay.sender import Sender

#: Room for many small frames: a mailbox that never fills unless a test means it to.
ROOMY = 1 << 16
#: What a truncated stream's recipients are told.
CUT_OFF = "a message was cut off: its sender left mid-message"
#: How long a courier waits for a full mailbox (on the mock clock, where it matters).
SLOW_MEMBER_TIMEOUT = 1.0


class FakeMember:
    """A member as a group and fan-out see it: its mailbox, and the closes it was given
    (a close closes its mailbox, as a session's does)."""

    def __init__(self, member_id: str, encoding: Encoding = PLAIN, bound: int = ROOMY) -> None:
        self.id = member_id
        self.group_name = "g"
        self.mailbox = Mailbox(bound)
        self.encoding = encoding
        self.joined_at = 0.0
        self.closes: list[tuple[int, str]] = []

    def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))
        self.mailbox.close()

    def __repr__(self) -> str:
        return f"<FakeMember {self.id}>"


class CountingPlain(Encoding):
    """The plain encoding, counting the whole messages it frames and seeing the offset
    each had when it was framed."""

    def __init__(self) -> None:
        super().__init__()
        self.framed = 0
        self.offsets: list[int | None] = []

    def message(self, message: Message) -> bytes:
        self.framed += 1
        self.offsets.append(message.offset)
        return super().message(message)


class CountingV1(V1Encoding):
    """wsproxy.v1, counting the whole messages it frames."""

    def __init__(self) -> None:
        super().__init__()
        self.framed = 0

    def message(self, message: Message) -> bytes:
        self.framed += 1
        return super().message(message)


class RecordingPause:
    """A pause that records each wait it is given (the wait, and read_ahead), then waits."""

    def __init__(self) -> None:
        self.waits: list[tuple[Callable[..., Awaitable[Any]], bool]] = []

    async def __call__(
        self, wait: Callable[..., Awaitable[Any]], *args: Any, read_ahead: bool = True
    ) -> Any:
        self.waits.append((wait, read_ahead))
        return await wait(*args)


class CongestedGroup(Group):
    """A group whose other nodes are behind until :meth:`relieve`."""

    congested = True

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.relieved = trio.Event()

    def relieve(self) -> None:
        self.congested = False
        self.relieved.set()

    async def wait_uncongested(self) -> None:
        await self.relieved.wait()


class ClusterGroup(Group):
    """A group with other nodes: ``remote`` members are there; what is published to them
    and each stream's outbound side are recorded."""

    def __init__(self, name: str, remote: frozenset[str] = frozenset()) -> None:
        super().__init__(name)
        self.remote = remote
        self.published: list[Message] = []
        self.outbound = RecordingOutbound()

    def elsewhere(self, member_id: str) -> bool:
        return member_id in self.remote

    def new_outbox(self) -> MutableSequence[Message]:
        return []

    def publish(self, messages: list[Message]) -> None:
        self.published.extend(messages)

    async def open_stream(self, sender: Member, head: StreamHead) -> Outbound:
        await super().open_stream(sender, head)
        return self.outbound


class SequencedGroup(ClusterGroup):
    """A cluster group that delivers its messages itself, in its history's order."""

    sequenced = True


class RecordingOutbound(Outbound):
    """The part of a streamed message that leaves the node: the pieces and the end."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.ended: list[bool] = []

    async def forward(self, piece: Piece) -> None:
        self.pieces.append(piece.payload)

    def end(self, truncated: bool) -> None:
        self.ended.append(truncated)


class Rig:
    """A group, the relay's counters and budget, and senders into the group."""

    def __init__(self, group: Group | None = None, per_turn: int = 4096) -> None:
        self.group = Group("g") if group is None else group
        self.counters = Counters()
        self.budget = TurnBudget(per_turn)
        self.pause = RecordingPause()
        #: The calls of the session's Unknown: (to, itself).
        self.refused: list[tuple[str, bool]] = []

    def join(self, member_id: str, encoding: Encoding = PLAIN, bound: int = ROOMY) -> FakeMember:
        member = FakeMember(member_id, encoding, bound)
        self.group.add(member)
        return member

    def unknown(self, to: str, itself: bool) -> tuple[Audience, ...] | None:
        self.refused.append((to, itself))
        return None  # (a session drops it, having told its member why)

    def sender(self, member: Member, *, in_group: bool = True) -> Sender:
        return Sender(
            member,
            self.group,
            Courier(SLOW_MEMBER_TIMEOUT, self.counters),
            self.counters,
            self.budget,
            in_group=in_group,
            unknown=self.unknown,
            cut_off_reason=CUT_OFF,
            pause=self.pause,
        )

    def waits(self) -> list[Callable[..., Awaitable[Any]]]:
        return [wait for wait, _ in self.pause.waits]


async def received(member: FakeMember) -> list[bytes]:
    """The frames queued for ``member``, taken from its mailbox (making room again)."""
    mailbox = member.mailbox
    if not mailbox.queued:
        return []
    frames, size = await mailbox.take(1 << 30)
    mailbox.written(size, len(frames))
    return frames


def fill(member: FakeMember) -> None:
    """Fill ``member``'s mailbox: one frame as large as its bound."""
    assert member.mailbox.offer(b"x" * member.mailbox.capacity)
    assert not member.mailbox.fits(1)


# -- whole messages to the group -------------------------------------------------------


async def test_a_whole_message_reaches_every_other_member_once_framed_once_per_encoding() -> None:
    plain, v1 = CountingPlain(), CountingV1()
    rig = Rig()
    a = rig.join("a", plain)
    b, c = rig.join("b", plain), rig.join("c", plain)
    d, e = rig.join("d", v1), rig.join("e", v1)
    sender = rig.sender(a)
    message = Message("a", text=True, payload=b"hello")

    assert sender.clear()
    sender.offer(message)

    assert sender.blocked is None
    assert await received(a) == []  # a member never receives its own message
    frames = {m.id: await received(m) for m in (b, c, d, e)}
    assert frames["b"] == frames["c"] == [PLAIN.message(message)]
    assert frames["d"] == frames["e"] == [V1.message(message)]
    assert frames["b"][0] != frames["d"][0]
    assert frames["b"][0] is frames["c"][0]  # framed once for the plain audience...
    assert frames["d"][0] is frames["e"][0]
    assert (plain.framed, v1.framed) == (1, 1)  # ...and once for the v1 one
    assert (rig.counters.messages, rig.counters.deliveries) == (1, 4)


async def test_a_poster_outside_the_group_reaches_every_member() -> None:
    rig = Rig()
    members = [rig.join(name) for name in "abc"]
    poster = FakeMember("")  # the HTTP API's stand-in: not a member of the group
    sender = rig.sender(poster, in_group=False)
    message = Message("", text=False, payload=b"\x00\x01")

    assert sender.clear()
    assert rig.budget.spent == 3  # every member is a recipient
    sender.offer(message)

    for member in members:
        assert await received(member) == [PLAIN.message(message)]
    assert (rig.counters.messages, rig.counters.deliveries) == (1, 3)


# -- clear(): whether a whole message may go now ---------------------------------------


async def test_clear_charges_the_budget_for_each_recipient() -> None:
    rig = Rig()
    a = rig.join("a")
    rig.join("b")
    rig.join("c")
    assert rig.sender(a).clear()
    assert rig.budget.spent == 2


async def test_clear_is_false_while_another_holds_the_floor_and_charges_nothing() -> None:
    rig = Rig()
    a, b = rig.join("a"), rig.join("b")
    sender = rig.sender(a)
    rig.group.floor.take(b)
    assert not sender.clear()
    assert rig.budget.spent == 0
    rig.group.floor.release(b)
    rig.group.floor.take(a)  # its own floor (it streams) does not hold it back
    assert sender.clear()


async def test_clear_is_false_while_the_group_is_congested_and_charges_nothing() -> None:
    rig = Rig(CongestedGroup("g"))
    a = rig.join("a")
    rig.join("b")
    assert not rig.sender(a).clear()
    assert rig.budget.spent == 0


async def test_clear_is_false_once_the_turn_budget_is_spent_and_charges_nothing() -> None:
    rig = Rig(per_turn=4)
    a = rig.join("a")
    rig.join("b")
    assert rig.budget.charge(4)  # the turn's budget, spent by others
    assert not rig.sender(a).clear()
    assert rig.budget.spent == 4


# -- send(): waiting first ---------------------------------------------------------------


async def test_send_waits_for_anothers_stream_and_delivers_after_its_end() -> None:
    rig = Rig()
    a, b, c = rig.join("a"), rig.join("b"), rig.join("c")
    streamer, sender = rig.sender(b), rig.sender(a)
    head = StreamHead("b", text=False)
    message = Message("a", text=False, payload=b"whole")

    async with trio.open_nursery() as nursery:
        await streamer.start(head)
        await streamer.forward(Piece(b"one", first=True, last=False))
        assert not sender.clear()
        rig.pause.waits.clear()  # (the streamer's own)
        nursery.start_soon(sender.send, message)
        await trio.testing.wait_all_tasks_blocked()
        assert rig.waits() == [rig.group.floor.wait]  # through the pause
        assert await received(c) == [PLAIN.piece(head, b"one", True, False)]
        assert await streamer.forward(Piece(b"two", first=False, last=True))
    assert await received(c) == [
        PLAIN.piece(head, b"two", False, True),
        PLAIN.message(message),  # after the stream's end, never between its pieces
    ]
    assert rig.group.floor.holder is None


async def test_send_waits_for_a_turn_when_the_budget_is_spent() -> None:
    rig = Rig(per_turn=4)
    a, b = rig.join("a"), rig.join("b")
    sender = rig.sender(a)
    message = Message("a", text=True, payload=b"later")
    assert rig.budget.charge(4)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.send, message)
        await trio.testing.wait_all_tasks_blocked()
        assert await received(b) == []  # it waits for a turn...
        assert rig.pause.waits == [(rig.budget.wait_turn, False)]  # (not long: no read-ahead)
        nursery.start_soon(rig.budget.run)
        with trio.fail_after(5):
            while not b.mailbox.queued:
                await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert await received(b) == [PLAIN.message(message)]  # ...and goes out in it


async def test_send_waits_for_an_uncongested_group() -> None:
    group = CongestedGroup("g")
    rig = Rig(group)
    a, b = rig.join("a"), rig.join("b")
    message = Message("a", text=True, payload=b"held back")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(rig.sender(a).send, message)
        await trio.testing.wait_all_tasks_blocked()
        assert await received(b) == []
        assert rig.waits() == [group.wait_uncongested]
        group.relieve()
    assert await received(b) == [PLAIN.message(message)]


# -- a message to one member ---------------------------------------------------------------


async def test_a_message_to_one_member_reaches_only_it() -> None:
    rig = Rig()
    a, b, c = rig.join("a", V1), rig.join("b", V1), rig.join("c", V1)
    sender = rig.sender(a)
    message = Message("a", text=True, payload=b"psst", to="b")

    assert sender.clear()
    sender.offer(message)

    assert sender.found_here
    assert await received(b) == [V1.message(message)]
    assert await received(c) == [] and await received(a) == []
    assert rig.refused == []
    assert (rig.counters.messages, rig.counters.deliveries) == (1, 1)


async def test_a_message_to_an_unknown_member_is_refused_and_not_recorded() -> None:
    rig = Rig()
    rig.group.history = History(HistoryLimits(100, 60.0, ROOMY))
    a, b = rig.join("a", V1), rig.join("b", V1)
    sender = rig.sender(a)
    message = Message("a", text=True, payload=b"lost", to="nobody")

    await sender.send(message)

    assert rig.refused == [("nobody", False)]
    assert not sender.found_here
    assert await received(b) == []
    assert message.offset is None
    assert rig.group.history.last == 0
    assert rig.counters.deliveries == 0


async def test_a_message_to_its_own_sender_is_refused_as_such() -> None:
    rig = Rig()
    a, b = rig.join("a", V1), rig.join("b", V1)
    sender = rig.sender(a)

    await sender.send(Message("a", text=True, payload=b"me", to="a"))

    assert rig.refused == [("a", True)]
    assert not sender.found_here
    assert await received(a) == [] and await received(b) == []


async def test_a_message_to_a_member_on_another_node_goes_to_the_outbox_only() -> None:
    group = ClusterGroup("g", remote=frozenset({"far"}))
    rig = Rig(group)
    a, b = rig.join("a", V1), rig.join("b", V1)
    sender = rig.sender(a)
    message = Message("a", text=True, payload=b"travel", to="far")

    assert sender.clear()
    sender.offer(message)

    assert list(sender.outbox) == [message]
    assert rig.refused == [] and not sender.found_here
    assert await received(b) == []
    sender.courier.flush()
    assert group.published == [message]


async def test_a_poster_hands_a_message_for_a_member_it_does_not_know_to_other_nodes() -> None:
    group = ClusterGroup("g")
    rig = Rig(group)
    b = rig.join("b", V1)
    poster = FakeMember("")
    sender = Sender(
        poster,
        group,
        Courier(SLOW_MEMBER_TIMEOUT, rig.counters),
        rig.counters,
        rig.budget,
        in_group=False,
        unknown=lambda to, itself: (),  # (the poster's: on to the other nodes)
        cut_off_reason=CUT_OFF,
    )
    message = Message("", text=True, payload=b"onwards", to="new")

    await sender.send(message)
    sender.courier.flush()

    assert group.published == [message]
    assert await received(b) == []


# -- history -----------------------------------------------------------------------------


async def test_a_whole_message_gets_its_offset_before_it_is_offered() -> None:
    plain = CountingPlain()
    rig = Rig()
    history = rig.group.history = History(HistoryLimits(100, 60.0, ROOMY))
    a, b, c = rig.join("a", plain), rig.join("b", plain), rig.join("c", V1)
    sender = rig.sender(a)
    first = Message("a", text=True, payload=b"first")
    second = Message("a", text=True, payload=b"second", to="c")

    await sender.send(first)
    await sender.send(second)

    assert (first.offset, second.offset) == (1, 2)
    assert plain.offsets == [1]  # framed (offered) with its offset already given
    assert await received(c) == [V1.message(first), V1.message(second)]
    assert [offset for offset, _ in history.read(0, 10)] == [1, 2]
    assert await received(b) == [PLAIN.message(first)]


async def test_a_streamed_message_takes_an_offset_that_is_not_kept() -> None:
    rig = Rig()
    history = rig.group.history = History(HistoryLimits(100, 60.0, ROOMY))
    a, b = rig.join("a", V1), rig.join("b", V1)
    sender = rig.sender(a)
    await sender.send(Message("a", text=True, payload=b"kept"))
    head = StreamHead("a", text=False)

    await sender.start(head)
    await sender.forward(Piece(b"large", first=True, last=True))

    assert head.offset == 2
    assert [kept is None for _, kept in history.read(0, 10)] == [False, True]
    frames = await received(b)
    assert frames[-1] == V1.piece(head, b"large", True, True)


# -- sequenced groups ------------------------------------------------------------------------


async def test_in_a_sequenced_group_the_message_is_only_handed_over() -> None:
    group = SequencedGroup("g")
    rig = Rig(group)
    a, b = rig.join("a"), rig.join("b")
    sender = rig.sender(a)
    message = Message("a", text=True, payload=b"in order")

    assert sender.clear()
    sender.offer(message)

    assert list(sender.outbox) == [message]
    assert sender.blocked is None
    assert await received(b) == []  # the group delivers it, here too
    assert message.offset is None
    sender.courier.flush()
    assert group.published == [message]


# -- full mailboxes ----------------------------------------------------------------------------


async def test_a_full_mailbox_leaves_the_offer_blocked_with_the_floor_passing() -> None:
    rig = Rig()
    a, b, c = rig.join("a"), rig.join("b", bound=100), rig.join("c")
    fill(b)
    sender = rig.sender(a)
    message = Message("a", text=True, payload=b"wait for me")

    assert sender.clear()
    sender.offer(message)

    assert sender.blocked == [(PLAIN.message(message), [b])]
    assert rig.group.floor.in_flight == 1  # a stream starting now waits for it
    assert await received(c) == [PLAIN.message(message)]  # the others have it already
    assert rig.counters.mailbox_full == 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.finish)
        await trio.testing.wait_all_tasks_blocked()
        assert rig.group.floor.in_flight == 1
        assert rig.waits() == [sender.courier.wait_for_room]  # through the pause
        assert await received(b) == [b"x" * 100]  # b reads: room is made
    assert sender.blocked is None
    assert rig.group.floor.in_flight == 0
    assert await received(b) == [PLAIN.message(message)]
    assert b.closes == []


async def test_a_member_full_past_the_timeout_is_closed_as_slow_and_the_rest_go_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig()
    a, b, c = rig.join("a"), rig.join("b", bound=100), rig.join("c")
    fill(b)
    message = Message("a", text=True, payload=b"for the quick")

    start = trio.current_time()
    await rig.sender(a).send(message)

    assert trio.current_time() - start >= SLOW_MEMBER_TIMEOUT
    assert [code for code, _ in b.closes] == [CloseCode.SLOW_CONSUMER]
    assert await received(c) == [PLAIN.message(message)]
    assert rig.group.floor.in_flight == 0


# -- streamed messages -----------------------------------------------------------------------


async def test_a_stream_reaches_the_members_present_at_its_start_and_frees_the_floor() -> None:
    rig = Rig()
    a, b, c = rig.join("a"), rig.join("b"), rig.join("c", V1)
    sender = rig.sender(a)
    head = StreamHead("a", text=True)
    assert not sender.streaming

    await sender.start(head)
    assert sender.streaming and rig.group.floor.holder is a
    late = rig.join("late")
    assert not await sender.forward(Piece(b"one", first=True, last=False))
    assert await sender.forward(Piece(b"two", first=False, last=True))

    assert not sender.streaming and rig.group.floor.holder is None
    assert await received(b) == [
        PLAIN.piece(head, b"one", True, False),
        PLAIN.piece(head, b"two", False, True),
    ]
    assert await received(c) == [
        V1.piece(head, b"one", True, False),
        V1.piece(head, b"two", False, True),
    ]
    assert await received(late) == []  # it joined after the start
    assert await received(a) == []
    assert (rig.counters.messages, rig.counters.deliveries) == (1, 2)


async def test_a_truncated_stream_closes_who_got_its_start_and_frees_the_floor() -> None:
    group = ClusterGroup("g")
    rig = Rig(group)
    a, b, c = rig.join("a"), rig.join("b"), rig.join("c")
    sender = rig.sender(a)
    await sender.start(StreamHead("a", text=False))
    await sender.forward(Piece(b"half", first=True, last=False))
    late = rig.join("late")

    sender.end(truncated=True)

    assert b.closes == c.closes == [(CloseCode.MESSAGE_TRUNCATED, CUT_OFF)]
    assert late.closes == [] and a.closes == []
    assert group.outbound.ended == [True]
    assert not sender.streaming and group.floor.holder is None
    assert rig.counters.messages == 0  # it never ended whole


async def test_end_when_not_streaming_does_nothing() -> None:
    group = ClusterGroup("g")
    rig = Rig(group)
    a, b, c = rig.join("a"), rig.join("b"), rig.join("c")
    streamer = rig.sender(b)
    await streamer.start(StreamHead("b", text=False))

    rig.sender(a).end(truncated=True)  # a streams nothing: b's stream goes on

    assert group.floor.holder is b
    assert group.outbound.ended == []
    assert c.closes == [] and b.closes == []


async def test_a_stream_to_the_group_goes_beyond_the_node_and_one_to_a_member_here_does_not() -> (
    None
):
    group = ClusterGroup("g")
    rig = Rig(group)
    a, b, c = rig.join("a"), rig.join("b", V1), rig.join("c", V1)
    sender = rig.sender(a)

    await sender.start(StreamHead("a", text=False))
    await sender.forward(Piece(b"all", first=True, last=True))
    assert group.outbound.pieces == [b"all"]
    assert group.outbound.ended == [False]

    head = StreamHead("a", text=False, to="b")
    await sender.start(head)
    assert sender.found_here
    await sender.forward(Piece(b"b only", first=True, last=True))
    assert group.outbound.pieces == [b"all"]  # (it only takes its turn on the others)
    assert (await received(b))[-1] == V1.piece(head, b"b only", True, True)
    assert len(await received(c)) == 1  # the first stream's only


async def test_a_stream_waits_for_a_turn_between_pieces_when_the_budget_is_spent() -> None:
    rig = Rig(per_turn=4)
    a, b = rig.join("a"), rig.join("b")
    sender = rig.sender(a)
    head = StreamHead("a", text=False)
    await sender.start(head)
    assert rig.budget.charge(4)  # others spent the turn
    rig.pause.waits.clear()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.forward, Piece(b"piece", first=True, last=True))
        await trio.testing.wait_all_tasks_blocked()
        assert await received(b) == []
        assert rig.pause.waits == [(rig.budget.wait_turn, False)]
        assert sender.streaming
        nursery.start_soon(rig.budget.run)
        with trio.fail_after(5):
            while sender.streaming:
                await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert await received(b) == [PLAIN.piece(head, b"piece", True, True)]
