"""The node-to-node messages, without Redis: the exact bytes of each kind, round trips,
and that no malformed bytes get past ``decode`` as anything but NodeMessageError."""

from __future__ import annotations

import struct

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_wsproxy.protocol.message import Message, StreamHead
from trio_wsproxy.protocol.nodes import (
    NODE_ID_LENGTH,
    Ack,
    Enter,
    MemberJoined,
    MemberLeft,
    Messages,
    NodeMessage,
    NodeMessageError,
    Remove,
    Replace,
    Revoke,
    Sequenced,
    Split,
    StreamAbort,
    StreamPiece,
    StreamStart,
    decode,
    encode_bodies,
    encode_messages,
    messages_header,
    owner_node,
    owner_token,
    stored_message,
)

NODE = b"0123456789abcdef"
QUICK = settings(max_examples=150, deadline=None)

# -- strategies --------------------------------------------------------------------------

node_ids = st.binary(min_size=NODE_ID_LENGTH, max_size=NODE_ID_LENGTH)
u32s = st.integers(0, 2**32 - 1)
u64s = st.integers(0, 2**64 - 1)
# Any text but lone surrogates (which are not UTF-8): member ids are whatever clients chose.
texts = st.text(max_size=40)
payloads = st.binary(max_size=200)
addressees = st.none() | texts
a_message = st.builds(Message, texts, st.booleans(), payloads, addressees)

