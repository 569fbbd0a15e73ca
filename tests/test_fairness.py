"""Under heavy load no group starves another, and the relay never judges a member by a
pause it imposed itself (real sockets; the relay in this process, so that its own
scheduling is what is measured)."""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from relayproc import start_relay
from trio_wsproxy import CloseCode, Relay, RelayConfig, open_relay
from trio_wsproxy.relay.memory import SIP, BufferBudget
from trio_wsproxy.relay.reader import READ_SIZE
from trio_wsproxy.relay.session import Session
from wsraw import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawClient, mask_frame

MiB = 1024 * 1024


async def join(relay: Relay, member: str, group: str = "g") -> RawClient:
    return await RawClient.open(relay.port, f"/ws?id={member}&groupName={group}")


async def messages_answering_pings(client: RawClient, count: int) -> list[bytes]:
    """The next ``count`` data messages, answering the relay's pings meanwhile."""
    received: list[bytes] = []
    parts: list[bytes] = []
    while len(received) < count:
        fin, op, payload = await client.recv_frame()
        if op == OP_PING:
            await client.send_frame(OP_PONG, payload)
        elif op == OP_CLOSE:
            raise AssertionError(f"closed: {payload!r}")
        elif op != OP_PONG:
            parts.append(payload)
            if fin:
                received.append(b"".join(parts))
                parts = []
    return received


