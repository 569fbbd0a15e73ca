"""One binary message of any size through the client, streamed both ways: ``send_stream``
and ``BinaryStream`` handlers, over a real relay and real sockets.

The 1 GiB transfer between processes, with both clients' memory measured, is in
``test_stream_processes.py``; the same against asyncio ``websockets`` clients, and 4 GiB,
in ``benchmarks/stream_transfer.py``.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trustme

import trio_wsproxy
from trio_wsproxy import (
    BadMessage,
    BadMessageKind,
    BinaryStream,
    Client,
    ClientConfig,
    Relay,
    RelayConfig,
    StreamInterrupted,
    open_client,
    open_relay,
)
from trio_wsproxy.testing import wait_for_member

GROUP = "streams"
KiB = 1024
MiB = 1024 * KiB
PLAIN = ClientConfig(offer_v1=False)


@trio_wsproxy.message_type("Streams.FileOffer")
@attrs.frozen
class FileOffer:
    name: str
    size: int


@trio_wsproxy.message_type("Streams.Note")
@attrs.frozen
class Note:
    text: str


def pattern(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that differ from one offset to the next (a shifted or repeated
    piece would show)."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def collect(stream: BinaryStream) -> bytes:
    return b"".join([piece async for piece in stream])


StreamHandler = Callable[[BinaryStream], Awaitable[None]]


def collecting() -> tuple[StreamHandler, trio.MemoryReceiveChannel[bytes]]:
    """A stream handler that reads each stream whole, and the channel it hands them to."""
    send, receive = trio.open_memory_channel[bytes](1)

    async def handler(stream: BinaryStream) -> None:
        await send.send(await collect(stream))

    return handler, receive


@asynccontextmanager
async def joined(
    relay: Relay, *ids: str | None, config: ClientConfig | None = None
) -> AsyncIterator[tuple[Client, ...]]:
    """A client in the group per id (None: an id of its own), once the relay has them all."""
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                open_client(relay.url, group=GROUP, id=id, config=config)
            )
            for id in ids
        ]
        await relay.wait_members(len(ids), GROUP)
        yield tuple(clients)


@asynccontextmanager
async def pair(relay: Relay, handler: StreamHandler) -> AsyncIterator[Client]:
    """A sender, and a receiver whose :class:`BinaryStream` handler is ``handler``, both in
    the group; yields the sender."""
    async with joined(relay, None, None) as (sender, receiver):
        receiver.on(BinaryStream, handler)
        yield sender


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    async with open_relay(RelayConfig(port=0)) as relay:
        yield relay


# -- sizes, sources, and who gets what ----------------------------------------------------

# Frame-length boundaries (125/126, 65535/65536), the relay's and the client's read sizes
# (64 KiB, 256 KiB), and the sender's piece size (1 MiB) and a few pieces of it.
SIZES = [
    0,
    1,
    125,
    126,
    127,
    65_535,
    65_536,
    65_537,
    256 * KiB + 1,
    MiB - 1,
    MiB,
    MiB + 1,
    3 * MiB + 7,
]


@pytest.mark.parametrize("v1", [True, False], ids=["v1", "plain"])
async def test_every_size_arrives_intact_as_a_stream_and_assembled(relay: Relay, v1: bool) -> None:
    config = ClientConfig() if v1 else PLAIN
    streamed: trio.MemorySendChannel[tuple[bytes, str | None]]
    streamed, streamed_out = trio.open_memory_channel(0)
    assembled, assembled_out = trio.open_memory_channel[bytes](0)

    async def stream_handler(stream: BinaryStream) -> None:
        await streamed.send((await collect(stream), stream.sender))

    async with joined(relay, "sender", "streaming", "assembling", config=config) as (
        sender,
        streaming,
        assembling,
    ):
        streaming.on(BinaryStream, stream_handler)
        assembling.on(bytes, assembled.send)
        for size in SIZES:
            data = pattern(size, seed=size)
            with trio.fail_after(10):
                sent = await sender.send_stream(pieces(data, MiB))
                got, from_ = await streamed_out.receive()
                whole = await assembled_out.receive()
            assert sent == size
            assert len(got) == size and got == data, size
            assert whole == data, size
            assert from_ == ("sender" if v1 else None)


async def test_a_path_a_file_and_async_sources(relay: Relay, tmp_path: Path) -> None:
    data = pattern(5 * MiB + 3)
    path = tmp_path / "source.bin"
    path.write_bytes(data)

    async def async_pieces() -> AsyncIterator[bytes]:
        for piece in pieces(data, 300 * KiB):
            await trio.lowlevel.checkpoint()
            yield piece

    handler, collected = collecting()

    async with pair(relay, handler) as sender:
        async with await trio.open_file(path, "rb") as async_file:
            with path.open("rb") as sync_file:
                for source in (path, str(path), sync_file, async_file, async_pieces()):
                    with trio.fail_after(10):
                        assert await sender.send_stream(source, piece_size=256 * KiB) == len(data)
                        assert await collected.receive() == data, source


@pytest.mark.parametrize(
    "source, error",
    [(b"bytes", TypeError), ("/no/such/file", FileNotFoundError), (42, TypeError)],
)
async def test_a_bad_source_raises_before_anything_is_sent(
    relay: Relay, source: Any, error: type[Exception]
) -> None:
    async with open_client(relay.url, group=GROUP) as sender:
        with pytest.raises(error):
            await sender.send_stream(source)
        assert sender.stats.messages_sent == 0
        assert sender.connected  # the connection is as good as before
        await sender.send(Note("still here"))


async def test_empty_pieces_of_an_iterable_do_not_end_the_message(relay: Relay) -> None:
    handler, collected = collecting()

    async with pair(relay, handler) as sender:
        assert await sender.send_stream([b"", b"a", b"", bytearray(b"b"), b""]) == 2
        with trio.fail_after(5):
            assert await collected.receive() == b"ab"


async def test_bad_arguments_are_refused_before_anything_is_sent(relay: Relay) -> None:
    async with open_client(relay.url, group=GROUP) as sender:
        with pytest.raises(ValueError, match="piece_size must be positive"):
            await sender.send_stream([b"x"], piece_size=0)
        with pytest.raises(TypeError, match="announced by a typed message, not bytes"):
            await sender.send_stream([b"x"], announce=b"offer")
        with pytest.raises(ValueError, match="a member id is not empty"):
            await sender.send_stream([b"x"], to="")
        assert sender.stats.messages_sent == 0


async def test_a_source_of_non_bytes_fails_before_the_message_starts(relay: Relay) -> None:
    async with open_client(relay.url, group=GROUP) as sender:
        with pytest.raises(TypeError, match="pieces are bytes, got str"):
            await sender.send_stream(iter(["text"]))  # type: ignore[list-item]


async def test_with_only_bytes_handlers_a_message_over_max_message_size_closes_1009(
    relay: Relay,
) -> None:
    async with open_client(relay.url, group=GROUP) as sender:
        with pytest.raises(trio_wsproxy.ClosedByRelay) as closed:
            async with open_client(
                relay.url, group=GROUP, config=ClientConfig(max_message_size=MiB)
            ) as receiver:
                receiver.on(bytes, lambda data: None)
                await relay.wait_members(2, GROUP)
                await sender.send_stream(pieces(pattern(3 * MiB), 256 * KiB))
                await trio.sleep_forever()
        assert closed.value.code == 1009


async def test_a_stream_handler_takes_any_size_whatever_max_message_size(relay: Relay) -> None:
    got = trio.open_memory_channel[int](1)

    async def handler(stream: BinaryStream) -> None:
        await got[0].send(len(await collect(stream)))

    async with (
        open_client(relay.url, group=GROUP) as sender,
        open_client(relay.url, group=GROUP, config=ClientConfig(max_message_size=KiB)) as receiver,
    ):
        receiver.on(BinaryStream, handler)
        await relay.wait_members(2, GROUP)
        await sender.send_stream(pieces(pattern(2 * MiB), 64 * KiB))
        with trio.fail_after(10):
            assert await got[1].receive() == 2 * MiB


async def test_a_small_stream_knows_its_size_and_read_all_caps_it(relay: Relay) -> None:
    got = trio.open_memory_channel[tuple[int | None, bytes | str]](1)

    async def handler(stream: BinaryStream) -> None:
        size = stream.size
        try:
            await got[0].send((size, await stream.read_all(limit=100)))
        except ValueError as error:
            await got[0].send((size, str(error)))

    async with pair(relay, handler) as sender:
        await sender.send(b"small")
        with trio.fail_after(5):
            assert await got[1].receive() == (5, b"small")
        await sender.send(b"x" * 101)
        with trio.fail_after(5):
            assert await got[1].receive() == (101, "the message is larger than 100 bytes")


async def test_a_subscription_gets_streams_and_a_direct_stream_says_so(relay: Relay) -> None:
    async with joined(relay, "a", "b", "c") as (a, b, c):
        seen_by_c = trio.open_memory_channel[bytes](4)
        c.on(bytes, seen_by_c[0].send)
        await wait_for_member(a, "b")
        async with b.subscribe(BinaryStream) as streams:
            await a.send_stream([b"to ", b"b only"], to="b")
            await a.send_stream([b"to ", b"all"])
            with trio.fail_after(5):
                first = await streams.receive()
                assert (first.sender, first.direct) == ("a", True)
                assert await collect(first.value) == b"to b only"
                second = await streams.receive()
                assert (second.sender, second.direct) == ("a", False)
                assert await collect(second.value) == b"to all"
                # c has only a bytes handler: it gets the group's message assembled.
                assert await seen_by_c[1].receive() == b"to all"


async def test_a_handler_that_stops_reading_leaves_the_rest_discarded(relay: Relay) -> None:
    firsts = trio.open_memory_channel[bytes](4)

    async def first_piece_only(stream: BinaryStream) -> None:
        await firsts[0].send(await stream.read())

    async with joined(relay, None, None) as (sender, receiver):
        receiver.on(BinaryStream, first_piece_only)
        big = pattern(20 * MiB, seed=1)
        with trio.fail_after(20):
            await sender.send_stream(pieces(big, MiB))
            await sender.send_stream([b"next"])
            assert big.startswith(await firsts[1].receive())
            assert await firsts[1].receive() == b"next"


# -- flow control ------------------------------------------------------------------------


async def test_a_slow_consumer_slows_the_sender_instead_of_buffering(relay: Relay) -> None:
    """The sender reads its source no further ahead of the slow consumer than the
    buffers on the way hold (the relay's mailbox, the sockets): never the whole message."""
    total = 96 * MiB
    read = 0
    consumed = 0
    lead = 0
    done = trio.Event()

    def source() -> Iterator[bytes]:
        nonlocal read, lead
        for piece in pieces(pattern(total, seed=2), 256 * KiB):
            read += len(piece)
            lead = max(lead, read - consumed)
            yield piece

    async def slow(stream: BinaryStream) -> None:
        nonlocal consumed
        async for piece in stream:
            consumed += len(piece)
            await trio.sleep(0.002)  # the consumer's own pace: 2 ms a piece
        done.set()

    async with joined(relay, None, None) as (sender, receiver):
        receiver.on(BinaryStream, slow)
        with trio.fail_after(60):
            await sender.send_stream(source())
            await done.wait()
    assert consumed == total
    assert lead < 40 * MiB, f"the sender ran {lead / MiB:.0f} MiB ahead of the consumer"


async def test_small_messages_from_others_wait_for_the_stream_in_order(relay: Relay) -> None:
    """While one member's message streams, the relay holds the group's other messages
    back: they arrive after it, in the order sent, none inside it."""
    started = trio.Event()
    go_on = trio.Event()
    events: list[str] = []
    all_in = trio.Event()

    async def paused_source() -> AsyncIterator[bytes]:
        yield pattern(MiB)
        await go_on.wait()
        yield pattern(MiB, seed=3)

    async def on_stream(stream: BinaryStream) -> None:
        events.append("stream start")
        started.set()  # the relay is forwarding it: the floor is the streamer's
        data = await collect(stream)
        events.append(f"stream end {len(data)}")

    def on_note(note: Note) -> None:
        events.append(note.text)
        if note.text == "note 9":
            all_in.set()

    async with joined(relay, "streamer", "chatter", "receiver") as (streamer, chatter, receiver):
        receiver.on(BinaryStream, on_stream)
        receiver.on(Note, on_note)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(streamer.send_stream, paused_source())
                await started.wait()
                for index in range(10):
                    await chatter.send(Note(f"note {index}"))
                go_on.set()
            await all_in.wait()
    assert events == [
        "stream start",
        f"stream end {2 * MiB}",
        *[f"note {index}" for index in range(10)],
    ]


async def test_other_sends_of_the_sender_wait_for_its_stream(relay: Relay) -> None:
    got: list[object] = []
    all_in = trio.Event()

    async def on_stream(stream: BinaryStream) -> None:
        got.append(len(await collect(stream)))

    def on_note(note: Note) -> None:
        got.append(note.text)
        all_in.set()

    gate = trio.Event()

    async def gated() -> AsyncIterator[bytes]:
        yield b"x" * MiB
        await gate.wait()
        yield b"y" * MiB

    async with joined(relay, None, None) as (sender, receiver):
        receiver.on(BinaryStream, on_stream)
        receiver.on(Note, on_note)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender.send_stream, gated())
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(sender.send, Note("after"))
                await trio.testing.wait_all_tasks_blocked()
                gate.set()
            await all_in.wait()
    assert got == [2 * MiB, "after"]


