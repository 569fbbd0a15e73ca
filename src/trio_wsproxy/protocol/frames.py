"""Sans-I/O WebSocket framing for the relay (RFC 6455 §5).

:class:`FrameParser` turns the bytes a client sends into events. Data is handed over
as it arrives, frame boundaries or not, so the relay can forward a message of any size
without holding it whole. The ``frame*`` functions build server frames, which are never
masked, so one built frame serves every member of a group.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Callable
from typing import Final, Protocol

import attrs

from .close_codes import CloseCode

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

# Close codes a peer may put on the wire (RFC 6455 §7.4; 1004-1006 and 1015 are reserved
# for local use, 1016-2999 for future standards).
_WIRE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)}) | frozenset(
    range(3000, 5000)
)
# Unmasking in Python (_xor_python): from this many bytes by table, below as one int.
_TRANSLATE_FROM = 4096
_XOR_TABLES = [bytes(byte ^ key for byte in range(256)) for key in range(256)]
# Control frame payloads are at most 125 bytes; a close reason at most 123.
_MAX_CLOSE_REASON = 123


class ProtocolError(Exception):
    """The client broke the protocol; the session ends with ``code`` and ``reason``."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        #: What the same read held before the violation (FrameParser.feed): frames to
        #: act on before the connection is failed, so that a valid message is not lost.
        self.events: list[Event] = []


class Data:
    """A piece of a message: ``first`` and ``last`` mark the message's ends.

    Written out, unlike the other events (attrs classes): one is made per message on the
    relay's hottest path, where a frozen attrs class's ``__init__`` costs two and a half
    times as much, and a compiled hot path (mypyc) makes this one a native class, with
    a native constructor and attributes (an attrs class stays an interpreted one)."""

    __slots__ = ("first", "last", "payload", "text")

    def __init__(self, payload: bytes, text: bool, first: bool, last: bool) -> None:
        self.payload = payload
        self.text = text
        self.first = first
        self.last = last

    def __repr__(self) -> str:
        return (
            f"Data(payload={self.payload!r}, text={self.text!r}, first={self.first!r}, "
            f"last={self.last!r})"
        )

    def __eq__(self, other: object) -> bool:
        if type(other) is not Data:
            return NotImplemented
        return (self.payload, self.text, self.first, self.last) == (
            other.payload,
            other.text,
            other.first,
            other.last,
        )

    __hash__ = None  # type: ignore[assignment]  # (mutable, as attrs made it: never a key)


@attrs.frozen(slots=True)
class Ping:
    """A ping from the client."""

    payload: bytes


@attrs.frozen(slots=True)
class Pong:
    """A pong from the client."""

    payload: bytes


@attrs.frozen(slots=True)
class Close:
    """The client's close frame (``code`` None when it carried none)."""

    code: int | None
    reason: str


Event = Data | Ping | Pong | Close


class Inflater(Protocol):
    """What inflates a compressed message's payload (deflate.Inflater)."""

    def start(self) -> None:
        """A compressed message begins."""

    def inflate(self, data: bytes, last: bool) -> list[bytes]:
        """The inflated bytes of the next of its payload (``last``: its end)."""

    @property
    def held(self) -> int:
        """The memory it holds now (while a compressed message arrives)."""


