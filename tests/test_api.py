"""The HTTP API for back ends on one relay, over real sockets: the key, every call with
its statuses, what plain and v1 members receive, bodies streamed through with flat
memory, and requests that are wrong in every way the relay must answer plainly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest
import trio

import trio_wsproxy
from httpapi import KEY, ApiClient, call
from relayproc import peak_rss_mib, start_relay
from test_v1 import next_message, v1_member
from trio_wsproxy import CloseCode, Relay, RelayConfig, open_relay
from trio_wsproxy.protocol import v1
from wsraw import OP_BINARY, OP_TEXT, RawClient

MiB = 1024 * 1024
with_api = pytest.mark.wsproxy_relay(api_key=KEY)


async def members(relay: Relay, group: str, *ids: str) -> list[RawClient]:
    """Plain members ``ids`` of ``group``, all registered."""
    clients = [
        await RawClient.open(relay.port, f"/ws?id={quote(i)}&groupName={quote(group)}") for i in ids
    ]
    with trio.fail_after(10):
        await relay.wait_members(len(ids), group)
    return clients


# -- on and off, and the key ---------------------------------------------------------------


async def test_without_a_key_every_api_path_is_404_and_the_rest_of_the_relay_works(
    relay: Relay,
) -> None:
    for method, path in [("GET", "/api/groups"), ("POST", "/api/groups/g/messages"),
                         ("GET", "/api"), ("GET", "/api/openapi.json")]:  # fmt: skip
        answer = await call(relay.port, method, path, b"x")
        assert answer.status == 404, (path, answer)
        assert "no HTTP API" in answer.json["error"]
    (member,) = await members(relay, "g", "a")
    assert (await call(relay.port, "GET", "/healthz", auth=False)).body == b"ok\n"
    await member.aclose()


@with_api
async def test_every_call_needs_the_key(relay: Relay) -> None:
    for headers in [{}, {"Authorization": "Bearer wrong-key-0123456789"},
                    {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY}]:  # fmt: skip
        answer = await call(relay.port, "GET", "/api/groups", headers=headers, auth=False)
        assert answer.status == 401, headers
        assert answer.headers["www-authenticate"] == "Bearer"
        assert "API key" in answer.json["error"]
    # Unknown paths say nothing to a caller without the key either.
    assert (await call(relay.port, "GET", "/api/nothing", auth=False)).status == 401
    answer = await call(
        relay.port, "GET", "/api/groups", headers={"Authorization": f"bearer {KEY}"}
    )
    assert answer.status == 200  # (the scheme is case-insensitive, RFC 9110 §11.1)
    assert relay.counters.api_requests[401] == 5


# -- posting -------------------------------------------------------------------------------


@with_api
async def test_a_post_reaches_every_member_as_a_message_of_its_kind(relay: Relay) -> None:
    a, b = await members(relay, "g", "a", "b")
    watcher, _ = await v1_member(relay, "watcher")
    (other,) = await members(relay, "other", "x")
    with trio.fail_after(10):
        for content_type, body, opcode in [
            ("application/octet-stream", b"\x00\xffraw", OP_BINARY),
            ("text/plain; charset=utf-8", "héllo".encode(), OP_TEXT),
            ("application/json", b'{"MessageType":"System.String","Data":"hi"}', OP_TEXT),
        ]:
            answer = await call(
                relay.port, "POST", "/api/groups/g/messages", body, {"Content-Type": content_type}
            )
            assert (answer.status, answer.json) == (200, {"recipients": 3})
            for member in (a, b):
                assert await member.recv_message() == (opcode, body)
            # A v1 member sees that no member sent it.
            assert await next_message(watcher) == (opcode, v1.From(None), body)
        # An empty body is an empty message.
        answer = await call(
            relay.port, "POST", "/api/groups/g/messages", b"", {"Content-Type": "text/plain"}
        )
        assert answer.json == {"recipients": 3}
        assert await a.recv_message() == (OP_TEXT, b"")
        # Nobody outside the group got anything: the next message there is its own.
        await call(
            relay.port, "POST", "/api/groups/other/messages", b"!", {"Content-Type": "text/x"}
        )
        assert await other.recv_message() == (OP_TEXT, b"!")
    assert relay.counters.api_requests[200] == 5
    for client in (a, b, watcher, other):
        await client.aclose()


@with_api
async def test_a_post_to_one_member_reaches_it_alone(relay: Relay) -> None:
    (plain,) = await members(relay, "g", "plain")
    alice, _ = await v1_member(relay, "alice")
    bob, _ = await v1_member(relay, "bob")
    binary = {"Content-Type": "application/octet-stream"}
    with trio.fail_after(10):
        answer = await call(relay.port, "POST", "/api/groups/g/messages?to=alice", b"1", binary)
        assert (answer.status, answer.json) == (200, {"recipients": 1})
        answer = await call(relay.port, "POST", "/api/groups/g/messages?to=plain", b"2", binary)
        assert answer.json == {"recipients": 1}
        answer = await call(relay.port, "POST", "/api/groups/g/messages", b"3", binary)
        assert await next_message(alice) == (OP_BINARY, v1.From(None, direct=True), b"1")
        assert await next_message(alice) == (OP_BINARY, v1.From(None), b"3")
        assert await plain.recv_message() == (OP_BINARY, b"2")  # a plain member: plain
        assert await plain.recv_message() == (OP_BINARY, b"3")
        assert await next_message(bob) == (OP_BINARY, v1.From(None), b"3")
        # Ids are percent-encoded UTF-8; one that is not in the group is a 404.
        answer = await call(relay.port, "POST", "/api/groups/g/messages?to=z%C3%B6e", b"", binary)
        assert (answer.status, answer.json) == (404, {"error": "no member 'zöe' in group 'g'"})
    for client in (plain, alice, bob):
        await client.aclose()


@with_api
async def test_a_post_to_a_member_that_leaves_while_the_body_comes_is_404(relay: Relay) -> None:
    (member,) = await members(relay, "g", "leaving")
    client = await ApiClient.open(relay.port)
    with trio.fail_after(10):
        text = {"Content-Type": "text/x"}
        await client.send_head("POST", "/api/groups/g/messages?to=leaving", text)
        await client.send_chunk(b"half of it, ")
        await member.aclose()
        await relay.wait_members(0, "g")
        await client.send_chunk(b"the rest")
        await client.end()
        answer = await client.answer()
    assert answer.status == 404 and "left while the body came" in answer.json["error"]
    await client.aclose()


@with_api
async def test_the_python_client_sees_no_sender_and_replies_to_the_group(relay: Relay) -> None:
    async with (
        trio_wsproxy.open_client(relay.url, group="g", id="py") as client,
        trio_wsproxy.open_client(relay.url, group="g", id="other") as other,
    ):
        with trio.fail_after(10):
            await relay.wait_members(2, "g")
            received: trio.MemoryReceiveChannel[trio_wsproxy.Incoming[str]]
            async with client.subscribe(str) as received, other.subscribe(str) as heard:
                body = (
                    b'{"Id":"6f1c8a3e-0000-4000-8000-000000000001","MessageType":"System.String",'
                    b'"Message":"from the back end","ReplyId":null}'
                )
                headers = {"Content-Type": "application/json"}
                await call(relay.port, "POST", "/api/groups/g/messages", body, headers)
                incoming = await received.receive()
                assert (incoming.value, incoming.sender) == ("from the back end", None)
                await heard.receive()
                await incoming.reply("an answer")  # no member to answer: to the group
                answer = await heard.receive()
                assert (answer.value, answer.sender) == ("an answer", "py")


@with_api
@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "says"),
    [
        ("/api/groups/g/messages", {}, b"x", 415, "Content-Type must be"),
        ("/api/groups/g/messages", {"Content-Type": "image/png"}, b"x", 415, "Content-Type"),
        ("/api/groups/g/messages", {"Content-Type": "text/plain; charset=latin-1"}, b"x", 415,
         "UTF-8"),
        ("/api/groups/g/messages", {"Content-Type": "text/plain"}, b"ok \xff", 400,
         "not UTF-8 (byte 3)"),
        ("/api/groups/g/messages?too=a", {"Content-Type": "text/plain"}, b"x", 400,
         "unknown query parameter 'too'"),
        ("/api/groups/g/messages?to=a&to=b", {"Content-Type": "text/plain"}, b"x", 400,
         "more than once"),
        ("/api/groups/g/messages?to=", {"Content-Type": "text/plain"}, b"x", 400, "empty"),
        ("/api/groups/%07/members", {}, None, 400, "control characters"),
        ("/api/groups/" + "g" * 257 + "/members", {}, None, 400, "longer than 256"),
        ("/api/groups/%FF/members", {}, None, 400, "not UTF-8"),
        ("/api/groups/g/members?x=1", {}, None, 400, "unknown query parameter"),
        ("/api/groups/", {}, None, 404, "no such API path"),
        ("/api/groups/g", {}, None, 404, "no such API path"),
        ("/api", {}, None, 404, "no such API path"),
    ],
)  # fmt: skip
async def test_wrong_requests_get_a_status_and_a_reason(
    relay: Relay, path: str, headers: dict[str, str], body: bytes | None, status: int, says: str
) -> None:
    (member,) = await members(relay, "g", "a")
    method = "GET" if body is None else "POST"
    answer = await call(relay.port, method, path, body, headers)
    assert answer.status == status, answer
    assert says in answer.json["error"]
    # Nothing reached the member: the next message it gets is this one.
    await call(relay.port, "POST", "/api/groups/g/messages", b"next", {"Content-Type": "text/x"})
    with trio.fail_after(10):
        assert await member.recv_message() == (OP_TEXT, b"next")
    await member.aclose()


@with_api
async def test_a_wrong_method_is_405_with_the_allowed_ones(relay: Relay) -> None:
    answer = await call(relay.port, "PUT", "/api/groups/g/messages", b"x")
    assert (answer.status, answer.headers["allow"]) == (405, "POST")
    answer = await call(relay.port, "POST", "/api/groups", b"x")
    assert (answer.status, answer.headers["allow"]) == (405, "GET")


@pytest.mark.wsproxy_relay(api_key=KEY, max_message_size=1000)
async def test_a_body_over_the_message_size_limit_is_413(relay: Relay) -> None:
    headers = {"Content-Type": "application/octet-stream"}
    answer = await call(relay.port, "POST", "/api/groups/g/messages", bytes(1001), headers)
    assert answer.status == 413 and "max_message_size" in answer.json["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: found out on the way
        for _ in range(3):
            yield bytes(400)

    answer = await call(relay.port, "POST", "/api/groups/g/messages", chunks(), headers)
    assert answer.status == 413
    answer = await call(relay.port, "POST", "/api/groups/g/messages", bytes(1000), headers)
    assert answer.status == 200


# -- lists and removal ---------------------------------------------------------------------


@with_api
async def test_groups_and_members_are_listed(relay: Relay) -> None:
    clients = await members(relay, "lobby", "b", "a")
    clients += await members(relay, "room 1", "é")
    answer = await call(relay.port, "GET", "/api/groups")
    assert answer.json == {
        "groups": [{"name": "lobby", "members": 2}, {"name": "room 1", "members": 1}]
    }
    answer = await call(relay.port, "GET", "/api/groups/lobby/members")
    assert answer.json == {"members": ["a", "b"]}
    answer = await call(relay.port, "GET", "/api/groups/room%201/members")
    assert answer.json == {"members": ["é"]}
    # A group without members is an empty one, not an error.
    assert (await call(relay.port, "GET", "/api/groups/none/members")).json == {"members": []}
    for client in clients:
        await client.aclose()


@with_api
async def test_removing_a_member_closes_it_with_4005_and_the_client_stays_away(
    relay: Relay,
) -> None:
    (raw,) = await members(relay, "g", "raw")
    answer = await call(relay.port, "DELETE", "/api/groups/g/members/raw")
    assert (answer.status, answer.body) == (204, b"")
    with trio.fail_after(10):
        code, reason = await raw.expect_close()
    assert (code, reason) == (
        CloseCode.REMOVED,
        "removed from the group by the application's back end",
    )
    answer = await call(relay.port, "DELETE", "/api/groups/g/members/raw")
    assert (answer.status, answer.json) == (404, {"error": "no member 'raw' in group 'g'"})
    # The Python client does not come back by itself after 4005.
    ended: list[trio_wsproxy.Disconnected] = []
    gone = trio.Event()

    def on_disconnect(event: trio_wsproxy.Disconnected) -> None:
        ended.append(event)
        gone.set()

    with pytest.raises(trio_wsproxy.ClosedByRelay, match="4005"):
        async with trio_wsproxy.open_client(
            relay.url, group="g", id="py", on_disconnect=on_disconnect
        ):
            with trio.fail_after(10):
                await relay.wait_members(1, "g")
                await call(relay.port, "DELETE", "/api/groups/g/members/py")
                await gone.wait()
            assert [(e.code, e.reconnecting) for e in ended] == [(4005, False)]
    assert relay.group_size("g") == 0
    await raw.aclose()


# -- the HTTP connection -------------------------------------------------------------------


@with_api
async def test_one_connection_carries_many_calls_and_100_continue_works(relay: Relay) -> None:
    (member,) = await members(relay, "g", "a")
    client = await ApiClient.open(relay.port)
    headers = {"Content-Type": "text/plain"}
    with trio.fail_after(10):
        for n in range(5):
            answer = await client.call("POST", "/api/groups/g/messages", f"m{n}".encode(), headers)
            assert answer.json == {"recipients": 1}
            assert (await client.call("GET", "/api/groups")).status == 200
        for n in range(5):
            assert await member.recv_message() == (OP_TEXT, f"m{n}".encode())
        # Expect: 100-continue: the relay says go on before the body is sent.
        stream = client.stream
        await stream.send_all(
            b"POST /api/groups/g/messages HTTP/1.1\r\nHost: r\r\nContent-Type: text/plain\r\n"
            b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: 4\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert (await stream.receive_some(1000)).startswith(b"HTTP/1.1 100 ")
        await stream.send_all(b"body")
        assert await member.recv_message() == (OP_TEXT, b"body")
    await client.aclose()
    await member.aclose()


@with_api
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /api/groups HTTP/1.1\r\nHost: r\r\nContent-Length: x\r\n\r\n",
        b"POST /api/groups/g/messages HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: text/plain\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n\r\nzz\r\n",
        b"GET /api/groups HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET /api/groups HTTP/1.1\r\nHost: r\r\nHost: s\r\n\r\n",
    ],
)
async def test_malformed_http_is_400_and_nobody_else_notices(
    relay: Relay, request_bytes: bytes
) -> None:
    a, b = await members(relay, "g", "a", "b")
    stream = await trio.open_tcp_stream("127.0.0.1", relay.port)
    await stream.send_all(request_bytes)
    with trio.fail_after(10):
        answer = b""
        while chunk := await stream.receive_some(1000):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b'{"error": ' in answer
    await stream.aclose()
    with trio.fail_after(10):
        await a.send_frame(OP_TEXT, b"still here")
        assert await b.recv_message() == (OP_TEXT, b"still here")
    for client in (a, b):
        await client.aclose()


# -- large bodies ---------------------------------------------------------------------------


@pytest.mark.wsproxy_relay(api_key=KEY, stream_timeout=0.5)
async def test_a_body_that_stalls_mid_stream_is_408_and_its_recipients_get_4002(
    relay: Relay,
) -> None:
    a, b = await members(relay, "g", "a", "b")
    client = await ApiClient.open(relay.port)
    with trio.fail_after(20):
        await client.send_head(
            "POST", "/api/groups/g/messages", {"Content-Type": "application/octet-stream"}
        )
        # Three pieces out: the message streams to the group... and then nothing comes.
        await client.send_chunk(bytes(3 * MiB))
        answer = await client.answer()
        assert answer.status == 408 and "no progress for 0.5s" in answer.json["error"]
        for member in (a, b):
            code, _ = await member.expect_close()
            assert code == CloseCode.MESSAGE_TRUNCATED
    await client.aclose()


@pytest.mark.wsproxy_relay(api_key=KEY, stream_timeout=0.5)
async def test_a_body_nobody_needs_that_never_comes_is_408(relay: Relay) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", relay.port)
    await stream.send_all(
        b"GET /api/groups HTTP/1.1\r\nHost: r\r\nContent-Length: 10\r\n"
        b"Authorization: Bearer " + KEY.encode() + b"\r\n\r\n"
    )
    with trio.fail_after(10):
        answer = b""
        while chunk := await stream.receive_some(1000):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    await stream.aclose()


async def test_a_huge_body_streams_through_with_flat_memory() -> None:
    """256 MiB posted in chunks reaches two members whole while the relay's memory
    stays flat: the body is never held, it streams on in pieces as it arrives. (The
    relay starts at about 45 MiB resident.)"""
    size = 256 * MiB
    env_key = {"TRIO_WSPROXY_API_KEY": KEY}
    process, _url, port = await start_relay(env=env_key)
    try:
        member = await RawClient.open(port, "/ws?id=m&groupName=g")
        probe = await RawClient.open(port, "/ws?id=probe&groupName=g")
        await probe.send_frame(OP_TEXT, b"ready")  # both are in the group now
        assert await member.recv_message() == (OP_TEXT, b"ready")
        block = bytes(range(256)) * (MiB // 256)

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(size // MiB):
                yield block

        received = {"m": 0, "probe": 0}
        answer = None

        async def post() -> None:
            nonlocal answer
            answer = await call(
                port, "POST", "/api/groups/g/messages", chunks(),
                {"Content-Type": "application/octet-stream"},
            )  # fmt: skip

        async def read(name: str, client: RawClient) -> None:
            while True:
                fin, _op, payload = await client.recv_frame()
                assert payload == block[: len(payload)] or not payload
                received[name] += len(payload)
                if fin:
                    return

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(post)
                nursery.start_soon(read, "m", member)
                nursery.start_soon(read, "probe", probe)
        assert answer is not None and answer.json == {"recipients": 2}
        assert received == {"m": size, "probe": size}
        peak = peak_rss_mib(process.pid)
        assert peak < 80, f"the relay peaked at {peak:.0f} MiB for a {size // MiB} MiB body"
    finally:
        process.kill()


async def test_the_api_key_comes_from_a_file(tmp_path: Path) -> None:
    path = str(tmp_path / "key")
    (tmp_path / "key").write_text(KEY + "\n")
    async with open_relay(RelayConfig(port=0, api_key_file=path)) as relay:
        assert (await call(relay.port, "GET", "/api/groups")).status == 200
    with pytest.raises(ValueError, match="at least 16"):
        RelayConfig(api_key="short")
    with pytest.raises(ValueError, match="once"):
        RelayConfig(api_key=KEY, api_key_file=path)
    with pytest.raises(ValueError, match="under /api/"):
        RelayConfig(path="/api/ws")