# -- interruptions -----------------------------------------------------------------------


async def test_a_sender_that_drops_mid_stream_leaves_an_interrupted_stream(relay: Relay) -> None:
    """The receiver reads what came, then gets StreamInterrupted — never a short message
    that looks whole; a bytes handler gets nothing at all."""
    outcome = trio.open_memory_channel[tuple[int, StreamInterrupted | None]](1)
    assembled: list[bytes] = []
    gate = trio.Event()

    async def handler(stream: BinaryStream) -> None:
        received = 0
        try:
            async for piece in stream:
                received += len(piece)
                gate.set()
        except StreamInterrupted as error:
            await outcome[0].send((received, error))
        else:
            await outcome[0].send((received, None))

    async def forever() -> AsyncIterator[bytes]:
        while True:
            # The relay forwards a long message in pieces of 1 MiB: the first one goes
            # on once it has that much.
            yield b"z" * MiB
            await gate.wait()

    async with joined(relay, None, None) as (streaming, assembling):
        streaming.on(BinaryStream, handler)
        assembling.on(bytes, assembled.append)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:

                async def sender() -> None:
                    async with open_client(relay.url, group=GROUP) as doomed:
                        await doomed.send_stream(forever())

                nursery.start_soon(sender)
                await gate.wait()
                nursery.cancel_scope.cancel()  # the sender goes, mid-message
            received, error = await outcome[1].receive()
    assert error is not None and error.code == 4002, error
    assert 0 < received == error.transferred
    assert "cut off" in str(error)
    assert assembled == []


