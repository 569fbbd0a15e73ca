"""The frame parser hands data over as it arrives and refuses what RFC 6455 forbids."""

from __future__ import annotations

import sys
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.speedups import apply_mask

from trio_wsproxy import CloseCode
from trio_wsproxy.protocol import frames as frames_module
from trio_wsproxy.protocol.frames import (
    OP_BINARY,
    OP_TEXT,
    Close,
    Data,
    FrameParser,
    Ping,
    Pong,
    ProtocolError,
    close_frame,
    frame,
)
from wsraw import OP_CLOSE, OP_CONT, OP_PING, OP_PONG, mask_frame


def messages(events: list[object]) -> list[tuple[bool, bytes]]:
    """Reassemble Data events into (text, payload) messages, checking first/last marks."""
    out: list[tuple[bool, bytes]] = []
    parts: list[bytes] | None = None
    for event in events:
        assert isinstance(event, Data)
        if event.first:
            assert parts is None
            parts = []
        assert parts is not None
        parts.append(event.payload)
        if event.last:
            out.append((event.text, b"".join(parts)))
            parts = None
    return out


def test_a_small_message_is_one_event() -> None:
    events = FrameParser().feed(mask_frame(OP_TEXT, b"hello"))
    assert events == [Data(b"hello", True, True, True)]


def test_several_frames_in_one_read() -> None:
    data = (
        mask_frame(OP_TEXT, b"a") + mask_frame(OP_BINARY, b"\x00\xff") + mask_frame(OP_PING, b"p")
    )
    events = FrameParser().feed(data)
    assert events == [
        Data(b"a", True, True, True),
        Data(b"\x00\xff", False, True, True),
        Ping(b"p"),
    ]


def test_payload_is_handed_over_before_the_frame_ends() -> None:
    parser = FrameParser()
    data = mask_frame(OP_BINARY, bytes(range(256)) * 1000)
    first = parser.feed(data[:5000])
    assert first and isinstance(first[0], Data) and first[0].first and not first[0].last
    rest = parser.feed(data[5000:])
    assert messages(first + rest) == [(False, bytes(range(256)) * 1000)]


def test_control_frames_may_come_between_fragments() -> None:
    data = (
        mask_frame(OP_TEXT, b"he", fin=False)
        + mask_frame(OP_PING, b"x")
        + mask_frame(OP_CONT, b"llo", fin=True)
    )
    events = FrameParser().feed(data)
    assert Ping(b"x") in events
    assert messages([e for e in events if isinstance(e, Data)]) == [(True, b"hello")]


def test_close_frame_carries_code_and_reason_and_ends_parsing() -> None:
    parser = FrameParser()
    events = parser.feed(mask_frame(OP_CLOSE, (1000).to_bytes(2, "big") + b"bye") + b"junk")
    assert events == [Close(1000, "bye")]
    assert parser.feed(b"more junk") == []


def test_empty_close_and_pong() -> None:
    assert FrameParser().feed(mask_frame(OP_PONG, b"") + mask_frame(OP_CLOSE, b"")) == [
        Pong(b""),
        Close(None, ""),
    ]


def test_empty_messages_are_messages() -> None:
    events = FrameParser().feed(mask_frame(OP_TEXT, b"") + mask_frame(OP_BINARY, b""))
    assert messages(events) == [(True, b""), (False, b"")]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (mask_frame(OP_TEXT, b"hi", masked=False), CloseCode.PROTOCOL_ERROR),
        (bytes([0x81 | 0x40, 0x80]) + b"\0\0\0\0", CloseCode.PROTOCOL_ERROR),  # RSV1
        (mask_frame(0x3, b"x"), CloseCode.PROTOCOL_ERROR),  # reserved data opcode
        (mask_frame(0xB, b"x"), CloseCode.PROTOCOL_ERROR),  # reserved control opcode
        (mask_frame(OP_CONT, b"x"), CloseCode.PROTOCOL_ERROR),  # nothing to continue
        (
            mask_frame(OP_TEXT, b"a", fin=False) + mask_frame(OP_TEXT, b"b"),
            CloseCode.PROTOCOL_ERROR,
        ),
        (mask_frame(OP_PING, b"x", fin=False), CloseCode.PROTOCOL_ERROR),
        (mask_frame(OP_PING, b"x" * 126), CloseCode.PROTOCOL_ERROR),
        (mask_frame(OP_CLOSE, b"\x03"), CloseCode.PROTOCOL_ERROR),  # 1-byte close payload
        (mask_frame(OP_CLOSE, (1005).to_bytes(2, "big")), CloseCode.PROTOCOL_ERROR),
        (mask_frame(OP_CLOSE, (999).to_bytes(2, "big")), CloseCode.PROTOCOL_ERROR),
        (mask_frame(OP_CLOSE, (1000).to_bytes(2, "big") + b"\xff"), CloseCode.INVALID_PAYLOAD),
        (mask_frame(OP_TEXT, b"\xc3\x28"), CloseCode.INVALID_PAYLOAD),
        (mask_frame(OP_TEXT, b"ok\xed\xa0\x80"), CloseCode.INVALID_PAYLOAD),  # surrogate
    ],
    # Named, not shown: the frames carry random masks, and test ids must be the same in
    # every collection (pytest-xdist's workers each collect the suite).
    ids=[
        "unmasked",
        "rsv1",
        "reserved-data-opcode",
        "reserved-control-opcode",
        "continuation-of-nothing",
        "text-inside-text",
        "fragmented-ping",
        "ping-over-125",
        "close-of-1-byte",
        "close-1005",
        "close-999",
        "close-reason-not-utf8",
        "text-not-utf8",
        "text-with-surrogate",
    ],
)
def test_protocol_violations_raise_with_their_close_code(data: bytes, code: CloseCode) -> None:
    with pytest.raises(ProtocolError) as info:
        FrameParser().feed(data)
    assert info.value.code == code
    assert info.value.reason


