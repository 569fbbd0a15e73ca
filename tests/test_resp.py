"""The backplane's RESP2 codec, without sockets, and its connection against real Redis."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from trio_wsproxy.backplane.connection import RedisConnection
from trio_wsproxy.protocol.resp import (
    ConnectionLost,
    Parser,
    ProtocolViolation,
    RedisAddress,
    RedisError,
    Reply,
    encode,
)


def wire(reply: Reply) -> bytes:
    """How Redis would send ``reply``."""
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, RedisError):
        return b"-" + str(reply).encode() + b"\r\n"
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, bytes):
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    return b"*%d\r\n" % len(reply) + b"".join(wire(item) for item in reply)


replies = st.recursive(
    st.none() | st.integers(-(2**63), 2**63 - 1) | st.binary(max_size=64),
    lambda children: st.lists(children, max_size=4),
    max_leaves=12,
)


@given(st.lists(replies, max_size=6), st.data())
def test_parser_reads_any_replies_split_anywhere(items: list[Reply], data: st.DataObject) -> None:
    stream = b"".join(wire(item) for item in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    parser = Parser()
    got: list[Reply] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        parser.feed(stream[start:cut])
        got += parser.replies()
        start = cut
    assert got == items


def test_parser_keeps_errors_simple_strings_and_nil_arrays() -> None:
    parser = Parser()
    parser.feed(b"+OK\r\n-ERR wrong type\r\n*-1\r\n$0\r\n\r\n")
    ok, error, nil, empty = parser.replies()
    assert ok == b"OK" and nil is None and empty == b""
    assert isinstance(error, RedisError) and str(error) == "ERR wrong type"


def test_parser_rejects_what_is_not_resp2() -> None:
    parser = Parser()
    parser.feed(b"HTTP/1.1 400 Bad Request\r\n")
    with pytest.raises(ProtocolViolation):
        parser.replies()


def test_encode_is_an_array_of_bulk_strings() -> None:
    assert encode("SET", b"k\r\n", 5) == b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$1\r\n5\r\n"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", RedisAddress("127.0.0.1", 6379, 0)),
        ("redis://cache/3", RedisAddress("cache", 6379, 3)),
        ("redis://:s%40cret@h:7000", RedisAddress("h", 7000, 0, None, "s@cret")),
        ("redis://app:pw@h:7000/1", RedisAddress("h", 7000, 1, "app", "pw")),
    ],
)
def test_addresses_from_urls(url: str, expected: RedisAddress) -> None:
    assert RedisAddress.from_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("rediss://h:6379/0", "only redis:// URLs"),
        ("redis://h:port/0", "bad port"),
        ("redis://h/zero", "must be a number"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisAddress.from_url(url)


def test_password_stays_out_of_the_repr() -> None:
    assert "secret" not in repr(RedisAddress.from_url("redis://:secret@h/0"))


async def test_pipelined_commands_answer_in_order(redis_url: str, prefix: str) -> None:
    address = RedisAddress.from_url(redis_url)
    connection = await RedisConnection.connect(address, 5)
    async with trio.open_nursery() as nursery:
        await nursery.start(connection.run, address, 5)
        waiters = [connection.send_nowait("INCR", f"{prefix}:n") for _ in range(100)]
        values = []
        for waiter in waiters:
            assert waiter is not None
            await waiter.event.wait()
            values.append(waiter.reply)
        assert values == list(range(1, 101))
        with pytest.raises(RedisError, match="wrong number of arguments"):
            await connection.call("GET")
        await connection.call("DEL", f"{prefix}:n")
        nursery.cancel_scope.cancel()
    with pytest.raises(ConnectionLost):
        connection.send_nowait("PING")
