"""Hostile input, generated: random and mutated handshakes and frames against a live relay.

Whatever a connection sends, the relay stays up, the members of other sessions keep
talking, and nothing is logged above INFO for it.
"""

from __future__ import annotations

import base64
import logging
import os

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_wsproxy import RelayConfig, open_relay
from wsraw import OP_BINARY, OP_CLOSE, OP_TEXT, RawClient, mask_frame

VALID_REQUEST = (
    b"GET /ws?id=fuzz&groupName=g HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: "
    + base64.b64encode(b"0123456789abcdef")
    + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
)

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=40))
        else:
            del data[at : at + draw(st.integers(1, 20))]
    return bytes(data)


handshakes = st.one_of(st.binary(max_size=600), mutated(VALID_REQUEST))

valid_frames = st.lists(
    st.tuples(
        st.sampled_from([OP_TEXT, OP_BINARY, OP_CLOSE, 0x0, 0x9, 0xA]), st.binary(max_size=200)
    ),
    max_size=5,
).map(lambda frames: b"".join(mask_frame(op, payload, fin=True) for op, payload in frames))
after_upgrade = st.one_of(st.binary(max_size=600), valid_frames.flatmap(mutated))


async def check_group_still_works(port: int) -> None:
    a = await RawClient.open(port, "/ws?id=a&groupName=watch")
    b = await RawClient.open(port, "/ws?id=b&groupName=watch")
    try:
        # b's pong proves b joined before a speaks.
        await b.send_frame(0x9, b"")
        assert (await b.recv_frame())[1] == 0xA
        await a.send_frame(OP_TEXT, b"still here")
        assert await b.recv_message() == (OP_TEXT, b"still here")
    finally:
        await a.aclose()
        await b.aclose()


async def throw(port: int, first: bytes, then: bytes = b"") -> None:
    """Send bytes on a fresh connection, read whatever comes back for a moment, leave."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        await stream.send_all(first)
        if then:
            await stream.send_all(then)
        with trio.move_on_after(0.05):
            while await stream.receive_some(65536):
                pass
    except trio.BrokenResourceError:
        pass  # the relay may drop us mid-write: that is its right
    finally:
        await trio.aclose_forcefully(stream)


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="trio_wsproxy")
    return caplog


def assert_nothing_above_info(caplog: pytest.LogCaptureFixture) -> None:
    loud = [r for r in caplog.records if r.levelno > logging.INFO]
    assert not loud, [r.getMessage() for r in loud]
    assert not any(r.exc_info for r in caplog.records)


@FUZZ
@given(request=handshakes)
async def test_random_and_mutated_handshakes(
    quiet: pytest.LogCaptureFixture, request: bytes
) -> None:
    async with open_relay(RelayConfig(port=0, handshake_timeout=0.2)) as relay:
        with trio.fail_after(10):
            await throw(relay.port, request)
            await check_group_still_works(relay.port)
    assert_nothing_above_info(quiet)


@FUZZ
@given(data=after_upgrade)
async def test_random_and_mutated_frames_after_a_valid_upgrade(
    quiet: pytest.LogCaptureFixture, data: bytes
) -> None:
    async with open_relay(RelayConfig(port=0, max_message_size=1 << 20)) as relay:
        with trio.fail_after(10):
            await throw(relay.port, VALID_REQUEST, data)
            await check_group_still_works(relay.port)
    assert_nothing_above_info(quiet)


async def test_many_hostile_connections_at_once_leave_one_relay_standing(
    quiet: pytest.LogCaptureFixture,
) -> None:
    async with open_relay(RelayConfig(port=0, handshake_timeout=0.5)) as relay:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for n in range(100):
                    garbage = os.urandom(n * 7)
                    nursery.start_soon(
                        throw, relay.port, VALID_REQUEST if n % 2 else garbage, garbage
                    )
            await check_group_still_works(relay.port)
            await relay.wait_members(0, None)
    assert_nothing_above_info(quiet)
