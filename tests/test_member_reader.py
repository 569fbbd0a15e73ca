"""A member's socket reader (relay/reader.py) without a relay: what it reads, what it
counts in the relay's buffer budget, when it waits its turn, what it reads ahead while the
relay pauses it, and how it paces a rate-limited member.

Plain TCP is a local ``socket.socketpair()`` (the reader then reads its descriptor); TLS
is stood in for by Trio's memory streams (any stream that is not a socket: no descriptor).
Time is Trio's mock clock wherever it matters.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from trio_wsproxy import CloseCode
from trio_wsproxy.protocol.assembly import Assembly
from trio_wsproxy.protocol.frames import Close, Data, Event, Ping, ProtocolError
from trio_wsproxy.relay.config import RelayConfig
from trio_wsproxy.relay.memory import EVENT_OVERHEAD, SIP, TURN_SLICE, BufferBudget
from trio_wsproxy.relay.reader import READ_AHEAD, READ_SIZE, Handover, MemberReader
from wsraw import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, mask_frame

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the descriptor path is POSIX's")

# The relay's buffer bound in these tests: a few small frames read ahead stay within it,
# and a member holding BOUND + 1 bytes of a message passes it on its own.
BOUND = 10_000


@attrs.define
class Member:
    """One member's connection as the relay sees it: its reader, and the member's end."""

    reader: MemberReader
    # What the member writes into (and closes).
    peer: trio.abc.Stream
    # The relay's end (closing it breaks the reader's connection).
    stream: trio.abc.Stream
    budget: BufferBudget
    assembly: Assembly
    # Payloads of the pongs the reader asked to send, in order.
    pongs: list[bytes]


def member(
    stream: trio.abc.Stream,
    peer: trio.abc.Stream,
    budget: BufferBudget | None = None,
    **settings: Any,
) -> Member:
    budget = budget if budget is not None else BufferBudget(BOUND)
    assembly = Assembly("m")
    pongs: list[bytes] = []
    reader = MemberReader(stream, RelayConfig(**settings), budget, assembly, pongs.append)
    return Member(reader, peer, stream, budget, assembly, pongs)


@contextlib.asynccontextmanager
async def socket_pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    """The relay's end and the member's end of a local socket pair (not the network)."""
    relay_end, member_end = (
        trio.SocketStream(trio.socket.from_stdlib_socket(sock)) for sock in socket.socketpair()
    )
    try:
        yield relay_end, member_end
    finally:
        await relay_end.aclose()
        await member_end.aclose()


def stream_member(**settings: Any) -> Member:
    """A member on a stream that is not a socket (as TLS is): its reader reads the stream."""
    relay_end, member_end = trio.testing.memory_stream_pair()
    return member(relay_end, member_end, **settings)


@pytest.fixture
async def tcp_pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    async with socket_pair() as pair:
        yield pair


@pytest.fixture
def tcp(tcp_pair: tuple[trio.SocketStream, trio.SocketStream]) -> Member:
    """A member on plain TCP: its reader reads the socket's descriptor."""
    return member(*tcp_pair)


@pytest.fixture
def tls() -> Member:
    """A member on a stream that is not a socket (TLS, say)."""
    return stream_member()


@pytest.fixture(params=["tcp", "tls"])
async def either(request: pytest.FixtureRequest) -> AsyncIterator[Member]:
    """A member on either path."""
    if request.param == "tls":
        yield stream_member()
        return
    async with socket_pair() as pair:
        yield member(*pair)


class BrokenStream(trio.abc.Stream):
    """A connection that fails on every read, as a reset TLS connection does."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        raise trio.BrokenResourceError("connection reset")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class Pause:
    """A pause the relay imposes on the member's reader (a full mailbox, say), which the
    test ends; meanwhile the reader reads ahead."""

    def __init__(self, reader: MemberReader) -> None:
        self.reader = reader
        self.ended = trio.Event()
        self.result: str | None = None
        self.done = trio.Event()

    async def _wait(self, value: str) -> str:
        assert not self.reader.can_read_ahead()  # (it already does)
        await self.ended.wait()
        return value

    async def run(self) -> None:
        self.result = await self.reader.reading_ahead(self._wait, "resumed")
        self.done.set()

    async def end(self) -> None:
        self.ended.set()
        await self.done.wait()


def hold_part_of_a_message(assembly: Assembly, size: int) -> None:
    """The member's unfinished message now holds ``size`` more bytes."""
    first = not assembly.held
    assert assembly.feed(Data(b"x" * size, False, first, False)) is None


