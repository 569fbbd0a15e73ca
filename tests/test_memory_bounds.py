"""Memory that means memory: every queue a client can fill counts toward its bound, what
a bound counts is what it costs, and a full queue ends in a documented close (4001)."""

from __future__ import annotations

import gc
import json
import tracemalloc

import trio

from test_v1 import V1_OFFER, next_event
from trio_wsproxy import RelayConfig, open_relay
from trio_wsproxy.protocol import v1
from trio_wsproxy.protocol.assembly import Assembly
from trio_wsproxy.protocol.frames import Data
from trio_wsproxy.relay.mailbox import FULL, HELD, Mailbox
from wsraw import OP_CLOSE, OP_PING, OP_TEXT, RawClient, mask_frame

MIB = 1 << 20


def allocated_by(build: object) -> int:
    """Bytes still allocated after calling ``build()`` (which must keep what it makes)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()  # type: ignore[operator]
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del kept
    return after - before


async def test_a_mailbox_of_one_byte_messages_holds_about_its_bound_in_memory() -> None:
    # 4 MiB of one-byte messages (3-byte frames) once held 93 MB: the bound counted payload.
    def fill() -> Mailbox:
        mailbox = Mailbox(4 * MIB)
        while mailbox.offer(bytes((0x82, 1, 7))) != FULL:
            pass
        return mailbox

    assert allocated_by(fill) < 1.5 * 4 * MIB


async def test_control_frames_count_toward_the_bound_and_stop_at_twice_it() -> None:
    mailbox = Mailbox(64 * 1024)
    queued = 0
    while mailbox.offer_control(b"x" * 100):
        queued += 1
        assert queued < 10_000, "control frames were never refused"
    assert mailbox.queued <= 2 * 64 * 1024
    assert mailbox.offer(b"y") == FULL


async def test_a_message_sent_as_one_byte_frames_costs_its_bytes_not_an_object_each() -> None:
    # 1 MiB in one-byte continuation frames once cost about 48 bytes per byte held. A
    # quarter of that shows the cost per byte as well (12 MiB then, under 0.5 MiB now), in
    # a quarter of the time (each feed is traced).
    size = MIB // 4

    def gather() -> Assembly:
        assembly = Assembly("sender")
        assembly.feed(Data(b"x", False, True, False))
        # One event fed again and again: what is traced is the assembly's, not the test's
        # many frame objects (each allocated and freed under tracemalloc).
        more = Data(b"x", False, False, False)
        for _ in range(size - 2):
            assert assembly.feed(more) is None
        return assembly

    assert allocated_by(gather) < 2 * size


async def open_unread(port: int, target: str, extra: str = "") -> RawClient:
    """A client that reads nothing for now, with a small receive buffer, so that what
    the relay sends it stays in the relay."""
    sock = trio.socket.socket()
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    client = RawClient(trio.SocketStream(sock))
    status, _headers, body = await client.handshake(target, extra)
    assert status == 101, (status, body)
    return client


async def flood_until_closed(client: RawClient, frames: bytes, rounds: int) -> None:
    for _ in range(rounds):
        try:
            await client.send(frames)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


async def test_error_events_a_member_does_not_read_end_in_4001_not_in_memory() -> None:
    # Each message to a member that is not there earns its sender an error event twice
    # its size; a sender that reads none of them once grew the relay without end.
    config = RelayConfig(port=0, mailbox_bytes=64 * 1024, close_timeout=2)
    async with open_relay(config) as relay:
        with trio.fail_after(30):
            mallory = await open_unread(relay.port, "/ws?id=mallory&groupName=g", V1_OFFER)
            header = json.dumps({"to": "nobody-" + "x" * 4000}).encode() + b"\n"
            frames = mask_frame(OP_TEXT, header) * 50
            async with trio.open_nursery() as nursery:
                # 50,000 events of 4 KB: 200 MB if nothing bounded them.
                nursery.start_soon(flood_until_closed, mallory, frames, 1000)
                welcome = await next_event(mallory)
                assert isinstance(welcome, v1.Welcome)
                code, reason = await mallory.expect_close()
                nursery.cancel_scope.cancel()
            await mallory.aclose()  # (the relay's shutdown need not wait out close_timeout)
    assert (code, reason) == (4001, "mailbox full: member does not read what the relay sends it")


async def test_pongs_a_paused_member_does_not_read_end_in_4001() -> None:
    # While the relay paces a rate-limited member it still answers its pings: a member
    # that pings without reading once grew the relay by every pong.
    # (close_timeout: what the relay's shutdown waits for the close the paused member is
    # never read for; its 4001 is written at once.)
    config = RelayConfig(port=0, mailbox_bytes=64 * 1024, max_message_rate=0.05, close_timeout=1)
    async with open_relay(config) as relay:
        with trio.fail_after(15):  # (the pause itself lasts 19 s)
            mallory = await open_unread(relay.port, "/ws?id=mallory&groupName=g")
            await mallory.send_frame(OP_TEXT, b"paced")
            pings = mask_frame(OP_PING, b"p" * 125) * 500
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood_until_closed, mallory, pings, 2000)
                code, reason = await mallory.expect_close()
                nursery.cancel_scope.cancel()
            await mallory.aclose()  # (the relay's shutdown need not wait out close_timeout)
    assert code == 4001, (code, reason)


async def test_a_member_that_drains_slowly_but_never_catches_up_is_closed_4001() -> None:
    # Room made now and then used to restart the slow-member clock every time: a
    # member reading a little, steadily, held its group back for ever.
    config = RelayConfig(port=0, mailbox_bytes=64 * 1024, slow_member_timeout=1.0, close_timeout=2)
    async with open_relay(config) as relay:
        with trio.fail_after(30):
            slow = await open_unread(relay.port, "/ws?id=slow&groupName=g")
            sender = await RawClient.open(relay.port, "/ws?id=sender&groupName=g")
            await relay.wait_members(2)
            message = mask_frame(OP_TEXT, b"m" * 1000) * 64
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood_until_closed, sender, message, 100_000)
                # Read a frame (1 KB) every 50 ms: far slower than the sender sends.
                while True:
                    await trio.sleep(0.05)
                    _fin, op, payload = await slow.recv_frame()
                    if op == OP_CLOSE:
                        break
                nursery.cancel_scope.cancel()
            # (Closed here, so that the relay's shutdown need not wait out close_timeout.)
            await slow.aclose()
            await sender.aclose()
    assert int.from_bytes(payload[:2], "big") == 4001, payload


async def test_the_rest_of_a_partly_written_frame_is_kept_for_the_writer() -> None:
    # The relay writes straight to a member's socket while nothing is queued. When the
    # socket takes only part of a frame, the rest is queued and marked as the mailbox's
    # tail: the sender task writes it even when the member is closed meanwhile, before
    # the close frame (else the client would read the close frame as the frame's rest).
    import socket

    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ours.setblocking(False)
    try:
        mailbox = Mailbox(1 << 20)
        mailbox.fd = ours.fileno()
        frame = bytes((0x82, 126)) + (60_000).to_bytes(2, "big") + b"x" * 60_000
        assert mailbox.offer(frame) == HELD
        mailbox.flush()
        assert mailbox.tail is not None and 0 < len(mailbox.tail) < len(frame)
        batch, _size = await mailbox.take(1 << 20)
        assert batch[0] is mailbox.tail
    finally:
        ours.close()
        theirs.close()


async def test_what_a_joining_member_missed_is_outside_the_bound_and_goes_out_first() -> None:
    # A recovery larger than twice the bound once made the next event close a member
    # that was reading it as fast as it could with 4001 ("does not read").
    mailbox = Mailbox(1024)
    missed = [bytes([0x81, 100]) + bytes([48 + n % 10]) * 100 for n in range(50)]
    for frame in missed:
        mailbox.offer_catch_up(frame)
    assert mailbox.queued == 0 and mailbox.catch_up == 50 * (102 + 64)
    assert mailbox.offer_control(b"event")  # (an event for the recovering member)
    assert mailbox.offer(b"live") != FULL  # (live traffic: within the bound)
    frames, size = await mailbox.take(1 << 20)
    assert frames == [*missed, b"event", b"live"]  # in order: what it missed first
    mailbox.written(size, len(frames))
    assert (mailbox.queued, mailbox.catch_up) == (0, 0)


async def test_a_live_frame_is_never_written_ahead_of_what_a_joining_member_missed() -> None:
    mailbox = Mailbox(1024)
    mailbox.fd = 99  # (a direct write would go to this descriptor: it must not happen)
    mailbox.offer_catch_up(b"welcome")
    assert mailbox.offer(b"live") != HELD
    frames, _ = await mailbox.take(1 << 20)
    assert frames == [b"welcome", b"live"]