async def test_cancelling_send_stream_drops_the_connection_and_the_client_goes_on(
    relay: Relay,
) -> None:
    interrupted = trio.open_memory_channel[StreamInterrupted](1)
    whole = trio.open_memory_channel[bytes](1)
    reconnected = trio.Event()

    async def handler(stream: BinaryStream) -> None:
        try:
            await whole[0].send(await collect(stream))
        except StreamInterrupted as error:
            await interrupted[0].send(error)

    first_sent = trio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield b"a" * MiB
        first_sent.set()
        await trio.sleep_forever()
        yield b""  # pragma: no cover

    def on_connect(client: trio_wsproxy.Client) -> None:
        if client.stats.connects > 1:
            reconnected.set()

    async with (
        open_client(relay.url, group=GROUP, on_connect=on_connect) as sender,
        open_client(relay.url, group=GROUP) as receiver,
    ):
        receiver.on(BinaryStream, handler)
        await relay.wait_members(2, GROUP)
        with trio.fail_after(10):
            with trio.move_on_after(30) as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(sender.send_stream, stalls())
                    await first_sent.wait()
                    scope.cancel()
            error = await interrupted[1].receive()
            assert error.code == 4002
            await reconnected.wait()
            await relay.wait_members(2, GROUP)
            await sender.send_stream([b"after ", b"the cancel"])
            assert await whole[1].receive() == b"after the cancel"


