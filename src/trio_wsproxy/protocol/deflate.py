"""permessage-deflate (RFC 7692): negotiated per member, compressed once per variant.

The relay compresses *without context takeover* (it always answers
``server_no_context_takeover``): each message it sends is a DEFLATE stream of its own,
so one compressed frame is valid for every member that negotiated the extension with
the same window, and fan-out compresses a message once per audience
(:class:`Deflated`, an :class:`~.encoding.Encoding` wrapping the member's own), never
once per recipient. Messages a member sends are inflated by its own
:class:`Inflater`, bounded by the relay's ``max_message_size`` in *inflated* bytes,
checked while inflating (a small frame that would inflate to gigabytes costs no more
than the limit).

Sans-I/O, like the rest of ``protocol``: the parameters, the compressors and the
counters, nothing that waits.
"""

from __future__ import annotations

import weakref
import zlib

import attrs

from .close_codes import CloseCode
from .encoding import Encoding
from .frames import OP_CONTINUATION, ProtocolError
from .message import Message, StreamHead
from .v1 import Event

#: The extension's token in ``Sec-WebSocket-Extensions``.
EXTENSION = "permessage-deflate"
#: What every compressed message ends with before its last 4 bytes are cut (RFC 7692
#: §7.2.1), and what an inflater is fed after each message (§7.2.2).
_TAIL = b"\x00\x00\xff\xff"
#: zlib's level: 1, the fastest. Measured in a relay process (cold caches), per message
#: compressed once for all its recipients: a 180-byte chat envelope 9-12 µs at any level
#: (to 142 bytes); an 11 KB presence list of 500 members 63 µs at level 1 (to 5.0 KB),
#: 146 µs at level 6 (to 4.7 KB).
LEVEL = 1
#: What one member's inflater holds at most: its 32 KiB window (15 bits) and zlib's
#: inflate state (7 KiB), rounded up. Counted in the relay's buffer budget.
INFLATER_BYTES = 48 * 1024
# Inflated output per decompress call: bounds what one call makes, whatever the ratio.
_CHUNK = 64 * 1024
_WINDOW_BITS = range(9, 16)  # (zlib cannot compress raw DEFLATE with an 8-bit window)
_PARAMETERS = frozenset(
    {
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    }
)


@attrs.frozen
class Agreement:
    """The parameters a handshake agreed on: the window the relay compresses with,
    and the ``Sec-WebSocket-Extensions`` value of its 101 response."""

    server_window_bits: int
    response: str


class Stats:
    """Process-wide counters: how often the relay compressed, and what it saved."""

    __slots__ = ("compressed", "incompressible", "inflated", "input_bytes", "output_bytes")

    def __init__(self) -> None:
        #: Messages (and streamed messages, once each) compressed: one per message per
        #: compressed variant among its recipients, whatever their number.
        self.compressed = 0
        #: Of those, how many came out no smaller and went out plain.
        self.incompressible = 0
        #: Payload bytes given to the compressor, and the compressed bytes sent.
        self.input_bytes = 0
        self.output_bytes = 0
        #: Compressed messages members sent, inflated.
        self.inflated = 0


#: The relay's compression counters (``trio_wsproxy_compressions`` and the rest).
STATS = Stats()


def negotiate(offer: str) -> Agreement | None:
    """The relay's answer to a ``Sec-WebSocket-Extensions`` offer (repeated headers
    joined with commas): the first ``permessage-deflate`` offer it can honour, or None
    (no extension: plain frames). An offer is declined, and the next one tried, when it
    names a parameter twice or one RFC 7692 does not define, gives a value where none
    belongs or a window outside 8-15, or asks for an 8-bit server window (zlib
    compresses raw DEFLATE with 9 bits at least)."""
    for extension in _split(offer, ","):
        name, *params = (part.strip() for part in _split(extension, ";"))
        if name.lower() != EXTENSION:
            continue
        agreement = _agree(params)
        if agreement is not None:
            return agreement
    return None