def go_over(budget: BufferBudget) -> None:
    """Other members' unfinished messages take the relay over its buffer bound."""
    budget.add(BOUND + 1)
    assert budget.over


async def turn_is_free(budget: BufferBudget) -> bool:
    """Whether another member could take the budget's turn now."""
    took = False

    async def other() -> None:
        nonlocal took
        await budget.take_turn()
        took = True
        budget.give_turn()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    return took


def data_bytes(events: list[Event]) -> int:
    return sum(len(event.payload) for event in events if type(event) is Data)


# --- receive_some -------------------------------------------------------------------


async def test_only_plain_tcp_is_read_through_its_descriptor(tcp: Member, tls: Member) -> None:
    assert isinstance(tcp.stream, trio.SocketStream)
    assert tcp.reader.fd == tcp.stream.socket.fileno()
    assert tls.reader.fd is None


async def test_receive_some_returns_what_the_member_wrote_then_b_at_its_end(
    either: Member,
) -> None:
    await either.peer.send_all(b"hello")
    assert await either.reader.receive_some() == b"hello"
    await either.peer.aclose()
    assert await either.reader.receive_some() == b""


async def test_a_reset_connection_reads_as_its_end(tcp: Member) -> None:
    # The relay's end had written to a member that closed without reading it: ECONNRESET.
    await tcp.stream.send_all(b"unread")
    await tcp.peer.aclose()
    assert await tcp.reader.receive_some() == b""


async def test_a_broken_stream_reads_as_its_end() -> None:
    broken = member(BrokenStream(), BrokenStream())
    assert broken.reader.fd is None
    assert await broken.reader.receive_some() == b""


async def test_closing_the_connection_ends_a_waiting_read(tcp: Member) -> None:
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:

        async def read() -> None:
            got.append(await tcp.reader.receive_some())

        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        await tcp.stream.aclose()
    assert got == [b""]


async def test_over_the_bound_without_a_turn_a_member_sips(either: Member) -> None:
    await either.peer.send_all(b"x" * (3 * SIP))
    assert len(await either.reader.receive_some()) > SIP  # (within the bound: all of it)
    await either.peer.send_all(b"x" * (3 * SIP))
    go_over(either.budget)
    assert len(await either.reader.receive_some()) == SIP


# --- read_now: the poller's one read ------------------------------------------------


async def test_read_now_finds_nothing_then_the_frames_of_a_small_read(tcp: Member) -> None:
    assert tcp.reader.read_now() is None
    assert tcp.reader.reads == 0
    await tcp.peer.send_all(mask_frame(OP_TEXT, b"hi") + mask_frame(OP_PING, b"p"))
    assert tcp.reader.read_now() == [Data(b"hi", True, True, True), Ping(b"p")]
    assert tcp.reader.reads == 1
    # Half a frame: no frames, but the member was heard.
    await tcp.peer.send_all(mask_frame(OP_BINARY, b"later")[:3])
    assert tcp.reader.read_now() == []
    assert tcp.reader.reads == 2


async def test_read_now_hands_a_burst_back_to_be_read_on(tcp: Member) -> None:
    burst = os.urandom(READ_SIZE + 10)
    await tcp.peer.send_all(burst)
    assert tcp.reader.read_now() == Handover(data=burst[:READ_SIZE])
    assert tcp.reader.reads == 0  # (the member's task counts it when it parses it)
    assert await tcp.reader.receive_some() == burst[READ_SIZE:]


async def test_read_now_hands_the_end_of_the_connection_back(tcp: Member) -> None:
    await tcp.peer.aclose()
    assert tcp.reader.read_now() == Handover(data=b"")
    assert tcp.reader.reads == 0


async def test_read_now_hands_a_reset_connection_back_as_its_end(tcp: Member) -> None:
    await tcp.stream.send_all(b"unread")
    await tcp.peer.aclose()
    assert tcp.reader.read_now() == Handover(data=b"")


