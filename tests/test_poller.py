"""The shared poller (relay/poller.py): members with nothing unusual going on are read for
by one task, and whatever needs a wait goes back to the member's own task. Every test
runs with the poller on and off (``--no-shared-poller``: each member's task reads for
itself), over real sockets; with it on, the poller's counters show which path the
traffic took."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
import trio

from trio_wsproxy import CloseCode, Relay, RelayConfig, serve_relay
from trio_wsproxy.relay.poller import Poller
from wsraw import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RawClient,
    mask_frame,
    numbered_until_close,
)

pytestmark = pytest.mark.skipif(not Poller.available(), reason="the poller needs epoll (Linux)")


@pytest.fixture(params=[True, False], ids=["shared-poller", "own-reads"])
def shared(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


async def start(nursery: trio.Nursery, shared: bool, **settings: object) -> Relay:
    config = RelayConfig(host="127.0.0.1", port=0, shared_poller=shared, **settings)  # type: ignore[arg-type]
    relay: Relay = await nursery.start(serve_relay, config)
    assert (relay.poller is not None) == shared
    return relay


@pytest.fixture
async def relay(shared: bool) -> AsyncIterator[Relay]:
    async with trio.open_nursery() as nursery:
        yield await start(nursery, shared)
        nursery.cancel_scope.cancel()


async def pair(relay: Relay, group: str = "g") -> tuple[RawClient, RawClient]:
    a = await RawClient.open(relay.port, f"/ws?id=a&groupName={group}")
    b = await RawClient.open(relay.port, f"/ws?id=b&groupName={group}")
    with trio.fail_after(5):
        await relay.wait_members(2, group)
    return a, b


async def a_ping_among_messages(a: RawClient, b: RawClient) -> None:
    """a sends a ping between two messages in one write: a gets its pong, b both."""
    await a.send(
        mask_frame(OP_TEXT, b"one") + mask_frame(OP_PING, b"are you there")
        + mask_frame(OP_BINARY, b"two")
    )  # fmt: skip
    with trio.fail_after(5):
        assert await a.recv_frame() == (True, OP_PONG, b"are you there")
        assert await b.recv_message() == (OP_TEXT, b"one")
        assert await b.recv_message() == (OP_BINARY, b"two")


async def a_message_in_three_frames(a: RawClient, b: RawClient) -> None:
    await a.send_frame(OP_TEXT, b"fi", fin=False)
    await a.send_frame(OP_CONT, b"rst", fin=False)
    await a.send_frame(OP_CONT, b"!")
    with trio.fail_after(5):
        assert await b.recv_message() == (OP_TEXT, b"first!")


async def test_one_to_one_traffic_is_relayed_in_order(relay: Relay) -> None:
    a, b = await pair(relay)
    with trio.fail_after(10):
        for n in range(300):
            sender, receiver = (a, b) if n % 2 == 0 else (b, a)
            await sender.send_frame(OP_TEXT, f"m{n}".encode())
            assert await receiver.recv_message() == (OP_TEXT, f"m{n}".encode())
    if relay.poller is not None:
        # One conversation: the poller read a window of it, then went solo and handed
        # both members back to read for themselves (one epoll_wait fewer per message).
        poller = relay.poller
        assert poller.solo and poller.solo_spells == 1
        assert poller.solo_after <= poller.reads < 300
        assert poller.handovers <= 4


async def test_a_ping_among_messages_is_answered_in_order_and_reading_goes_on(
    relay: Relay,
) -> None:
    a, b = await pair(relay)
    await a_ping_among_messages(a, b)
    handovers = relay.poller.handovers if relay.poller is not None else 0
    assert handovers >= (1 if relay.poller is not None else 0)
    with trio.fail_after(5):
        for n in range(20):
            await a.send_frame(OP_TEXT, b"%d" % n)
            assert await b.recv_message() == (OP_TEXT, b"%d" % n)
    if relay.poller is not None:
        assert relay.poller.handovers <= handovers + 1  # parked again, read by the poller


async def test_a_message_in_several_frames_then_whole_ones(relay: Relay) -> None:
    a, b = await pair(relay)
    await a_message_in_three_frames(a, b)
    for n in range(5):
        await a.send_frame(OP_BINARY, bytes([n]) * 100)
    with trio.fail_after(5):
        for n in range(5):
            assert await b.recv_message() == (OP_BINARY, bytes([n]) * 100)


async def test_a_message_and_the_end_of_the_connection_in_one_read(relay: Relay) -> None:
    receiver = await RawClient.open(relay.port, "/ws?id=r&groupName=g")
    for n in range(20):
        sender = await RawClient.open(relay.port, f"/ws?id=s{n}&groupName=g")
        with trio.fail_after(5):
            await relay.wait_members(2, "g")
        # One write, then the end: the relay may read both at once.
        await sender.send(mask_frame(OP_TEXT, b"last words %d" % n))
        sender.stream.socket.shutdown(socket.SHUT_WR)
        with trio.fail_after(5):
            assert await receiver.recv_message() == (OP_TEXT, b"last words %d" % n)
            await relay.wait_members(1, "g")  # (the sender's end was seen, too)
        await sender.aclose()


async def test_a_close_frame_is_echoed(relay: Relay) -> None:
    a, _ = await pair(relay)
    await a.send(mask_frame(OP_TEXT, b"bye") + mask_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
    with trio.fail_after(5):
        assert await a.expect_close() == (CloseCode.NORMAL, "")


async def test_a_full_mailbox_met_while_reading_for_a_member_waits_and_4001s_the_slow_one(
    shared: bool,
) -> None:
    count, size = 60000, 120  # short frames, many per read: about 7 MiB in all
    async with trio.open_nursery() as nursery:
        relay = await start(nursery, shared, mailbox_bytes=4096, slow_member_timeout=0.5)
        sender = await RawClient.open(relay.port, "/ws?id=sender&groupName=g")
        fast = await RawClient.open(relay.port, "/ws?id=fast&groupName=g")
        slow = await RawClient.open(relay.port, "/ws?id=slow&groupName=g")
        slow.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with trio.fail_after(5):
            await relay.wait_members(3, "g")
        slow_got: tuple[int, tuple[int, str]] | None = None

        async def send() -> None:
            batch: list[bytes] = []
            for n in range(count):
                batch.append(mask_frame(OP_BINARY, n.to_bytes(4, "big") + bytes(size - 4)))
                if len(batch) == 100:
                    await sender.send(b"".join(batch))
                    batch.clear()

        async def receive_fast() -> None:
            for n in range(count):
                opcode, data = await fast.recv_message()
                assert (opcode, data[:4]) == (OP_BINARY, n.to_bytes(4, "big"))

        async def read_slow_once_closed() -> None:
            nonlocal slow_got
            await relay.wait_members(2, "g")  # (the relay gave up on it)
            slow_got = await numbered_until_close(slow)

        with trio.fail_after(60):
            async with trio.open_nursery() as inner:
                inner.start_soon(read_slow_once_closed)
                inner.start_soon(send)
                inner.start_soon(receive_fast)
        assert slow_got is not None
        received, close = slow_got
        assert close[0] == CloseCode.SLOW_CONSUMER, close
        assert received < count
        assert relay.stats.deliveries >= count
        assert relay.counters.mailbox_full > 0
        if relay.poller is not None:
            # The sender's reads were the poller's, and the full mailbox went back to
            # the sender's own task, which waited for room.
            assert relay.poller.reads > 0 and relay.poller.handovers > 0
        nursery.cancel_scope.cancel()


async def test_stopping_the_relay_hands_parked_members_back_and_closes_them_1001(
    shared: bool,
) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            relay = await start(nursery, shared, close_timeout=0.5)
            clients = [
                await RawClient.open(relay.port, f"/ws?id=m{n}&groupName=g") for n in range(4)
            ]
            await relay.wait_members(4, "g")
            for sender in clients:
                await sender.send_frame(OP_TEXT, b"hello")
                for client in clients:
                    if client is not sender:
                        assert await client.recv_message() == (OP_TEXT, b"hello")
            if relay.poller is not None:
                # Each one's message was read by the poller: each is parked there.
                assert relay.poller.parked == 4
            nursery.cancel_scope.cancel()
        for client in clients:
            assert (await client.expect_close())[0] == CloseCode.GOING_AWAY


async def ping_pong(x: RawClient, y: RawClient, messages: int) -> None:
    with trio.fail_after(10):
        for n in range(messages):
            sender, receiver = (x, y) if n % 2 == 0 else (y, x)
            await sender.send_frame(OP_TEXT, b"%d" % n)
            assert await receiver.recv_message() == (OP_TEXT, b"%d" % n)


@pytest.fixture
async def poller_relay() -> AsyncIterator[Relay]:
    """A relay with the poller and short windows: 8 wake-ups decide solo, and 30 own
    reads look again."""
    async with trio.open_nursery() as nursery:
        relay = await start(nursery, True)
        assert relay.poller is not None
        relay.poller.solo_after, relay.poller.look_again_after = 8, 30
        yield relay
        nursery.cancel_scope.cancel()


async def solo_pair(relay: Relay) -> tuple[Poller, RawClient, RawClient]:
    """Two members of group g, whose ping-pong of a window's length (8 messages, the
    poller reading each) took the poller solo."""
    poller = relay.poller
    assert poller is not None
    a, b = await pair(relay)
    await ping_pong(a, b, 8)
    assert poller.solo and poller.solo_spells == 1 and poller.reads == 8
    return poller, a, b


async def test_one_conversation_goes_solo_looks_again_and_stays_solo(
    poller_relay: Relay,
) -> None:
    poller, a, b = await solo_pair(poller_relay)
    # Solo: the poller handed b back with its read, and a with its next; then the
    # members read for themselves.
    await ping_pong(a, b, 20)
    assert poller.solo and poller.reads == 9 and poller.parked == 0
    # After 30 own reads it looks again (a window of 8 reads of the poller's), and the
    # conversation is still one: solo again. Every message arrived, in order, throughout.
    await ping_pong(a, b, 200)
    assert poller.solo_spells >= 3
    assert poller.reads < 100


async def test_two_conversations_keep_the_poller(poller_relay: Relay) -> None:
    poller = poller_relay.poller
    assert poller is not None
    a1, b1 = await pair(poller_relay, "one")
    a2, b2 = await pair(poller_relay, "two")
    for _ in range(10):
        await ping_pong(a1, b1, 4)
        await ping_pong(a2, b2, 4)
    # Each window held four members' sockets: never solo, every message the poller's.
    assert not poller.solo and poller.solo_spells == 0
    assert poller.reads == 80


async def test_looking_again_with_a_third_member_brings_the_poller_back(
    poller_relay: Relay,
) -> None:
    poller, a, b = await solo_pair(poller_relay)
    c = await RawClient.open(poller_relay.port, "/ws?id=c&groupName=g")
    with trio.fail_after(5):
        await poller_relay.wait_members(3, "g")
    members = [a, b, c]

    async def round_of(messages: int, text: bytes) -> None:
        with trio.fail_after(10):
            for n in range(messages):
                sender = members[n % 3]
                await sender.send_frame(OP_TEXT, text + b"%d" % n)
                for receiver in members:
                    if receiver is not sender:
                        assert await receiver.recv_message() == (OP_TEXT, text + b"%d" % n)

    # Solo still: c reads for itself from the start. After 30 own reads the poller
    # looks again and sees three members: not solo since, and it reads every message.
    await round_of(90, b"")
    assert not poller.solo and poller.solo_spells == 1
    reads = poller.reads
    await round_of(30, b"again ")
    assert poller.reads == reads + 30 and not poller.solo


async def test_idle_members_stay_parked_while_solo(poller_relay: Relay) -> None:
    poller = poller_relay.poller
    assert poller is not None
    clients = [
        await RawClient.open(poller_relay.port, f"/ws?id=m{n}&groupName=g") for n in range(4)
    ]
    with trio.fail_after(5):
        await poller_relay.wait_members(4, "g")

    async def everyone_hears(sender: RawClient, text: bytes) -> None:
        await sender.send_frame(OP_TEXT, text)
        with trio.fail_after(5):
            for client in clients:
                if client is not sender:
                    assert await client.recv_message() == (OP_TEXT, text)

    for sender in clients:
        await everyone_hears(sender, b"hello")
    assert poller.parked == 4 and not poller.solo
    a, b, c, _ = clients
    # The first window holds the four hellos; the second, a and b alone: solo.
    for n in range(12):
        await everyone_hears(a if n % 2 == 0 else b, b"%d" % n)
    assert poller.solo
    # Both went back to their own tasks (the window's last read handed b back, a's next
    # message a), and c and d did not.
    await everyone_hears(a, b"a again")
    await everyone_hears(b, b"b again")
    assert poller.parked == 2
    # An idle member's message is read by the poller, which hands it back too.
    reads = poller.reads
    await everyone_hears(c, b"c speaks")
    assert poller.reads == reads + 1 and poller.parked == 1


async def test_a_solo_member_still_answers_pings_and_hands_over_what_waits(
    poller_relay: Relay,
) -> None:
    poller, a, b = await solo_pair(poller_relay)
    await ping_pong(a, b, 2)
    assert poller.solo and poller.parked == 0
    reads = poller.reads
    # Solo, a's own task reads: a ping among messages, a message in several frames, a
    # close; each goes on as without the poller.
    await a_ping_among_messages(a, b)
    await a_message_in_three_frames(a, b)
    await ping_pong(a, b, 6)
    assert poller.solo and poller.reads == reads  # (none of it read by the poller)
    await a.send(mask_frame(OP_TEXT, b"bye") + mask_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
    with trio.fail_after(5):
        assert await b.recv_message() == (OP_TEXT, b"bye")
        assert await a.expect_close() == (CloseCode.NORMAL, "")
        await poller_relay.wait_members(1, "g")


def test_the_window_goes_solo_only_on_one_socket_of_at_most_two_members() -> None:
    def solo_after(wakes: list[list[tuple[int, int]]]) -> bool:
        poller = Poller()
        poller.solo_after = len(wakes)
        for ready in wakes:
            poller._watch(ready)
        return poller.solo

    assert solo_after([[(5, 1)], [(6, 1)]] * 4)
    assert solo_after([[(5, 1)]] * 8)
    assert not solo_after([[(5, 1)], [(6, 1)], [(7, 1)], [(5, 1)]])  # a third member
    assert not solo_after([[(5, 1)], [(5, 1), (6, 1)], [(6, 1)], [(5, 1)]])  # two at once
    assert not solo_after([[(5, 1)], [], [(6, 1)], [(5, 1)]])  # (nothing ready: not one)
    # A window that did not go solo is forgotten: the next one decides afresh.
    poller = Poller()
    poller.solo_after = 2
    for ready in [[(5, 1)], [(6, 1), (7, 1)], [(5, 1)], [(6, 1)]]:
        poller._watch(ready)
    assert poller.solo and poller.solo_spells == 1


def test_while_solo_members_read_for_themselves_until_it_looks_again() -> None:
    poller = Poller()
    assert poller.admits()  # (not solo: members park)
    poller.solo_after, poller.look_again_after = 1, 3
    poller._watch([(5, 1)])
    assert poller.solo
    assert [poller.admits() for _ in range(4)] == [False, False, True, True]
    assert not poller.solo


async def test_stopping_the_relay_while_solo_closes_the_members_1001() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            relay = await start(nursery, True, close_timeout=0.5)
            assert relay.poller is not None
            relay.poller.solo_after = 8
            poller, a, b = await solo_pair(relay)
            await ping_pong(a, b, 2)
            assert poller.parked == 0  # (both wait for their own sockets)
            nursery.cancel_scope.cancel()
        for client in (a, b):
            assert (await client.expect_close())[0] == CloseCode.GOING_AWAY