node_messages: st.SearchStrategy[NodeMessage] = st.one_of(
    st.builds(Messages, node_ids, st.lists(a_message, max_size=12).map(tuple)),
    st.builds(StreamStart, node_ids, u64s, st.builds(StreamHead, texts, st.booleans(), addressees)),
    st.builds(StreamPiece, node_ids, u64s, u32s, payloads, st.booleans()),
    st.builds(StreamAbort, node_ids, u64s),
    st.builds(MemberJoined, node_ids, texts, texts),
    st.builds(MemberJoined, node_ids, texts, texts, st.binary(min_size=1, max_size=64)),
    st.builds(MemberLeft, node_ids, texts, texts),
    st.builds(Split, node_ids, st.floats(min_value=0, allow_nan=False, allow_infinity=False)),
    st.builds(Replace, node_ids, texts),
    st.builds(Remove, node_ids, texts, texts),
    st.builds(Enter, node_ids, texts, texts),
    st.builds(
        Revoke,
        node_ids,
        st.sampled_from(["sub", "jti"]),
        texts,
        st.floats(allow_nan=False, allow_infinity=False),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    st.builds(Ack, node_ids, u64s, u32s),
)
epochs = st.text("0123456789abcdef", min_size=16, max_size=16)
heads = st.builds(StreamHead, texts, st.booleans(), addressees)


@st.composite
def sequenced(draw: st.DrawFn) -> Sequenced:
    node = draw(node_ids)
    inner = draw(
        st.none()
        | st.builds(Messages, st.just(node), st.lists(a_message, max_size=6).map(tuple))
        | st.builds(StreamStart, st.just(node), u64s, heads)
    )
    return Sequenced(node, draw(epochs), draw(u64s), inner)


every_kind: st.SearchStrategy[NodeMessage] = node_messages | sequenced()


# -- the wire format, byte for byte ------------------------------------------------------

VECTORS: list[tuple[NodeMessage, bytes]] = [
    (
        Messages(NODE, (Message("ä", True, b"hi"), Message("b", False, b""))),
        b"M" + NODE + b"\x00\x00\x00\x02"
        + b"\x00\x02" + b"\xc3\xa4" + b"\x01" + b"\x00\x00\x00\x02" + b"hi"
        + b"\x00\x01" + b"b" + b"\x00" + b"\x00\x00\x00\x00",
    ),
    (Messages(NODE, ()), b"M" + NODE + b"\x00\x00\x00\x00"),
    (
        # Addressed to one member (bit 1 of flags): the addressee follows the payload.
        Messages(NODE, (Message("a", False, b"x", to="bo"),)),
        b"M" + NODE + b"\x00\x00\x00\x01"
        + b"\x00\x01" + b"a" + b"\x02" + b"\x00\x00\x00\x01" + b"x" + b"\x00\x02" + b"bo",
    ),
    (
        StreamStart(NODE, 1, StreamHead("a", True, to="bo")),
        b"S" + NODE + b"\x00\x00\x00\x00\x00\x00\x00\x01" + b"\x03" + b"\x00\x02bo" + b"a",
    ),
    (
        StreamStart(NODE, 0x0102030405060708, StreamHead("bob", True)),
        b"S" + NODE + b"\x01\x02\x03\x04\x05\x06\x07\x08" + b"\x01" + b"bob",
    ),
    (
        StreamStart(NODE, 1, StreamHead("", False)),
        b"S" + NODE + b"\x00\x00\x00\x00\x00\x00\x00\x01" + b"\x00",
    ),
    (
        StreamPiece(NODE, 7, 1, b"data", last=False),
        b"F" + NODE + b"\x00\x00\x00\x00\x00\x00\x00\x07" + b"\x00\x00\x00\x01" + b"data",
    ),
    (
        StreamPiece(NODE, 7, 0x01020304, b"", last=True),
        b"E" + NODE + b"\x00\x00\x00\x00\x00\x00\x00\x07" + b"\x01\x02\x03\x04",
    ),
    (StreamAbort(NODE, 2**64 - 1), b"X" + NODE + b"\xff" * 8),
    (
        MemberJoined(NODE, member_id="alice", owner="0123456789abcdef:3"),
        b"J" + NODE + b"\x00\x12" + b"0123456789abcdef:3" + b"alice",
    ),
    (
        MemberJoined(NODE, "alice", "0123456789abcdef:3", b'{"name":"Alice"}'),
        b"I" + NODE + b"\x00\x00\x00\x10" + b'{"name":"Alice"}'
        + b"\x00\x12" + b"0123456789abcdef:3" + b"alice",
    ),
    (
        MemberLeft(NODE, member_id="zoë", owner="0123456789abcdef:4"),
        b"L" + NODE + b"\x00\x12" + b"0123456789abcdef:4" + b"zo\xc3\xab",
    ),
    (Split(NODE, 1.5), b"Z" + NODE + b"\x3f\xf8\x00\x00\x00\x00\x00\x00"),
    (Replace(NODE, "fedcba9876543210:12"), b"R" + NODE + b"fedcba9876543210:12"),
    (
        Remove(NODE, "fedcba9876543210:3", "gone"),
        b"K" + NODE + b"\x00\x04" + b"gone" + b"fedcba9876543210:3",
    ),
    (
        Enter(NODE, "fedcba9876543210:3.7", "room"),
        b"G" + NODE + b"\x00\x04" + b"room" + b"fedcba9876543210:3.7",
    ),
    (
        Revoke(NODE, "sub", "alice", 1.5, 2.0),
        b"V" + NODE + b"s" + b"\x3f\xf8" + bytes(6) + b"\x40\x00" + bytes(6) + b"alice",
    ),
    (
        Ack(NODE, 9, 2),
        b"A" + NODE + b"\x00\x00\x00\x00\x00\x00\x00\x09" + b"\x00\x00\x00\x02",
    ),
    (
        Sequenced(NODE, "9f86d081884c7d65", 17, Messages(NODE, (Message("a", True, b"hi"),))),
        b"O" + NODE + b"9f86d081884c7d65" + b"00000000000000000017"
        + b"M" + NODE + b"\x00\x00\x00\x01" + b"\x00\x01a" + b"\x01" + b"\x00\x00\x00\x02hi",
    ),
    (Sequenced(NODE, "9f86d081884c7d65", 0, None), b"O" + NODE + b"9f86d081884c7d65" + b"0" * 20),
]  # fmt: skip


@pytest.mark.parametrize(("message", "wire"), VECTORS, ids=lambda v: type(v).__name__)
def test_each_kind_encodes_to_its_exact_bytes(message: NodeMessage, wire: bytes) -> None:
    assert message.encode() == wire


@pytest.mark.parametrize(("message", "wire"), VECTORS, ids=lambda v: type(v).__name__)
def test_each_kind_decodes_from_its_exact_bytes(message: NodeMessage, wire: bytes) -> None:
    assert decode(wire) == message
    assert decode(memoryview(wire)) == message
    assert decode(memoryview(bytearray(wire))) == message


def test_every_kind_has_a_vector() -> None:
    assert {type(message) for message, _ in VECTORS} == {
        Messages, StreamStart, StreamPiece, StreamAbort, MemberJoined, MemberLeft, Split,
        Replace, Remove, Enter, Revoke, Ack, Sequenced,
    }  # fmt: skip


# -- round trips -------------------------------------------------------------------------


KINDS = {
    Messages: b"M", StreamStart: b"S", StreamAbort: b"X", MemberJoined: b"J", MemberLeft: b"L",
    Split: b"Z", Replace: b"R", Remove: b"K", Enter: b"G", Revoke: b"V", Ack: b"A",
    Sequenced: b"O",
}  # fmt: skip


def _kind(message: NodeMessage) -> bytes:
    if isinstance(message, StreamPiece):
        return b"E" if message.last else b"F"
    if isinstance(message, MemberJoined) and message.info:
        return b"I"  # (a join with the info the back end gave the member)
    return KINDS[type(message)]


@QUICK
@given(every_kind)
def test_every_message_decodes_to_itself(message: NodeMessage) -> None:
    data = message.encode()
    assert data[:1] == _kind(message)
    assert data[1 : 1 + NODE_ID_LENGTH] == message.node
    assert decode(data) == message


@QUICK
@given(node_ids, st.lists(a_message, max_size=12))
def test_encode_messages_is_messages_encode(node: bytes, messages: list[Message]) -> None:
    assert encode_messages(node, messages) == Messages(node, tuple(messages)).encode()


hex_node_ids = st.text("0123456789abcdef", min_size=NODE_ID_LENGTH, max_size=NODE_ID_LENGTH)


@given(hex_node_ids, u64s)
def test_an_owner_token_names_the_node_that_holds_the_connection(node: str, serial: int) -> None:
    token = owner_token(node, serial)
    assert token == f"{node}:{serial}"
    assert owner_node(token.encode()) == node.encode()


def test_a_list_of_messages_is_kept_as_a_tuple() -> None:
    message = Message("a", True, b"x")
    assert Messages(NODE, [message]) == Messages(NODE, (message,))


def test_a_large_batch_round_trips() -> None:
    messages = tuple(
        Message(f"m{i % 7}", i % 2 == 0, bytes([i % 256]) * (i % 5)) for i in range(5000)
    )
    assert decode(encode_messages(NODE, messages)) == Messages(NODE, messages)


def test_streamed_pieces_carry_large_payloads_whole() -> None:
    piece = StreamPiece(NODE, 3, 17, bytes(range(256)) * 4096, last=False)
    assert decode(piece.encode()) == piece


# -- what decode rejects -----------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=64),
        # A known kind and a node id, so that the body is what gets exercised.
        st.builds(
            lambda kind, node, body: kind + node + body,
            st.sampled_from([bytes([k]) for k in b"MSFEXJLZRAO"]),
            node_ids,
            st.binary(max_size=64),
        ),
    )
)
def test_decode_returns_a_message_or_raises_node_message_error(data: bytes) -> None:
    try:
        message = decode(data)
    except NodeMessageError:
        return
    assert message.encode() == data  # whatever decodes is exactly what it encodes to


