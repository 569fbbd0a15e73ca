"""Revoking tokens (``POST /api/revocations``, issue 31): by subject or token id, every
connection of it is closed with 4007 at once, on every node; its handshakes and joins
are refused while the revocation lasts; a subject's tokens issued after it connect.
Over real sockets, and against a real Redis for the cluster."""

from __future__ import annotations

import time

import jwt
import pytest
import trio

from httpapi import KEY, call
from test_v1 import V1_OFFER, next_event
from test_v1_groups import join
from trio_wsproxy import CloseCode, Relay
from trio_wsproxy.protocol import v1
from wsraw import OP_TEXT, RawClient

SECRET = "a-token-secret-of-at-least-32-bytes!"
with_tokens = pytest.mark.wsproxy_relay(token_secret=SECRET, api_key=KEY)


def token(sub: str, *, jti: str | None = None, issued: float | None = None) -> str:
    now = time.time() if issued is None else issued
    claims = {"sub": sub, "groups": ["lobby", "room-*"], "iat": int(now), "exp": int(now) + 60}
    if jti is not None:
        claims["jti"] = jti
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def connect(port: int, member: str, signed: str, v1_offer: bool = False) -> RawClient:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    status, _, body = await client.handshake(
        f"/ws?id={member}&groupName=lobby&access_token={signed}", V1_OFFER if v1_offer else ""
    )
    assert status == 101, body
    return client


async def refused(port: int, member: str, signed: str) -> tuple[int, bytes]:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    status, _, body = await client.handshake(
        f"/ws?id={member}&groupName=lobby&access_token={signed}"
    )
    await client.aclose()
    return status, body.strip()


async def revoke(port: int, body: bytes) -> dict[str, object]:
    answer = await call(
        port, "POST", "/api/revocations", body, {"Content-Type": "application/json"}
    )
    assert answer.status == 200, answer
    result: dict[str, object] = answer.json
    return result


@with_tokens
async def test_revoking_a_subject_closes_its_connections_and_refuses_its_older_tokens(
    relay: Relay,
) -> None:
    old = token("alice", issued=time.time() - 5)
    with trio.fail_after(10):
        phone = await connect(relay.port, "alice", old, v1_offer=True)
        assert isinstance(await next_event(phone), v1.Welcome)
        laptop = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
        status, _, _ = await laptop.handshake(f"/ws?id=alice&groupName=room-1&access_token={old}")
        assert status == 101
        bob = await connect(relay.port, "bob", token("bob"))
        await relay.wait_members(2, "lobby")
        answer = await revoke(relay.port, b'{"sub": "alice", "seconds": 600}')
        assert (answer["sub"], answer["closed_here"]) == ("alice", 2)
        for client in (phone, laptop):
            assert await client.expect_close() == (CloseCode.REVOKED, "access token revoked")
        # Her tokens issued before the revocation are refused; bob is untouched.
        assert await refused(relay.port, "alice", old) == (401, b"access token revoked")
        assert relay.group_size("lobby") == 1
        # A token issued after it (she signed in again) connects.
        fresh = token("alice", issued=time.time() + 1)
        again = await connect(relay.port, "alice", fresh)
        metrics = (await call(relay.port, "GET", "/metrics", auth=False)).body
        assert b'trio_wsproxy_revocations_total{kind="sub"} 1.0' in metrics
        assert b'trio_wsproxy_closes_total{code="4007"} 2.0' in metrics
        assert b'reason="token_revoked",status="401"} 1.0' in metrics
    for client in (phone, laptop, bob, again):
        await client.aclose()


