"""Redis Sentinel (``--backplane redis+sentinel://...``) against real Redis servers and
sentinels started by the test: discovery (a sentinel that is down skipped, the master's
role checked), a failover under traffic with every message accounted for (delivered, or
its member closed and told on reconnect that recovery is impossible: never a gap), a
stale master that comes back as a replica and is not followed, the sentinels all down,
and the URL's errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from loglines import LogLines
from sentinelset import FAILOVER_TIMEOUT_MS, SERVICE, Sentinel, SentinelSet, sentinel_set
from test_backplane import backplane, caught_up, cluster, join
from test_v1 import V1_OFFER, next_event, next_message, v1_member
from trio_wsproxy import CloseCode, Relay, RelayConfig
from trio_wsproxy._cli import build_parser, config_from_args
from trio_wsproxy.backplane.connection import RedisConnection
from trio_wsproxy.backplane.sentinel import NoMaster, SentinelWatch, verify_master
from trio_wsproxy.protocol import v1
from trio_wsproxy.protocol.resp import RedisAddress
from trio_wsproxy.protocol.sentinel_url import SentinelAddress
from wsraw import OP_CLOSE, OP_TEXT, RawClient

HISTORY: dict[str, Any] = {"history_size": 10_000, "node_ttl": 2.0}


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    servers = sentinel_set(tmp_path)
    try:
        yield servers
    finally:
        servers.stop()


# -- the URL ------------------------------------------------------------------------------


def test_the_url_names_sentinels_a_service_and_the_masters_credentials() -> None:
    address = SentinelAddress.from_url("redis+sentinel://u:p%40ss@s1:1,s2,[::1]:3/main/2")
    assert address.sentinels == (("s1", 1), ("s2", 26379), ("::1", 3))
    assert (address.service, address.db, address.username, address.password) == (
        "main", 2, "u", "p@ss",
    )  # fmt: skip
    master = address.master("10.0.0.1", 6380)
    assert (master.host, master.port, master.db, master.password) == ("10.0.0.1", 6380, 2, "p@ss")
    assert "p@ss" not in repr(address)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://s1:26379", "names no service"),
        ("redis+sentinel://s1:26379/", "names no service"),
        ("redis+sentinel://s1:26379/main/x", "/SERVICE or /SERVICE/DB"),
        ("redis+sentinel://s1:26379/main/1/2", "/SERVICE or /SERVICE/DB"),
        ("redis+sentinel://s1:0/main", "bad sentinel port"),
        ("redis+sentinel://s1:http/main", "bad sentinel port"),
        ("redis+sentinel://s1,,s2/main", "empty sentinel address"),
        ("redis+sentinel://:26379/main", "without a host"),
        ("redis+sentinel://s1/main?x=1", "no query"),
    ],
)
def test_a_bad_sentinel_url_is_refused_saying_why(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        SentinelAddress.from_url(url)
    with pytest.raises(ValueError, match=says):
        RelayConfig(backplane=url)


# -- discovery ------------------------------------------------------------------------------


async def test_the_master_is_found_through_the_sentinels_skipping_one_that_is_down(
    sentinels: SentinelSet, prefix: str
) -> None:
    url = sentinels.url(dead_first=True)
    async with cluster(url, prefix, **HISTORY) as (a, b):
        with trio.fail_after(20):
            master = sentinels.redis[0].port
            assert backplane(a).up and backplane(a).address.port == master
            alice, _ = await v1_member(a, "alice")
            bob, _ = await v1_member(b, "bob")
            await caught_up([a.port, b.port])
            await alice.send_frame(OP_TEXT, b"\nhello")
            _, header, payload = await next_message(bob)
            assert (header.sender, header.offset, payload) == ("alice", 1, b"hello")
        await alice.aclose()
        await bob.aclose()


# -- failovers ------------------------------------------------------------------------------


async def rejoin(port: int, ident: str, since: v1.Position | None) -> tuple[RawClient, v1.Welcome]:
    """Join as a v1 member (naming ``since``), as a client with a short backoff would:
    again while the relay answers 503 (its backplane is finding the new master)."""
    target = f"/ws?id={ident}&groupName=g" + (f"&since={since.token()}" if since else "")
    while True:
        client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
        status, _, body = await client.handshake(target, V1_OFFER)
        if status == 101:
            welcome = await next_event(client)
            assert isinstance(welcome, v1.Welcome)
            return client, welcome
        assert status == 503 and b"backplane" in body, (status, body)
        await client.aclose()
        await trio.sleep(0.02)


class Receiver:
    """A v1 member that records every message it gets (its payload and offset) and how
    each connection ended, and joins again naming its position when closed."""

    def __init__(self, ident: str) -> None:
        self.ident = ident
        self.got: list[bytes] = []
        self.position: v1.Position | None = None
        self.closes: list[int] = []
        self.recoveries: list[v1.Recovery | None] = []
        self.arrived = trio.Event()

    def welcomed(self, welcome: v1.Welcome) -> None:
        self.recoveries.append(welcome.recovery)
        self.position = welcome.position

    async def read(self, client: RawClient) -> None:
        """Until the relay closes the connection."""
        while True:
            opcode, data = await client.recv_message()
            if opcode == OP_CLOSE:
                self.closes.append(int.from_bytes(data[:2], "big"))
                await client.aclose()
                self.arrived.set()
                self.arrived = trio.Event()
                return
            what, start = v1.decode_relay_message(data)
            if isinstance(what, v1.From):
                assert self.position is not None and what.offset is not None
                self.position = v1.Position(self.position.epoch, what.offset)
                self.got.append(data[start:])
                self.arrived.set()
                self.arrived = trio.Event()

    async def wait_closed(self, times: int) -> None:
        while len(self.closes) < times:
            await self.arrived.wait()

    async def wait_for(self, payload: bytes) -> None:
        while payload not in self.got:
            await self.arrived.wait()


async def send_until_closed(client: RawClient, sent: list[bytes], prefix: str) -> None:
    """Send numbered messages (one every few ms) until the relay closes ``client``."""
    async with trio.open_nursery() as nursery:

        async def closed() -> None:
            await client.expect_close()
            nursery.cancel_scope.cancel()

        nursery.start_soon(closed)
        for n in range(100_000):
            payload = f"{prefix}{n}".encode()
            try:
                await client.send_frame(OP_TEXT, b"\n" + payload)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
            sent.append(payload)
            await trio.sleep(0.005)
    await client.aclose()


def check_no_silent_gap(receiver: Receiver, sent: list[bytes]) -> None:
    """What ``receiver`` got is what was sent, in order, without a hole — except where it
    was closed and told on reconnect that it could not recover (a signalled gap)."""
    assert receiver.got, receiver.ident
    told = [r for r in receiver.recoveries if r is not None and not r.recovered]
    assert len(told) + sum(1 for r in receiver.recoveries if r and r.recovered) == len(
        receiver.closes
    ), (receiver.recoveries, receiver.closes)
    # Before the failover: a prefix of what was sent.
    before = [p for p in receiver.got if not p.startswith(b"after")]
    assert before == sent[: len(before)], receiver.ident
    # After it: what was sent after, once.
    assert receiver.got[len(before) :] == [b"after"], receiver.ident


async def test_a_master_killed_under_traffic_fails_over_and_nothing_is_lost_unsaid(
    sentinels: SentinelSet, prefix: str, backplane_log: LogLines
) -> None:
    await sentinels.ready()
    old = sentinels.redis[0].port
    async with cluster(sentinels.url(), prefix, **HISTORY) as (a, b):
        receivers = {"near": (Receiver("near"), a), "far": (Receiver("far"), b)}
        sent: list[bytes] = []
        async with trio.open_nursery() as nursery:
            with trio.fail_after(30):
                for receiver, node in receivers.values():
                    client, welcome = await rejoin(node.port, receiver.ident, None)
                    receiver.welcomed(welcome)
                    nursery.start_soon(receiver.read, client)
                sender, _ = await rejoin(a.port, "sender", None)
                await caught_up([a.port, b.port])
                # A sentinel killed (the one each node watches) costs nothing: the
                # nodes watch another.
                await backplane_log.wait_for("sentinel: watching", count=2)
                sentinels.sentinels[0].stop()
                await backplane_log.wait_for("sentinel: watching", count=4)
                nursery.start_soon(send_until_closed, sender, sent, "m")
                for receiver, _ in receivers.values():
                    await receiver.wait_for(b"m20")
                killed = trio.current_time()
                sentinels.kill_master(old)
                new = await sentinels.wait_master_not(old)
                # Every member of the group was closed (4004): they may have missed
                # messages. Each joins again, on the other node, naming its position.
                for receiver, node in receivers.values():
                    await receiver.wait_closed(1)
                    assert receiver.closes == [CloseCode.BACKPLANE_UNAVAILABLE]
                    other = b if node is a else a
                    client, welcome = await rejoin(other.port, receiver.ident, receiver.position)
                    receiver.welcomed(welcome)
                    nursery.start_soon(receiver.read, client)
                sender, _ = await rejoin(a.port, "sender", None)
                await sender.send_frame(OP_TEXT, b"\nafter")
                for receiver, _ in receivers.values():
                    await receiver.wait_for(b"after")
                flowing = trio.current_time() - killed
            nursery.cancel_scope.cancel()
        assert backplane(a).address.port == new and backplane(b).address.port == new
        for receiver, _ in receivers.values():
            check_no_silent_gap(receiver, sent)
            # The new master is another lineage of the data: the history starts a new
            # epoch there, and a member that was there is told so.
            assert receiver.recoveries[-1] == v1.Recovery(False, 0, v1.EPOCH_CHANGED)
        print(f"messages flowing again {flowing:.2f}s after the master was killed")
        await sender.aclose()


async def test_a_master_paused_past_the_failover_comes_back_a_replica_and_is_not_followed(
    sentinels: SentinelSet, prefix: str, backplane_log: LogLines
) -> None:
    await sentinels.ready()
    old = sentinels.redis[0].port
    async with cluster(sentinels.url(), prefix, **HISTORY) as (a, b):
        with trio.fail_after(40):
            alice, _ = await v1_member(a, "alice")
            bob, _ = await v1_member(b, "bob")
            await caught_up([a.port, b.port])
            paused = trio.current_time()
            sentinels.pause(old)
            new = await sentinels.wait_master_not(old)
            # The nodes drop the silent master when the sentinels announce the new one
            # (+switch-master), not a node_ttl later, and its members are closed (4004).
            assert (await alice.expect_close())[0] == CloseCode.BACKPLANE_UNAVAILABLE
            assert (await bob.expect_close())[0] == CloseCode.BACKPLANE_UNAVAILABLE
            await backplane_log.wait_for("moved from", count=2)
            alice, _ = await rejoin(a.port, "alice", None)
            bob, _ = await rejoin(b.port, "bob", None)
            outages = backplane(a).outages, backplane(b).outages
            await trio.sleep_until(paused + FAILOVER_TIMEOUT_MS / 1000)
            # The old master wakes up still believing it is the master (for seconds,
            # until the sentinels make it a replica of the new one): the nodes ask the
            # sentinels, not it.
            sentinels.resume(old)
            await sentinels.role(old)
            await caught_up([a.port, b.port])
            await alice.send_frame(OP_TEXT, b"\nstill here")
            _, header, payload = await next_message(bob)
            assert (header.sender, payload) == ("alice", b"still here")
            # The nodes stayed on the new master all along.
            assert (backplane(a).outages, backplane(b).outages) == outages
            assert backplane(a).address.port == backplane(b).address.port == new
        await alice.aclose()
        await bob.aclose()


async def test_a_sentinel_that_says_nothing_and_one_that_knows_no_such_service_are_skipped(
    sentinels: SentinelSet, prefix: str, tmp_path: Path
) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    mute = listeners[0].socket.getsockname()[1]

    async def hold(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()  # (read nothing, answer nothing)

    stranger = Sentinel(sentinels.redis[0].binary, tmp_path, sentinels.redis[0].port)
    stranger.conf.write_text(f"port {stranger.port}\nbind 127.0.0.1\ndir {tmp_path}\n")
    stranger.start()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, hold, listeners)
            hosts = [f"127.0.0.1:{mute}", f"127.0.0.1:{stranger.port}"]
            hosts += [f"127.0.0.1:{s.port}" for s in sentinels.sentinels]
            watch = SentinelWatch(
                SentinelAddress.from_url(f"redis+sentinel://{','.join(hosts)}/{SERVICE}")
            )
            with trio.fail_after(10):
                master = await watch.locate()
            assert master.port == sentinels.redis[0].port
            nursery.cancel_scope.cancel()
    finally:
        stranger.stop()


async def test_a_sentinel_that_names_a_replica_is_not_followed_and_the_next_is_asked(
    sentinels: SentinelSet, prefix: str, backplane_log: LogLines
) -> None:
    replica = sentinels.redis[1].port
    answer = f"*2\r\n$9\r\n127.0.0.1\r\n${len(str(replica))}\r\n{replica}\r\n".encode()

    async def stale(stream: trio.SocketStream) -> None:
        """A sentinel that has not heard of the failover: it names the replica (and
        never confirms a subscription)."""
        async for data in stream:
            if b"get-master-addr-by-name" in data:
                await stream.send_all(answer)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    hosts = [f"127.0.0.1:{port}"] + [f"127.0.0.1:{s.port}" for s in sentinels.sentinels]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, stale, listeners)
        url = f"redis+sentinel://{','.join(hosts)}/{SERVICE}"
        async with cluster(url, prefix, count=1) as (a,):
            with trio.fail_after(10):
                await backplane_log.wait_for("backplane connected")
                assert backplane(a).address.port == sentinels.redis[0].port
                assert backplane_log.count("is a slave, not a master") == 1
        nursery.cancel_scope.cancel()


async def test_a_replica_is_not_taken_for_the_master(sentinels: SentinelSet) -> None:
    replica = sentinels.redis[1]
    address = RedisAddress("127.0.0.1", replica.port, 0)
    connection = await RedisConnection.connect(address, 5)
    async with trio.open_nursery() as nursery:
        await nursery.start(connection.run, address, 5)
        with pytest.raises(NoMaster, match="is a slave, not a master"):
            await verify_master(connection, address)
        await verify_master_of(sentinels.redis[0].port)
        nursery.cancel_scope.cancel()


async def verify_master_of(port: int) -> None:
    address = RedisAddress("127.0.0.1", port, 0)
    connection = await RedisConnection.connect(address, 5)
    async with trio.open_nursery() as nursery:
        await nursery.start(connection.run, address, 5)
        await verify_master(connection, address)
        nursery.cancel_scope.cancel()


async def test_with_every_sentinel_down_joins_are_refused_saying_why_until_one_is_back(
    sentinels: SentinelSet, prefix: str, backplane_log: LogLines
) -> None:
    for sentinel in sentinels.sentinels:
        sentinel.stop()
    async with cluster(sentinels.url(), prefix, **HISTORY) as (a, b):
        with trio.fail_after(30):
            late = RawClient(await trio.open_tcp_stream("127.0.0.1", a.port))
            status, _, body = await late.handshake("/ws?id=late&groupName=g")
            assert status == 503, (status, body)
            assert b"cannot reach the Redis master (Sentinel)" in body, body
            assert backplane(a).down_reason is not None
            assert "no sentinel says where the master is" in backplane(a).down_reason
            await late.aclose()
            sentinels.sentinels[1].start()
            await backplane_log.wait_for("backplane connected", count=2)
            alice = await join(a, "alice")
            bob = await join(b, "bob")
            await caught_up([a.port, b.port])
            # Once connected, a node needs no sentinel while its master stays up.
            sentinels.sentinels[1].stop()
            await alice.send_frame(OP_TEXT, b"hello")
            assert await bob.recv_message() == (OP_TEXT, b"hello")
            assert backplane(a).up and backplane(b).up


def test_the_sentinel_compose_file_runs_relays_that_ask_its_sentinels() -> None:
    yaml = pytest.importorskip("yaml")
    root = Path(__file__).resolve().parent.parent
    compose = yaml.safe_load((root / "compose.sentinel.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    relays = [s for s in services.values() if s.get("build") is not None]
    assert len(relays) == 2
    for relay in relays:
        config = config_from_args(build_parser().parse_args(relay["command"]), environ={})
        assert config.backplane is not None and config.history_size
        address = SentinelAddress.from_url(config.backplane)
        assert len(address.sentinels) == 3
        for host, port in address.sentinels:
            script = services[host]["command"][-1]
            assert f"port {port}" in script
            assert f"sentinel monitor {address.service} redis-1 6379 2" in script
            assert set(relay["depends_on"]) >= {host}


async def flowing_on_the_new_master(
    sentinels: SentinelSet, old: int, nodes: tuple[Relay, Relay], backplane_log: LogLines
) -> None:
    """Once the sentinels name a master other than ``old``, both nodes reconnect to it
    and a message between members on each flows again."""
    new = await sentinels.wait_master_not(old)
    await backplane_log.wait_for("backplane reconnected", count=2)
    a, b = nodes
    near, far = await join(a, "near"), await join(b, "far")
    await caught_up([a.port, b.port])
    await near.send_frame(OP_TEXT, b"after")
    assert await far.recv_message() == (OP_TEXT, b"after")
    assert backplane(a).address.port == backplane(b).address.port == new


async def test_without_history_a_failover_closes_only_the_members_of_groups_across_nodes(
    sentinels: SentinelSet, prefix: str, backplane_log: LogLines
) -> None:
    await sentinels.ready()
    old = sentinels.redis[0].port
    async with cluster(sentinels.url(), prefix, node_ttl=2.0) as (a, b):
        with trio.fail_after(30):
            near, far = await join(a, "near"), await join(b, "far")
            here1, here2 = await join(a, "here1", "local"), await join(a, "here2", "local")
            await caught_up([a.port, b.port])
            sentinels.kill_master(old)
            # Members of the group on both nodes may miss messages: closed (4004).
            assert (await near.expect_close())[0] == CloseCode.BACKPLANE_UNAVAILABLE
            assert (await far.expect_close())[0] == CloseCode.BACKPLANE_UNAVAILABLE
            # The group that lives on one node goes on through the failover.
            await here1.send_frame(OP_TEXT, b"through it")
            assert await here2.recv_message() == (OP_TEXT, b"through it")
            await flowing_on_the_new_master(sentinels, old, (a, b), backplane_log)


async def test_the_master_lost_while_every_sentinel_is_down_is_an_outage_until_they_fail_over(
    sentinels: SentinelSet, prefix: str, backplane_log: LogLines
) -> None:
    await sentinels.ready()
    old = sentinels.redis[0].port
    async with cluster(sentinels.url(), prefix, node_ttl=2.0) as (a, b):
        with trio.fail_after(30):
            near, far = await join(a, "near"), await join(b, "far")
            await caught_up([a.port, b.port])
            for sentinel in sentinels.sentinels:
                sentinel.stop()
            sentinels.kill_master(old)
            assert (await near.expect_close())[0] == CloseCode.BACKPLANE_UNAVAILABLE
            assert (await far.expect_close())[0] == CloseCode.BACKPLANE_UNAVAILABLE
            late = RawClient(await trio.open_tcp_stream("127.0.0.1", a.port))
            status, _, body = await late.handshake("/ws?id=late&groupName=g")
            assert status == 503 and b"(Sentinel)" in body, (status, body)
            await late.aclose()
            # The sentinels come back (they kept what they had learned), find the
            # master gone and promote a replica; the nodes follow.
            for sentinel in sentinels.sentinels:
                sentinel.start()
            await flowing_on_the_new_master(sentinels, old, (a, b), backplane_log)


async def test_a_connection_lost_as_its_task_is_cancelled_does_not_outlive_the_cancel() -> None:
    # The relay stopping while a sentinel (or Redis) goes away: a nursery's group holds
    # the Cancelled of one task and the ConnectionLost of another. Handled as a failure,
    # the group without its Cancelled escaped the cancelling scope and crashed the relay.
    from trio_wsproxy.backplane.connection import cancelled_first
    from trio_wsproxy.protocol.resp import ConnectionLost

    with trio.CancelScope() as scope:
        try:
            async with trio.open_nursery() as nursery:

                async def lose() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()
                    raise ConnectionLost("Redis closed the connection")

                nursery.start_soon(trio.sleep_forever)
                nursery.start_soon(lose)
        except BaseExceptionGroup as group:
            cancelled_first(group)
            raise AssertionError("handled as a failure") from group
    assert scope.cancelled_caught