@pytest.mark.parametrize(
    ("settings", "sent", "code"),
    [
        ({}, mask_frame(OP_TEXT, b"hi", masked=False), CloseCode.PROTOCOL_ERROR),
        ({"max_message_size": 4}, mask_frame(OP_BINARY, b"too long"), CloseCode.MESSAGE_TOO_BIG),
    ],
    ids=["unmasked", "too-big"],
)
async def test_read_now_hands_a_protocol_error_back(
    tcp_pair: tuple[trio.SocketStream, trio.SocketStream],
    settings: dict[str, Any],
    sent: bytes,
    code: CloseCode,
) -> None:
    bad = member(*tcp_pair, **settings)
    await bad.peer.send_all(sent)
    read = bad.reader.read_now()
    assert type(read) is Handover
    assert read.data is None and read.events == []
    assert isinstance(read.error, ProtocolError)
    assert read.error.code == code


# --- usual and unusual --------------------------------------------------------------


async def test_a_fresh_member_is_read_as_usual(either: Member) -> None:
    assert either.reader.usual
    assert not either.reader.unusual
    assert not either.reader.limited


def _rate_limited(m: Member) -> Member:
    return member(m.stream, m.peer, max_message_rate=10.0)


def _byte_limited(m: Member) -> Member:
    return member(m.stream, m.peer, max_byte_rate=1000)


def _part_of_a_message(m: Member) -> Member:
    hold_part_of_a_message(m.assembly, 3)
    return m


def _ended_while_reading_ahead(m: Member) -> Member:
    m.reader.ahead_end = True
    return m


def _failed_while_reading_ahead(m: Member) -> Member:
    m.reader.ahead_end = ProtocolError(CloseCode.PROTOCOL_ERROR, "bad")
    return m


def _over_the_bound(m: Member) -> Member:
    go_over(m.budget)
    return m


@pytest.mark.parametrize(
    ("situation", "unusual"),
    [
        (_rate_limited, False),
        (_byte_limited, False),
        (_part_of_a_message, True),
        (_ended_while_reading_ahead, True),
        (_failed_while_reading_ahead, True),
        (_over_the_bound, True),
    ],
    ids=lambda value: value.__name__.strip("_") if callable(value) else str(value),
)
async def test_what_makes_reading_unusual(situation: Any, unusual: bool, tcp: Member) -> None:
    """Not usual: the poller leaves the member to its own task; unusual: that task reads
    through _receive_unusually (a rate limit only paces, it is read the usual way)."""
    m = situation(tcp)
    assert not m.reader.usual
    assert m.reader.unusual is unusual


# --- the buffer budget: count, account, release -------------------------------------


async def test_the_budget_counts_each_members_unfinished_message_once(
    tcp: Member, tls: Member
) -> None:
    budget = BufferBudget(BOUND)
    a = member(tcp.stream, tcp.peer, budget)
    b = member(tls.stream, tls.peer, budget)
    hold_part_of_a_message(a.assembly, 5)
    hold_part_of_a_message(b.assembly, 7)
    assert (a.reader.count(), b.reader.count()) == (5, 7)
    assert budget.held == 12
    hold_part_of_a_message(a.assembly, 10)
    assert a.reader.count() == 15
    assert a.reader.count() == 15  # (brought up to date, not added again)
    assert budget.held == 22
    assert not a.reader.usual  # (it holds something)
    a.reader.release()
    assert budget.held == 7
    b.reader.release()
    assert budget.held == 0


async def test_over_the_bound_a_member_holding_part_of_a_message_waits_its_turn(
    tcp: Member,
) -> None:
    assert not tcp.reader.needs_turn()
    go_over(tcp.budget)
    assert not tcp.reader.needs_turn()  # holding nothing: it sips instead
    hold_part_of_a_message(tcp.assembly, 20)
    assert tcp.reader.needs_turn()
    assert tcp.budget.held == BOUND + 1 + 20
    await tcp.reader.take_turn()
    assert not tcp.reader.needs_turn()
    assert not await turn_is_free(tcp.budget)  # still over, still holding: it keeps it
    # Its message goes out: it holds nothing, and the next member's turn comes.
    assert tcp.assembly.feed(Data(b"", False, False, True)) is not None
    assert tcp.reader.account() == 0
    assert tcp.budget.held == BOUND + 1
    assert await turn_is_free(tcp.budget)


async def test_the_turn_goes_back_once_the_relay_is_under_its_bound(tcp: Member) -> None:
    hold_part_of_a_message(tcp.assembly, BOUND)
    other = member(tcp.stream, tcp.peer, tcp.budget)
    hold_part_of_a_message(other.assembly, 10)
    other.reader.count()
    assert tcp.reader.needs_turn()
    await tcp.reader.take_turn()
    other.reader.release()  # (another member's session ends)
    assert not tcp.budget.over
    assert tcp.reader.account() == BOUND  # still holding, but the bound is kept again
    assert await turn_is_free(tcp.budget)