@QUICK
@given(every_kind, st.data())
def test_a_corrupted_byte_never_raises_anything_else(
    message: NodeMessage, data: st.DataObject
) -> None:
    wire = bytearray(message.encode())
    index = data.draw(st.integers(0, len(wire) - 1))
    wire[index] = data.draw(st.integers(0, 255))
    try:
        decode(bytes(wire))
    except NodeMessageError:
        pass


def _last_field(message: NodeMessage) -> bytes | None:
    """The bytes of a field that runs to the end of the message, if its kind has one."""
    match message:
        case StreamStart():
            return message.head.sender.encode()
        case StreamPiece():
            return message.payload
        case MemberJoined() | MemberLeft():
            return message.member_id.encode()
        case Replace() | Remove() | Enter():
            return message.owner.encode()
        case Revoke():
            return message.value.encode()
        case _:
            return None


def _with_last_field(message: NodeMessage, kept: bytes) -> NodeMessage:
    """``message`` with its rest-of-data field cut to ``kept`` (UnicodeDecodeError if the
    cut splits a character of a text field)."""
    match message:
        case StreamStart():
            head = message.head
            return attrs.evolve(message, head=StreamHead(kept.decode(), head.text, head.to))
        case StreamPiece():
            return attrs.evolve(message, payload=kept)
        case MemberJoined() | MemberLeft():
            return attrs.evolve(message, member_id=kept.decode())
        case Replace() | Remove() | Enter():
            return attrs.evolve(message, owner=kept.decode())
        case Revoke():
            return attrs.evolve(message, value=kept.decode())
    raise AssertionError(message)


