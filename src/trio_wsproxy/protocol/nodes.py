"""The messages relay nodes send each other over Redis pub/sub, sans-I/O: one frozen
class per kind, each with ``encode()``, and :func:`decode` for whatever arrives on a
channel. This is the cluster's wire format: every node of a relay must speak the same.

Every message is one kind byte (an ASCII letter), the sending node's id, exactly
``NODE_ID_LENGTH`` (16) bytes (ASCII hex in practice, opaque here), then the body of its
kind. Integers are unsigned and big-endian (u8, u16, u32, u64); f64 is an IEEE 754
double, big-endian. Strings are UTF-8: one marked *rest* runs to the end of the message,
any other is preceded by its length in bytes as a u16. ``flags`` is a u8 whose bit 0 is
set for a text message and clear for a binary one, and whose bit 1 is set for a message
addressed to one member (wsproxy.v1's direct messages); its other bits must be 0.

On a group's channel::

    M  Messages      u32 count, then count times:
                       u16 sender length, sender, flags, u32 payload length, payload,
                       and with bit 1 of flags: u16 addressee length, addressee
    S  StreamStart   u64 stream id, flags, [with bit 1: u16 addressee length,
                     addressee,] sender (rest)
    F  StreamPiece   u64 stream id, u32 piece number, payload (rest)   -- not the last piece
    E  StreamPiece   u64 stream id, u32 piece number, payload (rest)   -- the last piece
    X  StreamAbort   u64 stream id
    J  MemberJoined  u16 owner length, owner, member id (rest)
    L  MemberLeft    u16 owner length, owner, member id (rest)
    Z  Split         f64 seconds
    O  Sequenced     epoch (16 bytes, ASCII), offset (20 ASCII decimal digits), then
                     an M or S of the same node (rest), or nothing (an epoch's start)

``O`` is built by Redis (``backplane/scripts.py``), not by a node: with history on, a
node's M and S go through a script that gives them the group's next offsets and
publishes them wrapped so, in the order of their offsets. ``offset`` is the first
message's (M) or the stream's (S); an ``O`` with nothing inside announces a new epoch
(offset 0: the history starts over).

On a node's own channel::

    R  Replace       owner (rest)
    K  Remove        u16 reason length, reason, owner (rest)
    G  Enter         u16 group length, group, owner (rest)
    V  Revoke        kind (s: a subject, j: a token id), f64 at, f64 until, value (rest)
    A  Ack           u64 stream id, u32 piece number

Payloads are raw bytes (a text payload is its UTF-8, as its sender wrote it), never
WebSocket frames. A message ends exactly where its layout does: bytes after the end of
M, X, Z or A are an error. For example, ``X`` from node ``0123456789abcdef`` for stream
5 is ``b"X0123456789abcdef\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x05"``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeAlias

import attrs

from .message import Message, StreamHead

__all__ = [
    "NODE_ID_LENGTH",
    "Ack",
    "Enter",
    "MemberJoined",
    "MemberLeft",
    "Messages",
    "NodeMessage",
    "NodeMessageError",
    "Remove",
    "Replace",
    "Revoke",
    "Sequenced",
    "Split",
    "StreamAbort",
    "StreamPiece",
    "StreamStart",
    "decode",
    "encode_bodies",
    "encode_messages",
    "owner_node",
    "owner_token",
    "stored_message",
]

#: Bytes in a node id, right after the kind byte of every message.
NODE_ID_LENGTH = 16

_HEADER = 1 + NODE_ID_LENGTH
_TEXT = 0x01
_TO = 0x02
_FLAGS = _TEXT | _TO

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")
# What follows a sender id in M: its flags and its payload's length.
_FLAGS_LENGTH = struct.Struct(">BI")
_STREAM_FLAGS = struct.Struct(">QB")
_PIECE_ID = struct.Struct(">QI")
# The smallest message in M: an empty sender id and an empty payload. Checking a count
# against it bounds the decoding loop by the data, whatever the count claims.
_MIN_MESSAGE = _U16.size + _FLAGS_LENGTH.size

_M = b"M"
_S = b"S"
_F = b"F"
_E = b"E"
_X = b"X"
_J = b"J"
_I = b"I"
_L = b"L"
_Z = b"Z"
_R = b"R"
_K = b"K"
_A = b"A"
_G = b"G"
_V = b"V"
_REVOKE = struct.Struct(">cdd")
_O = b"O"
#: Bytes of a history's epoch (16 hex digits) and of an offset in ``O`` (20 digits).
EPOCH_LENGTH = 16
_OFFSET_DIGITS = 20


class NodeMessageError(ValueError):
    """Bytes that are not a node message: the text says what is wrong with them."""


def _node_id(instance: object, attribute: attrs.Attribute[bytes], value: bytes) -> None:
    if len(value) != NODE_ID_LENGTH:
        raise ValueError(f"a node id is {NODE_ID_LENGTH} bytes, not {len(value)}: {value!r}")


def owner_token(node: str, serial: int, connection: str = "") -> str:
    """The owner token of a member's connection in one group: ``"<node id>:<serial>"``,
    the id of the node that holds the connection and that node's serial number for it,
    or ``"<node id>:<connection>.<serial>"`` naming the connection too (its memberships
    in several groups share ``"<node id>:<connection>."``: see :func:`owner_connection`).
    Unique in the cluster; it names the membership in the members hashes, in J, L, R, K
    and G, and in a node's membership entries (``backplane/names.py``)."""
    return f"{node}:{connection}.{serial}" if connection else f"{node}:{serial}"