async def test_release_gives_back_everything_held_and_the_turn(tcp: Member) -> None:
    hold_part_of_a_message(tcp.assembly, BOUND + 50)
    assert tcp.reader.needs_turn()
    await tcp.reader.take_turn()
    tcp.reader.release()
    assert tcp.budget.held == 0
    assert not tcp.budget.over
    assert await turn_is_free(tcp.budget)
    tcp.reader.release()  # (once is enough: nothing more is given back)
    assert tcp.budget.held == 0


async def test_a_pause_that_leaves_the_turns_holder_holding_nothing_gives_the_turn_back(
    tcp: Member,
) -> None:
    # The member holds the turn when its message goes out, and the relay pauses it (a full
    # mailbox, say) while under its bound again: what the reader reads ahead meanwhile
    # (a ping) brings its count to nothing. Its task must give the turn back then: the
    # member is usual again (the poller may read for it), so nothing else would, and
    # every member waiting for the turn would wait for ever.
    hold_part_of_a_message(tcp.assembly, BOUND // 2)
    tcp.budget.add(BOUND)  # (other members' unfinished messages)
    resume = trio.Event()

    async def member_task() -> None:
        assert tcp.reader.needs_turn()
        await tcp.reader.take_turn()
        assert tcp.assembly.feed(Data(b"", False, False, True)) is not None
        tcp.budget.add(-BOUND)  # (the others' messages went out)
        assert not tcp.budget.over
        await tcp.reader.reading_ahead(resume.wait)
        assert tcp.reader.usual
        assert await turn_is_free(tcp.budget)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(member_task)
        await trio.testing.wait_all_tasks_blocked()
        await tcp.peer.send_all(mask_frame(OP_PING, b"still there?"))
        await trio.testing.wait_all_tasks_blocked()
        assert tcp.pongs == [b"still there?"]
        assert tcp.budget.held == 0
        resume.set()


# --- reading in turn ----------------------------------------------------------------


async def test_in_turn_a_member_reads_whole_reads_despite_the_bound(tcp: Member) -> None:
    hold_part_of_a_message(tcp.assembly, BOUND + 1)
    assert tcp.reader.needs_turn()
    await tcp.reader.take_turn()
    await tcp.peer.send_all(b"x" * (3 * SIP))
    assert len(await tcp.reader.receive_next()) == 3 * SIP


async def test_a_turn_ends_after_turn_slice_when_the_member_sends_nothing(
    tcp: Member, autojump_clock: trio.testing.MockClock
) -> None:
    hold_part_of_a_message(tcp.assembly, BOUND + 1)
    started: list[float] = []
    next_turn_at: list[float] = []
    next_turn = trio.Event()
    got: list[bytes] = []

    async def next_member() -> None:
        await tcp.budget.take_turn()
        next_turn_at.append(trio.current_time())
        next_turn.set()
        tcp.budget.give_turn()

    async def read() -> None:
        # (The member's own task takes the turn, and gives it up.)
        assert tcp.reader.needs_turn()
        await tcp.reader.take_turn()
        started.append(trio.current_time())
        got.append(await tcp.reader.receive_next())

    with trio.fail_after(10 * TURN_SLICE):  # (mock time: a hang becomes a failure)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(next_member)
            await next_turn.wait()
            # Its turn is over: what it reads now, it reads as one without a turn.
            await tcp.peer.send_all(b"x" * (3 * SIP))
    assert next_turn_at == [pytest.approx(started[0] + TURN_SLICE)]
    assert got == [b"x" * SIP]


async def test_an_expired_turn_is_given_up_even_with_data_waiting(
    tcp: Member, autojump_clock: trio.testing.MockClock
) -> None:
    hold_part_of_a_message(tcp.assembly, BOUND + 1)
    assert tcp.reader.needs_turn()
    await tcp.reader.take_turn()
    await trio.sleep(TURN_SLICE)
    await tcp.peer.send_all(b"x" * (3 * SIP))
    assert await tcp.reader.receive_next() == b"x" * SIP
    assert await turn_is_free(tcp.budget)
    assert tcp.reader.needs_turn()  # (it queues again)


async def test_on_a_stream_the_turn_is_given_up_before_reading(tls: Member) -> None:
    # A TLS read cannot be cut short safely: the turn orders the members, one sip each.
    hold_part_of_a_message(tls.assembly, BOUND + 1)
    assert tls.reader.needs_turn()
    await tls.reader.take_turn()
    await tls.peer.send_all(b"x" * (3 * SIP))
    assert await tls.reader.receive_next() == b"x" * SIP
    assert await turn_is_free(tls.budget)


# --- reading ahead while paused -----------------------------------------------------


async def test_only_plain_tcp_reads_ahead(tcp: Member, tls: Member) -> None:
    assert tcp.reader.can_read_ahead()
    assert not tls.reader.can_read_ahead()
    tcp.reader.ahead_end = True
    assert not tcp.reader.can_read_ahead()


async def test_reading_ahead_answers_pings_and_keeps_the_data_in_order(tcp: Member) -> None:
    pause = Pause(tcp.reader)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pause.run)
        await tcp.peer.send_all(
            mask_frame(OP_TEXT, b"one", fin=False)
            + mask_frame(OP_PING, b"are you there")
            + mask_frame(OP_CONT, b"two")
            + mask_frame(OP_PONG, b"yes")
            + mask_frame(OP_BINARY, b"three!")
        )
        await trio.testing.wait_all_tasks_blocked()
        assert tcp.pongs == [b"are you there"]
        assert list(tcp.reader.ahead) == [
            Data(b"one", True, True, False),
            Data(b"two", True, False, True),
            Data(b"three!", False, True, True),
        ]
        assert tcp.budget.held == 3 + 3 + 6 + 3 * EVENT_OVERHEAD
        assert tcp.reader.reads == 1
        assert not tcp.reader.usual and tcp.reader.unusual
        await pause.end()
    assert pause.result == "resumed"
    assert tcp.reader.can_read_ahead()  # (no longer reading ahead)
    taken = [tcp.reader.take_ahead() for _ in range(4)]
    assert taken == [
        Data(b"one", True, True, False),
        Data(b"two", True, False, True),
        Data(b"three!", False, True, True),
        None,
    ]
    assert tcp.reader.account() == 0
    assert tcp.budget.held == 0
    assert tcp.reader.usual