@QUICK
@given(node_messages)
def test_every_truncation_is_rejected_unless_it_only_shortens_the_last_field(
    message: NodeMessage,
) -> None:
    """A fixed-end kind (M, X, Z, A) loses every cut. A kind ending in a rest-of-data field
    loses every cut before that field starts; a cut inside it is the same message with that
    field shorter, unless it splits a UTF-8 character of a text field."""
    wire = message.encode()
    last = _last_field(message)
    tail_start = len(wire) if last is None else len(wire) - len(last)
    for cut in range(len(wire)):
        prefix = wire[:cut]
        if cut < tail_start:
            with pytest.raises(NodeMessageError):
                decode(prefix)
            continue
        try:
            expected = _with_last_field(message, wire[tail_start:cut])
        except UnicodeDecodeError:
            with pytest.raises(NodeMessageError, match="UTF-8"):
                decode(prefix)
        else:
            assert decode(prefix) == expected


def test_a_truncated_multibyte_sender_is_rejected_not_shortened() -> None:
    wire = StreamStart(NODE, 1, StreamHead("é", True)).encode()
    with pytest.raises(NodeMessageError, match="UTF-8"):
        decode(wire[:-1])


@pytest.mark.parametrize(
    "message", [Messages(NODE, ()), StreamAbort(NODE, 1), Split(NODE, 2.0), Ack(NODE, 1, 1)]
)
def test_fixed_end_kinds_reject_trailing_bytes(message: NodeMessage) -> None:
    with pytest.raises(NodeMessageError):
        decode(message.encode() + b"\x00")


def test_trailing_bytes_after_a_batch_are_rejected() -> None:
    wire = encode_messages(NODE, [Message("a", False, b"x")])
    with pytest.raises(NodeMessageError, match="after the last"):
        decode(wire + b"junk")


def test_a_count_larger_than_the_data_is_rejected_before_allocating() -> None:
    wire = b"M" + NODE + struct.pack(">I", 2**32 - 1) + bytes(10)
    with pytest.raises(NodeMessageError, match="4294967295 messages"):
        decode(wire)


def test_a_count_one_more_than_sent_is_rejected() -> None:
    wire = bytearray(encode_messages(NODE, [Message("a", True, b"")] * 3))
    wire[17:21] = struct.pack(">I", 4)
    with pytest.raises(NodeMessageError):
        decode(bytes(wire))


def test_lengths_larger_than_the_data_are_rejected() -> None:
    sender_too_long = b"M" + NODE + b"\x00\x00\x00\x01" + b"\xff\xff" + b"a" + b"\x00" + bytes(4)
    payload_too_long = b"M" + NODE + b"\x00\x00\x00\x01" + b"\x00\x00" + b"\x00" + b"\xff" * 4
    owner_too_long = b"J" + NODE + b"\x00\x05" + b"abc"
    addressed = b"M" + NODE + b"\x00\x00\x00\x01" + bytes(2) + b"\x02" + bytes(4)
    addressee_too_long = addressed + b"\x00\x09ab"
    addressee_cut = addressed + b"\x00"
    stream_addressee_too_long = b"S" + NODE + bytes(8) + b"\x02" + b"\x00\x09ab"
    for wire in (
        sender_too_long,
        payload_too_long,
        owner_too_long,
        addressee_too_long,
        addressee_cut,
        stream_addressee_too_long,
    ):
        with pytest.raises(NodeMessageError):
            decode(wire)


