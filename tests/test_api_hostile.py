"""The HTTP API against callers that would hold it up, over real sockets: a body that
trickles in to hold its group's floor."""

from __future__ import annotations

from urllib.parse import quote

import pytest
import trio

from httpapi import KEY, Answer, ApiClient, call
from test_api import MiB, members
from trio_wsproxy import CloseCode, Relay
from wsraw import OP_BINARY, OP_CONT, OP_TEXT, RawClient

BINARY = {"Content-Type": "application/octet-stream"}
PACE = 1.0  # the relay's stream_timeout in the pace tests: short, yet far above a hop


async def join(relay: Relay, group: str, *ids: str) -> list[RawClient]:
    """Plain members ``ids`` of ``group``, which may have members already; all registered."""
    before = relay.group_size(group)
    clients = [
        await RawClient.open(relay.port, f"/ws?id={quote(i)}&groupName={quote(group)}") for i in ids
    ]
    with trio.fail_after(10):
        await relay.wait_members(before + len(ids), group)
    return clients


async def trickle(client: ApiClient, every: float) -> None:
    """One byte of body every ``every`` seconds, until the relay hangs up (cancel it)."""
    try:
        while True:
            await client.send_chunk(b"x")
            await trio.sleep(every)  # (the trickle's pace: what the test is about)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return


# -- a body's pace -------------------------------------------------------------------------


@pytest.mark.wsproxy_relay(api_key=KEY, stream_timeout=PACE)
async def test_a_post_that_trickles_holds_its_group_no_longer_than_stream_timeout(
    relay: Relay,
) -> None:
    (early,) = await members(relay, "g", "early")
    client = await ApiClient.open(relay.port)
    with trio.fail_after(20):
        await client.send_head("POST", "/api/groups/g/messages", BINARY)
        await client.send_chunk(bytes(MiB + 1))
        fin, opcode, piece = await early.recv_frame()  # it streams: it holds the floor
        assert (fin, opcode, len(piece)) == (False, OP_BINARY, MiB)
        # Members who join now get none of the post, and wait for its end to talk.
        sender, receiver = await join(relay, "g", "sender", "receiver")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle, client, PACE / 5)  # always some bytes, never a MiB
            await sender.send_frame(OP_TEXT, b"in between")
            with trio.fail_after(PACE + 3):  # the next piece was due PACE after the first
                assert await receiver.recv_message() == (OP_TEXT, b"in between")
            answer = await client.answer()
            nursery.cancel_scope.cancel()
    assert answer.status == 408 and "came too slowly" in answer.json["error"]
    assert answer.headers["connection"] == "close"
    with trio.fail_after(10):  # told as for a member's message cut off
        assert (await early.expect_close())[0] == CloseCode.MESSAGE_TRUNCATED
    assert relay.counters.api_requests[408] == 1
    for each in (client, sender, receiver, early):
        await each.aclose()


@pytest.mark.wsproxy_relay(api_key=KEY, stream_timeout=PACE)
async def test_a_post_that_trickles_before_it_streams_is_408_within_stream_timeout(
    relay: Relay,
) -> None:
    (member,) = await members(relay, "g", "a")
    client = await ApiClient.open(relay.port)
    with trio.fail_after(PACE + 5):
        await client.send_head("POST", "/api/groups/g/messages", {"Content-Type": "text/x"})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle, client, PACE / 5)
            answer = await client.answer()
            nursery.cancel_scope.cancel()
    assert answer.status == 408 and "came too slowly" in answer.json["error"]
    # Nothing of it went out: the next message the member gets is this one.
    await call(relay.port, "POST", "/api/groups/g/messages", b"next", {"Content-Type": "text/x"})
    with trio.fail_after(10):
        assert await member.recv_message() == (OP_TEXT, b"next")
    for each in (client, member):
        await each.aclose()


@pytest.mark.wsproxy_relay(api_key=KEY, stream_timeout=PACE)
async def test_a_post_waiting_for_the_floor_is_not_late(relay: Relay) -> None:
    """The relay's own waits are not the body's: a post whose first piece waits for a
    member's stream longer than stream_timeout still goes out whole."""
    streamer, receiver = await members(relay, "g", "streamer", "receiver")
    with trio.fail_after(30):
        await streamer.send_frame(OP_BINARY, bytes(MiB), fin=False)
        assert len((await receiver.recv_frame())[2]) == MiB  # it holds the floor
        answer: Answer | None = None

        async def post() -> None:
            nonlocal answer
            answer = await call(relay.port, "POST", "/api/groups/g/messages", bytes(2 * MiB),
                                BINARY)  # fmt: skip

        async with trio.open_nursery() as nursery:
            nursery.start_soon(post)
            for _ in range(3):  # a piece every PACE/2, for 1.5 PACE in all
                await trio.sleep(PACE / 2)  # (the member's pace: what the test is about)
                await streamer.send_frame(OP_CONT, bytes(MiB), fin=False)
                assert len((await receiver.recv_frame())[2]) == MiB
            await streamer.send_frame(OP_CONT, b"", fin=True)
            assert (await receiver.recv_frame())[0]
            assert await receiver.recv_message() == (OP_BINARY, bytes(2 * MiB))
    assert answer is not None and (answer.status, answer.json) == (200, {"recipients": 2})
    with trio.fail_after(10):
        assert await streamer.recv_message() == (OP_BINARY, bytes(2 * MiB))
    for each in (streamer, receiver):
        await each.aclose()