class FrameParser:
    """Parse client-to-server frames; raise :class:`ProtocolError` on any violation.

    Only incomplete frame headers and incomplete control frames are buffered (a few
    bytes), never message data. After a close frame, further input is ignored.
    """

    def __init__(
        self, max_message_size: int | None = None, inflater: Inflater | None = None
    ) -> None:
        self._max_message_size = max_message_size
        # permessage-deflate (negotiated: deflate.py): a message's first frame may set
        # RSV1, and its payload is then inflated, the limit counting inflated bytes.
        self._inflater = inflater
        self._compressed = False
        # The second header byte of a whole frame the one-step paths take: masked, with
        # a 7-bit length within the message size limit (a frame beyond it takes the
        # step-by-step path, which refuses it).
        self._short_b1 = 0x80 | min(125, 125 if max_message_size is None else max_message_size)
        self._leftover = b""
        self._closed = False
        # The data frame whose payload is arriving.
        self._remaining = 0
        self._mask = b""
        self._fin = False
        # The message the data belongs to.
        self._in_message = False
        self._started = False
        self._text = False
        self._size = 0
        self._utf8: codecs.IncrementalDecoder | None = None
        # Nothing pending (no message, no part of a frame, not closed): what feed's
        # one-step path needs, updated after each read that took _feed's loop.
        self._at_rest = True

    @property
    def inflating(self) -> int:
        """What the member's inflater holds now (permessage-deflate; else 0)."""
        return 0 if self._inflater is None else self._inflater.held

    def feed(self, data: bytes) -> list[Event]:
        """Consume ``data``; return the events it completes, in order. A violation
        raises :class:`ProtocolError` with the events before it (``events``)."""
        # One message in flight: what a read brings is one whole short frame and
        # nothing is pending. Taken in one step (the checks of _feed's own one-step
        # path), without its loop and calls: a text or binary frame, final, masked,
        # whose 7-bit length is the rest of the read exactly.
        b1 = len(data) - 6 + 0x80  # (the second header byte such a read has)
        if b1 >= 0x80 and self._at_rest and data[1] == b1 and b1 <= self._short_b1:
            b0 = data[0]
            if b0 == 0x82 or b0 == 0x81:
                return [_whole(b0, _xor(data[6:], data[2:6]))]
        events: list[Event] = []
        try:
            self._feed(data, events)
        except ProtocolError as exc:
            exc.events = events
            raise
        finally:
            # Whether the next read may take the one-step path: nothing pending.
            self._at_rest = not (self._in_message or self._leftover or self._closed)
        return events

    def _feed(self, data: bytes, events: list[Event]) -> None:
        if self._closed:
            return
        if self._leftover:
            data = self._leftover + data
            self._leftover = b""
        pos, end = 0, len(data)
        while pos < end:
            if self._remaining:
                take = min(self._remaining, end - pos)
                # (A read that is all payload is unmasked as it is: Python's slice of
                # the whole would return it as it is too, a compiled build's copies it.)
                chunk = self._unmask(data if take == end else data[pos : pos + take])
                pos += take
                self._remaining -= take
                self._data(events, chunk, self._fin and not self._remaining)
                continue
            if end - pos < 2:
                break
            b0, b1 = data[pos], data[pos + 1]
            if (b0 == 0x81 or b0 == 0x82) and 0x80 <= b1 <= self._short_b1 and not self._in_message:
                # The common case in one go: a whole message in one short frame, all of
                # it here (what follows does the same, one step at a time).
                stop = pos + 6 + (b1 & 0x7F)
                if stop <= end:
                    events.append(_whole(b0, _xor(data[pos + 6 : stop], data[pos + 2 : pos + 6])))
                    pos = stop
                    continue
            if b0 & 0x70 and not (
                b0 & 0x70 == 0x40 and self._inflater is not None and b0 & 0x0F in (1, 2)
            ):
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, "reserved bits set")
            if not b1 & 0x80:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, "client frames must be masked")
            fin, opcode, length = bool(b0 & 0x80), b0 & 0x0F, b1 & 0x7F
            header = 6 if length < 126 else 8 if length == 126 else 14
            if end - pos < header:
                break
            if length == 126:
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif length == 127:
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                if length >> 63:
                    raise ProtocolError(CloseCode.PROTOCOL_ERROR, "frame length too large")
            mask = data[pos + header - 4 : pos + header]
            if opcode >= OP_CLOSE:
                if not fin:
                    raise ProtocolError(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
                if length > 125:
                    raise ProtocolError(CloseCode.PROTOCOL_ERROR, "control frame too long")
                if end - pos - header < length:
                    break
                self._mask = mask
                payload = self._unmask(data[pos + header : pos + header + length])
                pos += header + length
                events.append(self._control(opcode, payload))
                if self._closed:
                    return
                continue
            if opcode == OP_CONTINUATION:
                if not self._in_message:
                    raise ProtocolError(
                        CloseCode.PROTOCOL_ERROR, "continuation frame outside a message"
                    )
            elif opcode in (OP_TEXT, OP_BINARY):
                if self._in_message:
                    raise ProtocolError(
                        CloseCode.PROTOCOL_ERROR, "new message before the previous one ended"
                    )
                self._in_message, self._started = True, False
                self._text, self._size = opcode == OP_TEXT, 0
                self._compressed = bool(b0 & 0x40)
                if self._compressed:
                    self._inflater.start()  # type: ignore[union-attr]  # (RSV1 checked)
            else:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
            self._size += length
            if (
                self._max_message_size is not None
                and self._size > self._max_message_size
                and not self._compressed  # (its limit is on inflated bytes: Inflater)
            ):
                raise ProtocolError(
                    CloseCode.MESSAGE_TOO_BIG,
                    f"message larger than {self._max_message_size} bytes",
                )
            pos += header
            self._mask, self._remaining, self._fin = mask, length, fin
            if not length and (fin or not self._started):
                self._data(events, b"", fin)
        if pos < end:
            self._leftover = data[pos:]

    def _unmask(self, chunk: bytes) -> bytes:
        n = len(chunk)
        if not n:
            return chunk
        mask = self._mask
        # Keep the mask aligned for the rest of this frame's payload.
        shift = n & 3
        self._mask = mask[shift:] + mask[:shift]
        return _xor(chunk, mask)

    def _data(self, events: list[Event], chunk: bytes, last: bool, inflated: bool = False) -> None:
        if self._compressed and not inflated:
            self._inflate(events, chunk, last)
            return
        first = not self._started
        self._started = True
        if self._text:
            try:
                if first and last:
                    chunk.decode("utf-8")
                else:
                    if first:
                        self._utf8 = codecs.getincrementaldecoder("utf-8")()
                    assert self._utf8 is not None
                    self._utf8.decode(chunk, last)
            except UnicodeDecodeError:
                raise ProtocolError(
                    CloseCode.INVALID_PAYLOAD, "text message is not valid UTF-8"
                ) from None
        events.append(Data(chunk, self._text, first, last))
        if last:
            self._in_message = False
            self._utf8 = None

    def _inflate(self, events: list[Event], chunk: bytes, last: bool) -> None:
        """A compressed message's data: its inflated pieces, as the message's data."""
        pieces = self._inflater.inflate(chunk, last)  # type: ignore[union-attr]
        if not pieces:
            if last:
                self._data(events, b"", True, True)
            return
        for piece in pieces[:-1]:
            self._data(events, piece, False, True)
        self._data(events, pieces[-1], last, True)

    def _control(self, opcode: int, payload: bytes) -> Event:
        if opcode == OP_PING:
            return Ping(payload)
        if opcode == OP_PONG:
            return Pong(payload)
        if opcode != OP_CLOSE:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
        self._closed = True
        if not payload:
            return Close(None, "")
        if len(payload) == 1:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, "close frame with a 1-byte payload")
        code = int.from_bytes(payload[:2], "big")
        if code not in _WIRE_CLOSE_CODES:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
        try:
            reason = payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(
                CloseCode.INVALID_PAYLOAD, "close reason is not valid UTF-8"
            ) from None
        return Close(code, reason)