async def test_a_close_frame_ends_reading_ahead(
    tcp: Member, autojump_clock: trio.testing.MockClock
) -> None:
    pause = Pause(tcp.reader)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pause.run)
        await tcp.peer.send_all(mask_frame(OP_BINARY, b"last") + mask_frame(OP_CLOSE, b""))
        await trio.testing.wait_all_tasks_blocked()
        await tcp.peer.send_all(b"after the close")
        await trio.testing.wait_all_tasks_blocked()
        assert list(tcp.reader.ahead) == [Data(b"last", False, True, True), Close(None, "")]
        assert tcp.reader.ahead_end is False
        await pause.end()
    assert tcp.reader.take_ahead() == Data(b"last", False, True, True)
    assert tcp.reader.take_ahead() == Close(None, "")
    assert tcp.reader.account() == 0
    # What followed the close was not read.
    with trio.fail_after(1):  # (mock time: a hang becomes a failure)
        assert await tcp.reader.receive_some() == b"after the close"


async def test_the_end_of_the_connection_while_reading_ahead_is_kept_for_later(
    tcp: Member,
) -> None:
    pause = Pause(tcp.reader)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pause.run)
        await tcp.peer.send_all(mask_frame(OP_TEXT, b"bye"))
        await tcp.peer.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert tcp.reader.ahead_end is True
        assert pause.result is None  # (the pause goes on: the session acts on it later)
        await pause.end()
    assert tcp.reader.unusual
    assert not tcp.reader.can_read_ahead()
    assert tcp.reader.take_ahead() == Data(b"bye", True, True, True)
    assert tcp.reader.pop_end() is True
    assert tcp.reader.pop_end() is False
    assert tcp.reader.ahead_end is False


async def test_bad_data_while_reading_ahead_is_kept_for_later(tcp: Member) -> None:
    pause = Pause(tcp.reader)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pause.run)
        await tcp.peer.send_all(mask_frame(OP_TEXT, b"\xff\xfe"))  # (not UTF-8)
        await trio.testing.wait_all_tasks_blocked()
        await pause.end()
    end = tcp.reader.ahead_end
    assert isinstance(end, ProtocolError)
    assert end.code == CloseCode.INVALID_PAYLOAD
    assert not tcp.reader.ahead
    assert tcp.reader.unusual
    assert tcp.reader.pop_end() is end
    assert tcp.reader.ahead_end is False