async def healthz_seconds(port: int) -> float:
    started = trio.current_time()
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    await client.send(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
    status, _headers, _body = await client.read_response()
    await client.aclose()
    assert status == 200
    return trio.current_time() - started


@pytest.mark.alone
async def test_a_bursting_group_never_freezes_the_other_groups() -> None:
    # 700 members each send one message at once and never read: half a million deliveries.
    # Meanwhile a canary pair in another group keeps bouncing a message, and the health
    # check is asked: both must keep being served (a turn's work is bounded). The relay
    # is a process of its own, so that the burst reaches it all at once.
    process, _url, port = await start_relay("--close-timeout", "0.5")
    try:
        with trio.fail_after(60):
            crowd = [await connect(port, f"m{n}", "crowd") for n in range(700)]
            witness = await connect(port, "witness", "crowd")  # reads everything
            ping, pong = (
                await connect(port, "ping", "canary"),
                await connect(port, "pong", "canary"),
            )

        async def burst() -> None:
            frame = mask_frame(OP_TEXT, b"burst!!")
            for member in crowd:
                await member.send(frame)
            # The burst is over once the witness has every member's message.
            await messages_answering_pings(witness, len(crowd))

        with trio.fail_after(120):
            gaps, probes = await watched(port, ping, pong, burst)
        assert max(gaps) < 1.0, f"the canary waited {max(gaps):.2f}s"
        assert probes and max(probes) < 1.0, f"/healthz took {max(probes):.2f}s"
    finally:
        process.kill()


async def watched(
    port: int, ping: RawClient, pong: RawClient, load: Callable[[], Awaitable[None]]
) -> tuple[list[float], list[float]]:
    """Run ``load`` while a canary pair in a group of its own keeps bouncing a message
    and the health check is asked: the canary's gaps and /healthz's times meanwhile."""
    gaps: list[float] = []
    probes: list[float] = []
    canary_running = trio.Event()
    done = trio.Event()

    async def canary() -> None:
        last = trio.current_time()
        while not done.is_set():
            await ping.send_frame(OP_TEXT, b"tick")
            assert await pong.recv_message() == (OP_TEXT, b"tick")
            now = trio.current_time()
            gaps.append(now - last)
            last = now
            canary_running.set()

    async def probe() -> None:
        while not done.is_set():
            probes.append(await healthz_seconds(port))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(canary)
        await canary_running.wait()
        nursery.start_soon(probe)
        await load()
        done.set()
    return gaps, probes


async def connect(port: int, member: str, group: str) -> RawClient:
    return await RawClient.open(port, f"/ws?id={member}&groupName={group}")


@pytest.mark.alone
@pytest.mark.parametrize("rate", [10.0])
async def test_a_member_paced_by_its_rate_limit_is_never_closed_for_keepalive(
    rate: float,
) -> None:
    # 20 messages at 10 per second take about 1.5 s to forward (a few go at once), longer
    # than the relay's keepalive allows a silent member: it pings after 0.5 s of silence
    # and waits 0.5 s for the answer. Meanwhile it reads the member's ping too.
    config = RelayConfig(
        port=0, max_message_rate=rate, ping_interval=0.5, ping_timeout=0.5, close_timeout=0.5
    )
    async with open_relay(config) as relay:
        sender, receiver = await join(relay, "sender"), await join(relay, "receiver")
        with trio.fail_after(5):
            await relay.wait_members(2)
        for n in range(20):
            await sender.send_frame(OP_TEXT, f"message {n}".encode())
        await sender.send_frame(OP_PING, b"are you there")
        received: list[bytes] = []
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:

                async def answer_pings() -> None:
                    # The sender's reader: the relay's pings get pongs, and the pong to
                    # its own ping comes back while its messages are still paced.
                    while True:
                        _fin, op, payload = await sender.recv_frame()
                        if op == OP_PING:
                            await sender.send_frame(OP_PONG, payload)
                        elif op == OP_PONG:
                            assert payload == b"are you there"
                            assert len(received) < 20, "the pong waited for the messages"
                        elif op == OP_CLOSE:
                            raise AssertionError(f"sender closed: {payload!r}")

                nursery.start_soon(answer_pings)
                for message in await messages_answering_pings(receiver, 20):
                    received.append(message)
                nursery.cancel_scope.cancel()
        assert received == [f"message {n}".encode() for n in range(20)]
        assert relay.group_size("g") == 2


@pytest.mark.alone
async def test_a_stalled_streaming_message_is_cut_off_and_the_group_goes_on() -> None:
    config = RelayConfig(port=0, stream_timeout=1.0, close_timeout=0.5, ping_interval=None)
    async with open_relay(config) as relay:
        staller, receiver = await join(relay, "staller"), await join(relay, "receiver")
        other = await join(relay, "other")
        with trio.fail_after(5):
            await relay.wait_members(3)
        # More than a fragment's worth: the message streams, and holds the group's floor.
        await staller.send_frame(OP_BINARY, b"s" * (2 * MiB), fin=False)
        with trio.fail_after(5):
            fin, op, _ = await receiver.recv_frame()
        assert (fin, op) == (False, OP_BINARY)
        started = trio.current_time()
        await other.send_frame(OP_TEXT, b"waiting behind it")
        with trio.fail_after(10):
            code, _reason = await staller.expect_close()
            assert code == CloseCode.POLICY_VIOLATION
            # Its recipients are told the message was cut off.
            while True:
                _fin, op, payload = await receiver.recv_frame()
                if op == OP_CLOSE:
                    assert struct.unpack("!H", payload[:2])[0] == CloseCode.MESSAGE_TRUNCATED
                    break
                assert op in (OP_CONT, OP_TEXT, OP_BINARY)
        assert 0.5 < trio.current_time() - started < 5.0
        with trio.fail_after(5):
            # Every recipient of the cut-off message was told (the one waiting too)...
            assert (await other.expect_close())[0] == CloseCode.MESSAGE_TRUNCATED
            await relay.wait_members(0)
            # ...and the group goes on.
            a, b = await join(relay, "a"), await join(relay, "b")
            await a.send_frame(OP_TEXT, b"after")
            assert await b.recv_message() == (OP_TEXT, b"after")


@pytest.mark.alone
async def test_several_slow_members_cost_their_group_one_timeout() -> None:
    timeout = 2.0
    config = RelayConfig(
        # The close frame waits behind each stuck member's full socket until the test
        # reads it, after the transfer: close_timeout must outlast that wait.
        port=0,
        mailbox_bytes=16384,
        slow_member_timeout=timeout,
        close_timeout=30,
    )
    async with open_relay(config) as relay:
        sender, reader = await join(relay, "sender"), await join(relay, "reader")
        stuck = [await join(relay, f"stuck{n}") for n in range(4)]
        with trio.fail_after(5):
            await relay.wait_members(6)
        filler = b"x" * 8000
        count = 2000  # 16 MB: far more than the stuck members' mailboxes and sockets take
        started = trio.current_time()
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:

                async def send() -> None:
                    for _ in range(count):
                        await sender.send_frame(OP_BINARY, filler)

                nursery.start_soon(send)
                assert await messages_answering_pings(reader, count) == [filler] * count
        took = trio.current_time() - started
        # Four slow members: the group waited for them once (their timers ran together),
        # not four times one after the other.
        assert took < 2.5 * timeout, f"the group waited {took:.1f}s"
        with trio.fail_after(10):
            for member in stuck:
                code, _ = await member.expect_close()
                assert code == CloseCode.SLOW_CONSUMER
                await member.aclose()
        # (Closed here, so that the relay's shutdown need not wait out close_timeout.)
        await sender.aclose()
        await reader.aclose()


class RecordingBudget(BufferBudget):
    """The relay's buffer budget, remembering the most it ever counted."""

    __slots__ = ("_held", "peak")

    def __init__(self, limit: int) -> None:
        self.peak = 0
        super().__init__(limit)

    @property  # type: ignore[override]
    def held(self) -> int:
        return self._held

    @held.setter
    def held(self, value: int) -> None:
        self._held = value
        self.peak = max(self.peak, value)


def reading_state(relay: Relay) -> str:
    """What every session holds of the relay's buffer budget and where its task waits:
    what a test that timed out over the bound reports, so that a rare hang explains
    itself."""
    budget = relay.buffers
    turn = budget._turn.statistics()
    owner = turn.owner.name if turn.owner is not None else None
    lines = [
        f"held {budget.held} bytes, over: {budget.over}; the turn's owner: {owner}, "
        f"{turn.tasks_waiting} waiting; parked in the poller: "
        f"{relay.poller.parked if relay.poller is not None else None}"
    ]
    where = {}
    for task in _tasks(trio.lowlevel.current_root_task()):
        frames = _awaiting(task.coro)
        for index, (name, session) in enumerate(frames):
            if name == "run" and isinstance(session, Session):  # (its reading task)
                where[session] = " > ".join(name for name, _ in frames[index + 1 :])
    idle = 0
    for session in sorted(relay.sessions, key=lambda each: (each.group_name, each.id)):
        reader = session._reader
        held = reader._held or session._assembly.held
        if not (reader._has_turn or held or reader.ahead or session.paused):
            idle += 1  # (holds nothing, waits for nothing but its member)
            continue
        lines.append(
            f"{session.group_name}/{session.id}: {session.state.name}, turn "
            f"{reader._has_turn}, counted {reader._held}, assembling "
            f"{session._assembly.held}, ahead {len(reader.ahead)} ({reader.ahead_end!r}), "
            f"paused {session.paused}, reads {reader.reads}; waits in {where.get(session)}"
        )
    lines.append(f"and {idle} sessions holding nothing")
    return "\n".join(lines)


def _tasks(task: trio.lowlevel.Task) -> list[trio.lowlevel.Task]:
    found = [task]
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            found += _tasks(child)
    return found


def _awaiting(coro: Any) -> list[tuple[str, object]]:
    """The coroutines ``coro`` awaits, outermost first: their names and ``self``."""
    frames = []
    while coro is not None and (frame := getattr(coro, "cr_frame", None)) is not None:
        frames.append((frame.f_code.co_name, frame.f_locals.get("self")))
        coro = coro.cr_await
    return frames


async def test_unfinished_messages_of_all_members_stay_within_the_relays_bound() -> None:
    # 100 members each send most of a 1000 KiB message (gathered, not yet forwarded)
    # before ending it: unbounded, the relay would hold 100 MB at once. Bounded at 8 MiB,
    # the members holding much wait their turn, and every message still arrives whole.
    limit = 8 * MiB
    async with open_relay(RelayConfig(port=0, max_buffered_bytes=limit)) as relay:
        budget = relay.buffers = RecordingBudget(limit)
        with trio.fail_after(30):
            pairs = [
                (await join(relay, "sender", f"p{n}"), await join(relay, "reader", f"p{n}"))
                for n in range(100)
            ]
        body = bytes(range(256)) * 4000  # 1,024,000 bytes: just under a fragment's worth

        async def send(sender: RawClient) -> None:
            await sender.send_frame(OP_BINARY, body, fin=False)
            await sender.send_frame(OP_CONT, b"end", fin=True)

        async def read(reader: RawClient) -> None:
            assert await messages_answering_pings(reader, 1) == [body + b"end"]

        try:
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for sender, reader in pairs:
                        nursery.start_soon(send, sender)
                        nursery.start_soon(read, reader)
        except trio.TooSlowError:
            raise AssertionError(f"a message never arrived:\n{reading_state(relay)}") from None
        # Past the bound by at most what each member read before it was counted.
        assert budget.peak <= limit + 100 * (SIP + READ_SIZE), budget.peak / MiB
        assert budget.held == 0


async def test_an_idle_member_holding_the_turn_hands_it_on() -> None:
    # Over the bound, b holds the turn to be read, then goes quiet (a live client with
    # nothing to send): a, which waits for the turn with the rest of its message already
    # sent, must not wait for b forever.
    config = RelayConfig(port=0, max_buffered_bytes=150_000, ping_interval=None, close_timeout=0.5)
    async with open_relay(config) as relay:
        a, b, c = await join(relay, "a"), await join(relay, "b"), await join(relay, "c")
        with trio.fail_after(5):
            await relay.wait_members(3)
            await a.send_frame(OP_BINARY, b"a" * 100_000, fin=False)
            await trio.testing.wait_all_tasks_blocked()
            await b.send_frame(OP_BINARY, b"b" * 100_000, fin=False)
            await trio.testing.wait_all_tasks_blocked()  # b is over the bound: its turn
            assert relay.buffers.over
            await a.send_frame(OP_CONT, b"a" * 100_000, fin=False)
            await a.send_frame(OP_CONT, b"end", fin=True)
            assert await messages_answering_pings(c, 1) == [b"a" * 200_000 + b"end"]


class BudgetGoingUnder(BufferBudget):
    """The relay's buffer budget, which other members' unfinished messages (``others``
    bytes) keep over its bound until a member begins to wait for the turn: then they go
    out, before that member's reader has begun to read ahead."""

    __slots__ = ("others",)

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.others = 0

    def hold_others(self, size: int) -> None:
        self.others += size
        self.add(size)

    async def take_turn(self) -> None:
        self.add(-self.others)
        self.others = 0
        await super().take_turn()


@pytest.mark.parametrize("then", ["nothing", "another message"])
async def test_what_is_read_ahead_while_waiting_for_the_turn_is_acted_on_first(then: str) -> None:
    # a waits for the turn, over the bound; the relay goes under it at once, so a's reader
    # reads ahead the rest of a's message, end and all, while another member holds the
    # turn. Once a's turn comes, that rest is acted on first: not left behind a read that
    # never ends (a sends nothing more), nor behind what a sends next.
    limit = 150_000
    config = RelayConfig(port=0, max_buffered_bytes=limit, ping_interval=None, close_timeout=0.5)
    async with open_relay(config) as relay:
        budget = relay.buffers = BudgetGoingUnder(limit)
        a, c = await join(relay, "a"), await join(relay, "c")
        body = bytes(range(256)) * 100
        with trio.fail_after(5):
            await relay.wait_members(2)
            await budget.take_turn()  # (another member's turn: the test's here)
            budget.hold_others(limit + 1)
            await a.send_frame(OP_BINARY, body, fin=False)
            await a.send_frame(OP_CONT, b"end", fin=True)
            await trio.testing.wait_all_tasks_blocked()
            assert not budget.over  # (and a's reader has read the rest ahead)
            budget.give_turn()
            expected = [body + b"end"]
            if then == "another message":
                await trio.testing.wait_all_tasks_blocked()  # (a reads for itself again)
                await a.send_frame(OP_TEXT, b"next")
                expected.append(b"next")
            assert await messages_answering_pings(c, len(expected)) == expected
            await trio.testing.wait_all_tasks_blocked()
            assert budget.held == 0
            assert not budget._turn.locked()


async def test_the_turns_holder_that_ends_up_holding_nothing_in_a_pause_hands_it_on() -> None:
    # a holds the turn when its message ends, and waits for the floor (s streams to the
    # group); the relay is under its bound again by then (b left), so a's reader reads
    # ahead a's ping meanwhile, and its count comes to nothing. Once the floor is free,
    # a is usual again: it must not keep the turn (parked in the poller, nothing would
    # give it back), or d, over the bound later, would wait for it for ever.
    limit = 150_000
    config = RelayConfig(port=0, max_buffered_bytes=limit, ping_interval=None, close_timeout=0.5)
    async with open_relay(config) as relay:
        a, s, c = await join(relay, "a"), await join(relay, "s"), await join(relay, "c")
        b = await join(relay, "b", "g2")
        d, e = await join(relay, "d", "h"), await join(relay, "e", "h")
        with trio.fail_after(5):
            await relay.wait_members(6)
            streamed = b"s" * (MiB + 10)
            await s.send_frame(OP_BINARY, streamed, fin=False)  # (it holds the floor)
            await b.send_frame(OP_BINARY, b"b" * 100_000, fin=False)
            await trio.testing.wait_all_tasks_blocked()
            await a.send_frame(OP_BINARY, b"a" * 60_000, fin=False)
            await trio.testing.wait_all_tasks_blocked()
            assert relay.buffers.over  # (a holds the turn now)
            await b.aclose()
            await trio.testing.wait_all_tasks_blocked()
            assert not relay.buffers.over
            await a.send_frame(OP_CONT, b"end", fin=True)  # (in turn: it waits for the floor)
            await a.send_frame(OP_PING, b"still there?")
            await trio.testing.wait_all_tasks_blocked()
            await s.send_frame(OP_CONT, b"", fin=True)
            assert await messages_answering_pings(c, 2) == [streamed, b"a" * 60_000 + b"end"]
            await d.send_frame(OP_BINARY, b"d" * 160_000, fin=False)
            await trio.testing.wait_all_tasks_blocked()
            assert relay.buffers.over  # (d waits for the turn)
            await d.send_frame(OP_CONT, b"end", fin=True)
            assert await messages_answering_pings(e, 1) == [b"d" * 160_000 + b"end"]


async def drain(client: RawClient, size: int) -> None:
    """Read and discard ``size`` bytes the relay sends, unparsed."""
    while size > 0:
        data = await client.stream.receive_some(1 << 20)
        assert data, "closed"
        size -= len(data)


@pytest.mark.alone
@pytest.mark.parametrize("poller", ["--shared-poller", "--no-shared-poller"])
async def test_small_groups_blasting_tiny_messages_never_stall_the_other_groups(
    poller: str,
) -> None:
    # A group of 32 whose members each send 6,000 empty messages in one write: every
    # read makes 186,000 deliveries. Fan-outs this small were once never charged to the
    # turn budget, and a turn of several such reads held every other group and the
    # health check for seconds. Now every delivery is charged.
    process, _url, port = await start_relay(poller, "--close-timeout", "0.5")
    try:
        with trio.fail_after(60):
            blasters = [await connect(port, f"b{n}", "blast") for n in range(32)]
            ping, pong = (
                await connect(port, "ping", "canary"),
                await connect(port, "pong", "canary"),
            )

        async def blast() -> None:
            burst = mask_frame(OP_TEXT, b"") * 6_000
            async with trio.open_nursery() as nursery:
                for blaster in blasters:
                    # Each gets 31 × 6,000 empty messages of 2 bytes each.
                    nursery.start_soon(drain, blaster, 31 * 6_000 * 2)
                for blaster in blasters:
                    await blaster.send(burst)

        with trio.fail_after(120):
            gaps, probes = await watched(port, ping, pong, blast)
        gaps.sort()
        assert gaps[len(gaps) // 2] < 0.1, (
            f"the canary's median gap was {gaps[len(gaps) // 2]:.3f}s"
        )
        assert gaps[-1] < 1.0, f"the canary waited {gaps[-1]:.2f}s"
        assert probes and max(probes) < 1.0, f"/healthz took {max(probes):.2f}s"
    finally:
        process.kill()
