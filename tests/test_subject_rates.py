"""A subject's message rate over all its connections and nodes
(``--max-subject-message-rate``, issue 31): one allowance per subject, on one node and,
through Redis, across nodes; other subjects unaffected; the member paced (in order,
nothing lost, pings answered), never dropped. Real sockets; real Redis for the cluster.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import pytest
import trio
import trio_websocket as tw

from loglines import LogLines
from redisserver import RedisServer, redis_call
from test_security import http_get
from trio_wsproxy import RelayConfig, open_relay
from trio_wsproxy.backplane import lifecycle
from trio_wsproxy.relay import subjects
from trio_wsproxy.relay.groups import RegistryUnavailable
from trio_wsproxy.relay.subjects import LEASE_SHARE, SubjectRates
from wsraw import OP_PING, OP_PONG, OP_TEXT, RawClient

RATE = 40
EACH = 40  # messages per connection: three connections send 3 × RATE, bursts of RATE


async def flood_and_collect(
    senders: Sequence[tuple[tw.WebSocketConnection, str]],
    sinks: Sequence[tw.WebSocketConnection],
) -> float:
    """Each sender sends EACH numbered messages at once; each sink receives its
    sender's (same index). Returns how long until the last arrived, and checks that
    every message came, in order."""
    start = trio.current_time()

    async def send(ws: tw.WebSocketConnection, name: str) -> None:
        for n in range(EACH):
            await ws.send_message(f"{name} {n}")

    async def collect(ws: tw.WebSocketConnection, name: str) -> None:
        got = [await ws.get_message() for _ in range(EACH)]
        assert got == [f"{name} {n}" for n in range(EACH)]  # in order, nothing lost

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for (ws, name), sink in zip(senders, sinks, strict=True):
                nursery.start_soon(send, ws, name)
                nursery.start_soon(collect, sink, name)
    return trio.current_time() - start


@contextlib.asynccontextmanager
async def connections(
    urls: Sequence[str],
) -> AsyncIterator[list[tw.WebSocketConnection]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(tw.open_websocket_url(url)) for url in urls]


@pytest.mark.alone
async def test_a_subject_is_held_to_its_rate_across_three_connections_on_one_node() -> None:
    config = RelayConfig(port=0, max_subject_message_rate=RATE)
    async with open_relay(config) as relay:
        url = relay.url
        rooms = ("r1", "r2", "r3")
        async with (
            connections([f"{url}?id=alice&groupName={r}" for r in rooms]) as alices,
            connections([f"{url}?id=sink&groupName={r}" for r in rooms]) as sinks,
        ):
            with trio.fail_after(5):
                for room in rooms:
                    await relay.wait_members(2, room)
            elapsed = await flood_and_collect(
                [(ws, f"alice@{r}") for ws, r in zip(alices, rooms, strict=True)], sinks
            )
        # 120 messages, a burst of 40 at once, the other 80 at 40/s: two seconds at
        # least (10 ms of timer slack), and not much more.
        assert 1.99 <= elapsed < 4.0, elapsed
        assert relay.counters.limited_messages["subject"] > 0
        assert relay.counters.limited_messages["member"] == 0
        _, _, body = await http_get(relay.port, "/metrics")
        limited = relay.counters.limited_messages["subject"]
        assert f'trio_wsproxy_limited_messages_total{{limit="subject"}} {limited}.0' in (
            body.decode()
        )
    # (The relay has stopped: every session ended.) The subject's allowance went with
    # its last session.
    assert relay.subject_rates is not None and len(relay.subject_rates) == 0


@pytest.mark.alone
async def test_another_subject_is_not_held_up_by_a_paced_one() -> None:
    config = RelayConfig(port=0, max_subject_message_rate=RATE)
    async with open_relay(config) as relay:
        url = relay.url
        async with connections(
            [f"{url}?id=alice&groupName=r1", f"{url}?id=bob&groupName=r2"]
            + [f"{url}?id=sink&groupName={r}" for r in ("r1", "r2")]
        ) as (alice, bob, sink1, sink2):
            with trio.fail_after(5):
                await relay.wait_members(2, "r1")
                await relay.wait_members(2, "r2")
            for n in range(3 * RATE):  # alice: two seconds' worth beyond her burst
                await alice.send_message(f"alice {n}")
            with trio.fail_after(5):
                while not relay.counters.limited_messages["subject"]:
                    await sink1.get_message()  # (alice's burst)
            # Alice is being paced; bob's burst goes through at once.
            started = trio.current_time()
            for n in range(RATE):
                await bob.send_message(f"bob {n}")
            with trio.fail_after(5):
                assert [await sink2.get_message() for _ in range(RATE)] == [
                    f"bob {n}" for n in range(RATE)
                ]
            assert trio.current_time() - started < 0.5


async def test_a_paced_member_has_its_pings_answered_and_loses_nothing() -> None:
    config = RelayConfig(port=0, max_subject_message_rate=10)
    async with open_relay(config) as relay:
        client = await RawClient.open(relay.port, "/ws?id=carol&groupName=r")
        sink = await RawClient.open(relay.port, "/ws?id=sink&groupName=r")
        with trio.fail_after(5):
            await relay.wait_members(2, "r")
            for n in range(30):  # a burst of 10, then two seconds at 10/s
                await client.send_frame(OP_TEXT, f"carol {n}".encode())
            # Paced: its ping, sent after its messages, is read ahead and answered
            # before most of them went out.
            await client.send_frame(OP_PING, b"are you there")
            assert await client.recv_frame() == (True, OP_PONG, b"are you there")
            assert relay.counters.messages < 30
        with trio.fail_after(10):
            got = [await sink.recv_message() for _ in range(30)]
        assert got == [(OP_TEXT, f"carol {n}".encode()) for n in range(30)]
        await client.aclose()
        await sink.aclose()


@pytest.mark.alone
async def test_a_subject_is_held_to_its_rate_across_three_connections_on_two_nodes(
    redis_url: str, prefix: str
) -> None:
    from test_backplane import cluster

    async with cluster(redis_url, prefix, max_subject_message_rate=RATE) as (a, b):
        rooms = ("r1", "r2", "r3")
        nodes = (a, a, b)  # two connections on one node, one on the other
        async with (
            connections(
                [f"{n.url}?id=alice&groupName={r}" for n, r in zip(nodes, rooms, strict=True)]
            ) as alices,
            connections(
                [f"{n.url}?id=sink&groupName={r}" for n, r in zip(nodes, rooms, strict=True)]
            ) as sinks,
            connections([f"{b.url}?id=bob&groupName=r4", f"{a.url}?id=sink&groupName=r4"]) as (
                bob,
                bob_sink,
            ),
        ):
            with trio.fail_after(10):
                for room, node in zip(rooms, nodes, strict=True):
                    await node.wait_members(2, room)
                await a.wait_members(1, "r4")
                await b.wait_members(1, "r4")
            async with trio.open_nursery() as nursery:

                async def bob_meanwhile() -> None:
                    for n in range(RATE):  # bob: his burst, through at once
                        await bob.send_message(f"bob {n}")
                    with trio.fail_after(5):
                        got = [await bob_sink.get_message() for _ in range(RATE)]
                    assert got == [f"bob {n}" for n in range(RATE)]

                nursery.start_soon(bob_meanwhile)
                elapsed = await flood_and_collect(
                    [(ws, f"alice@{r}") for ws, r in zip(alices, rooms, strict=True)], sinks
                )
        # The tolerance: each node may have spent one lease (LEASE_SHARE of the rate,
        # taken from Redis's bucket before the window) beyond burst + rate × time. So
        # 120 messages take at least (120 − 40 − 2 × 4) / 40 = 1.8 s.
        lease = max(1, int(RATE * LEASE_SHARE))
        assert elapsed >= (3 * EACH - RATE - 2 * lease) / RATE - 0.01, elapsed
        assert elapsed < 4.5, elapsed
        assert a.counters.limited_messages["subject"] + b.counters.limited_messages["subject"]
    # The subject's bucket in Redis expires on its own (once it would be full again).
    key = f"{prefix}:v3:rate:alice"
    ttl = await redis_call(redis_url, "PTTL", key)
    assert isinstance(ttl, int) and 0 < ttl <= 2000, ttl


async def test_without_redis_a_node_holds_the_limit_itself_and_says_so_once(
    relay_log: LogLines,
) -> None:
    asked = 0

    async def refused(subject: str, rate: float, want: int) -> tuple[int, float]:
        nonlocal asked
        asked += 1
        raise RegistryUnavailable("backplane unavailable: cannot reach Redis")

    rates = SubjectRates(10, refused)
    alice = rates.enter("alice")
    start = trio.current_time()
    forwarded = 0
    with trio.fail_after(5):
        while forwarded < 20:
            if not alice.take():
                await alice.wait()
            forwarded += 1
    # The node's own bucket: a burst of 10 then 10/s.
    assert trio.current_time() - start >= 0.99
    assert asked >= 1
    assert relay_log.count("until Redis is back") == 1
    rates.leave(alice)
    assert len(rates) == 0


async def test_while_redis_is_away_each_node_holds_the_limit_and_says_so_once(
    private_redis: RedisServer,
    prefix: str,
    relay_log: LogLines,
    backplane_log: LogLines,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from test_backplane import backplane, cluster

    # Redis is away for two seconds: the backplane's reconnections need not have backed
    # off to seconds apart by then, nor the node's leases wait a second to be tried again
    # once it is back (when each comes is not what this is about; that each does is).
    monkeypatch.setattr(lifecycle, "BACKOFF_MAX", 0.2)
    monkeypatch.setattr(subjects, "RETRY_INTERVAL", 0.2)

    rate = 20
    async with cluster(private_redis.url, prefix, count=1, max_subject_message_rate=rate) as (a,):
        url = a.url
        async with connections([f"{url}?id=alice&groupName=r", f"{url}?id=sink&groupName=r"]) as (
            alice,
            sink,
        ):
            with trio.fail_after(10):
                await a.wait_members(2, "r")
            private_redis.stop()

            count = rate + rate // 2

            async def burst_and_wait(label: str) -> float:
                """A second and a half's worth of alice's messages (half a second's more
                than a full bucket holds): how long until all came."""
                start = trio.current_time()
                for n in range(count):
                    await alice.send_message(f"{label} {n}")
                with trio.fail_after(10):
                    got = [await sink.get_message() for _ in range(count)]
                assert got == [f"{label} {n}" for n in range(count)]
                return trio.current_time() - start

            # The node's own bucket: a burst of 20, then 20/s (the group lives on this
            # node alone, so it goes on through the outage).
            assert await burst_and_wait("away") >= 0.49
            assert await burst_and_wait("still away") >= 0.49
            assert relay_log.count("until Redis is back") == 1
            # Redis comes back: the next lease goes there again, and the node says so.
            private_redis.start()
            await backplane_log.wait_for("backplane reconnected")
            assert backplane(a).up
            # (Its own bucket refilled meanwhile, and so is a new Redis's: this round
            # goes at once, and the first lease from Redis succeeds.)
            await burst_and_wait("back")
            await relay_log.wait_for("hold across nodes again")
            # Paced by the bucket in Redis from now on.
            assert await burst_and_wait("in Redis") >= 0.49
            assert await redis_call(private_redis.url, "EXISTS", f"{prefix}:v3:rate:alice") == 1


async def test_a_rate_below_one_a_second_still_lets_one_message_through() -> None:
    rates = SubjectRates(0.5)  # one message every two seconds
    slow = rates.enter("slow")
    assert slow.take()
    assert not slow.take()