def _agree(params: list[str]) -> Agreement | None:
    seen: dict[str, str | None] = {}
    for param in params:
        key, sep, value = param.partition("=")
        key = key.strip().lower()
        if key not in _PARAMETERS or key in seen:
            return None
        seen[key] = _unquote(value.strip()) if sep else None
    for flag in ("server_no_context_takeover", "client_no_context_takeover"):
        if flag in seen and seen[flag] is not None:
            return None
    server_bits = 15
    # Always client_no_context_takeover too (RFC 7692 §7.1.1.2 lets the server ask it of
    # any client): each message a member sends is a DEFLATE stream of its own, so the
    # relay holds a member's inflater (its 32 KiB window) only while a compressed
    # message arrives, not for the member's whole connection.
    answer = [EXTENSION, "server_no_context_takeover", "client_no_context_takeover"]
    if "server_max_window_bits" in seen:
        bits = _bits(seen["server_max_window_bits"])
        if bits is None or bits not in _WINDOW_BITS:
            return None
        server_bits = bits
        answer.append(f"server_max_window_bits={bits}")
    if "client_max_window_bits" in seen:
        given = seen["client_max_window_bits"]
        # No value: the client can be told a smaller window; the relay's inflater takes
        # any (15 bits), so it tells it none.
        if given is not None and _bits(given) is None:
            return None
    return Agreement(server_bits, "; ".join(answer))