@pytest.mark.parametrize(
    "wire",
    [
        b"M" + NODE + b"\x00\x00\x00\x01" + b"\x00\x00" + b"\x04" + bytes(4),
        b"M" + NODE + b"\x00\x00\x00\x01" + b"\x00\x00" + b"\x81" + bytes(4),
        b"S" + NODE + bytes(8) + b"\x05" + b"bob",
        b"S" + NODE + bytes(8) + b"\x80",
    ],
)
def test_unknown_flag_bits_are_rejected(wire: bytes) -> None:
    with pytest.raises(NodeMessageError, match="flags"):
        decode(wire)


@pytest.mark.parametrize(
    "wire",
    [
        b"M" + NODE + b"\x00\x00\x00\x01" + b"\x00\x01" + b"\xff" + b"\x01" + bytes(4),
        b"S" + NODE + bytes(8) + b"\x01" + b"\xc3",
        b"J" + NODE + b"\x00\x01" + b"\xff" + b"alice",
        b"L" + NODE + b"\x00\x01" + b"a" + b"\xed\xa0\x80",  # an encoded surrogate
        b"R" + NODE + b"\xc0\xaf",  # an overlong "/"
    ],
)
def test_bad_utf8_is_rejected(wire: bytes) -> None:
    with pytest.raises(NodeMessageError, match="UTF-8"):
        decode(wire)


@pytest.mark.parametrize("wire", [b"", b"M", b"A" + NODE[:-1]])
def test_less_than_a_kind_and_a_node_id_is_rejected(wire: bytes) -> None:
    with pytest.raises(NodeMessageError, match="at least 17"):
        decode(wire)


def test_an_unknown_kind_is_rejected() -> None:
    with pytest.raises(NodeMessageError, match="unknown node message kind b'Q'"):
        decode(b"Q" + NODE + bytes(12))


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), -1.0])
def test_split_seconds_must_be_finite_and_not_negative(seconds: float) -> None:
    with pytest.raises(NodeMessageError, match="seconds"):
        decode(b"Z" + NODE + struct.pack(">d", seconds))
    with pytest.raises(ValueError, match="seconds"):
        Split(NODE, seconds)


def test_node_message_error_is_a_value_error() -> None:
    assert issubclass(NodeMessageError, ValueError)


# -- what construction and encoding reject -----------------------------------------------


@pytest.mark.parametrize("node", [b"", NODE[:-1], NODE + b"0"])
def test_a_node_id_is_exactly_16_bytes(node: bytes) -> None:
    for build in (
        lambda: Messages(node, ()),
        lambda: StreamStart(node, 1, StreamHead("a", True)),
        lambda: StreamPiece(node, 1, 1, b"", last=True),
        lambda: StreamAbort(node, 1),
        lambda: MemberJoined(node, "a", "b"),
        lambda: MemberLeft(node, "a", "b"),
        lambda: Split(node, 1.0),
        lambda: Replace(node, "b"),
        lambda: Ack(node, 1, 1),
        lambda: encode_messages(node, []),
    ):
        with pytest.raises(ValueError, match="16 bytes"):
            build()


@pytest.mark.parametrize("stream_id", [-1, 2**64])
def test_a_stream_id_fits_in_64_bits(stream_id: int) -> None:
    for build in (
        lambda: StreamStart(NODE, stream_id, StreamHead("a", True)),
        lambda: StreamPiece(NODE, stream_id, 1, b"", last=False),
        lambda: StreamAbort(NODE, stream_id),
        lambda: Ack(NODE, stream_id, 1),
    ):
        with pytest.raises(ValueError, match="stream_id"):
            build()