def _whole(b0: int, payload: bytes) -> Data:
    """The message of a whole short frame (first byte ``b0``: FIN and text or binary)
    whose payload is unmasked; its text checked."""
    if b0 == 0x82:
        return Data(payload, False, True, True)
    if not payload.isascii():  # (ASCII is UTF-8: checked for free)
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(
                CloseCode.INVALID_PAYLOAD, "text message is not valid UTF-8"
            ) from None
    return Data(payload, True, True, True)


def _xor_python(chunk: bytes, mask: bytes) -> bytes:
    """``chunk`` unmasked by the 4-byte ``mask``, in Python (where websockets' C
    unmasking is not built)."""
    n = len(chunk)
    if n >= _TRANSLATE_FROM:
        # Each fourth byte through a 256-byte table: twice as fast as one big XOR from
        # 16 KiB up (1.6 against 3.3 ms per MiB), slower below 1 KiB.
        data = bytearray(chunk)
        for offset in range(4):
            data[offset::4] = data[offset::4].translate(_XOR_TABLES[mask[offset]])
        return bytes(data)
    key = int.from_bytes((mask * ((n >> 2) + 1))[:n], "little")
    return (int.from_bytes(chunk, "little") ^ key).to_bytes(n, "little")


def _unmasking() -> Callable[[bytes, bytes], bytes]:
    """websockets' unmasking in C where its extension is built (its wheels carry it; a
    source build without a compiler leaves it out), else :func:`_xor_python`. For 64
    bytes the C one takes a fifth of the time, for 64 KiB a sixtieth (docs/performance.md,
    "Unmasking in C")."""
    try:
        from websockets.speedups import apply_mask
    except ImportError:
        return _xor_python
    return apply_mask


#: ``chunk`` unmasked by the 4-byte ``mask``. (Final: a compiled build keeps it in C.)
_xor: Final = _unmasking()


_HEADER_SHORT = struct.Struct("!BB")
_HEADER_MEDIUM = struct.Struct("!BBH")
_HEADER_LONG = struct.Struct("!BBQ")


#: The headers of final frames with a 7-bit length, by opcode and length: made once.
FINAL_SHORT_HEADERS = tuple(tuple(bytes((0x80 | op, n)) for n in range(126)) for op in range(16))


def frame_header(opcode: int, length: int, fin: bool = True) -> bytes:
    """The header of an unmasked server frame carrying ``length`` payload bytes."""
    if length < 126 and fin:
        return FINAL_SHORT_HEADERS[opcode][length]
    b0 = opcode | 0x80 if fin else opcode
    if length < 126:
        return _HEADER_SHORT.pack(b0, length)
    if length < 65536:
        return _HEADER_MEDIUM.pack(b0, 126, length)
    return _HEADER_LONG.pack(b0, 127, length)


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """An unmasked server frame."""
    return frame_header(opcode, len(payload), fin) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is cut to fit a control frame, on a character boundary."""
    encoded = reason.encode("utf-8")[:_MAX_CLOSE_REASON].decode("utf-8", "ignore").encode()
    return frame(OP_CLOSE, code.to_bytes(2, "big") + encoded)
