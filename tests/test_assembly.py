"""The relay's message assembly: a member's data frames in, whole messages or the pieces
of a streaming one out (protocol/assembly.py, no network)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from trio_wsproxy.protocol.assembly import FRAGMENT_SIZE, Assembly, Piece
from trio_wsproxy.protocol.frames import Data
from trio_wsproxy.protocol.message import Message, StreamHead


def data(payload: bytes, first: bool, last: bool, text: bool = False) -> Data:
    return Data(payload=payload, text=text, first=first, last=last)


def test_a_single_frame_message_is_forwarded_whole_with_its_sender() -> None:
    assembly = Assembly("alice")
    assert assembly.feed(data(b"hi", True, True, text=True)) == Message("alice", True, b"hi")


def test_a_small_fragmented_message_is_assembled_and_forwarded_whole() -> None:
    assembly = Assembly("a")
    assert assembly.feed(data(b"ab", True, False, text=True)) is None
    assert assembly.feed(data(b"cd", False, False)) is None
    assert assembly.feed(data(b"ef", False, True)) == Message("a", True, b"abcdef")


def test_a_large_message_streams_in_pieces_and_its_head_says_who_and_what() -> None:
    assembly = Assembly("a")
    big = b"x" * FRAGMENT_SIZE
    out = assembly.feed(data(big, True, False, text=False))
    assert isinstance(out, list) and len(out) == 1
    first = out[0]
    assert first.first and not first.last
    assert assembly.head == StreamHead("a", text=False)
    middle = assembly.feed(data(b"y" * 10, False, False))
    assert middle is None  # gathered until a fragment's worth or the end
    out = assembly.feed(data(b"z", False, True))
    assert isinstance(out, list) and len(out) == 1
    last = out[0]
    assert not last.first and last.last
    assert last.payload == b"y" * 10 + b"z"


def test_a_message_of_exactly_one_fragment_is_whole_and_one_byte_more_streams() -> None:
    assembly = Assembly("a")
    assert assembly.feed(data(b"a" * (FRAGMENT_SIZE - 1), True, False)) is None
    assert assembly.feed(data(b"b", False, True)) == Message(
        "a", False, b"a" * (FRAGMENT_SIZE - 1) + b"b"
    )
    assert assembly.feed(data(b"a" * (FRAGMENT_SIZE - 1), True, False)) is None
    out = assembly.feed(data(b"bc", False, True))
    assert isinstance(out, list)
    assert [(len(p.payload), p.first, p.last) for p in out] == [
        (FRAGMENT_SIZE, True, False),
        (1, False, True),
    ]


def test_no_forwarded_frame_exceeds_one_mebibyte_however_the_data_arrives() -> None:
    # Read-sized chunks that do not divide a MiB: the pieces are cut at exactly 1 MiB
    # (the websockets client's default max_size), not at the first read past it.
    assembly = Assembly("a")
    chunk = b"q" * 65_000
    pieces: list[Piece] = []
    for i in range(40):
        out = assembly.feed(data(chunk, i == 0, i == 39))
        if isinstance(out, list):
            pieces.extend(out)
    assert all(len(p.payload) <= FRAGMENT_SIZE for p in pieces)
    assert [len(p.payload) for p in pieces[:-1]] == [FRAGMENT_SIZE] * (len(pieces) - 1)
    assert sum(len(p.payload) for p in pieces) == 40 * 65_000


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3 * FRAGMENT_SIZE // 2), min_size=1, max_size=6))
def test_whatever_the_fragmentation_the_bytes_come_out_in_order_and_whole(
    sizes: list[int],
) -> None:
    assembly = Assembly("a")
    sent = b"".join(bytes([i % 251]) * size for i, size in enumerate(sizes))
    out: list[Message | Piece] = []
    for i, size in enumerate(sizes):
        result = assembly.feed(data(bytes([i % 251]) * size, i == 0, i == len(sizes) - 1))
        if isinstance(result, list):
            out.extend(result)
        elif result is not None:
            out.append(result)
    # It streams once a fragment's worth has gathered before its end, or when it ends
    # longer than one fragment; else it is whole.
    streams = (
        any(total >= FRAGMENT_SIZE for total in itertools.accumulate(sizes[:-1]))
        or sum(sizes) > FRAGMENT_SIZE
    )
    if not streams:
        assert out == [Message("a", False, sent)]
    else:
        pieces = [p for p in out if isinstance(p, Piece)]
        assert len(pieces) == len(out)
        assert pieces[0].first and pieces[-1].last
        assert all(not p.first for p in pieces[1:]) and all(not p.last for p in pieces[:-1])
        assert b"".join(p.payload for p in pieces) == sent
        assert all(len(p.payload) <= FRAGMENT_SIZE for p in pieces)
