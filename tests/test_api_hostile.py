"""The HTTP API against callers and failures that would hold it up or knock it over,
over real sockets: HEAD on every path, a body that trickles in to hold its group's
floor, and a bug of the relay's own met while answering a call."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import pytest
import trio

import trio_wsproxy.relay.api
from httpapi import KEY, Answer, ApiClient, call
from test_api import MiB, members
from trio_wsproxy import CloseCode, Relay
from trio_wsproxy.protocol.assembly import Piece
from trio_wsproxy.relay.post import Poster
from trio_wsproxy.relay.sender import Sender
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


# -- HEAD ------------------------------------------------------------------------------------


def _headers_but_length(answer: Answer) -> dict[str, str]:
    return {k: v for k, v in answer.headers.items() if k != "content-length"}


@pytest.mark.wsproxy_relay(api_key=KEY, history_size=10)
async def test_head_is_answered_as_get_would_be_without_the_body(relay: Relay) -> None:
    (member,) = await members(relay, "g", "a")
    await call(relay.port, "POST", "/api/groups/g/messages", b"kept", {"Content-Type": "text/x"})
    paths = [
        ("/api/groups", 200),
        ("/api/groups/g/members", 200),
        ("/api/groups/g/history?limit=5", 200),
        ("/api/openapi.json", 200),
        ("/api/groups/g/members?x=1", 400),
        ("/api/groups/%07/members", 400),
        ("/api/nothing", 404),
    ]
    with trio.fail_after(10):
        for path, status in paths:
            got = await call(relay.port, "GET", path)
            head = await call(relay.port, "HEAD", path)
            assert (got.status, head.status) == (status, status), path
            assert head.body == b"" and got.body, path
            assert head.headers == got.headers, path  # Content-Length: GET's body's
            assert int(head.headers["content-length"]) == len(got.body)
        # Without the key: the same 401, its WWW-Authenticate, and no body.
        head = await call(relay.port, "HEAD", "/api/groups", auth=False)
        got = await call(relay.port, "GET", "/api/groups", auth=False)
        assert (head.status, head.headers["www-authenticate"], head.body) == (401, "Bearer", b"")
        assert head.headers == got.headers
        # One connection carries HEADs and GETs in step: no stray body between them.
        client = await ApiClient.open(relay.port)
        for method in ("HEAD", "HEAD", "GET", "HEAD", "GET"):
            answer = await client.call(method, "/api/groups/g/members")
            assert answer.body == (b"" if method == "HEAD" else b'{"members": ["a"]}')
        await client.aclose()
    assert relay.counters.api_requests[200] == 1 + 2 * 4 + 5
    await member.aclose()


@pytest.mark.wsproxy_relay(api_key=KEY)
async def test_head_where_get_is_not_allowed_is_405_with_allow(relay: Relay) -> None:
    with trio.fail_after(10):
        for path, allowed in [("/api/groups/g/messages", "POST"),
                              ("/api/groups/g/members/a", "DELETE")]:  # fmt: skip
            head = await call(relay.port, "HEAD", path)
            assert (head.status, head.headers["allow"], head.body) == (405, allowed, b"")
            assert int(head.headers["content-length"]) > 0  # (of the error GET would read)


async def test_head_without_an_api_is_404_without_a_body(relay: Relay) -> None:
    with trio.fail_after(10):
        head = await call(relay.port, "HEAD", "/api/groups")
        got = await call(relay.port, "GET", "/api/groups")
    assert (head.status, head.body, head.headers) == (404, b"", got.headers)


async def test_head_answers_carry_no_body_on_the_wire(relay: Relay) -> None:
    """(The bytes themselves, not what an HTTP client makes of them.)"""
    stream = await trio.open_tcp_stream("127.0.0.1", relay.port)
    await stream.send_all(b"HEAD /api/groups HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n")
    with trio.fail_after(10):
        received = b""
        while chunk := await stream.receive_some(1000):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 ") and b"content-length: " in head.lower()
    assert body == b""
    await stream.aclose()


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


# -- a bug of the relay's --------------------------------------------------------------------


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.exc_info]


async def _metric(relay: Relay, name: str) -> str:
    answer = await call(relay.port, "GET", "/metrics", auth=False)
    lines = answer.body.decode().splitlines()
    return next(line.split()[-1] for line in lines if line.startswith(name))


def _injected(*args: object, **kwargs: object) -> object:
    raise RuntimeError("injected")


@pytest.mark.wsproxy_relay(api_key=KEY)
async def test_a_bug_answering_a_call_is_a_500_logged_once_and_the_relay_goes_on(
    relay: Relay, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await members(relay, "g", "a", "b")
    monkeypatch.setattr(trio_wsproxy.relay.api, "openapi_document", _injected)
    client = await ApiClient.open(relay.port)
    with trio.fail_after(10):
        answer = await client.call("GET", "/api/openapi.json")
        assert answer.status == 500 and answer.headers["connection"] == "close"
        assert answer.json["error"].startswith("internal error")
        assert "injected" not in answer.json["error"]  # (the bug is the log's)
        assert await client.stream.receive_some(100) == b""  # and the connection ends
    ((record,),) = [_tracebacks(caplog)]
    assert (record.name, record.levelno) == ("trio_wsproxy.relay", logging.ERROR)
    assert "GET /api/openapi.json" in record.getMessage()
    assert record.exc_info is not None and str(record.exc_info[1]) == "injected"
    assert relay.counters.internal_errors["api"] == 1
    assert relay.counters.api_requests[500] == 1
    assert await _metric(relay, 'trio_wsproxy_internal_errors_total{where="api"}') == "1.0"
    # Everyone else goes on: the members, a join, the next call (the bug still there).
    with trio.fail_after(10):
        (c,) = await join(relay, "g", "c")
        await a.send_frame(OP_TEXT, b"still here")
        for member in (b, c):
            assert await member.recv_message() == (OP_TEXT, b"still here")
        answer = await call(relay.port, "GET", "/api/groups/g/members")
        assert answer.json == {"members": ["a", "b", "c"]}
    assert len(_tracebacks(caplog)) == 1
    for each in (a, b, c, client):
        await each.aclose()


@pytest.mark.wsproxy_relay(api_key=KEY)
async def test_a_bug_mid_post_cuts_the_message_off_and_frees_the_group(
    relay: Relay, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    forward: Callable[[Sender, Piece], Awaitable[bool]] = Sender.forward

    async def second_piece_fails(sender: Sender, piece: Piece) -> bool:
        if isinstance(sender.member, Poster) and not piece.first:
            raise RuntimeError("injected")
        return await forward(sender, piece)

    monkeypatch.setattr(Sender, "forward", second_piece_fails)
    (early,) = await members(relay, "g", "early")
    with trio.fail_after(10):
        answer = await call(relay.port, "POST", "/api/groups/g/messages", bytes(3 * MiB), BINARY)
        assert answer.status == 500
        assert (await early.expect_close())[0] == CloseCode.MESSAGE_TRUNCATED
        a, b = await join(relay, "g", "a", "b")
        await a.send_frame(OP_TEXT, b"the floor is free")
        assert await b.recv_message() == (OP_TEXT, b"the floor is free")
    assert relay.counters.internal_errors["api"] == 1
    assert len(_tracebacks(caplog)) == 1
    for each in (early, a, b):
        await each.aclose()


@pytest.mark.wsproxy_relay(api_key=KEY)
async def test_a_bug_after_the_answer_went_out_drops_the_connection(
    relay: Relay, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trio_wsproxy.relay.api.Api, "_log", _injected)
    client = await ApiClient.open(relay.port)
    with trio.fail_after(10):
        answer = await client.call("GET", "/api/groups")
        assert (answer.status, answer.json) == (200, {"groups": []})  # it went out whole
        assert await client.stream.receive_some(100) == b""  # no 500 after it: a close
    assert relay.counters.internal_errors["api"] == 1
    assert [r.name for r in _tracebacks(caplog)] == ["trio_wsproxy.relay"]
