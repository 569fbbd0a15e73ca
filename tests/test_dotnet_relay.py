"""What a .NET WsProxyClient meets at this relay, over real sockets.

The .NET client, on any close, ends its loop and connects again at once, once; if that
connect fails (a refusal before the upgrade included) it never tries again, and it never
answers a server's close frame. The sample Middleware routes ``/ws`` as ASP.NET does
(any case, an optional trailing slash). The relay must not turn these habits into an
endless eviction storm, a removed member that is back at once, or a 404 for ``/WS``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from urllib.parse import quote

import pytest
import trio

from dotnet_peer import STRING, DotNetClient, dotnet_url, open_dotnet_client
from httpapi import KEY, call
from loglines import LogLines
from trio_wsproxy import CloseCode, Relay
from trio_wsproxy.protocol.handshake import same_endpoint
from trio_wsproxy.protocol.tokens import issued_after, mint_token
from trio_wsproxy.relay.groups import STORM_LIFETIME, STORM_REPLACEMENTS, Bans, EvictionStorms
from wsraw import OP_TEXT, RawClient

SECRET = "relay-secret-of-at-least-thirty-two-bytes"
with_api = pytest.mark.wsproxy_relay(api_key=KEY)
# A bound on a test's connects: on a relay without storm control two .NET clients with
# one id connect hundreds of times a second, for ever.
_MAX_CONNECTS = 300


def target(member_id: str, group: str = "g", token: str | None = None) -> str:
    query = f"/ws?id={quote(member_id)}&groupName={quote(group)}"
    return query + (f"&access_token={token}" if token else "")


async def until(predicate: Callable[[], bool], *clients: DotNetClient) -> None:
    """Return once ``predicate()`` holds, checked at every change of any of ``clients``."""
    async with trio.open_nursery() as nursery:

        async def watch(client: DotNetClient) -> None:
            await client.wait_until(predicate)
            nursery.cancel_scope.cancel()

        for client in clients:
            nursery.start_soon(watch, client)


def evictions(*clients: DotNetClient) -> int:
    return sum(code == CloseCode.REPLACED for c in clients for code, _ in c.closes_received)


# -- item 7: the WebSocket path as ASP.NET routes it -------------------------------------------


@pytest.mark.parametrize("path", ["/ws", "/WS", "/ws/", "/Ws/", "/wS"])
async def test_the_websocket_path_matches_in_any_case_with_or_without_a_trailing_slash(
    relay: Relay, path: str
) -> None:
    client = await RawClient.open(relay.port, f"{path}?id=a&groupName=g")
    other = await RawClient.open(relay.port, "/ws?id=b&groupName=g")
    with trio.fail_after(10):
        await relay.wait_members(2, "g")
        await other.send_frame(OP_TEXT, b"hello")
        assert await client.recv_message() == (OP_TEXT, b"hello")
    await client.aclose()
    await other.aclose()


@pytest.mark.parametrize("path", ["/ws//", "/wss", "/w", "/ws/x", "//ws"])
async def test_other_paths_are_still_404(relay: Relay, path: str) -> None:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
    status, _headers, body = await client.handshake(f"{path}?id=a&groupName=g")
    assert status == 404, body
    assert body == b"no such path: use /ws\n"
    await client.aclose()


async def test_the_probes_keep_their_exact_paths(relay: Relay) -> None:
    assert (await call(relay.port, "GET", "/healthz", auth=False)).status == 200
    for path in ("/HEALTHZ", "/healthz/"):
        answer = await call(relay.port, "GET", path, auth=False)
        assert answer.status != 200, path


# -- item 4: same id twice, and the .NET client's immediate reconnect -------------------------


async def test_two_dotnet_clients_with_one_id_stop_evicting_each_other(
    relay: Relay, relay_log: LogLines
) -> None:
    url = dotnet_url(relay.url, "g", str(uuid.uuid4()))
    with trio.fail_after(60):
        async with open_dotnet_client(url) as a, open_dotnet_client(url) as b:
            # b replaced a, a came back at once and replaced b, and so on, until one of
            # them is refused (409) and, as a .NET client does, gives up for good.
            await until(
                lambda: a.gave_up or b.gave_up or a.connects + b.connects > _MAX_CONNECTS, a, b
            )
            assert a.gave_up != b.gave_up, (a.connects, b.connects)
            survivor = b if a.gave_up else a
            assert relay.counters.refusals["eviction_storm", 409] == 1
            # The storm stopped within a bounded number of evictions: STORM_REPLACEMENTS,
            # with room for a run that starts again on a machine slowed to seconds per
            # reconnect (unbounded, two such clients make hundreds a second).
            assert evictions(a, b) <= 3 * STORM_REPLACEMENTS, (a.connects, b.connects)
            # The other one stays connected, and is a working member of the group.
            assert survivor.connected
            await relay.wait_members(1, "g")
            async with open_dotnet_client(dotnet_url(relay.url, "g")) as sender:
                heard = survivor.collect(STRING)
                await sender.send("still here?", STRING)
                assert await heard.receive() == "still here?"
                assert survivor.connected
            assert relay_log.count("eviction storm") == 1  # once per storm, not per refusal

            # The storm ends by itself: once the survivor's connection is STORM_LIFETIME
            # old, a single clean reconnect with the id replaces it, as any reconnect does.
            await trio.sleep(STORM_LIFETIME)
            replaced = evictions(survivor)
            async with open_dotnet_client(url) as fresh:  # (raises unless it got its 101)
                await until(lambda: evictions(survivor) > replaced, survivor)
                # ... and the .NET survivor, back at once, starts a new storm, ended the
                # same way: one of the two is refused, the other stays.
                await until(lambda: survivor.gave_up or fresh.gave_up, survivor, fresh)
                assert survivor.connected != fresh.connected
                assert evictions(survivor, fresh) <= 3 * STORM_REPLACEMENTS + replaced
    assert relay.counters.refusals["eviction_storm", 409] == 2
    assert relay_log.count("eviction storm") == 2


@with_api
async def test_a_lone_dotnet_client_knocked_off_by_messages_it_cannot_read_is_not_a_storm(
    relay: Relay,
) -> None:
    # A .NET client drops its connection on any message it cannot read and comes back at
    # once under its id, leaving the old socket open: each comeback replaces a fresh
    # connection, as in a storm. Ten such messages in a row (with the storm's first
    # bounds, 5 in 2 s, six locked it out for good) leave it in its group.
    with trio.fail_after(60):
        async with open_dotnet_client(dotnet_url(relay.url, "g")) as peer:
            for _ in range(10):
                connects = peer.connects
                answer = await call(
                    relay.port,
                    "POST",
                    "/api/groups/g/messages",
                    b"hello, plain text",
                    {"Content-Type": "text/plain"},
                )
                assert answer.status == 200, answer
                await peer.wait_until(lambda n=connects: peer.connects > n or peer.gave_up)
                assert not peer.gave_up
            await peer.wait_until(lambda: peer.connected)
            await relay.wait_members(1, "g")
    assert relay.counters.refusals["eviction_storm", 409] == 0


async def test_a_few_quick_reconnects_are_not_a_storm(relay: Relay) -> None:
    """A client that reconnects quickly a few times (a flaky network, a half-open
    connection it gave up on) always gets in: newest wins."""
    clients = []
    with trio.fail_after(30):
        for _ in range(STORM_REPLACEMENTS + 1):
            clients.append(await RawClient.open(relay.port, target("flaky")))
        for older in clients[:-1]:
            code, _reason = await older.expect_close()
            assert code == CloseCode.REPLACED
        await relay.wait_members(1, "g")
    assert relay.counters.refusals["eviction_storm", 409] == 0
    for client in clients:
        await client.aclose()


async def test_a_connection_that_lived_is_replaced_even_right_after_a_storm(
    relay: Relay,
) -> None:
    """A reconnect after a half-open drop replaces a connection that lived (its ghost):
    never refused, storm or not."""
    storm = [await RawClient.open(relay.port, target("x")) for _ in range(STORM_REPLACEMENTS + 1)]
    refused = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
    status, _headers, _body = await refused.handshake(target("x"))
    assert status == 409
    await trio.sleep(STORM_LIFETIME)  # the last connection has lived: it is a ghost now
    with trio.fail_after(10):
        back = await RawClient.open(relay.port, target("x"))
        code, _reason = await storm[-1].expect_close()
        assert code == CloseCode.REPLACED
        await relay.wait_members(1, "g")
    for client in [*storm, refused, back]:
        await client.aclose()


# -- item 5: removed by the back end, and kept out -------------------------------------------


@with_api
async def test_a_removed_dotnet_client_that_comes_straight_back_is_refused(relay: Relay) -> None:
    member_id = str(uuid.uuid4())
    with trio.fail_after(30):
        async with open_dotnet_client(dotnet_url(relay.url, "g", member_id)) as client:
            answer = await call(relay.port, "DELETE", f"/api/groups/g/members/{member_id}")
            assert answer.status == 204
            # It reconnects at once, once, as .NET does; refused, it gives up for good.
            await client.wait_gave_up()
            assert [code for code, _ in client.closes_received] == [CloseCode.REMOVED]
            assert (client.attempts, client.connects) == (2, 1)
            listed = await call(relay.port, "GET", "/api/groups/g/members")
            assert listed.json == {"members": []}
    assert relay.counters.refusals["banned", 403] == 1
    refused = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
    status, _headers, body = await refused.handshake(target(member_id))
    assert status == 403
    assert body == b"removed from this group by the application's back end: kept out for 60s more\n"
    await refused.aclose()


async def remove(relay: Relay, member: RawClient, member_id: str, query: str = "") -> None:
    answer = await call(relay.port, "DELETE", f"/api/groups/g/members/{member_id}{query}")
    assert answer.status == 204, answer
    with trio.fail_after(10):
        code, _reason = await member.expect_close()
    assert code == CloseCode.REMOVED
    await member.aclose()


async def comeback(relay: Relay, member_id: str, token: str | None = None) -> int:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
    status, _headers, _body = await client.handshake(target(member_id, token=token))
    await client.aclose()
    return status


@with_api
async def test_a_ban_lasts_as_long_as_the_call_says(relay: Relay) -> None:
    member = await RawClient.open(relay.port, target("a"))
    await remove(relay, member, "a", "?ban=2")
    assert await comeback(relay, "a") == 403
    await trio.sleep(2.1)
    assert await comeback(relay, "a") == 101
    # ?ban=0: removed, and free to come back at once.
    member = await RawClient.open(relay.port, target("a"))
    await remove(relay, member, "a", "?ban=0")
    assert await comeback(relay, "a") == 101
    # Only that id, only that group.
    member = await RawClient.open(relay.port, target("a"))
    await remove(relay, member, "a")
    assert await comeback(relay, "b") == 101
    other = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
    assert (await other.handshake(target("a", group="h")))[0] == 101
    await other.aclose()


@pytest.mark.wsproxy_relay(api_key=KEY, ban_seconds=0)
async def test_the_default_ban_is_the_relays_setting(relay: Relay) -> None:
    member = await RawClient.open(relay.port, target("a"))
    await remove(relay, member, "a")
    assert await comeback(relay, "a") == 101


@with_api
async def test_the_api_lifts_a_ban(relay: Relay) -> None:
    member = await RawClient.open(relay.port, target("a"))
    await remove(relay, member, "a")
    assert await comeback(relay, "a") == 403
    assert (await call(relay.port, "DELETE", "/api/groups/g/bans/a")).status == 204
    assert await comeback(relay, "a") == 101
    answer = await call(relay.port, "DELETE", "/api/groups/g/bans/a")
    assert answer.status == 404
    assert "no ban" in answer.json["error"]


@with_api
async def test_a_removal_of_nobody_bans_nobody(relay: Relay) -> None:
    answer = await call(relay.port, "DELETE", "/api/groups/g/members/a?ban=600")
    assert answer.status == 404
    assert await comeback(relay, "a") == 101


@with_api
@pytest.mark.parametrize("query", ["?ban=x", "?ban=-1", "?ban=1.5", "?ban=31536001",
                                   "?ban=1&ban=2", "?bam=1", "?ban="])  # fmt: skip
async def test_a_bad_ban_is_400_and_removes_nobody(relay: Relay, query: str) -> None:
    member = await RawClient.open(relay.port, target("a"))
    with trio.fail_after(10):
        await relay.wait_members(1, "g")
    answer = await call(relay.port, "DELETE", f"/api/groups/g/members/a{query}")
    assert answer.status == 400, query
    assert relay.group_size("g") == 1
    await member.aclose()


@pytest.mark.wsproxy_relay(api_key=KEY, token_secret=SECRET)
async def test_a_token_issued_after_the_removal_lets_the_member_back(relay: Relay) -> None:
    old = mint_token(SECRET, "a", ["g"], ttl=600)
    member = await RawClient.open(relay.port, target("a", token=old))
    await remove(relay, member, "a")
    assert await comeback(relay, "a", old) == 403
    # iat is in whole seconds: a token of the next second is issued after the ban.
    fresh = mint_token(SECRET, "a", ["g"], ttl=600, now=time.time() + 1)
    assert await comeback(relay, "a", fresh) == 101
    # ... which lifted the ban: the old token works again too.
    assert await comeback(relay, "a", old) == 101


# -- the rules, without a network ---------------------------------------------------------------


def test_a_storm_is_replacements_at_once_in_a_row_and_ends_by_itself() -> None:
    storms = EvictionStorms()
    now = 100.0
    joined = now
    for _ in range(STORM_REPLACEMENTS):
        now += 0.01
        assert storms.comeback("g", "x", joined, now) is None
        joined = now
    storm = storms.comeback("g", "x", joined, now + 0.01)
    assert storm is not None
    assert (storm.replacements, storm.refused) == (STORM_REPLACEMENTS, 1)
    assert storms.comeback("g", "x", joined, now + 0.02) is storm
    assert storm.refused == 2
    # Another id, another group: not in it.
    assert storms.comeback("g", "y", joined, now + 0.01) is None
    assert storms.comeback("h", "x", joined, now + 0.01) is None
    # The connection in the group has lived: the comeback replaces it, the storm is over.
    assert storms.comeback("g", "x", joined, joined + STORM_LIFETIME) is None
    assert (
        storms.comeback("g", "x", joined + STORM_LIFETIME, joined + STORM_LIFETIME + 0.01) is None
    )
    storms.expire(joined + 10 * STORM_LIFETIME)
    assert len(storms) == 0


def test_replacing_a_connection_that_lived_breaks_the_run() -> None:
    storms = EvictionStorms()
    for round_ in range(3):
        start = 1000.0 * (round_ + 1)
        for i in range(STORM_REPLACEMENTS - 1):
            assert storms.comeback("g", "x", start + i * 0.01, start + (i + 1) * 0.01) is None
        # A join that replaces nobody (the member had left) does not count either way.
        assert storms.comeback("g", "x", None, start + 1) is None
        assert storms.comeback("g", "x", start - 10, start + 1) is None  # (lived 10 s)


def test_a_ban_ends_is_lifted_or_restored() -> None:
    bans = Bans()
    assert bans.ban("g", "a", 60, now=10.0, wall=1e9) is None
    ban = bans.current("g", "a", 11.0)
    assert ban is not None
    assert (ban.until, ban.since) == (70.0, 1e9)
    assert bans.current("g", "b", 11.0) is None
    assert bans.current("h", "a", 11.0) is None
    assert bans.current("g", "a", 70.0) is None  # ended
    bans.ban("g", "a", 60, now=10.0, wall=1e9)
    before = bans.ban("g", "a", 0, now=20.0, wall=1e9 + 10)  # ?ban=0 ends it
    assert bans.current("g", "a", 21.0) is None
    bans.restore("g", "a", before)
    assert bans.current("g", "a", 21.0) is before
    assert bans.lift("g", "a", 21.0)
    assert not bans.lift("g", "a", 21.0)
    bans.ban("g", "a", 1, now=0.0, wall=0.0)
    bans.expire(5.0)
    assert len(bans) == 0


@pytest.mark.parametrize(
    ("path", "endpoint", "same"),
    [("/ws", "/ws", True), ("/WS", "/ws", True), ("/ws/", "/ws", True), ("/ws", "/ws/", True),
     ("/Chat/Ws/", "/chat/ws", True), ("/ws//", "/ws", False), ("/wss", "/ws", False),
     ("/", "/", True), ("/x/", "/", False), ("", "/ws", False)],
)  # fmt: skip
def test_the_endpoint_matches_as_aspnet_routing_does(path: str, endpoint: str, same: bool) -> None:
    assert same_endpoint(path, endpoint) is same


def test_a_token_is_issued_after_a_moment_by_its_iat() -> None:
    token = mint_token(SECRET, "a", ["g"], ttl=60, now=1_000_000_000)
    assert issued_after(token, SECRET, 999_999_999.5)
    assert not issued_after(token, SECRET, 1_000_000_000)
    assert not issued_after(token, "another-secret-of-at-least-thirty-two-b", 0)