@pytest.mark.parametrize("piece", [-1, 2**32])
def test_a_piece_number_fits_in_32_bits(piece: int) -> None:
    with pytest.raises(ValueError, match="piece"):
        StreamPiece(NODE, 1, piece, b"", last=False)
    with pytest.raises(ValueError, match="piece"):
        Ack(NODE, 1, piece)


def test_the_widest_ids_are_accepted() -> None:
    for message in (StreamPiece(NODE, 2**64 - 1, 2**32 - 1, b"", True), Ack(NODE, 0, 0)):
        assert decode(message.encode()) == message


def test_a_sender_id_or_owner_too_long_for_its_u16_length_cannot_be_encoded() -> None:
    long = "é" * 40000  # 80000 bytes in UTF-8, though only 40000 characters
    with pytest.raises(ValueError, match="sender id is 80000 bytes"):
        encode_messages(NODE, [Message("a", True, b""), Message(long, True, b"")])
    with pytest.raises(ValueError, match="owner is 80000 bytes"):
        MemberJoined(NODE, "a", long).encode()
    with pytest.raises(ValueError, match="owner is 80000 bytes"):
        MemberLeft(NODE, "a", long).encode()
    # Where a string runs to the end, there is no length to outgrow.
    assert decode(Replace(NODE, long).encode()) == Replace(NODE, long)
    joined = MemberJoined(NODE, long, "o")
    assert decode(joined.encode()) == joined


# -- sequenced messages (history on a cluster) ---------------------------------------------


@QUICK
@given(sequenced())
def test_a_sequenced_message_cut_anywhere_is_rejected_or_a_shorter_one(message: Sequenced) -> None:
    """Cut before its inner message starts, an O is rejected; cut inside it, it is an O
    around whatever the cut inner message decodes to (or rejected with it)."""
    wire = message.encode()
    header = 1 + NODE_ID_LENGTH + 16 + 20
    for cut in range(len(wire)):
        if cut < header:
            with pytest.raises(NodeMessageError):
                decode(wire[:cut])
            continue
        try:
            inner = None if cut == header else decode(wire[header:cut])
        except NodeMessageError:
            with pytest.raises(NodeMessageError):
                decode(wire[:cut])
        else:
            assert decode(wire[:cut]) == attrs.evolve(message, inner=inner)


def test_a_sequenced_message_holds_only_its_own_nodes_m_or_s() -> None:
    prefix = b"O" + NODE + b"9f86d081884c7d65" + b"0" * 20
    other = b"fedcba9876543210"
    for inner, error in (
        (Messages(other, ()).encode(), "another node"),
        (StreamAbort(NODE, 1).encode(), "not M or S"),
        (Sequenced(NODE, "9f86d081884c7d65", 1, None).encode(), "not M or S"),
    ):
        with pytest.raises(NodeMessageError, match=error):
            decode(prefix + inner)
    for bad in (b"O" + NODE + b"9f86d081884c7d6-" + b"0" * 20, prefix[:-1] + b"x"):
        with pytest.raises(NodeMessageError):
            decode(bad)
    with pytest.raises(NodeMessageError):  # 20 digits, but over 2**64 - 1
        decode(b"O" + NODE + b"9f86d081884c7d65" + b"9" * 20)


@QUICK
@given(st.lists(a_message, min_size=1, max_size=8))
def test_bodies_behind_a_header_are_the_m_and_each_is_kept_alone(messages: list[Message]) -> None:
    """What the sequencing script builds from the bodies is the M the node would have sent,
    and each body kept in the history decodes to its message."""
    bodies = encode_bodies(messages)
    whole = messages_header(NODE, len(messages)) + b"".join(bodies)
    assert whole == encode_messages(NODE, messages)
    for body, message in zip(bodies, messages, strict=True):
        kept = stored_message(body)
        assert (kept.sender, kept.text, kept.payload, kept.to) == (
            message.sender, message.text, message.payload, message.to
        )  # fmt: skip