def test_invalid_utf8_split_across_frames_is_caught() -> None:
    parser = FrameParser()
    parser.feed(mask_frame(OP_TEXT, b"ok \xe2\x82", fin=False))
    with pytest.raises(ProtocolError) as info:
        parser.feed(mask_frame(OP_CONT, b"(", fin=True))
    assert info.value.code == CloseCode.INVALID_PAYLOAD


def test_utf8_character_split_across_frames_is_fine() -> None:
    euro = "€".encode()
    events = FrameParser().feed(
        mask_frame(OP_TEXT, euro[:1], fin=False) + mask_frame(OP_CONT, euro[1:])
    )
    assert messages(events) == [(True, euro)]


def test_truncated_text_at_message_end_is_invalid() -> None:
    with pytest.raises(ProtocolError) as info:
        FrameParser().feed(
            mask_frame(OP_TEXT, "€".encode()[:2], fin=False) + mask_frame(OP_CONT, b"")
        )
    assert info.value.code == CloseCode.INVALID_PAYLOAD


def test_max_message_size_counts_the_whole_message() -> None:
    parser = FrameParser(max_message_size=10)
    parser.feed(mask_frame(OP_BINARY, b"x" * 10))
    parser.feed(mask_frame(OP_BINARY, b"x" * 6, fin=False))
    with pytest.raises(ProtocolError) as info:
        parser.feed(mask_frame(OP_CONT, b"x" * 5))
    assert info.value.code == CloseCode.MESSAGE_TOO_BIG


def test_a_whole_short_message_is_checked_like_any_other() -> None:
    # (Whole short frames take the parser's one-step path: the same checks apply.)
    with pytest.raises(ProtocolError) as info:
        FrameParser(max_message_size=10).feed(mask_frame(OP_BINARY, b"x" * 11))
    assert info.value.code == CloseCode.MESSAGE_TOO_BIG
    with pytest.raises(ProtocolError) as info:
        FrameParser(max_message_size=10).feed(mask_frame(OP_TEXT, b"x" * 11))
    assert info.value.code == CloseCode.MESSAGE_TOO_BIG
    events = FrameParser(max_message_size=10).feed(
        mask_frame(OP_TEXT, "€ü".encode()) + mask_frame(OP_BINARY, b"\xff" * 10)
    )
    assert events == [Data("€ü".encode(), True, True, True), Data(b"\xff" * 10, False, True, True)]


def test_oversize_is_refused_from_the_header_before_the_payload_arrives() -> None:
    header = mask_frame(OP_BINARY, b"x" * 70000)[:14]
    with pytest.raises(ProtocolError) as info:
        FrameParser(max_message_size=65536).feed(header)
    assert info.value.code == CloseCode.MESSAGE_TOO_BIG


@st.composite
def fragmented_traffic(draw: st.DrawFn) -> tuple[list[tuple[bool, bytes]], bytes, list[int]]:
    """Messages, their bytes on the wire (randomly fragmented, pings between), and cut points."""
    sent: list[tuple[bool, bytes]] = []
    wire = b""
    for _ in range(draw(st.integers(1, 6))):
        text = draw(st.booleans())
        payload = draw(st.text(max_size=300)).encode() if text else draw(st.binary(max_size=300))
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        for i, piece in enumerate(pieces):
            opcode = (OP_TEXT if text else OP_BINARY) if i == 0 else OP_CONT
            wire += mask_frame(opcode, piece, fin=i == len(pieces) - 1)
            if draw(st.booleans()):
                wire += mask_frame(OP_PING, b"")
        sent.append((text, payload))
    reads = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    return sent, wire, reads


@given(fragmented_traffic())
def test_any_fragmentation_and_any_read_boundaries_give_back_the_messages(
    traffic: tuple[list[tuple[bool, bytes]], bytes, list[int]],
) -> None:
    sent, wire, reads = traffic
    parser = FrameParser()
    events = []
    for a, b in zip([0, *reads], [*reads, len(wire)], strict=True):
        events += parser.feed(wire[a:b])
    assert messages([e for e in events if isinstance(e, Data)]) == sent


