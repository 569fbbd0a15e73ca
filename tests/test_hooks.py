"""The back end's hooks (DESIGN.md §9, docs/backend.md), against a real HTTP back end
started by each test: connect, join and publish — allow, refuse, replace, time out —
what a client sees of each, and a hook that never answers slowing only what waits on it."""

from __future__ import annotations

import base64
from typing import Any

import trio
import trio.testing

from hookserver import Reply, allow, back_end
from test_v1 import V1_OFFER, next_event, next_message
from test_v1_groups import join, recv
from trio_wsproxy import CloseCode, Relay, RelayConfig, open_relay
from trio_wsproxy.protocol import v1
from trio_wsproxy.relay.namespaces import Namespace
from wsraw import OP_BINARY, OP_TEXT, RawClient


def config(**settings: Any) -> RelayConfig:
    return RelayConfig(port=0, ping_interval=None, close_timeout=0.2, **settings)


async def v1_client(
    relay: Relay, ident: str, group: str, extra: str = ""
) -> tuple[RawClient, v1.Welcome]:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
    status, _, body = await client.handshake(f"/ws?id={ident}&groupName={group}", V1_OFFER + extra)
    assert status == 101, (status, body)
    welcome = await next_event(client)
    assert isinstance(welcome, v1.Welcome)
    return client, welcome


async def refused(relay: Relay, ident: str, group: str, extra: str = "") -> tuple[int, bytes]:
    """The status and body of a handshake the relay refuses."""
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
    status, _, body = await client.handshake(f"/ws?id={ident}&groupName={group}", extra)
    assert status != 101
    await client.aclose()
    return status, body


# -- connect -------------------------------------------------------------------------


async def test_the_connect_hook_sees_the_connection_and_may_rename_it_and_give_it_info() -> None:
    async def answer(body: dict[str, Any]) -> dict[str, Any]:
        return {"allow": True, "id": "user-42", "groups": ["lobby", "game-*"], "info": {"n": 1}}

    async with back_end(answer) as server:
        settings = config(
            connect_hook=server.url,
            hook_headers="X-Session, User-Agent",
            hook_cookies="sid",
        )
        async with open_relay(settings) as relay:
            with trio.fail_after(10):
                extra = "X-Session: abc\r\nX-Secret: no\r\nCookie: sid=s1; other=o\r\n"
                client, welcome = await v1_client(relay, "guest", "lobby", extra)
                assert welcome.id == "user-42"  # the back end's id, not the URL's
                (body,) = server.bodies("connect")
                assert body["id"] == "guest" and body["group"] == "lobby"
                assert body["subprotocol"] == "wsproxy.v1"
                assert body["remote"].startswith("127.0.0.1:")
                # Only what the allow-lists name.
                assert body["headers"] == {"x-session": "abc"}
                assert body["cookies"] == {"sid": "s1"}
                # The groups it gave hold for later joins.
                assert isinstance(await join(client, "game-7"), v1.Welcome)
                refusal = await join(client, "admin")
                assert isinstance(refusal, v1.Error) and refusal.error == v1.NOT_ALLOWED
                # ...and for the URL's group.
                status, reason = await refused(relay, "x", "admin")
                assert status == 403 and b"does not allow group" in reason


async def test_a_connect_hooks_refusal_reaches_the_client_as_it_is() -> None:
    async def answer(body: dict[str, Any]) -> dict[str, Any]:
        return {"allow": False, "status": 401, "reason": "log in first"}

    async with back_end(answer) as server, open_relay(config(connect_hook=server.url)) as relay:
        with trio.fail_after(10):
            assert await refused(relay, "a", "g") == (401, b"log in first\n")
            assert relay.counters.refusals["connect_hook", 401] == 1
            assert relay.counters.hook_calls["connect", "refused"] == 1


async def test_a_hook_that_never_answers_refuses_by_default_and_allows_where_configured() -> None:
    async def never(body: dict[str, Any]) -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError

    async with back_end(never) as server:
        async with open_relay(config(connect_hook=server.url, hook_timeout=0.2)) as relay:
            with trio.fail_after(10):
                status, reason = await refused(relay, "a", "g")
                assert status == 503 and b"did not answer" in reason
                assert relay.counters.hook_calls["connect", "timeout"] == 1
        settings = config(connect_hook=server.url, hook_timeout=0.2, hook_failure="allow")
        async with open_relay(settings) as relay:
            with trio.fail_after(10):
                _, welcome = await v1_client(relay, "a", "g")
                assert welcome.id == "a"