async def test_a_source_that_raises_mid_message_drops_the_connection(relay: Relay) -> None:
    class Broken(Exception):
        pass

    def source() -> Iterator[bytes]:
        yield b"a" * MiB
        yield b"b" * MiB
        raise Broken("disk gone")

    interrupted = trio.open_memory_channel[int](1)

    async def handler(stream: BinaryStream) -> None:
        try:
            await collect(stream)
        except StreamInterrupted as error:
            await interrupted[0].send(error.code)

    async with pair(relay, handler) as sender:
        with pytest.raises(Broken):
            await sender.send_stream(source())
        with trio.fail_after(10):
            assert await interrupted[1].receive() == 4002
            # The client reconnects and sends on.
            await sender.send(Note("on"))


async def test_a_receiver_that_leaves_mid_stream_does_not_disturb_the_others(
    relay: Relay,
) -> None:
    data = pattern(16 * MiB, seed=4)
    halfway = trio.Event()
    got = trio.open_memory_channel[bytes](1)

    async def leaver(stream: BinaryStream) -> None:
        await stream.read()
        halfway.set()
        await trio.sleep_forever()  # until its client goes

    async def stayer(stream: BinaryStream) -> None:
        await got[0].send(await collect(stream))

    async with (
        open_client(relay.url, group=GROUP) as sender,
        open_client(relay.url, group=GROUP) as staying,
    ):
        staying.on(BinaryStream, stayer)
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:

                async def leaving() -> None:
                    # Its handler holds the stream unread, so its close answer never
                    # comes in: leaving takes its close_timeout (5 s by default).
                    config = ClientConfig(close_timeout=0.5)
                    async with open_client(relay.url, group=GROUP, config=config) as client:
                        client.on(BinaryStream, leaver)
                        await halfway.wait()

                nursery.start_soon(leaving)
                await relay.wait_members(3, GROUP)
                assert await sender.send_stream(pieces(data, MiB)) == len(data)
            assert await got[1].receive() == data


