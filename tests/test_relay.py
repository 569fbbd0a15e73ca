"""The relay over real sockets: the wire contract in the README, member by member."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio
import trio_websocket as tw

from trio_wsproxy import CloseCode, Relay, RelayConfig, serve_relay
from wsraw import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RawClient,
    numbered_until_close,
)

UNLIMITED = 2**40


def url(relay: Relay, member: str, group: str) -> str:
    return f"{relay.url}?id={member}&groupName={group}"


Join = Callable[..., Awaitable[tw.WebSocketConnection]]


@pytest.fixture
async def join(relay: Relay) -> AsyncIterator[Join]:
    """``await join("a")``: a trio-websocket member "a" of group "g" (or ``group=``)."""
    opened: list[tw.WebSocketConnection] = []
    async with trio.open_nursery() as nursery:

        async def connect(member: str, group: str = "g") -> tw.WebSocketConnection:
            ws = await tw.connect_websocket_url(
                nursery, url(relay, member, group), max_message_size=UNLIMITED
            )
            opened.append(ws)
            return ws

        yield connect
        with trio.move_on_after(2):
            for ws in opened:
                await ws.aclose()
        nursery.cancel_scope.cancel()


async def members(relay: Relay, count: int, group: str | None = "g") -> None:
    """Wait until the relay has registered ``count`` members (joins are asynchronous)."""
    with trio.fail_after(5):
        await relay.wait_members(count, group)


async def nothing_within(ws: tw.WebSocketConnection, seconds: float = 0.2) -> None:
    with trio.move_on_after(seconds):
        message = await ws.get_message()
        pytest.fail(f"unexpected message {message!r}")


# -- fan-out -----------------------------------------------------------------------------


async def test_every_other_member_receives_and_the_sender_does_not(
    relay: Relay, join: Join
) -> None:
    a, b, c = [await join(name) for name in "abc"]
    await members(relay, 3, "g")
    await a.send_message("hello")
    assert await b.get_message() == "hello"
    assert await c.get_message() == "hello"
    await nothing_within(a)


async def test_text_stays_text_and_binary_stays_binary(relay: Relay, join: Join) -> None:
    a, b = await join("a"), await join("b")
    await members(relay, 2, "g")
    await a.send_message("text ✓")
    await a.send_message(b"\x00\xffbinary")
    await a.send_message("")
    await a.send_message(b"")
    assert await b.get_message() == "text ✓"
    assert await b.get_message() == b"\x00\xffbinary"
    assert await b.get_message() == ""
    assert await b.get_message() == b""


async def test_groups_are_isolated(relay: Relay, join: Join) -> None:
    a1, a2 = await join("1", "alpha"), await join("2", "alpha")
    b1 = await join("1", "beta")
    await members(relay, 3, None)
    await a1.send_message("for alpha")
    assert await a2.get_message() == "for alpha"
    await nothing_within(b1)
    assert relay.stats.groups == 2


async def test_per_sender_order_is_kept_for_every_recipient(relay: Relay, join: Join) -> None:
    senders = [await join(f"s{i}") for i in range(3)]
    receivers = [await join(f"r{i}") for i in range(2)]
    await members(relay, 5, "g")
    count = 300

    async def send(index: int, ws: tw.WebSocketConnection) -> None:
        for n in range(count):
            await ws.send_message(f"{index}:{n}")

    async with trio.open_nursery() as nursery:
        for index, ws in enumerate(senders):
            nursery.start_soon(send, index, ws)
    for ws in receivers:
        seen: dict[str, list[int]] = {"0": [], "1": [], "2": []}
        for _ in range(3 * count):
            message = await ws.get_message()
            assert isinstance(message, str)
            sender, n = message.split(":")
            seen[sender].append(int(n))
        assert all(numbers == list(range(count)) for numbers in seen.values())


async def test_a_group_of_one_sends_into_nothing_without_error(relay: Relay, join: Join) -> None:
    alone = await join("alone")
    await alone.send_message("anyone?")
    with trio.fail_after(5):
        await alone.ping(b"still here")  # answered after the message was handled
    assert not alone.closed
    assert relay.stats.messages == 1


async def test_groups_exist_while_they_have_members(relay: Relay, join: Join) -> None:
    a = await join("a", "transient")
    await members(relay, 1, "transient")
    assert relay.stats.groups == 1
    await a.aclose()
    await members(relay, 0, None)
    assert relay.stats.groups == 0


async def test_a_member_joining_later_gets_only_later_messages(relay: Relay, join: Join) -> None:
    a, b = await join("a"), await join("b")
    await members(relay, 2, "g")
    await a.send_message("before")
    assert await b.get_message() == "before"
    c = await join("c")
    await members(relay, 3, "g")
    await a.send_message("after")
    assert await c.get_message() == "after"


async def test_stats_count_messages_bytes_and_deliveries(relay: Relay, join: Join) -> None:
    a, b, c = [await join(name) for name in "abc"]
    await members(relay, 3, "g")
    await a.send_message(b"12345")
    await b.get_message()
    await c.get_message()
    stats = relay.stats
    assert (stats.groups, stats.members, stats.messages, stats.bytes, stats.deliveries) == (
        1,
        3,
        1,
        5,
        2,
    )


# -- newest wins ---------------------------------------------------------------------------


async def test_same_id_twice_newest_wins_and_older_gets_4000(relay: Relay, join: Join) -> None:
    old = await join("dup")
    other = await join("other")
    await members(relay, 2, "g")
    new = await join("dup")
    with pytest.raises(tw.ConnectionClosed) as info:
        await old.get_message()
    assert info.value.reason.code == CloseCode.REPLACED
    await members(relay, 2, "g")
    await other.send_message("to the newest")
    assert await new.get_message() == "to the newest"
    await new.send_message("from the newest")
    assert await other.get_message() == "from the newest"


async def test_same_id_in_another_group_is_a_different_member(relay: Relay, join: Join) -> None:
    first = await join("same", "g1")
    await join("same", "g2")
    await members(relay, 2, None)
    await nothing_within(first)
    assert not first.closed


# -- refusals before upgrade ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/ws?groupName=g", 400),
        ("/ws?id=a", 400),
        ("/ws?id=a&groupName=", 400),
        ("/nope?id=a&groupName=g", 404),
    ],
)
async def test_bad_handshakes_get_a_status_and_a_reason(
    relay: Relay, target: str, status: int
) -> None:
    with pytest.raises(tw.ConnectionRejected) as info:
        async with tw.open_websocket_url(f"ws://127.0.0.1:{relay.port}{target}"):
            pass
    assert info.value.status_code == status
    assert info.value.body and info.value.body.endswith(b"\n") and len(info.value.body) > 5
    assert relay.stats.members == 0


async def test_plain_http_request_is_answered_426(relay: Relay, join: Join) -> None:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
    await client.send(b"GET /ws?id=a&groupName=g HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = await client.read_response()
    assert status == 426
    assert headers["upgrade"] == "websocket"
    assert b"WebSocket" in body


async def test_garbage_instead_of_http_is_answered_400(relay: Relay, join: Join) -> None:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
    await client.send(os.urandom(64) + b"\r\n\r\n")
    status, _headers, _body = await client.read_response()
    assert status == 400


async def test_an_endless_request_head_is_answered_431(relay: Relay, join: Join) -> None:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
    await client.send(b"GET /ws?id=a&groupName=g HTTP/1.1\r\n" + b"X-Pad: aaaa\r\n" * 2000)
    status, _headers, _body = await client.read_response()
    assert status == 431


@pytest.mark.wsproxy_relay(handshake_timeout=0.3)
async def test_a_half_finished_handshake_is_dropped_after_the_deadline(
    relay: Relay, join: Join
) -> None:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
    await client.send(b"GET /ws?id=a&groupName=g HTTP/1.1\r\nHost: x\r\n")
    with trio.fail_after(3):
        status, _headers, _body = await client.read_response()
    assert status == 408
    assert await client.stream.receive_some(10) == b""


async def test_handshake_garbage_does_not_disturb_members(relay: Relay, join: Join) -> None:
    a, b = await join("a"), await join("b")
    await members(relay, 2, "g")
    for junk in (b"\x16\x03\x01\x02\x00", b"GET / HTTP/1.1\r\n\r\n", b"\r\n\r\n"):
        stream = await trio.open_tcp_stream("127.0.0.1", relay.port)
        await stream.send_all(junk)
        await stream.aclose()
    await a.send_message("still fine")
    assert await b.get_message() == "still fine"


# -- bad frames: the faulty session closes, the others carry on -----------------------------


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([(OP_TEXT, b"\xc3\x28", True, True)], CloseCode.INVALID_PAYLOAD),
        ([(OP_TEXT, b"unmasked", True, False)], CloseCode.PROTOCOL_ERROR),
        ([(OP_CONT, b"orphan", True, True)], CloseCode.PROTOCOL_ERROR),
        ([(0x3, b"reserved", True, True)], CloseCode.PROTOCOL_ERROR),
    ],
)
async def test_a_bad_frame_closes_only_its_session(
    relay: Relay, join: Join, frames: list[tuple[int, bytes, bool, bool]], code: int
) -> None:
    good_a, good_b = await join("a"), await join("b")
    bad = await RawClient.open(relay.port, "/ws?id=bad&groupName=g")
    await members(relay, 3, "g")
    for opcode, payload, fin, masked in frames:
        await bad.send_frame(opcode, payload, fin, masked)
    with trio.fail_after(5):
        assert (await bad.expect_close())[0] == code
    await members(relay, 2, "g")
    await good_a.send_message("carry on")
    assert await good_b.get_message() == "carry on"


@pytest.mark.wsproxy_relay(max_message_size=1000)
async def test_a_message_over_the_limit_gets_1009(relay: Relay, join: Join) -> None:
    a, b = await join("a"), await join("b")
    await members(relay, 2, "g")
    await a.send_message(b"x" * 1000)
    assert await b.get_message() == b"x" * 1000
    await a.send_message(b"x" * 1001)
    with pytest.raises(tw.ConnectionClosed) as info:
        await a.get_message()
    assert info.value.reason.code == CloseCode.MESSAGE_TOO_BIG
    assert "1000" in (info.value.reason.reason or "")
    await nothing_within(b)


async def test_a_tcp_reset_mid_message_leaves_the_group_working(relay: Relay, join: Join) -> None:
    a, b = await join("a"), await join("b")
    rude = await RawClient.open(relay.port, "/ws?id=rude&groupName=g")
    await members(relay, 3, "g")
    await rude.send(b"\x82\xfe\x10\x00" + os.urandom(4) + b"partial")  # 4096 announced
    rude.stream.socket.setsockopt(*_linger_zero())
    await rude.aclose()  # with SO_LINGER 0: an RST, not a FIN
    await members(relay, 2, "g")
    await a.send_message("after the reset")
    assert await b.get_message() == "after the reset"


def _linger_zero() -> tuple[int, int, bytes]:
    import socket
    import struct

    return socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)


# -- control frames ------------------------------------------------------------------------


async def test_the_relay_answers_pings(relay: Relay, join: Join) -> None:
    client = await RawClient.open(relay.port)
    await client.send_frame(OP_PING, b"are you there")
    with trio.fail_after(5):
        fin, opcode, payload = await client.recv_frame()
    assert (fin, opcode, payload) == (True, OP_PONG, b"are you there")


async def test_a_client_close_is_echoed(relay: Relay, join: Join) -> None:
    client = await RawClient.open(relay.port)
    await client.send_frame(OP_CLOSE, (1000).to_bytes(2, "big") + b"bye")
    with trio.fail_after(5):
        assert await client.expect_close() == (1000, "bye")
        assert await client.stream.receive_some(10) == b""
    await members(relay, 0, None)


@pytest.mark.wsproxy_relay(ping_interval=0.2, ping_timeout=0.3)
async def test_silent_members_are_pinged_and_dead_ones_closed_with_4003(
    relay: Relay, join: Join
) -> None:
    alive = await join("alive")  # trio-websocket answers pings by itself
    prompt = await RawClient.open(relay.port, "/ws?id=prompt&groupName=g")  # answers by hand
    dead = await RawClient.open(relay.port, "/ws?id=dead&groupName=g")
    rounds = 5
    answered = trio.Event()

    async def answer_pings() -> None:
        for _ in range(rounds):
            _, opcode, payload = await prompt.recv_frame()
            assert opcode == OP_PING, f"a member that answers got opcode {opcode}"
            await prompt.send_frame(OP_PONG, payload)
        answered.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_pings)
        with trio.fail_after(5):
            _, opcode, _ = await dead.recv_frame()
            assert opcode == OP_PING
            assert (await dead.expect_close())[0] == CloseCode.KEEPALIVE_TIMEOUT
            # Members that answer stay through round after round of pings (each comes
            # only once the relay heard the answer to the last); alive, as silent as
            # prompt, is pinged as often, and would be gone had it not answered.
            await answered.wait()
    assert not alive.closed and relay.group_size("g") == 2


# -- large messages ------------------------------------------------------------------------


async def test_a_large_message_is_forwarded_before_it_ends_and_arrives_intact(
    relay: Relay, join: Join
) -> None:
    sender = await RawClient.open(relay.port, "/ws?id=s&groupName=g")
    receiver = await RawClient.open(relay.port, "/ws?id=r&groupName=g")
    await members(relay, 2, "g")
    # An odd size, so that pieces cannot line up with what the sender sent.
    chunk = os.urandom(1_000_003)
    total = 20
    first_fragment_seen = trio.Event()

    async def send() -> None:
        for i in range(total):
            if i == 3:
                # Nothing more until the receiver has part of the message: the relay
                # must forward it as it arrives, not wait for the end.
                await first_fragment_seen.wait()
            await sender.send_frame(OP_BINARY if i == 0 else OP_CONT, chunk, fin=i == total - 1)

    frames, largest = 0, 0
    digest = hashlib.sha256()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        with trio.fail_after(30):
            while True:
                fin, opcode, payload = await receiver.recv_frame()
                assert opcode == (OP_BINARY if frames == 0 else OP_CONT)
                frames += 1
                largest = max(largest, len(payload))
                digest.update(payload)
                first_fragment_seen.set()
                if fin:
                    break
    assert digest.digest() == hashlib.sha256(chunk * total).digest()
    # 1 MiB per fragment: few enough for clients that cap fragments per message, and no
    # frame larger than a client that caps frames at 1 MiB (websockets' default) takes.
    assert frames >= 19 and largest == 1 << 20


async def test_fragments_of_two_messages_never_interleave(relay: Relay, join: Join) -> None:
    big1 = await RawClient.open(relay.port, "/ws?id=big1&groupName=g")
    big2 = await RawClient.open(relay.port, "/ws?id=big2&groupName=g")
    chatty = await join("chatty")
    receiver = await RawClient.open(relay.port, "/ws?id=r&groupName=g")
    await members(relay, 4, "g")
    payload1, payload2 = os.urandom(3 << 20), os.urandom(3 << 20)

    async def stream(client: RawClient, payload: bytes) -> None:
        step = 1 << 18
        for offset in range(0, len(payload), step):
            first, last = offset == 0, offset + step >= len(payload)
            await client.send_frame(
                OP_BINARY if first else OP_CONT, payload[offset : offset + step], last
            )
            await trio.lowlevel.checkpoint()

    async def chat() -> None:
        for n in range(50):
            await chatty.send_message(f"chat {n}")
            # Paced, so that the chat spreads over the two streams (not a settle-wait).
            await trio.sleep(0.001)

    received: list[tuple[int, bytes]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream, big1, payload1)
        nursery.start_soon(stream, big2, payload2)
        nursery.start_soon(chat)
        with trio.fail_after(30):
            while len(received) < 52:
                received.append(await receiver.recv_message())  # asserts no interleaving
    binaries = [data for opcode, data in received if opcode == OP_BINARY]
    texts = [data.decode() for opcode, data in received if opcode == OP_TEXT]
    assert sorted(binaries) == sorted([payload1, payload2])
    assert texts == [f"chat {n}" for n in range(50)]


async def test_a_sender_leaving_mid_message_closes_its_recipients_with_4002(
    relay: Relay, join: Join
) -> None:
    sender = await RawClient.open(relay.port, "/ws?id=s&groupName=g")
    receiver = await RawClient.open(relay.port, "/ws?id=r&groupName=g")
    bystander = await join("b", "other-group")
    await members(relay, 2, "g")
    await sender.send_frame(OP_BINARY, os.urandom(1 << 20), fin=False)
    with trio.fail_after(5):
        fin, opcode, _ = await receiver.recv_frame()
    assert (fin, opcode) == (False, OP_BINARY)
    await sender.aclose()
    with trio.fail_after(5):
        code, reason = await receiver.expect_close()
    assert code == CloseCode.MESSAGE_TRUNCATED and "mid-message" in reason
    assert not bystander.closed


async def test_a_small_message_from_a_departing_sender_is_not_cut(relay: Relay, join: Join) -> None:
    sender = await RawClient.open(relay.port, "/ws?id=s&groupName=g")
    receiver = await join("r")
    await members(relay, 2, "g")
    await sender.send_frame(OP_TEXT, b"last words")
    await sender.aclose()
    assert await receiver.get_message() == "last words"
    await members(relay, 1, "g")
    assert not receiver.closed


# -- slow members --------------------------------------------------------------------------


# close_timeout: once closed, the slow member drains what is still in flight to it (about
# its 64 KiB mailbox) through its 4 KiB receive window, which TCP paces by timer: over a
# second on loopback. The relay promises the close frame to a member that reads within
# close_timeout; the test gives that promise room instead of racing the default 3 s.
@pytest.mark.wsproxy_relay(mailbox_bytes=64 * 1024, slow_member_timeout=0.5, close_timeout=10)
async def test_a_member_that_stops_reading_is_closed_4001_and_the_group_carries_on(
    relay: Relay, join: Join
) -> None:
    sender = await join("sender")
    fast = await join("fast")
    slow = await RawClient.open(relay.port, "/ws?id=slow&groupName=g")
    slow.stream.socket.setsockopt(*_small_receive_buffer())
    await members(relay, 3, "g")
    payload = b"x" * 16384
    count = 2000  # ~32 MiB: far beyond what the slow member's socket and mailbox hold

    async def send() -> None:
        for n in range(count):
            await sender.send_message(n.to_bytes(4, "big") + payload)

    async def receive_fast() -> None:
        for n in range(count):
            message = await fast.get_message()
            assert message[:4] == n.to_bytes(4, "big")

    slow_got: tuple[int, tuple[int, str]] | None = None

    async def read_slow_once_closed() -> None:
        # The slow member reads nothing until the relay gives up on it (and it leaves the
        # group), then reads at once: the close frame waits behind what is in flight.
        nonlocal slow_got
        await relay.wait_members(2, "g")
        slow_got = await numbered_until_close(slow)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_slow_once_closed)
            nursery.start_soon(send)
            nursery.start_soon(receive_fast)
    # The slow member got an in-order prefix of the messages, then 4001.
    assert slow_got is not None
    received, close = slow_got
    assert close[0] == CloseCode.SLOW_CONSUMER, close
    assert received < count
    assert relay.group_size("g") == 2


def _small_receive_buffer() -> tuple[int, int, int]:
    import socket

    return socket.SOL_SOCKET, socket.SO_RCVBUF, 4096


# -- shutdown ------------------------------------------------------------------------------


async def test_cancelling_the_relay_closes_every_member_with_1001() -> None:
    async with trio.open_nursery() as outer:
        with trio.fail_after(5):
            async with trio.open_nursery() as relay_nursery:
                relay: Relay = await relay_nursery.start(serve_relay, RelayConfig(port=0))
                clients = [
                    await tw.connect_websocket_url(outer, url(relay, f"m{i}", f"g{i % 2}"))
                    for i in range(4)
                ]
                await members(relay, 4, None)
                relay_nursery.cancel_scope.cancel()
        for ws in clients:
            with pytest.raises(tw.ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason.code == CloseCode.GOING_AWAY
        outer.cancel_scope.cancel()


async def test_shutdown_does_not_wait_for_a_member_that_never_answers_the_close() -> None:
    with trio.fail_after(3):
        async with trio.open_nursery() as relay_nursery:
            relay: Relay = await relay_nursery.start(
                serve_relay, RelayConfig(port=0, close_timeout=0.3)
            )
            mute = await RawClient.open(relay.port)
            await members(relay, 1, None)
            relay_nursery.cancel_scope.cancel()
    assert (await mute.expect_close())[0] == CloseCode.GOING_AWAY