async def test_an_answer_the_relay_cannot_read_is_a_failure_of_the_hook() -> None:
    async def nonsense(body: dict[str, Any]) -> Reply:
        return Reply(200, b"<html>oops</html>")

    async def error(body: dict[str, Any]) -> Reply:
        return Reply(500, b"{}")

    for answer in (nonsense, error):
        async with back_end(answer) as server:
            async with open_relay(config(connect_hook=server.url)) as relay:
                with trio.fail_after(10):
                    status, reason = await refused(relay, "a", "g")
                    assert status == 503 and b"failed" in reason
                    assert relay.counters.hook_calls["connect", "failed"] == 1


async def joined_info(client: RawClient, member: str) -> Any:
    """The info a presence event gives ``member`` when it tells ``client`` it joined
    (events of joins in the same batch, its own included, may come first)."""
    while True:
        event = await next_event(client)
        assert isinstance(event, v1.Presence), event
        if member in event.joined:
            return (event.info or {}).get(member)


async def test_v1_members_see_the_info_the_connect_hook_gave_in_presence() -> None:
    async def answer(body: dict[str, Any]) -> dict[str, Any]:
        if body["id"] == "anon":
            return {"allow": True}
        return {"allow": True, "info": {"name": body["id"].title()}}

    async with back_end(answer) as server:
        async with open_relay(config(connect_hook=server.url)) as relay:
            with trio.fail_after(10):
                alice, welcome = await v1_client(relay, "alice", "g")
                assert welcome.info == {"alice": {"name": "Alice"}}
                bob, welcome = await v1_client(relay, "bob", "g")
                assert welcome.info == {"alice": {"name": "Alice"}, "bob": {"name": "Bob"}}
                assert await joined_info(alice, "bob") == {"name": "Bob"}
                anon, _ = await v1_client(relay, "anon", "g")
                assert await joined_info(alice, "anon") is None  # (none given)
                # A later join's welcome carries it too.
                welcome = await join(bob, "other")
                assert isinstance(welcome, v1.Welcome)
                assert welcome.info == {"bob": {"name": "Bob"}}
                await anon.aclose()


async def test_the_python_client_keeps_the_members_info() -> None:
    from trio_wsproxy import Joined, open_client

    async def answer(body: dict[str, Any]) -> dict[str, Any]:
        return {"allow": True, "info": {"name": body["id"].title()}}

    async with back_end(answer) as server:
        async with open_relay(config(connect_hook=server.url)) as relay:
            with trio.fail_after(10):
                async with open_client(relay.url, group="g", id="alice") as alice:
                    async with alice.subscribe(Joined) as joins:
                        async with open_client(relay.url, group="g", id="bob") as bob:
                            assert (await joins.receive()).value == Joined("bob", {"name": "Bob"})
                            assert alice.member_info == {"bob": {"name": "Bob"}}
                            assert bob.member_info == {"alice": {"name": "Alice"}}


async def test_the_python_client_is_told_of_a_refused_join_and_a_refused_message() -> None:
    from trio_wsproxy import DeliveryFailed, JoinRefused, open_client

    async def answer(body: dict[str, Any]) -> dict[str, Any]:
        if body["hook"] == "join" and body["group"] == "vip":
            return {"allow": False, "status": 403, "reason": "members only"}
        if body["hook"] == "publish":
            return {"allow": False, "status": 429, "reason": "slow down"}
        return {"allow": True}

    async with back_end(answer) as server:
        settings = config(join_hook=server.url, publish_hook=server.url)
        async with open_relay(settings) as relay:
            with trio.fail_after(10):
                async with open_client(relay.url, group="g", id="alice") as alice:
                    try:
                        await alice.join("vip")
                    except JoinRefused as exc:
                        assert (exc.code, exc.detail) == ("refused", "members only")
                    else:
                        raise AssertionError("joined")
                    async with alice.subscribe(DeliveryFailed) as failures:
                        await alice.send("hello")
                        failed = (await failures.receive()).value
                    assert failed == DeliveryFailed(None, "message_refused", "slow down")
                    assert alice.group == "g"  # still in its group


# -- join ----------------------------------------------------------------------------


