"""The client's WebSocket layer when the relay's frames are broken: it fails the
connection itself with the code RFC 6455 names (1002, 1007), after delivering what was
valid before the broken frame — not 1000, as if the relay had closed it."""

from __future__ import annotations

import base64
import hashlib

import pytest
import trio

from trio_wsproxy.client.config import ClientConfig
from trio_wsproxy.client.connection import ConnectionEnded, open_websocket
from wsraw import read_frame

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def serve_once(
    stream: trio.SocketStream, frames: bytes, closes: trio.MemorySendChannel[int]
) -> None:
    """Answer the upgrade, send ``frames`` in one write, report the client's close code."""
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(4096)
    key = next(
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    await stream.send_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n" + frames
    )
    buffer = bytearray()

    async def need(n: int) -> None:
        while len(buffer) < n:
            data = await stream.receive_some(4096)
            if not data:
                raise EOFError
            buffer.extend(data)

    while True:
        b0, _, payload = await read_frame(buffer, need, masked=True)
        if b0 & 0x0F == 0x8:
            await closes.send(int.from_bytes(payload[:2], "big"))
            return


@pytest.mark.parametrize(
    ("broken", "code"),
    [
        (b"\xc1\x02hi", 1002),  # RSV1 without an extension
        (b"\x81\x02\xff\xfe", 1007),  # text that is not UTF-8
        (b"\x83\x00", 1002),  # a reserved opcode
    ],
)
async def test_a_broken_frame_fails_the_connection_with_its_code_after_the_valid_message(
    broken: bytes, code: int
) -> None:
    send, receive = trio.open_memory_channel[int](1)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            trio.serve_tcp,
            lambda stream: serve_once(stream, b"\x81\x05valid" + broken, send),
            0,
        )
        port = listeners[0].socket.getsockname()[1]
        ws = await open_websocket(
            f"ws://127.0.0.1:{port}/ws?id=a&groupName=g",
            config=ClientConfig(offer_v1=False),
            ssl_context=None,
        )
        with trio.fail_after(5):
            assert await ws.receive() == "valid"
            with pytest.raises(ConnectionEnded) as ended:
                await ws.receive()
            assert ended.value.code == code
            assert await receive.receive() == code
        nursery.cancel_scope.cancel()