async def test_a_consumer_cancelled_mid_stream_skips_the_rest_and_reads_on(relay: Relay) -> None:
    results = trio.open_memory_channel[object](1)
    scopes = trio.open_memory_channel[trio.CancelScope](1)
    gate = trio.Event()

    async def handler(stream: BinaryStream) -> None:
        with trio.CancelScope() as scope:
            await scopes[0].send(scope)
            await results[0].send(await collect(stream))
            return
        await results[0].send(f"cancelled after {stream.received} bytes")

    async def gated() -> AsyncIterator[bytes]:
        yield b"a" * MiB
        await gate.wait()
        yield b"b" * MiB

    async with pair(relay, handler) as sender:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender.send_stream, gated())
                (await scopes[1].receive()).cancel()  # while it waits for the rest
                outcome = await results[1].receive()
                assert isinstance(outcome, str) and outcome.startswith("cancelled after")
                gate.set()
            await sender.send_stream([b"the next ", b"one"])
            await scopes[1].receive()
            # The next message is read from its start: the cancelled one's rest was dropped.
            assert await results[1].receive() == b"the next one"


# -- announcements -----------------------------------------------------------------------


@pytest.mark.parametrize("v1", [True, False], ids=["v1", "plain"])
async def test_an_announced_stream_comes_with_its_announcement(relay: Relay, v1: bool) -> None:
    config = ClientConfig() if v1 else PLAIN
    got = trio.open_memory_channel[tuple[FileOffer, bytes, str | None]](1)
    plain_notes: list[FileOffer] = []

    async def on_file(offer: FileOffer, stream: BinaryStream) -> None:
        assert stream.announcement is not None and stream.announcement.value == offer
        data = await collect(stream)
        await got[0].send((offer, data, stream.sender))
        await receiver.send(Note(f"got {len(data)}"))

    async with joined(relay, "sender", "receiver", config=config) as (sender, receiver):
        receiver.on_stream(FileOffer, on_file)
        receiver.on(FileOffer, plain_notes.append)  # not called: the announcement is the stream's
        data = pattern(3 * MiB, seed=5)
        async with sender.subscribe(Note) as notes:
            await sender.send_stream(pieces(data, MiB), announce=FileOffer("a.bin", len(data)))
            with trio.fail_after(10):
                offer, received, from_ = await got[1].receive()
                assert (await notes.receive()).value == Note(f"got {len(data)}")
    assert offer == FileOffer("a.bin", len(data))
    assert received == data
    assert from_ == ("sender" if v1 else None)
    assert plain_notes == []


