"""permessage-deflate (RFC 7692) over real sockets: negotiation, compressed once per
variant, inflating what members send within the limit, streams with flat memory.

The clients here are raw (wsraw.py): the test reads each frame's RSV1 bit and inflates
the relay's compressed frames itself, with zlib, as a browser would."""

from __future__ import annotations

import os
import zlib

import pytest
import trio

from relayproc import peak_rss_mib, start_relay
from trio_wsproxy import RelayConfig, open_relay
from trio_wsproxy.client.config import ClientConfig
from trio_wsproxy.client.connection import open_websocket
from trio_wsproxy.protocol import deflate
from trio_wsproxy.protocol.deflate import STATS, negotiate
from trio_wsproxy.protocol.encoding import PLAIN
from trio_wsproxy.protocol.message import StreamHead
from trio_wsproxy.relay.relay import Relay
from wsraw import OP_BINARY, OP_CONT, OP_TEXT, RawClient, mask_frame, read_frame

OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
TAIL = b"\x00\x00\xff\xff"
#: The relay's answer: no context takeover either way.
ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


def compress(data: bytes, bits: int = 15) -> bytes:
    """``data`` compressed as a client compresses a message (RFC 7692 §7.2.1)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -bits)
    body = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert body.endswith(TAIL)
    return body[:-4]


def compressed_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame with RSV1 set: ``payload`` must already be compressed."""
    framed = bytearray(mask_frame(opcode, payload, fin))
    framed[0] |= 0x40
    return bytes(framed)


async def connect(
    port: int, member: str, extra: str = OFFER, group: str = "g"
) -> tuple[RawClient, dict[str, str]]:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    status, headers, body = await client.handshake(f"/ws?id={member}&groupName={group}", extra)
    assert status == 101, (status, body)
    return client, headers


async def frame(client: RawClient) -> tuple[int, bytes]:
    """The next server frame: its first byte (FIN, RSV1, opcode) and payload."""
    with trio.fail_after(10):
        b0, b1, payload = await read_frame(client.buffer, client._need, masked=False)
    assert not b1 & 0x80
    return b0, payload


async def message(client: RawClient, bits: int = 15) -> tuple[int, bytes, bool]:
    """The next data message, inflated if it came compressed: (opcode, data, compressed)."""
    parts: list[bytes] = []
    b0, payload = await frame(client)
    while b0 & 0x0F in (0x9, 0xA):
        b0, payload = await frame(client)
    opcode, compressed = b0 & 0x0F, bool(b0 & 0x40)
    inflater = zlib.decompressobj(-bits)
    while True:
        parts.append(inflater.decompress(payload) if compressed else payload)
        if b0 & 0x80:
            break
        b0, payload = await frame(client)
        assert b0 & 0x0F == OP_CONT and not b0 & 0x40  # RSV1 is the first frame's only
    if compressed:
        parts.append(inflater.decompress(TAIL))
    return opcode, b"".join(parts), compressed


async def members(relay: Relay, count: int, group: str = "g") -> None:
    with trio.fail_after(5):
        await relay.wait_members(count, group)