async def test_reading_ahead_stops_at_read_ahead_bytes(tcp: Member) -> None:
    big = BufferBudget(None)
    m = member(tcp.stream, tcp.peer, big)
    frames = [mask_frame(OP_BINARY, bytes([n]) * 60000) for n in range(4)]
    sent = sum(len(f) for f in frames)
    pause = Pause(m.reader)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pause.run)
        nursery.start_soon(m.peer.send_all, b"".join(frames))
        await trio.testing.wait_all_tasks_blocked()
        ahead = list(m.reader.ahead)
        counted = data_bytes(ahead) + EVENT_OVERHEAD * len(ahead)
        assert READ_AHEAD <= counted < READ_AHEAD + READ_SIZE + 4 * EVENT_OVERHEAD
        assert big.held == counted
        await pause.end()
        # The rest was left to TCP, and comes after what was read ahead.
        events: list[Event] = []
        while (event := m.reader.take_ahead()) is not None:
            events.append(event)
        received = data_bytes(events)
        while received < 4 * 60000:
            data = await m.reader.receive_some()
            assert data
            events += m.reader.parser.feed(data)
            received = data_bytes(events)
    assert sent > counted
    assert b"".join(e.payload for e in events if type(e) is Data) == b"".join(
        bytes([n]) * 60000 for n in range(4)
    )
    assert m.reader.account() == 0


async def test_over_the_bound_nothing_is_read_ahead(tcp: Member) -> None:
    go_over(tcp.budget)
    pause = Pause(tcp.reader)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pause.run)
        await tcp.peer.send_all(mask_frame(OP_TEXT, b"wait"))
        await trio.testing.wait_all_tasks_blocked()
        assert not tcp.reader.ahead
        await pause.end()
    assert pause.result == "resumed"
    assert tcp.reader.read_now() == [Data(b"wait", True, True, True)]


# --- pacing -------------------------------------------------------------------------


async def test_without_rate_limits_nothing_waits(tcp: Member) -> None:
    assert not tcp.reader.limited
    assert all(tcp.reader.pace(Data(b"x" * 100_000, False, True, True)) == 0 for _ in range(100))


async def test_past_the_burst_a_message_waits_as_the_message_rate_says(
    tcp_pair: tuple[trio.SocketStream, trio.SocketStream], mock_clock: trio.testing.MockClock
) -> None:
    m = member(*tcp_pair, max_message_rate=2.0)
    assert m.reader.limited
    whole = Data(b"m", False, True, True)
    assert m.reader.pace(whole) == 0
    # The second message, in three frames: only its first counts (the burst: two).
    assert m.reader.pace(Data(b"a", False, True, False)) == 0
    assert m.reader.pace(Data(b"b", False, False, False)) == 0
    assert m.reader.pace(Data(b"c", False, False, True)) == 0
    assert m.reader.pace(whole) == pytest.approx(0.5)
    mock_clock.jump(1.0)
    assert m.reader.pace(whole) == 0
    assert m.reader.pace(whole) == pytest.approx(0.5)


async def test_past_the_burst_data_waits_as_the_byte_rate_says(
    tcp_pair: tuple[trio.SocketStream, trio.SocketStream], mock_clock: trio.testing.MockClock
) -> None:
    m = member(*tcp_pair, max_byte_rate=1000)
    assert m.reader.limited
    assert m.reader.pace(Data(b"x" * 600, False, True, False)) == 0
    # Every frame's bytes count, the message's first or not.
    assert m.reader.pace(Data(b"x" * 600, False, False, True)) == pytest.approx(0.2)
    mock_clock.jump(0.2)
    assert m.reader.pace(Data(b"x" * 100, False, True, True)) == pytest.approx(0.1)


async def test_with_both_limits_the_longer_wait_counts(
    tcp_pair: tuple[trio.SocketStream, trio.SocketStream], mock_clock: trio.testing.MockClock
) -> None:
    m = member(*tcp_pair, max_message_rate=1.0, max_byte_rate=10)
    assert m.reader.pace(Data(b"x" * 10, False, True, True)) == 0
    assert m.reader.pace(Data(b"", False, True, False)) == pytest.approx(1.0)  # messages'
    assert m.reader.pace(Data(b"x" * 30, False, False, True)) == pytest.approx(3.0)  # bytes'