@with_tokens
async def test_revoking_a_token_id_closes_that_token_only_and_refuses_its_joins(
    relay: Relay,
) -> None:
    with trio.fail_after(10):
        stolen = token("carol", jti="t-1")
        kept = token("carol", jti="t-2")
        thief = await connect(relay.port, "carol", stolen, v1_offer=True)
        assert isinstance(await next_event(thief), v1.Welcome)
        owner = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
        status, _, _ = await owner.handshake(
            f"/ws?id=carol&groupName=room-1&access_token={kept}", V1_OFFER
        )
        assert status == 101 and isinstance(await next_event(owner), v1.Welcome)
        answer = await revoke(relay.port, b'{"jti": "t-1"}')
        assert answer["closed_here"] == 1
        assert (await thief.expect_close())[0] == CloseCode.REVOKED
        assert await refused(relay.port, "carol", stolen) == (401, b"access token revoked")
        # The other token of the same subject goes on, and joins as ever.
        assert isinstance(await join(owner, "room-2"), v1.Welcome)
    for client in (thief, owner):
        await client.aclose()


@with_tokens
async def test_a_bad_revocation_is_a_400_and_revokes_nothing(relay: Relay) -> None:
    with trio.fail_after(10):
        for body in (
            b"not json",
            b"[]",
            b"{}",
            b'{"sub": "a", "jti": "b"}',
            b'{"sub": ""}',
            b'{"sub": "a", "seconds": 0}',
            b'{"sub": "a", "seconds": true}',
            b'{"sub": "a", "why": "x"}',
        ):
            answer = await call(relay.port, "POST", "/api/revocations", body)
            assert answer.status == 400, (body, answer)
        assert len(relay.revocations) == 0


@pytest.mark.wsproxy_relay(api_key=KEY)
async def test_a_relay_without_tokens_has_nothing_to_revoke(relay: Relay) -> None:
    answer = await call(relay.port, "POST", "/api/revocations", b'{"sub": "a"}')
    assert answer.status == 409


@pytest.mark.alone
async def test_a_revocation_closes_its_connections_on_every_node(
    redis_url: str, prefix: str
) -> None:
    from test_backplane import cluster

    async with cluster(redis_url, prefix, token_secret=SECRET, api_key=KEY) as (a, b):
        signed = token("dave", issued=time.time() - 5)
        with trio.fail_after(30):
            on_a = await connect(a.port, "dave", signed)
            on_b = RawClient(await trio.open_tcp_stream("127.0.0.1", b.port))
            status, _, _ = await on_b.handshake(
                f"/ws?id=dave&groupName=room-9&access_token={signed}"
            )
            assert status == 101  # (each node registered itself before it listened)
            started = trio.current_time()
            await revoke(a.port, b'{"sub": "dave"}')
            for client in (on_a, on_b):
                assert (await client.expect_close())[0] == CloseCode.REVOKED
            took = trio.current_time() - started
            assert took < 2.0, took  # (measured: a few ms; see docs/production.md)
            # Both nodes refuse the revoked tokens from now on...
            for node in (a, b):
                assert await refused(node.port, "dave", signed) == (401, b"access token revoked")
        for client in (on_a, on_b):
            await client.aclose()
    # ...and a node that starts later learns it from Redis.
    async with cluster(redis_url, prefix, count=1, token_secret=SECRET, api_key=KEY) as (c,):
        with trio.fail_after(30):
            assert await refused(c.port, "dave", signed) == (401, b"access token revoked")


def short_token(sub: str, seconds: float, **claims: object) -> str:
    now = time.time()
    body = {"sub": sub, "groups": ["lobby"], "iat": int(now), "exp": int(now + seconds)}
    body.update(claims)
    return jwt.encode(body, SECRET, algorithm="HS256")