def test_server_frames_use_the_shortest_length_encoding() -> None:
    assert frame(OP_TEXT, b"x") == b"\x81\x01x"
    assert frame(OP_BINARY, b"x" * 126)[:4] == b"\x82\x7e\x00\x7e"
    assert frame(OP_BINARY, b"x" * 65536)[:10] == b"\x82\x7f" + (65536).to_bytes(8, "big")
    assert frame(OP_BINARY, b"", fin=False) == b"\x02\x00"


def test_close_reason_is_cut_to_fit_on_a_character_boundary() -> None:
    data = close_frame(4001, "é" * 100)
    assert data[1] <= 125
    payload = data[2:]
    assert int.from_bytes(payload[:2], "big") == 4001
    payload[2:].decode("utf-8")


@given(st.binary(min_size=4090, max_size=20_000), st.lists(st.integers(0, 20_000), max_size=6))
def test_large_payloads_unmask_whatever_the_reads(payload: bytes, cuts: list[int]) -> None:
    """A payload cut into reads of any sizes comes back intact, the mask kept aligned
    across them."""
    wire = mask_frame(OP_BINARY, payload)
    reads = sorted({min(cut, len(wire)) for cut in cuts})
    parser = FrameParser()
    events = []
    for a, b in zip([0, *reads], [*reads, len(wire)], strict=True):
        events += parser.feed(wire[a:b])
    assert b"".join(e.payload for e in events if isinstance(e, Data)) == payload


def test_the_parser_unmasks_in_c_where_websockets_has_built_it() -> None:
    # (websockets' wheels carry its extension on every platform CI runs: a parser left
    # on the Python unmasking there would be 5 to 60 times slower at it, silently.)
    assert frames_module._xor is apply_mask


def test_without_websockets_extension_the_parser_unmasks_in_python() -> None:
    with mock.patch.dict(sys.modules, {"websockets.speedups": None}):
        assert frames_module._unmasking() is frames_module._xor_python


@given(
    st.binary(max_size=20_000),
    st.binary(min_size=4, max_size=4),
)
def test_the_python_unmasking_gives_what_the_c_one_gives(payload: bytes, key: bytes) -> None:
    # (Below 4 KiB as one int, from 4 KiB by table: both against websockets' C.)
    assert frames_module._xor_python(payload, key) == apply_mask(payload, key)


def test_the_python_unmasking_xors_each_byte_with_its_key_byte() -> None:
    key = bytes((0x12, 0x34, 0x56, 0x78))
    for n in (*range(20), 4095, 4096, 4097, 65537):
        payload = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
        expected = bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))
        assert frames_module._xor_python(payload, key) == expected


def _outcome(parser: FrameParser, reads: list[bytes]) -> tuple[object, ...]:
    """The messages ``reads`` fed in turn make, and the close code of the error that
    ended them (None: none did)."""
    events: list[object] = []
    code: CloseCode | None = None
    try:
        for data in reads:
            events += parser.feed(data)
    except ProtocolError as exc:
        events += exc.events
        code = exc.code
    return (*messages(events), code)


@given(
    text=st.booleans(),
    payload=st.binary(max_size=125) | st.text(max_size=40).map(str.encode),
    limit=st.sampled_from([None, 0, 1, 64, 125]),
)
def test_a_read_of_one_whole_short_frame_is_parsed_as_byte_by_byte(
    text: bool, payload: bytes, limit: int | None
) -> None:
    # (A read that is exactly one whole short frame takes feed's one-step path; any
    # payload, valid UTF-8 or not, and any size limit give what the step path gives.)
    data = mask_frame(OP_TEXT if text else OP_BINARY, payload)
    whole = _outcome(FrameParser(max_message_size=limit), [data])
    assert whole == _outcome(
        FrameParser(max_message_size=limit), [data[i : i + 1] for i in range(len(data))]
    )


@given(key=st.binary(min_size=4, max_size=4), seed=st.binary(min_size=125, max_size=125))
def test_every_short_length_unmasks_by_its_mask_in_one_step(key: bytes, seed: bytes) -> None:
    # (A read that is one whole short frame takes feed's one-step path; each length, 0
    # to 125, cuts the repeated mask differently: byte i is XORed with key[i % 4].)
    for n in range(126):
        masked = seed[:n]
        frame = bytes((0x82, 0x80 | n)) + key + masked
        expected = bytes(byte ^ key[i % 4] for i, byte in enumerate(masked))
        assert FrameParser().feed(frame) == [Data(expected, False, True, True)]


def test_a_whole_frame_in_the_middle_of_a_message_is_a_violation() -> None:
    parser = FrameParser()
    parser.feed(mask_frame(OP_TEXT, b"a", fin=False))
    with pytest.raises(ProtocolError) as info:
        parser.feed(mask_frame(OP_BINARY, b"b"))
    assert info.value.code == CloseCode.PROTOCOL_ERROR
    closed = FrameParser()
    assert closed.feed(mask_frame(OP_CLOSE, b"")) == [Close(None, "")]
    assert closed.feed(mask_frame(OP_TEXT, b"after the close")) == []