async def test_the_join_hook_is_asked_for_the_urls_group_and_every_later_join() -> None:
    async def answer(body: dict[str, Any]) -> dict[str, Any]:
        if body["group"] == "game-full":
            return {"allow": False, "status": 409, "reason": "the table is full"}
        return {"allow": True}

    async with back_end(answer) as server:
        namespace = Namespace(name="games", prefix="game-", join_hook=server.url)
        async with open_relay(config(namespaces=(namespace,))) as relay:
            with trio.fail_after(10):
                # The URL's group: the back end's status and reason, as they are.
                assert await refused(relay, "a", "game-full") == (409, b"the table is full\n")
                client, _ = await v1_client(relay, "a", "game-1")
                # A later join: an error event with the back end's reason and status.
                refusal = await join(client, "game-full")
                assert refusal == v1.Error(
                    v1.REFUSED, "the table is full", group="game-full", status=409
                )
                assert isinstance(await join(client, "game-2"), v1.Welcome)
                # Outside the namespace: not asked.
                assert isinstance(await join(client, "lobby"), v1.Welcome)
                asked = [body["group"] for body in server.bodies("join")]
                assert asked == ["game-full", "game-1", "game-full", "game-2"]


async def test_the_join_hook_sees_the_info_the_connect_hook_gave() -> None:
    async def answer(body: dict[str, Any]) -> dict[str, Any]:
        if body["hook"] == "connect":
            return {"allow": True, "info": {"name": "Alice"}}
        return {"allow": body["info"] == {"name": "Alice"}}

    async with back_end(answer) as server:
        settings = config(connect_hook=server.url, join_hook=server.url)
        async with open_relay(settings) as relay:
            with trio.fail_after(10):
                await v1_client(relay, "a", "g")
                assert [body["hook"] for body in server.bodies()] == ["connect", "join"]


async def test_a_token_without_the_groups_claim_is_left_to_the_join_hook() -> None:
    import time

    import jwt

    secret = "s" * 32
    bare = jwt.encode({"sub": "a", "exp": int(time.time()) + 60}, secret, algorithm="HS256")
    header = f"Authorization: Bearer {bare}\r\n"

    async def answer(body: dict[str, Any]) -> dict[str, Any]:
        return {"allow": body["group"] == "game-1", "reason": "not your table"}

    async with back_end(answer) as server:
        namespace = Namespace(name="games", prefix="game-", join_hook=server.url)
        async with open_relay(config(token_secret=secret, namespaces=(namespace,))) as relay:
            with trio.fail_after(10):
                # Where a join hook decides, the claim's absence is its to judge...
                client, _ = await v1_client(relay, "a", "game-1", header)
                assert await refused(relay, "a", "game-2", header) == (403, b"not your table\n")
                # ...and where none does, such a token admits to no group.
                status, reason = await refused(relay, "a", "lobby", header)
                assert status == 403 and b"does not allow this group" in reason
                await client.aclose()


# -- publish -------------------------------------------------------------------------


async def moderate(body: dict[str, Any]) -> dict[str, Any]:
    """Refuses "cheat", shouts "shout", turns binary into its length, delays "slow"."""
    if body.get("binary") is not None:
        size = len(base64.b64decode(body["binary"]))
        return {"allow": True, "binary": base64.b64encode(bytes([size % 256])).decode()}
    text = body["text"]
    if text == "cheat":
        return {"allow": False, "status": 422, "reason": "illegal move"}
    if text.startswith("slow"):
        await trio.sleep(0.05)
    if text == "shout":
        return {"allow": True, "text": "SHOUT"}
    return {"allow": True}