# -- negotiation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offer", "answer"),
    [
        (
            "permessage-deflate",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        (
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        (
            "permessage-deflate; client_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        (
            "permessage-deflate; server_max_window_bits=10",
            ANSWER + "; server_max_window_bits=10",
        ),
        (
            'permessage-deflate; server_max_window_bits="12"',
            ANSWER + "; server_max_window_bits=12",
        ),
        # Declined: an 8-bit server window (zlib cannot), a value out of range, a value
        # where none belongs, an unknown or repeated parameter; the next offer is tried.
        ("permessage-deflate; server_max_window_bits=8", None),
        ("permessage-deflate; server_max_window_bits", None),
        ("permessage-deflate; client_max_window_bits=16", None),
        ("permessage-deflate; server_no_context_takeover=1", None),
        ("permessage-deflate; mystery", None),
        ("permessage-deflate; client_max_window_bits; client_max_window_bits", None),
        ("x-webkit-deflate-frame", None),
        (
            "permessage-deflate; server_max_window_bits=8, permessage-deflate",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        (
            "foo, permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
    ],
)
def test_negotiation_answers_each_offer(offer: str, answer: str | None) -> None:
    agreement = negotiate(offer)
    assert (agreement.response if agreement else None) == answer


async def test_the_101_names_the_extension_only_when_compression_is_on() -> None:
    async with open_relay(RelayConfig(port=0, close_timeout=0.2, compression=64)) as relay:
        _, headers = await connect(relay.port, "a")
        assert headers["sec-websocket-extensions"] == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        )
        _, headers = await connect(relay.port, "b", extra="")
        assert "sec-websocket-extensions" not in headers
        _, headers = await connect(
            relay.port, "c", "Sec-WebSocket-Extensions: permessage-deflate; mystery\r\n"
        )
        assert "sec-websocket-extensions" not in headers
    async with open_relay(RelayConfig(port=0, close_timeout=0.2, compression=None)) as relay:
        _, headers = await connect(relay.port, "a")
        assert "sec-websocket-extensions" not in headers


# -- compressed once per variant ------------------------------------------------------


async def test_mixed_group_gets_the_same_messages_compressed_once_per_variant() -> None:
    async with open_relay(RelayConfig(port=0, close_timeout=0.2, compression=32)) as relay:
        sender, _ = await connect(relay.port, "sender", extra="")
        plain, _ = await connect(relay.port, "plain", extra="")
        squeezed = [(await connect(relay.port, f"z{i}"))[0] for i in range(3)]
        small, headers = await connect(
            relay.port, "small", OFFER.replace("client_max_window_bits", "server_max_window_bits=9")
        )
        assert "server_max_window_bits=9" in headers["sec-websocket-extensions"]
        await members(relay, 6)
        texts = [f'{{"text": "hello hello hello hello number {i}"}}'.encode() for i in range(5)]
        before = STATS.compressed
        for text in texts:
            await sender.send_frame(OP_TEXT, text)
        await sender.send_frame(OP_TEXT, b"tiny")  # under 32 bytes: never compressed
        for text in texts:
            assert await message(plain) == (OP_TEXT, text, False)
            for client in squeezed:
                assert await message(client) == (OP_TEXT, text, True)
            assert await message(small, bits=9) == (OP_TEXT, text, True)
        for client in [plain, *squeezed, small]:
            assert await message(client) == (OP_TEXT, b"tiny", False)
        # Two compressed variants (15-bit and 9-bit windows): two calls per message,
        # however many members each has.
        assert STATS.compressed - before == 2 * len(texts)


async def test_what_does_not_shrink_goes_out_plain() -> None:
    async with open_relay(RelayConfig(port=0, close_timeout=0.2, compression=32)) as relay:
        media, _ = await connect(relay.port, "media", extra="")
        other, _ = await connect(relay.port, "other", extra="")
        receiver, _ = await connect(relay.port, "receiver")
        await members(relay, 3)
        before = STATS.incompressible

        async def send(sender: RawClient, data: bytes, text: bool = False) -> None:
            for start in range(0, len(data), 1 << 20):  # (over 1 MiB: a stream)
                piece = data[start : start + (1 << 20)]
                opcode = (OP_TEXT if text else OP_BINARY) if start == 0 else OP_CONT
                await sender.send_frame(opcode, piece, start + len(piece) == len(data))
            opcode = OP_TEXT if text else OP_BINARY
            assert await message(receiver) == (opcode, data, False)

        await send(media, os.urandom(1000))  # compressed, found larger: sent plain
        assert STATS.incompressible - before == 1
        # The same sender's next messages go out plain untried, even compressible ones.
        await send(media, os.urandom(8000))
        await send(media, b"compressible " * 100, text=True)
        assert STATS.incompressible - before == 1
        await send(other, os.urandom(8000))  # probed on its first bytes: sent plain
        assert STATS.incompressible - before == 2
        await send(other, os.urandom(3 << 20))  # a stream, probed on its first piece
        assert STATS.incompressible - before == 3


async def test_v1_members_get_compressed_headers_and_events() -> None:
    async with open_relay(RelayConfig(port=0, close_timeout=0.2, compression=16)) as relay:
        v1 = "Sec-WebSocket-Protocol: wsproxy.v1\r\n"
        watcher, headers = await connect(relay.port, "watcher", OFFER + v1)
        assert headers["sec-websocket-protocol"] == "wsproxy.v1"
        opcode, welcome, _ = await message(watcher)
        assert opcode == OP_TEXT and b"welcome" in welcome
        sender, _ = await connect(relay.port, "sender-with-a-long-name", extra="")
        opcode, presence, compressed = await message(watcher)
        assert b"sender-with-a-long-name" in presence and compressed
        await sender.send_frame(OP_TEXT, b"x" * 100)
        opcode, data, compressed = await message(watcher)
        assert compressed and data.endswith(b"\n" + b"x" * 100)
        assert b"sender-with-a-long-name" in data


async def test_a_streamed_message_is_compressed_piece_by_piece_for_all() -> None:
    async with open_relay(RelayConfig(port=0, close_timeout=0.2, compression=64)) as relay:
        sender, _ = await connect(relay.port, "sender", extra="")
        receivers = [(await connect(relay.port, f"r{i}"))[0] for i in range(2)]
        plain, _ = await connect(relay.port, "plain", extra="")
        await members(relay, 4)
        piece = (b"the same words again and again " * 40000)[: 1 << 20]
        count = 3
        before = STATS.compressed

        async def send() -> None:
            for i in range(count):
                await sender.send_frame(OP_BINARY if i == 0 else OP_CONT, piece, i == count - 1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            for client in receivers:
                opcode, data, compressed = await message(client)
                assert (opcode, compressed) == (OP_BINARY, True)
                assert data == piece * count
            assert await message(plain) == (OP_BINARY, piece * count, False)
        assert STATS.compressed - before == 1


# -- inflating what members send ------------------------------------------------------


def test_a_stream_keeps_its_compression_with_its_head_until_its_last_piece() -> None:
    # (Each compressed encoding keeps its stream's compressor in the head's framing; the
    # last piece takes it away, and a stream cut off unfinished leaves it only in its
    # head, which goes with it.)
    encoding = deflate.deflated(PLAIN, threshold=0)
    head = StreamHead("a", True)
    pieces = [b"to be or not to be " * 200] * 3
    framed = [
        encoding.piece(head, piece, index == 0, index == len(pieces) - 1)
        for index, piece in enumerate(pieces)
    ]
    assert head.framing == {}
    inflater = zlib.decompressobj(-15)
    body = b"".join(read_frame_payload(each) for each in framed)
    assert inflater.decompress(body + b"\x00\x00\xff\xff") == b"".join(pieces)
    cut_off = StreamHead("b", True)
    encoding.piece(cut_off, pieces[0], True, False)
    assert list(cut_off.framing) == [encoding]
    with pytest.raises(RuntimeError, match="never started"):
        encoding.piece(StreamHead("c", True), pieces[0], False, True)


def read_frame_payload(frame: bytes) -> bytes:
    """The payload of an unmasked server frame."""
    length = frame[1] & 0x7F
    start = 2
    if length == 126:
        length, start = int.from_bytes(frame[2:4], "big"), 4
    elif length == 127:
        length, start = int.from_bytes(frame[2:10], "big"), 10
    return frame[start : start + length]


async def test_compressed_messages_are_inflated_for_every_member() -> None:
    async with open_relay(RelayConfig(port=0, close_timeout=0.2, compression=1 << 20)) as relay:
        sender, _ = await connect(relay.port, "sender")
        plain, _ = await connect(relay.port, "plain", extra="")
        await members(relay, 2)
        text = "héllo, compressed world ".encode() * 20
        await sender.send(compressed_frame(OP_TEXT, compress(text)))
        assert await message(plain) == (OP_TEXT, text, False)
        # In fragments.
        body = compress(text)
        await sender.send(compressed_frame(OP_TEXT, body[:5], fin=False))
        await sender.send(mask_frame(OP_CONT, body[5:]))
        assert await message(plain) == (OP_TEXT, text, False)
        # One compressor for all, each message ended with a full flush (no message
        # refers to another, as the relay asks: client_no_context_takeover).
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        for _ in range(3):
            body = compressor.compress(b"again and again") + compressor.flush(zlib.Z_FULL_FLUSH)
            await sender.send(compressed_frame(OP_BINARY, body[:-4]))
            assert await message(plain) == (OP_BINARY, b"again and again", False)
        # One that ends its DEFLATE stream (BFINAL), as RFC 7692 §7.2.3.3 allows.
        await sender.send(compressed_frame(OP_BINARY, zlib.compress(b"final", wbits=-15)))
        assert await message(plain) == (OP_BINARY, b"final", False)


def _with_context(data: bytes, count: int) -> list[bytes]:
    """``count`` messages of ``data`` compressed with context takeover."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return [
        (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4] for _ in range(count)
    ]


@pytest.mark.parametrize(
    ("frames", "code", "reason"),
    [
        ([compressed_frame(OP_BINARY, b"\xff\xff\xff\xff")], 1007, "malformed compressed data"),
        (
            [compressed_frame(OP_TEXT, compress(b"\xff\xfe not UTF-8"))],
            1007,
            "not valid UTF-8",
        ),
        (
            [compressed_frame(OP_BINARY, zlib.compress(b"end", wbits=-15) + b"\x00")],
            1007,
            "after the end",
        ),
        (
            # A message referring to the one before it: the relay asked for none.
            [compressed_frame(OP_BINARY, each) for each in _with_context(b"said again", 2)],
            1007,
            "invalid distance too far back",
        ),
        (
            [mask_frame(OP_BINARY, b"a", fin=False), compressed_frame(OP_CONT, b"b")],
            1002,
            "reserved bits",
        ),
    ],
)
async def test_bad_compressed_data_is_refused_with_a_reason(
    frames: list[bytes], code: int, reason: str
) -> None:
    async with open_relay(RelayConfig(port=0, close_timeout=0.2, compression=64)) as relay:
        client, _ = await connect(relay.port, "a")
        for each in frames:
            await client.send(each)
        with trio.fail_after(5):
            got, why = await client.expect_close()
        assert got == code and reason in why


async def test_rsv1_without_the_extension_is_a_protocol_error() -> None:
    async with open_relay(RelayConfig(port=0, close_timeout=0.2, compression=64)) as relay:
        client, _ = await connect(relay.port, "a", extra="")
        await client.send(compressed_frame(OP_TEXT, compress(b"hello")))
        with trio.fail_after(5):
            assert (await client.expect_close())[0] == 1002


async def test_the_limit_counts_inflated_bytes() -> None:
    limit = 100_000
    async with open_relay(
        RelayConfig(port=0, close_timeout=0.2, compression=64, max_message_size=limit)
    ) as relay:
        sender, _ = await connect(relay.port, "sender")
        plain, _ = await connect(relay.port, "plain", extra="")
        await members(relay, 2)
        await sender.send(compressed_frame(OP_BINARY, compress(b"a" * limit)))
        assert await message(plain) == (OP_BINARY, b"a" * limit, False)
        await sender.send(compressed_frame(OP_BINARY, compress(b"a" * (limit + 1))))
        with trio.fail_after(5):
            code, reason = await sender.expect_close()
        assert code == 1009 and "inflated" in reason


def _bomb(gib: int) -> bytes:
    """A compressed message of ``gib`` GiB of zeros (about 1 MiB of DEFLATE per GiB).

    Compressed once per 16 MiB, not 64 times: after the first 16 MiB (the window all
    zeros), the DEFLATE of the next 16 MiB, flushed to a byte boundary, inflates to 16 MiB
    of zeros wherever it follows zeros, so that it is repeated (5 s saved per GiB)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(1 << 24)
    first = compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
    again = compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return (first + again * (gib * 64 - 1))[:-4]


async def test_a_decompression_bomb_costs_no_more_than_the_limit() -> None:
    process, _, port = await start_relay("--compression", "64", "--max-message-size", "1MiB")
    try:
        baseline = peak_rss_mib(process.pid)
        client, _ = await connect(port, "bomber")
        bomb = compressed_frame(OP_BINARY, _bomb(1))  # 1 GiB inflated, 1 MiB sent
        closed: list[tuple[int, str]] = []

        async def send() -> None:
            # In pieces, until the relay's close comes: it refuses the message long
            # before its end, and what follows is never read.
            for start in range(0, len(bomb), 16384):
                if closed:
                    return
                try:
                    await client.send(bomb[start : start + 16384])
                except trio.BrokenResourceError:
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            with trio.fail_after(30):
                closed.append(await client.expect_close())
        code, reason = closed[0]
        assert code == 1009, reason
        assert peak_rss_mib(process.pid) - baseline < 32
    finally:
        process.terminate()
        await process.wait()


# -- the Python client ----------------------------------------------------------------


@pytest.mark.parametrize("compression", [True, False])
async def test_the_python_client_negotiates_it_when_configured(compression: bool) -> None:
    async with open_relay(RelayConfig(port=0, close_timeout=0.2, compression=64)) as relay:
        ws = await open_websocket(
            f"{relay.url}?id=py&groupName=g",
            config=ClientConfig(compression=compression, offer_v1=False),
            ssl_context=None,
        )
        try:
            assert ws.compressed is compression
            plain, _ = await connect(relay.port, "plain", extra="")
            await members(relay, 2)
            text = "a sentence said many times over; " * 50
            compressed, inflated = STATS.compressed, STATS.inflated
            await plain.send_frame(OP_TEXT, text.encode())
            with trio.fail_after(5):
                assert await ws.receive() == text
            assert STATS.compressed - compressed == int(compression)
            await ws.send_message(text.encode())
            assert await message(plain) == (OP_BINARY, text.encode(), False)
            assert STATS.inflated - inflated == int(compression)
        finally:
            await ws.close_unread()


async def test_a_large_stream_to_compressed_members_keeps_memory_flat() -> None:
    """256 MiB streamed through a relay process to two compressed members and one plain:
    each gets it whole, and the relay's peak memory grows by a few fragments, not by
    the message (measured to 1 GiB the same way: docs/performance.md)."""
    mib = int(os.environ.get("DEFLATE_STREAM_MIB", "256"))
    process, _, port = await start_relay("--compression", "64")
    try:
        sender, _ = await connect(port, "sender", extra="")
        receivers = [(await connect(port, f"r{i}"))[0] for i in range(2)]
        plain, _ = await connect(port, "plain", extra="")
        baseline = peak_rss_mib(process.pid)
        words = b"".join(
            b"line %d of words, compressible but not trivially\n" % i for i in range(30000)
        )
        words = words[: 1 << 20]
        first, middle = mask_frame(OP_BINARY, words, False), mask_frame(OP_CONT, words, False)
        last = mask_frame(OP_CONT, words)

        async def send() -> None:
            for i in range(mib):
                await sender.send(first if i == 0 else last if i == mib - 1 else middle)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            for client, compressed in [(receivers[0], True), (receivers[1], True), (plain, False)]:
                nursery.start_soon(_receive_mib, client, compressed, words, mib)
        grew = peak_rss_mib(process.pid) - baseline
        print(f"relay peak memory grew {grew:.1f} MiB streaming {mib} MiB")
        assert grew < 64
    finally:
        process.terminate()
        await process.wait()


async def _receive_mib(client: RawClient, compressed: bool, words: bytes, mib: int) -> None:
    """Read one streamed message of ``mib`` copies of ``words`` (1 MiB), inflating it
    if ``compressed``; fails unless every byte is right and RSV1 only on the first frame."""
    inflater = zlib.decompressobj(-15)
    pending = bytearray()
    seen, first = 0, True
    with trio.fail_after(120):
        while True:
            b0, payload = await frame(client)
            assert bool(b0 & 0x40) == (compressed and first)
            first = False
            pending += inflater.decompress(payload) if compressed else payload
            if b0 & 0x80 and compressed:
                pending += inflater.decompress(TAIL)
            while len(pending) >= len(words):
                assert pending[: len(words)] == words, f"MiB {seen} differs"
                del pending[: len(words)]
                seen += 1
            if b0 & 0x80:
                break
    assert (seen, bytes(pending)) == (mib, b"")


async def test_an_inflater_counts_in_the_buffer_budget_while_its_message_arrives() -> None:
    async with open_relay(RelayConfig(port=0, close_timeout=0.2, compression=64)) as relay:
        sender, _ = await connect(relay.port, "sender")
        receiver, _ = await connect(relay.port, "receiver", extra="")
        await members(relay, 2)
        body = compress(b"half a message, " * 1000)
        await sender.send(compressed_frame(OP_BINARY, body, fin=False))
        with trio.fail_after(5):
            while relay.buffers.held < deflate.INFLATER_BYTES:  # (counted at its next read)
                await sender.send(mask_frame(0x9, b"read me"))  # a ping: one more read
                await frame(sender)  # its pong
        await sender.send(mask_frame(OP_CONT, b""))
        assert await message(receiver) == (OP_BINARY, b"half a message, " * 1000, False)
        with trio.fail_after(5):
            while relay.buffers.held:
                await sender.send(mask_frame(0x9, b"read me"))
                await frame(sender)


# -- a valid message, then a broken frame in the same read ----------------------------


@pytest.mark.parametrize("poller", [True, False])
@pytest.mark.parametrize(
    ("broken", "code"),
    [(mask_frame(0x3, b""), 1002), (mask_frame(OP_TEXT, b"\xff\xfe"), 1007)],
    ids=["reserved-opcode", "bad-utf8"],
)
async def test_a_valid_message_before_a_broken_frame_is_delivered(
    poller: bool, broken: bytes, code: int
) -> None:
    config = RelayConfig(port=0, close_timeout=0.2, shared_poller=poller)
    async with open_relay(config) as relay:
        sender, _ = await connect(relay.port, "sender", extra="")
        receiver, _ = await connect(relay.port, "receiver", extra="")
        await members(relay, 2)
        # Once parked (poller on, its read), and once in its task (its first read).
        for round in range(2):
            if round:
                sender, _ = await connect(relay.port, "sender-2", extra="")
                await members(relay, 2)
            await sender.send(mask_frame(OP_TEXT, b"valid") + broken)
            assert await message(receiver) == (OP_TEXT, b"valid", False)
            with trio.fail_after(5):
                assert (await sender.expect_close())[0] == code
            await members(relay, 1)


async def test_a_namespace_sets_its_own_compression() -> None:
    from trio_wsproxy import Namespace

    namespaces = (
        Namespace(name="media", prefix="media-", compression=0),  # never compressed
        Namespace(name="chat", prefix="chat:", compression=16),
    )
    config = RelayConfig(port=0, close_timeout=0.2, compression=4096, namespaces=namespaces)
    async with open_relay(config) as relay:
        text = b"hello hello hello hello hello hello"  # 35 bytes: under the relay's 4096
        for group, compressed in (("media-1", False), ("chat:1", True), ("lobby", False)):
            receiver, _ = await connect(relay.port, "receiver", group=group)
            sender, _ = await connect(relay.port, "sender", extra="", group=group)
            await members(relay, 2, group)
            await sender.send_frame(OP_TEXT, text)
            assert await message(receiver) == (OP_TEXT, text, compressed)
        # A v1 member's later join follows the joined group's namespace, both ways.
        v1_offer = OFFER + "Sec-WebSocket-Protocol: wsproxy.v1\r\n"
        member, _ = await connect(relay.port, "member", v1_offer, group="media-2")
        await message(member)  # (its welcome)
        member.buffer.clear()  # (read raw below: compressed frames)
        await member.send_frame(OP_TEXT, b'{"join":"chat:2"}\n')
        _, welcome, compressed = await message(member)
        assert b'"welcome"' in welcome and compressed
        sender, _ = await connect(relay.port, "sender2", extra="", group="chat:2")
        await members(relay, 2, "chat:2")
        await sender.send_frame(OP_TEXT, text)
        while True:  # (presence events may come first)
            _, data, compressed = await message(member)
            if not data.startswith(b'{"event":'):
                break
        assert data.endswith(b"\n" + text) and compressed


async def test_what_a_member_sends_compressed_is_inflated_whatever_its_group_sends() -> None:
    from trio_wsproxy import Namespace

    # Compression agreed in the handshake goes both ways on its own: a group that sends
    # nothing compressed (its namespace: never) still takes its members' compressed
    # messages; and a namespace's threshold is negotiated with the relay's off.
    for relay_threshold, namespaces in (
        (16, (Namespace(name="media", prefix="media-", compression=0),)),
        (None, (Namespace(name="chat", prefix="media-", compression=16),)),
    ):
        config = RelayConfig(
            port=0, close_timeout=0.2, compression=relay_threshold, namespaces=namespaces
        )
        async with open_relay(config) as relay:
            receiver, _ = await connect(relay.port, "receiver", group="media-1")
            sender, headers = await connect(relay.port, "sender", group="media-1")
            assert headers["sec-websocket-extensions"].startswith("permessage-deflate")
            await members(relay, 2, "media-1")
            text = b"hello hello hello hello hello hello"
            await sender.send(compressed_frame(OP_TEXT, compress(text)))
            expected = namespaces[0].compression != 0
            assert await message(receiver) == (OP_TEXT, text, expected)