@with_tokens
async def test_a_v1_member_told_its_token_expires_refreshes_it_in_place(relay: Relay) -> None:
    """Less life left than the margin: told at once; a new token for the same member
    is taken without a reconnect, and the member outlives its first token."""
    first = short_token("erin", 2)
    with trio.fail_after(15):
        erin = await connect(relay.port, "erin", first, v1_offer=True)
        assert isinstance(await next_event(erin), v1.Welcome)
        expiring = await next_event(erin)
        assert isinstance(expiring, v1.TokenExpiring)
        assert expiring.exp == jwt.decode(first, options={"verify_signature": False})["exp"]
        # A token that is not valid is refused; the old one goes on meanwhile.
        await erin.send_frame(OP_TEXT, v1.refresh_header("not-a-token"))
        error = await next_event(erin)
        assert isinstance(error, v1.Error) and error.error == v1.TOKEN_INVALID
        second = short_token("erin", 120)
        await erin.send_frame(OP_TEXT, v1.refresh_header(second))
        refreshed = await next_event(erin)
        assert refreshed == v1.TokenRefreshed(
            jwt.decode(second, options={"verify_signature": False})["exp"]
        )
        # Past the first token's expiry (and its leeway), erin is still connected.
        await past_expiry(first)
        frank = await connect(relay.port, "frank", token("frank"), v1_offer=True)
        await frank.send_frame(OP_TEXT, b"\nstill there?")
        assert await next_message_payload(erin) == b"still there?"
        # A token for another member closes the connection.
        await erin.send_frame(OP_TEXT, v1.refresh_header(short_token("mallory", 60)))
        code, reason = await erin.expect_close()
        assert (code, reason) == (
            CloseCode.POLICY_VIOLATION,
            "a new access token must be for the same member",
        )
    # Counted (/metrics: trio_wsproxy_token_refreshes_total{outcome}).
    assert relay.counters.token_refreshes == {"ok": 1, "invalid": 1, "other_member": 1}
    for client in (erin, frank):
        await client.aclose()


@with_tokens
async def test_a_member_whose_token_expires_unrefreshed_is_closed_4006(relay: Relay) -> None:
    with trio.fail_after(10):
        plain = await connect(relay.port, "gail", short_token("gail", 1))
        started = time.time()
        code, reason = await plain.expect_close()
        assert (code, reason) == (
            CloseCode.TOKEN_EXPIRED,
            "access token expired: get a new one, then reconnect",
        )
        assert time.time() - started < 3  # (its token lived a second at most, +1 s leeway)
    assert relay.counters.token_expiries == 1  # (/metrics: trio_wsproxy_token_expiries_total)
    await plain.aclose()


async def past_expiry(token: str) -> None:
    """Sleep until half a second past ``token``'s expiry and the relay's leeway (1 s)
    after it: when the relay would have closed its member had it kept that token."""
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    await trio.sleep(max(0.0, exp + 1.5 - time.time()))


async def next_message_payload(client: RawClient) -> bytes:
    from test_v1 import next_message

    return (await next_message(client))[2]


@with_tokens
async def test_the_python_client_renews_its_token_in_place_and_after_4006(
    relay: Relay,
) -> None:
    """A function given as access_token: called before each connection, and when the
    relay says the token expires soon (the new one goes in place, no reconnect); a plain
    client (no events) is closed with 4006 and reconnects with a fresh one."""
    from trio_wsproxy import ClientConfig, open_client

    issued: list[str] = []

    async def fresh(seconds: float) -> str:
        issued.append(short_token("hal", seconds))
        return issued[-1]

    lives = iter([2, 120])
    with trio.fail_after(15):
        async with open_client(
            relay.url, group="lobby", id="hal", access_token=lambda: fresh(next(lives))
        ) as hal:
            assert hal.protocol == v1.SUBPROTOCOL
            await past_expiry(issued[0])
            assert hal.connected and hal.stats.connects == 1
            assert len(issued) == 2  # (the second in place, without a reconnect)
        plain_lives = iter([1, 120])
        config = ClientConfig(offer_v1=False, reconnect_min_delay=0.01, reconnect_max_delay=0.05)
        disconnects: list[int | None] = []
        reconnected = trio.Event()

        def on_disconnect(event: object) -> None:
            disconnects.append(getattr(event, "code", None))

        def on_connect(client: object) -> None:
            if len(disconnects) == 1:
                reconnected.set()

        async with open_client(
            relay.url,
            group="lobby",
            id="ivy",
            config=config,
            access_token=lambda: short_token("ivy", next(plain_lives)),
            on_disconnect=on_disconnect,
            on_connect=on_connect,
        ):
            await reconnected.wait()
        assert disconnects == [CloseCode.TOKEN_EXPIRED]