async def test_the_publish_hook_allows_refuses_and_replaces_in_the_senders_order() -> None:
    async with back_end(moderate) as server:
        namespace = Namespace(name="games", prefix="game-", publish_hook=server.url)
        async with open_relay(config(namespaces=(namespace,))) as relay:
            with trio.fail_after(10):
                alice, _ = await v1_client(relay, "alice", "game-1")
                bob, _ = await v1_client(relay, "bob", "game-1")
                plain = await RawClient.open(relay.port, "/ws?id=plain&groupName=game-1")
                await relay.wait_members(3)
                for text in (b"slow 1", b"cheat", b"2", b"slow 3", b"shout"):
                    await alice.send_frame(OP_TEXT, b"\n" + text)
                await alice.send_frame(OP_BINARY, b"\n" + bytes(300))
                # The refusal reaches alice; the rest reach the others, in order.
                refusal = v1.Error(v1.MESSAGE_REFUSED, "illegal move", status=422)
                assert await next_event(alice) == refusal
                got = [(await next_message(bob))[::2] for _ in range(5)]
                assert got == [
                    (OP_TEXT, b"slow 1"),
                    (OP_TEXT, b"2"),
                    (OP_TEXT, b"slow 3"),
                    (OP_TEXT, b"SHOUT"),
                    (OP_BINARY, bytes([44])),
                ]
                assert [await plain.recv_message() for _ in range(5)] == [
                    (OP_TEXT, text) for text in (b"slow 1", b"2", b"slow 3", b"SHOUT")
                ] + [(OP_BINARY, bytes([44]))]
                sent = server.bodies("publish")
                assert sent[0] == {
                    "hook": "publish",
                    "id": "alice",
                    "group": "game-1",
                    "remote": sent[0]["remote"],
                    "info": None,
                    "text": "slow 1",
                    "to": None,
                }
                assert relay.counters.publish_refusals == 1
                assert relay.counters.hook_calls["publish", "replaced"] == 2


async def test_a_plain_members_refused_message_goes_nowhere_and_it_stays_connected() -> None:
    async with back_end(moderate) as server, open_relay(config(publish_hook=server.url)) as relay:
        with trio.fail_after(10):
            cheat = await RawClient.open(relay.port, "/ws?id=cheat&groupName=g")
            other = await RawClient.open(relay.port, "/ws?id=other&groupName=g")
            await relay.wait_members(2)
            await cheat.send_frame(OP_TEXT, b"cheat")
            await cheat.send_frame(OP_TEXT, b"fair")
            assert await other.recv_message() == (OP_TEXT, b"fair")
            assert relay.counters.publish_refusals == 1


async def test_a_message_too_large_for_the_publish_hook_is_refused_whole() -> None:
    async with back_end(moderate) as server, open_relay(config(publish_hook=server.url)) as relay:
        with trio.fail_after(20):
            alice, _ = await v1_client(relay, "alice", "g")
            bob, _ = await v1_client(relay, "bob", "g")
            await alice.send_frame(OP_TEXT, b"\n" + b"x" * (2 * 1024 * 1024))
            await alice.send_frame(OP_TEXT, b"\nafter")
            error = await next_event(alice)
            assert isinstance(error, v1.Error) and error.error == v1.MESSAGE_REFUSED
            assert error.status == 413
            assert (await next_message(bob))[::2] == (OP_TEXT, b"after")


async def test_a_publish_hook_that_never_answers_slows_only_its_own_namespace() -> None:
    async def hang(body: dict[str, Any]) -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError

    async with back_end(hang) as slow, back_end(allow) as fast:
        namespaces = (
            Namespace(name="slow", prefix="slow-", publish_hook=slow.url),
            Namespace(name="fast", prefix="fast-", publish_hook=fast.url),
        )
        settings = config(namespaces=namespaces, hook_timeout=30)
        async with open_relay(settings) as relay:
            with trio.fail_after(10):
                stuck, _ = await v1_client(relay, "stuck", "slow-1")
                await v1_client(relay, "waiting", "slow-1")
                a, _ = await v1_client(relay, "a", "fast-1")
                b, _ = await v1_client(relay, "b", "fast-1")
                await stuck.send_frame(OP_TEXT, b"\nheld")
                await slow.wait_requests(1)  # the slow namespace's hook holds it
                # Meanwhile the other namespace's traffic flows, hook and all; so do the
                # stuck member's messages into a group of another namespace.
                for n in range(20):
                    await a.send_frame(OP_TEXT, b"\n%d" % n)
                    assert (await next_message(b))[::2] == (OP_TEXT, b"%d" % n)
                assert len(slow.requests) == 1