async def test_each_sender_s_stream_goes_with_its_own_announcement(relay: Relay) -> None:
    """Over v1, announcements pair with their sender's stream even when two members
    announce at once."""
    got: dict[str, bytes] = {}
    both = trio.Event()

    async def on_file(offer: FileOffer, stream: BinaryStream) -> None:
        got[offer.name] = await collect(stream)
        assert stream.sender == offer.name
        if len(got) == 2:
            both.set()

    async with joined(relay, "x", "y", "receiver") as (x, y, receiver):
        receiver.on_stream(FileOffer, on_file)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for client, seed in ((x, 6), (y, 7)):
                    nursery.start_soon(
                        lambda c=client, s=seed: c.send_stream(
                            pieces(pattern(2 * MiB, s), 512 * KiB),
                            announce=FileOffer(c.id, 2 * MiB),
                        )
                    )
            await both.wait()
    assert got == {"x": pattern(2 * MiB, 6), "y": pattern(2 * MiB, 7)}


async def test_an_announcement_without_its_stream_is_reported(relay: Relay) -> None:
    bad = trio.open_memory_channel[BadMessage](1)
    streams: list[FileOffer] = []

    async def on_file(offer: FileOffer, stream: BinaryStream) -> None:
        streams.append(offer)

    async with (
        open_client(relay.url, group=GROUP, id="sender") as sender,
        open_client(relay.url, group=GROUP, id="receiver", on_bad_message=bad[0].send) as receiver,
    ):
        receiver.on_stream(FileOffer, on_file)
        receiver.on(Note, lambda note: None)
        await relay.wait_members(2, GROUP)
        # An announcement sent by hand, then something other than a stream.
        await sender.send(FileOffer("lost.bin", 10))
        await sender.send(Note("not a stream"))
        with trio.fail_after(5):
            report = await bad[1].receive()
        assert report.kind is BadMessageKind.MISSING_STREAM
        assert "Streams.FileOffer" in report.reason and "text" in report.reason
        assert '"lost.bin"' in report.text
        # Its sender leaving reports a waiting announcement too.
        async with open_client(relay.url, group=GROUP, id="leaver") as leaver:
            # (Known to be there first: a join and a leave in one presence batch cancel out.)
            await wait_for_member(receiver, "leaver")
            await leaver.send(FileOffer("gone.bin", 1))
        with trio.fail_after(5):
            report = await bad[1].receive()
        assert "left" in report.reason and '"gone.bin"' in report.text
        assert receiver.stats.missing_stream == 2
    assert streams == []


# -- TLS, and two nodes on a backplane -----------------------------------------------------


async def test_a_stream_over_wss(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    data = pattern(24 * MiB + 5, seed=8)
    handler, collected = collecting()

    config = RelayConfig(port=0, certfile=str(certfile), keyfile=str(keyfile))
    async with open_relay(config) as relay:
        assert relay.url.startswith("wss://")
        async with (
            open_client(relay.url, group=GROUP, ssl_context=context) as sender,
            open_client(relay.url, group=GROUP, ssl_context=context) as receiver,
        ):
            receiver.on(BinaryStream, handler)
            await relay.wait_members(2, GROUP)
            with trio.fail_after(30):
                await sender.send_stream(pieces(data, MiB))
                assert await collected.receive() == data


async def test_a_stream_across_two_nodes(redis_url: str, prefix: str) -> None:
    config = RelayConfig(host="127.0.0.1", port=0, backplane=redis_url, backplane_prefix=prefix)
    data = pattern(24 * MiB + 9, seed=9)
    got = trio.open_memory_channel[tuple[bytes, str | None]](1)

    async def handler(offer: FileOffer, stream: BinaryStream) -> None:
        await got[0].send((await collect(stream), stream.sender))

    async with trio.open_nursery() as nursery:
        a = await nursery.start(trio_wsproxy.serve_relay, config)
        b = await nursery.start(trio_wsproxy.serve_relay, config)
        async with (
            open_client(a.url, group=GROUP, id="on-a") as sender,
            open_client(b.url, group=GROUP, id="on-b") as receiver,
        ):
            receiver.on_stream(FileOffer, handler)
            await wait_for_member(sender, "on-b")
            with trio.fail_after(30):
                await sender.send_stream(pieces(data, MiB), announce=FileOffer("x", len(data)))
                assert await got[1].receive() == (data, "on-a")
        nursery.cancel_scope.cancel()