def owner_connection(token: bytes) -> bytes:
    """What the owner tokens of one connection's memberships share (the token itself,
    for one that names no connection)."""
    head, dot, _ = token.rpartition(b".")
    return head + dot if dot else token


def owner_node(token: bytes) -> bytes:
    """The id of the node that holds the connection whose owner token is ``token``: the
    token's first :data:`NODE_ID_LENGTH` bytes (the Lua of ``backplane/scripts.py`` takes
    the same prefix)."""
    return token[:NODE_ID_LENGTH]


def _unsigned(bits: int) -> Callable[[object, attrs.Attribute[int], int], None]:
    limit = 1 << bits

    def check(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if not 0 <= value < limit:
            raise ValueError(f"{attribute.name} must be in 0..{limit - 1} (u{bits}), not {value}")

    return check


_u32 = _unsigned(32)
_u64 = _unsigned(64)


def _seconds(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    # NaN would make a message unequal to its own decoding; a negative or infinite span
    # is nothing a node could have measured.
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"seconds must be finite and at least 0, not {value!r}")


def _short_string(name: str, value: str) -> bytes:
    data = value.encode()
    if len(data) > 0xFFFF:
        raise ValueError(f"{name} is {len(data)} bytes in UTF-8; at most 65535 fit")
    return data


def _tuple(messages: Iterable[Message]) -> tuple[Message, ...]:
    # tuple() of a tuple is the tuple itself: free for the decoder and the courier.
    return tuple(messages)


@attrs.frozen
class Messages:
    """Whole messages a node's members sent to a group, published on the group's channel
    in the order they were sent. A batch travels as one Redis message so that a burst
    costs one publish; receiving nodes deliver them to their members in order."""

    node: bytes = attrs.field(validator=_node_id)
    messages: tuple[Message, ...] = attrs.field(converter=_tuple)

    def encode(self) -> bytes:
        return encode_messages(self.node, self.messages)


@attrs.frozen
class StreamStart:
    """A node claims the group for a message that streams in pieces. The group channel's
    order decides between claims: the first start wins, and the others wait for its end
    (or abort) before they claim again."""

    node: bytes = attrs.field(validator=_node_id)
    #: The sending node's number for the message, unique among its streams.
    stream_id: int = attrs.field(validator=_u64)
    head: StreamHead

    def encode(self) -> bytes:
        head = self.head
        flags = _TEXT if head.text else 0
        parts = [_S, self.node]
        if head.to is None:
            parts.append(_STREAM_FLAGS.pack(self.stream_id, flags))
        else:
            to = _short_string("addressee", head.to)
            parts += [_STREAM_FLAGS.pack(self.stream_id, flags | _TO), _U16.pack(len(to)), to]
        parts.append(head.sender.encode())
        return b"".join(parts)


@attrs.frozen
class StreamPiece:
    """One piece of a streamed message, in order: pieces count from 1, and ``last`` marks
    the one that ends the message (and releases the group for the next claim)."""

    node: bytes = attrs.field(validator=_node_id)
    stream_id: int = attrs.field(validator=_u64)
    piece: int = attrs.field(validator=_u32)
    #: Raw message data, not a WebSocket frame: each receiving node frames it its way.
    payload: bytes = attrs.field(repr=lambda payload: f"<{len(payload)} bytes>")
    last: bool

    def encode(self) -> bytes:
        return b"".join(
            [
                _E if self.last else _F,
                self.node,
                _PIECE_ID.pack(self.stream_id, self.piece),
                self.payload,
            ]
        )


@attrs.frozen
class StreamAbort:
    """The streamed message ends unfinished (its sender left mid-message, or a claim was
    given up): receivers cut it off and the group is free for the next claim."""

    node: bytes = attrs.field(validator=_node_id)
    stream_id: int = attrs.field(validator=_u64)

    def encode(self) -> bytes:
        return b"".join([_X, self.node, _U64.pack(self.stream_id)])


@attrs.frozen
class MemberJoined:
    """A member joined the group on the sending node (``J``; ``I`` when it carries the
    ``info`` the back end's connect hook gave it, as JSON)."""

    node: bytes = attrs.field(validator=_node_id)
    #: The client's id in the group.
    member_id: str
    #: The token of the member's connection, ``"<node hex>:<serial>"``.
    owner: str
    #: What the back end gave the member (a JSON object's bytes; b"": nothing).
    info: bytes = b""

    def encode(self) -> bytes:
        owner = _short_string("owner", self.owner)
        if not self.info:
            head = [_J, self.node]
        else:
            head = [_I, self.node, _U32.pack(len(self.info)), self.info]
        return b"".join([*head, _U16.pack(len(owner)), owner, self.member_id.encode()])


@attrs.frozen
class MemberLeft:
    """A member's connection left the group (announced by its node, or by the node that
    reaped its node)."""

    node: bytes = attrs.field(validator=_node_id)
    member_id: str
    owner: str

    def encode(self) -> bytes:
        owner = _short_string("owner", self.owner)
        return b"".join([_L, self.node, _U16.pack(len(owner)), owner, self.member_id.encode()])


@attrs.frozen
class Split:
    """The sending node lost Redis for a while: its messages of that time may never have
    arrived. Receivers close their members of the group who joined more than ``seconds``
    ago (those who joined since cannot have missed anything)."""

    node: bytes = attrs.field(validator=_node_id)
    seconds: float = attrs.field(validator=_seconds)

    def encode(self) -> bytes:
        return b"".join([_Z, self.node, _F64.pack(self.seconds)])


@attrs.frozen
class Replace:
    """Sent to a node's own channel: close the connection ``owner``, because a newer
    connection (on the sending node) took its member id."""

    node: bytes = attrs.field(validator=_node_id)
    owner: str

    def encode(self) -> bytes:
        return b"".join([_R, self.node, self.owner.encode()])


@attrs.frozen
class Remove:
    """Sent to a node's own channel: close the connection ``owner`` with 4005, because a
    back end removed its member through the HTTP API of the sending node."""

    node: bytes = attrs.field(validator=_node_id)
    owner: str
    reason: str

    def encode(self) -> bytes:
        reason = _short_string("reason", self.reason)
        return b"".join([_K, self.node, _U16.pack(len(reason)), reason, self.owner.encode()])


@attrs.frozen
class Enter:
    """Sent to a node's own channel: the connection ``owner`` (one of its memberships)
    joins the group ``group`` too, because a back end asked the HTTP API of the sending
    node (DESIGN.md §8)."""

    node: bytes = attrs.field(validator=_node_id)
    owner: str
    group: str

    def encode(self) -> bytes:
        group = _short_string("group", self.group)
        return b"".join([_G, self.node, _U16.pack(len(group)), group, self.owner.encode()])


@attrs.frozen
class Revoke:
    """Sent to every node's own channel: the back end revoked the tokens of a subject
    (``kind`` ``"sub"``) or one token (``"jti"``), ``value``, at ``at`` until ``until``
    (wall-clock seconds): close the connections it covers with 4007."""

    node: bytes = attrs.field(validator=_node_id)
    kind: str = attrs.field(validator=attrs.validators.in_(("sub", "jti")))
    value: str
    at: float
    until: float

    def encode(self) -> bytes:
        kind = b"s" if self.kind == "sub" else b"j"
        head = _REVOKE.pack(kind, self.at, self.until)
        return b"".join([_V, self.node, head, self.value.encode()])


@attrs.frozen
class Ack:
    """Sent to a streaming node's own channel: the sending node has queued that piece of
    that stream for its members, so the streamer may publish further ahead."""

    node: bytes = attrs.field(validator=_node_id)
    stream_id: int = attrs.field(validator=_u64)
    piece: int = attrs.field(validator=_u32)

    def encode(self) -> bytes:
        return b"".join([_A, self.node, _PIECE_ID.pack(self.stream_id, self.piece)])


def _epoch(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if len(value) != EPOCH_LENGTH or not value.isascii() or not value.isalnum():
        raise ValueError(f"an epoch is {EPOCH_LENGTH} ASCII letters or digits, not {value!r}")


@attrs.frozen
class Sequenced:
    """Whole messages or a stream's start, with their place in the group's history as
    Redis gave it: the history's ``epoch`` and the ``offset`` of the first (``inner``
    None: the history of the group starts over, with this epoch)."""

    node: bytes = attrs.field(validator=_node_id)
    epoch: str = attrs.field(validator=_epoch)
    offset: int = attrs.field(validator=_u64)
    inner: Messages | StreamStart | None

    def encode(self) -> bytes:
        """(Redis builds these; this is for tests, and says what the script does.)"""
        inner = b"" if self.inner is None else self.inner.encode()
        digits = str(self.offset).rjust(_OFFSET_DIGITS, "0").encode()
        return b"".join([_O, self.node, self.epoch.encode(), digits, inner])


#: Any message one node sends another.
NodeMessage: TypeAlias = (
    Messages
    | StreamStart
    | StreamPiece
    | StreamAbort
    | MemberJoined
    | MemberLeft
    | Split
    | Replace
    | Remove
    | Enter
    | Revoke
    | Ack
    | Sequenced
)


def encode_messages(node: bytes, messages: Sequence[Message]) -> bytes:
    """``Messages(node, messages).encode()``, without building the ``Messages``: the
    courier calls this once per flush."""
    if len(node) != NODE_ID_LENGTH:
        raise ValueError(f"a node id is {NODE_ID_LENGTH} bytes, not {len(node)}: {node!r}")
    try:
        header = _M + node + _U32.pack(len(messages))
    except struct.error:
        raise ValueError(_unencodable(messages)) from None
    # (Measured: joining the bodies is faster than appending every part to one list.)
    return b"".join([header, *encode_bodies(messages)])


def encode_bodies(messages: Sequence[Message]) -> list[bytes]:
    """Each message's part of an M, on its own: what a history keeps of it, and what the
    sequencing script joins into an M behind :func:`messages_header`."""
    pack_length, pack_flags = _U16.pack, _FLAGS_LENGTH.pack
    bodies = []
    try:
        for message in messages:
            sender = message.sender.encode()
            payload = message.payload
            flags = _TEXT if message.text else 0
            to = message.to
            if to is None:
                parts = [pack_length(len(sender)), sender, pack_flags(flags, len(payload)), payload]
            else:
                to_bytes = to.encode()
                parts = [
                    pack_length(len(sender)), sender, pack_flags(flags | _TO, len(payload)),
                    payload, pack_length(len(to_bytes)), to_bytes,
                ]  # fmt: skip
            bodies.append(b"".join(parts))
    except struct.error:
        # Diagnosed only after the fact, so that the loop above stays free of checks.
        raise ValueError(_unencodable(messages)) from None
    return bodies


def messages_header(node: bytes, count: int) -> bytes:
    """The start of an M of ``count`` messages from ``node``, before their bodies."""
    return b"".join([_M, node, _U32.pack(count)])


def stored_message(body: bytes) -> Message:
    """The message whose body (:func:`encode_bodies`) a history kept."""
    decoded = decode(messages_header(_NO_NODE, 1) + body)
    if type(decoded) is not Messages or len(decoded.messages) != 1:  # pragma: no cover
        raise NodeMessageError("a kept message is one message's body")
    return decoded.messages[0]


_NO_NODE = b"0" * NODE_ID_LENGTH


def _unencodable(messages: Sequence[Message]) -> str:
    if len(messages) > 0xFFFFFFFF:
        return f"{len(messages)} messages do not fit in one (at most {0xFFFFFFFF})"
    for index, message in enumerate(messages):
        size = len(message.sender.encode())
        if size > 0xFFFF:
            return f"message {index}: its sender id is {size} bytes in UTF-8; at most 65535 fit"
        if len(message.payload) > 0xFFFFFFFF:
            return f"message {index}: its payload is {len(message.payload)} bytes; 2**32 - 1 fit"
        if message.to is not None and len(message.to.encode()) > 0xFFFF:
            return f"message {index}: its addressee is too long; at most 65535 bytes fit"
    return "a message does not fit the layout"


# -- decoding ----------------------------------------------------------------------------

_Buffer: TypeAlias = "bytes | memoryview"


def decode(data: bytes | memoryview) -> NodeMessage:
    """The node message in ``data`` (one whole Redis pub/sub message).

    Raises :class:`NodeMessageError` (and nothing else) if it is not one: too short, an
    unknown kind, a field cut off or left over, a count the data cannot hold, bad UTF-8,
    flag bits this version does not know.
    """
    # Bytes stay bytes (slicing them is cheapest); any other buffer is read as bytes.
    buffer: _Buffer = data if isinstance(data, bytes) else memoryview(data).cast("B")
    size = len(buffer)
    if size < _HEADER:
        raise NodeMessageError(
            f"a node message is at least {_HEADER} bytes (kind, node id), not {size}"
        )
    decoder = _DECODERS.get(buffer[0])
    if decoder is None:
        raise NodeMessageError(f"unknown node message kind {bytes(buffer[:1])!r}")
    node = bytes(buffer[1:_HEADER])
    try:
        return decoder(buffer, node, size)
    except UnicodeDecodeError as exc:
        kind = chr(buffer[0])
        raise NodeMessageError(f"{kind}: a string is not UTF-8: {exc.reason}") from None


def _fixed(kind: str, buffer: _Buffer, size: int, layout: struct.Struct) -> tuple[Any, ...]:
    """The fields of a body that is exactly ``layout``."""
    body = size - _HEADER
    if body != layout.size:
        raise NodeMessageError(f"{kind}: the body is {layout.size} bytes, not {body}")
    return layout.unpack_from(buffer, _HEADER)


def _decode_messages(buffer: _Buffer, node: bytes, size: int) -> Messages:
    if size < _HEADER + 4:
        raise NodeMessageError(f"M: the message count is cut off ({size - _HEADER} of 4 bytes)")
    (count,) = _U32.unpack_from(buffer, _HEADER)
    pos = _HEADER + 4
    if count * _MIN_MESSAGE > size - pos:
        raise NodeMessageError(
            f"M: {count} messages claimed, but {size - pos} bytes cannot hold even "
            f"{count} empty ones ({_MIN_MESSAGE} bytes each)"
        )
    unpack_length = _U16.unpack_from
    unpack_flags = _FLAGS_LENGTH.unpack_from
    flags_size = _FLAGS_LENGTH.size
    messages: list[Message] = []
    append = messages.append
    for index in range(count):
        if pos + 2 > size:
            raise NodeMessageError(f"M: message {index} of {count} is cut off in its sender")
        (length,) = unpack_length(buffer, pos)
        start = pos + 2
        pos = start + length
        if pos + flags_size > size:
            raise NodeMessageError(f"M: message {index} of {count} is cut off in its sender")
        sender = str(buffer[start:pos], "utf-8")
        flags, length = unpack_flags(buffer, pos)
        if flags & ~_FLAGS:
            raise NodeMessageError(f"M: message {index} has unknown flags {flags:#04x}")
        start = pos + flags_size
        pos = start + length
        if pos > size:
            raise NodeMessageError(
                f"M: message {index} of {count} claims a {length}-byte payload, "
                f"{size - start} bytes are left"
            )
        payload = bytes(buffer[start:pos])
        to = None
        if flags & _TO:
            to, pos = _string(buffer, pos, size, f"M: message {index}'s addressee")
        append(Message(sender, bool(flags & _TEXT), payload, to))
    if pos != size:
        raise NodeMessageError(f"M: {size - pos} bytes after the last of {count} messages")
    return Messages(node, tuple(messages))


def _decode_start(buffer: _Buffer, node: bytes, size: int) -> StreamStart:
    start = _HEADER + _STREAM_FLAGS.size
    if size < start:
        raise NodeMessageError(f"S: the stream id and flags are cut off ({size - _HEADER} of 9)")
    stream_id, flags = _STREAM_FLAGS.unpack_from(buffer, _HEADER)
    if flags & ~_FLAGS:
        raise NodeMessageError(f"S: unknown flags {flags:#04x}")
    to = None
    if flags & _TO:
        to, start = _string(buffer, start, size, "S: the addressee")
    sender = str(buffer[start:], "utf-8")
    return StreamStart(node, stream_id, StreamHead(sender, bool(flags & _TEXT), to))


def _string(buffer: _Buffer, pos: int, size: int, what: str) -> tuple[str, int]:
    """The u16-length-prefixed string at ``pos``, and where it ends."""
    if pos + 2 > size:
        raise NodeMessageError(f"{what}'s length is cut off")
    (length,) = _U16.unpack_from(buffer, pos)
    start = pos + 2
    end = start + length
    if end > size:
        raise NodeMessageError(f"{what} is {length} bytes, only {size - start} are left")
    return str(buffer[start:end], "utf-8"), end


def _decode_piece(buffer: _Buffer, node: bytes, size: int) -> StreamPiece:
    start = _HEADER + _PIECE_ID.size
    if size < start:
        kind = chr(buffer[0])
        raise NodeMessageError(f"{kind}: the stream id and piece are cut off")
    stream_id, piece = _PIECE_ID.unpack_from(buffer, _HEADER)
    return StreamPiece(node, stream_id, piece, bytes(buffer[start:]), buffer[0] == _E[0])


def _decode_abort(buffer: _Buffer, node: bytes, size: int) -> StreamAbort:
    (stream_id,) = _fixed("X", buffer, size, _U64)
    return StreamAbort(node, stream_id)


def _member(buffer: _Buffer, size: int) -> tuple[str, str]:
    """The member id and the owner of a J or L body."""
    kind = chr(buffer[0])
    if size < _HEADER + 2:
        raise NodeMessageError(f"{kind}: the owner's length is cut off")
    (length,) = _U16.unpack_from(buffer, _HEADER)
    start = _HEADER + 2
    end = start + length
    if end > size:
        raise NodeMessageError(
            f"{kind}: the owner is {length} bytes, only {size - start} bytes are left"
        )
    return str(buffer[end:], "utf-8"), str(buffer[start:end], "utf-8")


def _decode_joined(buffer: _Buffer, node: bytes, size: int) -> MemberJoined:
    member_id, owner = _member(buffer, size)
    return MemberJoined(node, member_id, owner)


def _decode_joined_with_info(buffer: _Buffer, node: bytes, size: int) -> MemberJoined:
    if size < _HEADER + _U32.size:
        raise NodeMessageError("I: the info's length is cut off")
    (length,) = _U32.unpack_from(buffer, _HEADER)
    start = _HEADER + _U32.size
    end = start + length
    if end > size:
        raise NodeMessageError(f"I: the info is {length} bytes, only {size - start} are left")
    info = bytes(buffer[start:end])
    rest = memoryview(bytes(buffer[:_HEADER]) + bytes(buffer[end:size]))
    member_id, owner = _member(rest, len(rest))
    return MemberJoined(node, member_id, owner, info)


def _decode_left(buffer: _Buffer, node: bytes, size: int) -> MemberLeft:
    member_id, owner = _member(buffer, size)
    return MemberLeft(node, member_id, owner)


def _decode_split(buffer: _Buffer, node: bytes, size: int) -> Split:
    (seconds,) = _fixed("Z", buffer, size, _F64)
    if not (math.isfinite(seconds) and seconds >= 0):
        raise NodeMessageError(f"Z: seconds must be finite and at least 0, not {seconds!r}")
    return Split(node, seconds)


def _decode_replace(buffer: _Buffer, node: bytes, size: int) -> Replace:
    return Replace(node, str(buffer[_HEADER:], "utf-8"))


def _decode_remove(buffer: _Buffer, node: bytes, size: int) -> Remove:
    reason, start = _string(buffer, _HEADER, size, "K: the reason")
    return Remove(node, str(buffer[start:], "utf-8"), reason)


def _decode_revoke(buffer: _Buffer, node: bytes, size: int) -> Revoke:
    start = _HEADER + _REVOKE.size
    if size < start:
        raise NodeMessageError(f"V: the kind and times are cut off ({size - _HEADER} of 17)")
    kind, at, until = _REVOKE.unpack_from(buffer, _HEADER)
    if kind not in (b"s", b"j") or not (math.isfinite(at) and math.isfinite(until)):
        raise NodeMessageError(f"V: not a revocation: kind {kind!r}, at {at!r}, until {until!r}")
    value = str(buffer[start:], "utf-8")
    return Revoke(node, "sub" if kind == b"s" else "jti", value, at, until)


def _decode_enter(buffer: _Buffer, node: bytes, size: int) -> Enter:
    group, start = _string(buffer, _HEADER, size, "G: the group")
    return Enter(node, str(buffer[start:], "utf-8"), group)


def _decode_ack(buffer: _Buffer, node: bytes, size: int) -> Ack:
    stream_id, piece = _fixed("A", buffer, size, _PIECE_ID)
    return Ack(node, stream_id, piece)


def _decode_sequenced(buffer: _Buffer, node: bytes, size: int) -> Sequenced:
    start = _HEADER + EPOCH_LENGTH + _OFFSET_DIGITS
    if size < start:
        raise NodeMessageError(f"O: the epoch and offset are cut off ({size - _HEADER} of 36)")
    epoch = str(buffer[_HEADER : _HEADER + EPOCH_LENGTH], "ascii", "replace")
    digits = bytes(buffer[_HEADER + EPOCH_LENGTH : start])
    if not digits.isdigit():
        raise NodeMessageError(f"O: the offset is not {_OFFSET_DIGITS} digits: {digits!r}")
    inner: Messages | StreamStart | None = None
    if size > start:
        decoded = decode(memoryview(buffer)[start:])
        if not isinstance(decoded, Messages | StreamStart):
            raise NodeMessageError(f"O: holds {bytes(buffer[start : start + 1])!r}, not M or S")
        if decoded.node != node:
            raise NodeMessageError("O: holds another node's message")
        inner = decoded
    try:
        return Sequenced(node, epoch, int(digits), inner)
    except ValueError as exc:
        raise NodeMessageError(f"O: {exc}") from None


_DECODERS: dict[int, Callable[[_Buffer, bytes, int], NodeMessage]] = {
    _M[0]: _decode_messages,
    _S[0]: _decode_start,
    _F[0]: _decode_piece,
    _E[0]: _decode_piece,
    _X[0]: _decode_abort,
    _J[0]: _decode_joined,
    _I[0]: _decode_joined_with_info,
    _L[0]: _decode_left,
    _Z[0]: _decode_split,
    _R[0]: _decode_replace,
    _K[0]: _decode_remove,
    _G[0]: _decode_enter,
    _V[0]: _decode_revoke,
    _A[0]: _decode_ack,
    _O[0]: _decode_sequenced,
}