async def test_the_hooks_are_counted_and_timed_in_the_metrics() -> None:
    async with back_end(moderate) as server, open_relay(config(publish_hook=server.url)) as relay:
        with trio.fail_after(10):
            a, _ = await v1_client(relay, "a", "g")
            b, _ = await v1_client(relay, "b", "g")
            await a.send_frame(OP_TEXT, b"\ncheat")
            await a.send_frame(OP_TEXT, b"\nok")
            await recv(b)
            status, _, body = await _get(relay.port, "/metrics")
            assert status == 200
            text = body.decode()
            assert 'trio_wsproxy_hook_calls_total{hook="publish",outcome="refused"} 1.0' in text
            assert 'trio_wsproxy_hook_calls_total{hook="publish",outcome="allowed"} 1.0' in text
            assert 'trio_wsproxy_hook_seconds_count{hook="publish"} 2.0' in text
            assert "trio_wsproxy_publish_refusals_total 1.0" in text


async def _get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    await client.send(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    answer = await client.read_response()
    await client.aclose()
    return answer


# -- the typed module for back ends ----------------------------------------------------


def test_a_python_back_end_reads_requests_and_writes_answers_typed() -> None:
    from trio_wsproxy.backend import (
        BadHookRequest,
        HookAnswer,
        HookRequest,
        answer_body,
        read_hook_request,
    )
    from trio_wsproxy.protocol.hooks import parse_answer, publish_request, request_body

    sent = publish_request("alice", "game-1", "127.0.0.1:5", {"n": 1}, False, b"\x00\xff")
    request = read_hook_request(request_body(sent))
    assert request == sent and request.payload() == b"\x00\xff"
    assert isinstance(request, HookRequest)
    answer = HookAnswer(allow=False, status=422, reason="illegal move")
    assert answer_body(answer) == b'{"allow":false,"status":422,"reason":"illegal move"}'
    assert parse_answer(answer_body(answer), "publish") == answer
    for bad, why in (
        (b"[]", "a JSON object"),
        (b"{", "not JSON"),
        (b'{"hook":"connect","id":1}', "body.group"),
        (b'{"hook":"nope","id":"a","group":"g","remote":"r"}', "unknown hook"),
    ):
        try:
            read_hook_request(bad)
        except BadHookRequest as exc:
            assert why in str(exc), exc
        else:
            raise AssertionError(bad)


async def test_members_on_other_nodes_show_their_info_too(redis_url: str, prefix: str) -> None:
    from test_backplane import cluster

    async def answer(body: dict[str, Any]) -> dict[str, Any]:
        return {"allow": True, "info": {"name": body["id"].title()}}

    async with back_end(answer) as server:
        async with cluster(redis_url, prefix, 2, connect_hook=server.url) as (a, b):
            with trio.fail_after(10):
                alice, _ = await v1_client(a, "alice", "g")
                # bob, on the other node, is welcomed with alice's info...
                bob, welcome = await v1_client(b, "bob", "g")
                assert welcome.info == {"alice": {"name": "Alice"}, "bob": {"name": "Bob"}}
                # ...and alice hears of bob with his.
                assert await joined_info(alice, "bob") == {"name": "Bob"}
                await bob.aclose()
                # Gone, its info is too.
                while True:
                    event = await next_event(alice)
                    if isinstance(event, v1.Presence) and "bob" in event.left:
                        break
                carol, welcome = await v1_client(b, "carol", "g")
                assert welcome.info == {"alice": {"name": "Alice"}, "carol": {"name": "Carol"}}
                await alice.aclose()
                await carol.aclose()


async def test_the_python_client_sends_the_headers_a_connect_hook_is_shown() -> None:
    import pytest

    from trio_wsproxy import ClientConfig, open_client

    async with back_end(allow) as server:
        settings = config(connect_hook=server.url, hook_cookies="session", hook_headers="x-app")
        async with open_relay(settings) as relay:
            with trio.fail_after(10):
                headers = {"Cookie": "session=s3cret; theme=dark", "X-App": "game/1.2"}
                client_config = ClientConfig(headers=headers)
                async with open_client(relay.url, group="g", id="a", config=client_config):
                    (body,) = server.bodies("connect")
                    assert body["cookies"] == {"session": "s3cret"}
                    assert body["headers"] == {"x-app": "game/1.2"}
    for bad in ({"Host": "x"}, {"X-A": "a\r\nb"}, {"no spaces": "x"}, [("one",)]):
        with pytest.raises(ValueError):
            ClientConfig(headers=bad)


# -- what happens meanwhile: the back end takes its time -------------------------------


async def test_a_connection_closed_while_its_join_hook_is_asked_joins_nothing() -> None:
    release = trio.Event()

    async def answer(body: dict[str, Any]) -> dict[str, Any]:
        if body["group"] == "game-2":
            await release.wait()
        return {"allow": True}

    async with back_end(answer) as server:
        namespace = Namespace(name="games", prefix="game-", join_hook=server.url)
        async with open_relay(config(namespaces=(namespace,), hook_timeout=5)) as relay:
            with trio.fail_after(10):
                client, _ = await v1_client(relay, "a", "game-1")
                await client.send_frame(OP_TEXT, v1.join_header("game-2"))
                await server.wait_requests(2)
                (session,) = relay.sessions
                session.close(CloseCode.POLICY_VIOLATION, "removed meanwhile")
                release.set()
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                assert relay.registry.group("game-2") is None
                assert relay.registry.member_count == 0


async def test_a_member_removed_while_its_message_is_asked_about_publishes_nothing() -> None:
    release = trio.Event()

    async def answer(body: dict[str, Any]) -> dict[str, Any]:
        if body["hook"] == "publish" and body["id"] == "a":
            await release.wait()
        return {"allow": True}

    async with back_end(answer) as server:
        namespace = Namespace(name="games", prefix="game-", publish_hook=server.url)
        async with open_relay(config(namespaces=(namespace,), hook_timeout=5)) as relay:
            with trio.fail_after(10):
                a, _ = await v1_client(relay, "a", "lobby")
                assert isinstance(await join(a, "game-1"), v1.Welcome)
                b, _ = await v1_client(relay, "b", "game-1")
                c, _ = await v1_client(relay, "c", "game-1")
                await a.send_frame(OP_TEXT, b'{"group":"game-1"}\nafter the removal')
                await server.wait_requests(1)
                assert await relay.registry.remove_member("game-1", "a", "cheating")
                release.set()
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                await c.send_frame(OP_TEXT, b"\nmarker")
                assert (await next_message(b))[1:] == (v1.From("c"), b"marker")


async def test_a_renamed_members_token_still_authorises_its_later_joins() -> None:
    import time

    from trio_wsproxy.protocol.tokens import mint_token

    secret = "s" * 32

    async def answer(body: dict[str, Any]) -> dict[str, Any]:
        return {"allow": True, "id": "user-1"} if body["hook"] == "connect" else {"allow": True}

    async with back_end(answer) as server:
        settings = config(connect_hook=server.url, token_secret=secret)
        async with open_relay(settings) as relay:
            with trio.fail_after(10):
                token = mint_token(secret, "guest", ["lobby", "game-*"], 60, now=time.time())
                header = f"Authorization: Bearer {token}\r\n"
                client, welcome = await v1_client(relay, "guest", "lobby", header)
                assert welcome.id == "user-1"
                # The token names "guest", the id its URL asked for: it still holds.
                assert isinstance(await join(client, "game-1"), v1.Welcome)
                refusal = await join(client, "admin")
                assert isinstance(refusal, v1.Error) and refusal.error == v1.NOT_ALLOWED


async def test_an_answer_the_relay_cannot_send_is_the_hooks_failure() -> None:
    async def odd(body: dict[str, Any]) -> Reply:
        if "surrogate" in body["text"]:
            return Reply(200, b'{"allow": true, "text": "\\ud800"}')
        return Reply(200, b'{"allow": ' * 100_000)

    async with back_end(odd) as server, open_relay(config(publish_hook=server.url)) as relay:
        with trio.fail_after(10):
            a, _ = await v1_client(relay, "a", "g")
            await v1_client(relay, "b", "g")
            for text in (b"\nsurrogate", b"\ndeep"):
                await a.send_frame(OP_TEXT, text)
                refusal = await next_event(a)
                assert isinstance(refusal, v1.Error), refusal
                assert (refusal.error, refusal.status) == (v1.MESSAGE_REFUSED, 503)
            assert relay.counters.hook_calls["publish", "failed"] == 2


async def test_a_connect_hooks_id_too_long_for_the_relay_is_a_502() -> None:
    async def answer(body: dict[str, Any]) -> dict[str, Any]:
        return {"allow": True, "id": "x" * 65}

    async with back_end(answer) as server:
        async with open_relay(config(connect_hook=server.url, max_id_length=64)) as relay:
            with trio.fail_after(10):
                status, reason = await refused(relay, "a", "g")
                assert status == 502 and b"over 64 characters" in reason
