"""The v1 header line, read as a message's pieces arrive: one rule and one bound,
``MAX_MEMBER_HEADER``, for the relay and the client alike, however the message is cut."""

from __future__ import annotations

import functools
import itertools

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request, TextMessage

from trio_wsproxy.client.client import BadMessage, BadMessageKind, ClientConfig, open_client
from trio_wsproxy.protocol import v1

MAX = v1.MAX_MEMBER_HEADER


def cut(message: bytes, cuts: list[int]) -> list[bytes]:
    """``message`` cut at the given points (repeated ones make empty pieces, as empty
    WebSocket fragments do)."""
    points = sorted(min(point, len(message)) for point in cuts)
    bounds = [0, *points, len(message)]
    return [message[start:end] for start, end in itertools.pairwise(bounds)]


def read(pieces: list[bytes]) -> tuple[bytes, bytes] | None:
    """The header line and the payload (all of it) a reader makes of ``pieces``."""
    reader = v1.HeaderReader()
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        read = reader.feed(piece, last)
        if read is not None:
            data, end = read
            assert not reader.held, "a reader that answered holds nothing"
            return data[: end - 1], data[end:] + b"".join(pieces[index + 1 :])
    return None


# A header line's bytes: anything but a line feed (the reader does not parse JSON).
lines = st.binary(max_size=MAX - 1).map(lambda line: line.replace(b"\n", b" "))
cut_points = st.lists(st.integers(min_value=0, max_value=3 * MAX), max_size=12)


@given(line=lines, payload=st.binary(max_size=2 * MAX), cuts=cut_points)
def test_any_fragmentation_of_a_valid_message_gives_the_same_header_and_payload(
    line: bytes, payload: bytes, cuts: list[int]
) -> None:
    message = line + b"\n" + payload
    whole = v1.header_end(message, True)
    assert whole == len(line) + 1
    assert read([message]) == (line, payload)
    assert read(cut(message, cuts)) == (line, payload)


@given(
    fill=st.binary(min_size=1, max_size=32).map(lambda data: data.replace(b"\n", b" ")),
    rest=st.binary(max_size=64),
    cuts=cut_points,
)
def test_a_line_past_the_bound_is_refused_where_the_bound_is_reached_however_cut(
    fill: bytes, rest: bytes, cuts: list[int]
) -> None:
    # MAX bytes without a line feed; what follows them, a line feed or not, changes nothing.
    message = (fill * MAX)[:MAX] + rest
    pieces = cut(message, cuts)
    reader = v1.HeaderReader()
    arrived = 0
    for index, piece in enumerate(pieces):
        arrived += len(piece)
        if arrived < MAX:
            assert reader.feed(piece, index == len(pieces) - 1) is None
            continue
        with pytest.raises(v1.V1Error, match=f"no header line within {MAX} bytes"):
            reader.feed(piece, index == len(pieces) - 1)
        assert reader.held == message[:arrived], "it holds what it refused, for a log line"
        return
    pytest.fail("never refused")


@given(
    line=st.binary(max_size=MAX - 1).map(lambda data: data.replace(b"\n", b" ")),
    cuts=cut_points,
)
def test_a_message_that_ends_inside_its_short_header_line_is_refused_at_its_end(
    line: bytes, cuts: list[int]
) -> None:
    pieces = cut(line, cuts)
    reader = v1.HeaderReader()
    for piece in pieces[:-1]:
        assert reader.feed(piece, False) is None
    with pytest.raises(v1.V1Error, match="a message ended inside its header line"):
        reader.feed(pieces[-1], True)


def test_the_bound_counts_the_line_feed() -> None:
    assert v1.header_end(b"x" * (MAX - 1) + b"\n", True) == MAX
    with pytest.raises(v1.V1Error, match="no header line within"):
        v1.header_end(b"x" * MAX + b"\n", True)
    assert v1.header_end(b"x" * (MAX - 1)) is None  # more may come


def test_a_reader_that_answered_reads_the_next_message() -> None:
    reader = v1.HeaderReader()
    assert reader.feed(b'{"to"', False) is None
    assert reader.held == b'{"to"'
    assert reader.feed(b':"bob"}\nhi', False) == (b'{"to":"bob"}\nhi', 13)
    assert reader.feed(b"\nnext", True) == (b"\nnext", 1)


def test_a_relay_event_may_be_one_line_longer_than_the_bound() -> None:
    members = frozenset(f"member-{n:04}" for n in range(MAX // 8))
    welcome = v1.Welcome("member-0000", "lobby", members, len(members))
    data = v1.encode_event(welcome)
    assert len(data) > MAX
    assert v1.decode_relay_message(data) == (welcome, len(data))


@pytest.mark.parametrize(
    "data",
    [
        v1.from_header("x" * MAX) + b"payload",  # a header line ahead of a payload
        v1.from_header("x" * MAX),  # a member's message, even without a payload
        v1.encode_event(v1.Error("e", "x" * MAX)) + b"more",  # an event is the whole message
        b"x" * MAX,
        b"",
    ],
)
def test_a_relay_header_past_the_bound_is_refused_but_an_event_s(data: bytes) -> None:
    with pytest.raises(v1.V1Error):
        v1.decode_relay_message(data)


async def test_the_client_reads_a_fragmented_header_and_refuses_one_past_the_bound() -> None:
    """A binary message arriving in pieces: its header line is read across them, and one
    past the bound is a bad message (once), the client going on with the next."""

    async def relay(stream: trio.SocketStream) -> None:
        connection = WSConnection(ConnectionType.SERVER)
        while True:
            connection.receive_data(await stream.receive_some())
            for event in connection.events():
                if isinstance(event, Request):
                    welcome = v1.Welcome("alice", "g", frozenset({"alice", "bob"}), 2)
                    out = connection.send(AcceptConnection(subprotocol=v1.SUBPROTOCOL))
                    out += connection.send(TextMessage(v1.encode_event(welcome).decode()))
                    await stream.send_all(out)
                elif isinstance(event, BytesMessage):  # the client listens: the messages
                    out = b""
                    for piece in [b"x" * (MAX // 2)] * 3:  # no line within the bound
                        out += connection.send(BytesMessage(piece, message_finished=False))
                    out += connection.send(BytesMessage(b"y"))
                    message = v1.from_header("bob") + b"payload"
                    for index in range(len(message)):
                        last = index == len(message) - 1
                        piece = message[index : index + 1]
                        out += connection.send(BytesMessage(piece, message_finished=last))
                    await stream.send_all(out)

    bad: list[BadMessage] = []

    async def on_bad_message(message: BadMessage) -> None:
        bad.append(message)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, relay, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            async with open_client(
                f"ws://127.0.0.1:{port}/ws",
                group="g",
                id="alice",
                config=ClientConfig(reconnect=False, close_timeout=0.1),  # (no close reply)
                on_bad_message=on_bad_message,
            ) as alice:
                async with alice.subscribe(bytes) as received:
                    await alice.send(b"ready")
                    got = await received.receive()
                assert (got.value, got.sender) == (b"payload", "bob")
                assert [message.kind for message in bad] == [BadMessageKind.INVALID_HEADER]
                assert bad[0].text == "x" * 200 and "no header line" in bad[0].reason
                assert alice.stats.invalid_header == 1
            nursery.cancel_scope.cancel()