def _bits(value: str | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 2:
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _split(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` outside quoted strings."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in (each.strip() for each in parts) if part]


def _frame_parts(framed: bytes) -> tuple[int, int]:
    """The first header byte of an unmasked frame and its header's length."""
    length = framed[1] & 0x7F
    return framed[0], 2 if length < 126 else 4 if length == 126 else 10


def _header(b0: int, length: int) -> bytes:
    if length < 126:
        return bytes((b0, length))
    if length < 65536:
        return bytes((b0, 126)) + length.to_bytes(2, "big")
    return bytes((b0, 127)) + length.to_bytes(8, "big")


class Deflated(Encoding):
    """An encoding (plain or a subprotocol's) for members that negotiated
    permessage-deflate: each message framed by the inner encoding, then its payload
    compressed — once per message for all of this audience, since fan-out frames once
    per encoding and equal encodings are one object (:func:`deflated`).

    A payload under ``threshold`` bytes goes out as the inner encoding framed it (RSV1
    clear: RFC 7692 lets each message choose), and so does one that did not shrink. A
    streamed message is compressed piece by piece as it flows, one DEFLATE stream per
    message for all its compressed recipients, holding only zlib's own state."""

    __slots__ = (
        "__weakref__",
        "_compressor",
        "_hash",
        "_skip",
        "inner",
        "threshold",
        "window_bits",
    )

    def __init__(self, inner: Encoding, threshold: int, window_bits: int = 15) -> None:
        super().__init__(inner.subprotocol, inner.presence)
        self.inner = inner
        self.threshold = threshold
        self.window_bits = window_bits
        self._hash = hash((type(self), inner, threshold, window_bits))
        self._compressor = _compressor(window_bits)
        # Senders whose messages do not shrink: how many more to send plain untried.
        self._skip: dict[str, int] = {}

    def __eq__(self, other: object) -> bool:
        return other is self or (
            type(other) is type(self)
            and (other.inner, other.threshold, other.window_bits)
            == (self.inner, self.threshold, self.window_bits)
        )

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"<Deflated {self.inner!r} from {self.threshold} bytes>"

    def message(self, message: Message) -> bytes:
        framed = self.inner.message(message)
        skip = self._skip
        if skip and message.sender in skip:
            left = skip.pop(message.sender) - 1
            if left:
                skip[message.sender] = left
            return framed
        before = STATS.incompressible
        compressed = self._compress(framed)
        if STATS.incompressible != before:
            # It did not shrink: this sender's next ones go out plain untried.
            if len(skip) >= 4096:
                skip.clear()  # (bounded; forgetting costs one try per sender)
            skip[message.sender] = SKIP_AFTER_INCOMPRESSIBLE
        return compressed

    def event(self, event: Event) -> bytes:
        return self._compress(self.inner.event(event))

    def for_group(self, group: str) -> Encoding:
        return deflated(self.inner.for_group(group), self.threshold, self.window_bits)

    def _compress(self, framed: bytes) -> bytes:
        b0, start = _frame_parts(framed)
        size = len(framed) - start
        if size < self.threshold:
            return framed
        # One compressor per window for all whole messages (_compressor), each ended
        # with a full flush: that resets its dictionary, so no message refers to
        # another (no context takeover), and nothing is allocated per message (a new
        # compressor per message cost 20-30 µs in a relay process: zlib's 256 KiB of
        # state allocated and freed each time).
        compressor = self._compressor
        payload = memoryview(framed)[start:]
        stats = STATS
        stats.compressed += 1
        stats.input_bytes += size
        if size > _PROBE_FROM and _incompressible(payload):
            stats.incompressible += 1
            stats.output_bytes += size
            return framed
        body = compressor.compress(payload) + compressor.flush(zlib.Z_FULL_FLUSH)
        if len(body) - 4 >= size:
            stats.incompressible += 1
            stats.output_bytes += size
            return framed
        stats.output_bytes += len(body) - 4
        return _header(b0 | 0x40, len(body) - 4) + body[:-4]

    def piece(self, head: StreamHead, payload: bytes, first: bool, last: bool) -> bytes:
        framed = self.inner.piece(head, payload, first, last)
        b0, start = _frame_parts(framed)
        # A streamed message's compressor (None: it goes out plain) is kept with its head
        # while it flows (StreamHead.framing): a stream cut off unfinished drops it with
        # its head.
        compressor: zlib._Compress | None
        if first:
            STATS.compressed += 1
            # A stream whose first piece does not shrink (media, archives) goes out
            # plain, all of it: compressing it would cost 13 µs per KiB for nothing.
            compressor = None
            if not _incompressible(memoryview(framed)[start:]):
                compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -self.window_bits)
                b0 |= 0x40
            else:
                STATS.incompressible += 1
            if not last:
                head.framing[self] = compressor
        else:
            try:
                compressor = head.framing[self]
            except KeyError:
                raise RuntimeError(f"{head!r}: a piece of a stream that never started") from None
            b0 &= 0x80  # (a continuation: RSV1 clear)
            b0 |= OP_CONTINUATION
        if compressor is None:
            if last:
                head.framing.pop(self, None)
            STATS.input_bytes += len(framed) - start
            STATS.output_bytes += len(framed) - start
            return framed
        body = compressor.compress(memoryview(framed)[start:])
        if last:
            head.framing.pop(self, None)
            body = (body + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
        STATS.input_bytes += len(framed) - start
        STATS.output_bytes += len(body)
        return _header(b0, len(body)) + body


_COMPRESSORS: dict[int, zlib._Compress] = {}
# From this size, a payload is probed before it is compressed: its first _PROBE bytes
# at level 1 with a small window (10-20 µs), and if they do not shrink by a tenth, it
# goes out plain (random bytes, media: compressing them whole costs 13 µs per KiB for
# nothing).
_PROBE_FROM = 4096
_PROBE = 512
#: A sender whose message did not shrink has its next this many messages sent plain
#: without trying (a member sending media sends more of it); then it is tried again.
SKIP_AFTER_INCOMPRESSIBLE = 16
_PROBER = zlib.compressobj(1, zlib.DEFLATED, -9, 1)


def _incompressible(payload: memoryview) -> bool:
    """Whether ``payload`` looks like it would not shrink (random bytes, media)."""
    sample = payload[:_PROBE]
    size = len(_PROBER.compress(sample)) + len(_PROBER.flush(zlib.Z_FULL_FLUSH))
    return size > len(sample) * 9 // 10


def _compressor(window_bits: int) -> zlib._Compress:
    """The compressor of whole messages with a ``window_bits`` window, shared by every
    Deflated encoding of that window (each of zlib's holds about 256 KiB; a message is
    compressed and flushed in one go, so they never interleave)."""
    found = _COMPRESSORS.get(window_bits)
    if found is None:
        found = _COMPRESSORS[window_bits] = zlib.compressobj(LEVEL, zlib.DEFLATED, -window_bits)
    return found


_DEFLATED: weakref.WeakValueDictionary[tuple[Encoding, int, int], Deflated] = (
    weakref.WeakValueDictionary()
)


def deflated(inner: Encoding, threshold: int, window_bits: int = 15) -> Deflated:
    """The compressed variant of ``inner``: one object per (encoding, threshold,
    window) while any member uses it, so that its members share one compressor and one
    record of the senders whose messages do not shrink. (A streamed message's compressor
    is kept by its head, by encoding: equal variants find it either way.)"""
    key = (inner, threshold, window_bits)
    found = _DEFLATED.get(key)
    if found is None:
        found = _DEFLATED[key] = Deflated(inner, threshold, window_bits)
    return found


class Inflater:
    """Inflates the compressed messages one member sends, each on its own (the relay
    answers ``client_no_context_takeover``): zlib's inflater exists only from a
    compressed message's first frame to its last (:attr:`held`).

    ``limit``: the most inflated bytes one message may have (``max_message_size``);
    past it :meth:`inflate` raises 1009 before making more than the limit and one
    chunk. Malformed data raises 1007 with zlib's reason."""

    __slots__ = ("_ended", "_inflater", "_limit", "_size")

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        self._inflater: zlib._Decompress | None = None
        self._size = 0
        # The client ended this message's DEFLATE stream (BFINAL) before its last frame.
        self._ended = False

    def start(self) -> None:
        """A compressed message begins."""
        self._size = 0
        self._inflater = zlib.decompressobj(-15)
        self._ended = False

    @property
    def held(self) -> int:
        """What the inflater holds now, as counted in the relay's buffer budget."""
        return 0 if self._inflater is None else INFLATER_BYTES

    def inflate(self, data: bytes, last: bool) -> list[bytes]:
        """The inflated bytes of ``data``, the next of a compressed message's payload
        (``last``: its end), in chunks of at most 64 KiB."""
        if self._ended:
            if data:
                raise ProtocolError(
                    CloseCode.INVALID_PAYLOAD, "compressed data after the end of its stream"
                )
            if last:
                self._inflater = None
            return []
        if last:
            data += _TAIL
        out: list[bytes] = []
        inflater, limit = self._inflater, self._limit
        assert inflater is not None, "inflate() before start()"
        try:
            while True:
                room = _CHUNK if limit is None else min(_CHUNK, limit - self._size + 1)
                chunk = inflater.decompress(data, room)
                if chunk:
                    self._size += len(chunk)
                    if limit is not None and self._size > limit:
                        raise ProtocolError(
                            CloseCode.MESSAGE_TOO_BIG,
                            f"message larger than {limit} bytes once inflated",
                        )
                    out.append(chunk)
                data = inflater.unconsumed_tail
                # (A full chunk may leave output pending in zlib with no input left.)
                if inflater.eof or (not data and len(chunk) < room):
                    break
        except zlib.error as exc:
            raise ProtocolError(
                CloseCode.INVALID_PAYLOAD, f"malformed compressed data: {exc}"
            ) from None
        if inflater.eof:
            # The client ended its DEFLATE stream (BFINAL, RFC 7692 §7.2.3.3): nothing
            # may follow in this message but the tail the relay added.
            if inflater.unused_data not in (b"", _TAIL):
                raise ProtocolError(
                    CloseCode.INVALID_PAYLOAD, "compressed data after the end of its stream"
                )
            if not last:
                self._ended = True
        if last:
            STATS.inflated += 1
            self._inflater = None
        return out
