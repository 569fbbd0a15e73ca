"""A deliberately bare WebSocket client for tests: exact bytes in, exact frames out.

Well-behaved clients (trio-websocket) cannot send unmasked frames, broken UTF-8 or half a
handshake; this one can, and it reads server frames one by one, so a test can check
fragmentation and close codes exactly.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Awaitable, Callable

import trio

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def unmask(key: bytes, data: bytes) -> bytes:
    """``data`` XORed with the 4-byte masking ``key`` (masking and unmasking alike)."""
    n = len(data)
    if not n:
        return b""
    stream = int.from_bytes((key * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(data, "little") ^ stream).to_bytes(n, "little")


async def read_frame(
    buffer: bytearray, need: Callable[[int], Awaitable[None]], *, masked: bool
) -> tuple[int, int, bytes]:
    """The next frame at the start of ``buffer`` (``need(n)`` reads until it holds ``n``
    bytes), taken off it: its first two bytes and its payload. ``masked``: read a masking
    key if the frame has its mask bit (a client's frame), and unmask the payload; else
    the mask bit is left for the caller to judge and no key is read."""
    await need(2)
    b0, b1 = buffer[0], buffer[1]
    n, head = b1 & 0x7F, 2
    if n == 126:
        await need(4)
        n, head = struct.unpack("!H", buffer[2:4])[0], 4
    elif n == 127:
        await need(10)
        n, head = struct.unpack("!Q", buffer[2:10])[0], 10
    key_size = 4 if masked and b1 & 0x80 else 0
    await need(head + key_size + n)
    payload = bytes(buffer[head + key_size : head + key_size + n])
    if key_size:
        payload = unmask(bytes(buffer[head : head + 4]), payload)
    del buffer[: head + key_size + n]
    return b0, b1, payload


def mask_frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True) -> bytes:
    """A client frame, masked unless told otherwise."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    mbit = 0x80 if masked else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + unmask(key, payload)


class FrameFault(Exception):
    """A data frame that breaks the protocol: the close code a peer answers it with."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code
        self.why = why


class Fragments:
    """One data message gathered from its frames (RFC 6455 §5.4), for the stand-ins of
    .NET peers: :meth:`add` each data frame; a text message's UTF-8 is checked whole."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._opcode: int | None = None

    def add(self, op: int, fin: bool, payload: bytes) -> tuple[int, bytes] | None:
        """The whole message once ``fin`` ends it, else None; :class:`FrameFault` (1002)
        for a continuation out of place, (1007) for a text message that is not UTF-8."""
        if (self._opcode is None) == (op == OP_CONT):
            raise FrameFault(1002, "a continuation out of place")
        opcode = self._opcode = op if self._opcode is None else self._opcode
        self._parts.append(payload)
        if not fin:
            return None
        data = b"".join(self._parts)
        self._parts, self._opcode = [], None
        if opcode == OP_TEXT:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                raise FrameFault(1007, "invalid UTF-8 in a text message") from None
        return opcode, data


class RawClient:
    """One TCP connection speaking WebSocket by hand."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    @classmethod
    async def open(cls, port: int, target: str = "/ws?id=raw&groupName=g") -> RawClient:
        """Connect and upgrade; fails the test unless the relay answers 101."""
        client = cls(await trio.open_tcp_stream("127.0.0.1", port))
        status, _headers, body = await client.handshake(target)
        assert status == 101, (status, body)
        return client

    async def handshake(self, target: str, extra: str = "") -> tuple[int, dict[str, str], bytes]:
        key = base64.b64encode(os.urandom(16)).decode()
        await self.stream.send_all(
            (
                f"GET {target} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
            ).encode()
        )
        return await self.read_response()

    async def read_response(self) -> tuple[int, dict[str, str], bytes]:
        """Read an HTTP response head (and, for a refusal, its body)."""
        while b"\r\n\r\n" not in self.buffer:
            data = await self.stream.receive_some(65536)
            assert data, "connection closed before a response"
            self.buffer += data
        end = self.buffer.index(b"\r\n\r\n") + 4
        head = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[:end]
        lines = head.split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = b""
        if status != 101:
            length = int(headers.get("content-length", "0"))
            while len(self.buffer) < length:
                data = await self.stream.receive_some(65536)
                if not data:
                    break
                self.buffer += data
            body = bytes(self.buffer[:length])
        return status, headers, body

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_frame(
        self, opcode: int, payload: bytes, fin: bool = True, masked: bool = True
    ) -> None:
        await self.stream.send_all(mask_frame(opcode, payload, fin, masked))

    async def _need(self, n: int) -> None:
        while len(self.buffer) < n:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("connection closed")
            self.buffer += data

    async def recv_frame(self) -> tuple[bool, int, bytes]:
        """The next server frame: (fin, opcode, payload)."""
        b0, b1, payload = await read_frame(self.buffer, self._need, masked=False)
        assert not b1 & 0x80, "server frames must not be masked"
        return bool(b0 & 0x80), b0 & 0x0F, payload

    async def recv_message(self) -> tuple[int, bytes]:
        """The next data message, fragments joined; control frames other than close skipped.

        A close frame comes back as (OP_CLOSE, payload)."""
        parts: list[bytes] = []
        opcode = None
        while True:
            fin, op, payload = await self.recv_frame()
            if op == OP_CLOSE:
                return op, payload
            if op in (OP_PING, OP_PONG):
                continue
            if opcode is None:
                assert op in (OP_TEXT, OP_BINARY), f"message starts with opcode {op}"
                opcode = op
            else:
                assert op == OP_CONT, "two messages interleaved"
            parts.append(payload)
            if fin:
                return opcode, b"".join(parts)

    async def expect_close(self) -> tuple[int, str]:
        """Skip frames until the close frame; return its (code, reason)."""
        while True:
            _fin, op, payload = await self.recv_frame()
            if op == OP_CLOSE:
                return int.from_bytes(payload[:2], "big"), payload[2:].decode()

    async def aclose(self) -> None:
        await self.stream.aclose()


async def stream_mib(sender: RawClient, receiver: RawClient, count: int) -> None:
    """Send one binary message of ``count`` MiB in 1 MiB fragments (each MiB different,
    so order errors show) while reading it frame by frame; fails unless it arrives
    whole and in order. Neither side ever holds the whole message."""
    chunk = os.urandom(1 << 20)
    expected = hashlib.sha256()

    async def send() -> None:
        for i in range(count):
            piece = chunk[i:] + chunk[:i]
            expected.update(piece)
            await sender.send_frame(OP_BINARY if i == 0 else OP_CONT, piece, fin=i == count - 1)

    received = hashlib.sha256()
    size = 0
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            while True:
                fin, _opcode, payload = await receiver.recv_frame()
                received.update(payload)
                size += len(payload)
                if fin:
                    break
    assert size == count << 20
    assert received.digest() == expected.digest()


async def numbered_until_close(client: RawClient) -> tuple[int, tuple[int, str]]:
    """Read messages numbered 0, 1, 2, … (a 4-byte big-endian number first) until the
    close frame, then close the connection as a client does; return how many came, in
    order, and the close frame's (code, reason)."""
    received = 0
    while True:
        opcode, data = await client.recv_message()
        if opcode == OP_CLOSE:
            await client.aclose()  # the relay's session ends now
            return received, (int.from_bytes(data[:2], "big"), data[2:].decode())
        assert data[:4] == received.to_bytes(4, "big")
        received += 1
