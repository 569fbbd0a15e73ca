"""History and recovery across relay nodes on one Redis (DESIGN.md §7), over real
sockets against a real Redis: offsets that every node agrees on, recovery on any node
(after a drop, a 4001, a node killed with -9), exactly once and in order with live
traffic, and an epoch that changes when Redis loses the history."""

from __future__ import annotations

import itertools
import signal
import types
from typing import Any

import pytest
import trio

import trio_wsproxy
from httpapi import call
from loglines import LogLines
from recorder import Recorder, as_text, as_u32, stall_into_4001
from redisserver import RedisServer, redis_call
from relayproc import Output, start_relay
from test_backplane import (
    backplane,
    caught_up,
    cluster,
    join,
    kill,
    known_size,
    stall_until_dropped,
)
from test_v1 import next_message, v1_member
from trio_wsproxy import CloseCode, Relay
from trio_wsproxy.protocol import v1
from wsraw import OP_BINARY, OP_CLOSE, OP_TEXT, RawClient

HISTORY: dict[str, Any] = {"history_size": 10_000}


async def gone(node: Relay, client: RawClient, group: str = "g") -> None:
    """Drop ``client``'s connection to ``node`` (no close frame); wait until it knows."""
    before = node.group_size(group)
    await client.stream.aclose()
    with trio.fail_after(10):
        await node.wait_members(before - 1, group)


async def start_node(redis_url: str, prefix: str) -> tuple[trio.Process, str, int]:
    """A relay node in a process of its own (to be killed), keeping history, reaped by
    the others within a second."""
    return await start_relay(
        "--backplane", redis_url, "--backplane-prefix", prefix, "--node-ttl", "1",
        "--history-size", "10000",
    )  # fmt: skip


def offsets_of(received: list[tuple[int, v1.From, bytes]]) -> list[int | None]:
    return [header.offset for _, header, _ in received]


async def test_every_node_gives_the_same_offsets_and_delivers_its_own_members_too(
    redis_url: str, prefix: str
) -> None:
    async with cluster(redis_url, prefix, **HISTORY) as (a, b):
        with trio.fail_after(30):
            alice, welcome_a = await v1_member(a, "alice")
            near, _ = await v1_member(a, "near")  # on the sender's node
            far, welcome_b = await v1_member(b, "far")
            plain = await join(b, "plain")
            await caught_up([a.port, b.port])
            # One history for the group, whichever node a member joined.
            assert welcome_a.position is not None and welcome_b.position is not None
            assert welcome_a.position.epoch == welcome_b.position.epoch
            epoch = welcome_a.position.epoch
            for n in range(5):
                await alice.send_frame(OP_TEXT, f"\na{n}".encode())
                await far.send_frame(OP_BINARY, f"\nb{n}".encode())
            got_near = [await next_message(near) for _ in range(10)]
            # The offsets are one sequence, 1 to 10, the same on both nodes; each sender's
            # order holds; nobody gets its own messages back.
            assert sorted(offsets_of(got_near)) == list(range(1, 11))  # type: ignore[type-var]
            assert offsets_of(got_near) == sorted(offsets_of(got_near))  # type: ignore[type-var]
            by_offset = {h.offset: (h.sender, p) for _, h, p in got_near}
            got_far = [await next_message(far) for _ in range(5)]
            assert [(h.sender, p) for _, h, p in got_far] == [
                ("alice", f"a{n}".encode()) for n in range(5)
            ]
            assert all(by_offset[h.offset] == (h.sender, p) for _, h, p in got_far)
            got_alice = [await next_message(alice) for _ in range(5)]
            assert all(by_offset[h.offset] == (h.sender, p) for _, h, p in got_alice)
            assert [p for _, _, p in got_alice] == [f"b{n}".encode() for n in range(5)]
            # Plain members get bare payloads, in the same order.
            got_plain = [await plain.recv_message() for _ in range(10)]
            assert [p for _, p in got_plain] == [p for _, _, p in got_near]
            # A member that joins now learns where the group is.
            late, welcome = await v1_member(b, "late")
            assert welcome.position == v1.Position(epoch, 10)
        # (Closed here, so that the nodes' shutdown need not wait out close_timeout.)
        for client in (alice, near, far, plain, late):
            await client.aclose()


async def test_a_member_that_drops_recovers_on_another_node(redis_url: str, prefix: str) -> None:
    async with cluster(redis_url, prefix, **HISTORY) as (a, b):
        with trio.fail_after(30):
            alice, welcome = await v1_member(a, "alice")
            bob, _ = await v1_member(b, "bob")
            carol, _ = await v1_member(a, "carol")
            await caught_up([a.port, b.port])
            await bob.send_frame(OP_TEXT, b"\nm1")
            assert (await next_message(alice))[1].offset == 1
            assert welcome.position is not None
            epoch = welcome.position.epoch
            await gone(a, alice)
            # While alice is away: from both nodes, one to bob alone, one to alice alone
            # is refused (she is gone), and alice's own old message is not replayed.
            await bob.send_frame(OP_BINARY, b"\n\x00m2")
            await next_message(carol)  # (m1)
            await next_message(carol)  # m2 is in, before carol's m3: one order for both
            await carol.send_frame(OP_TEXT, b"\nm3")
            await carol.send_frame(OP_TEXT, b'{"to":"bob"}\nfor bob')
            assert [p for _, _, p in [await next_message(bob) for _ in range(2)]] == [
                b"m3",
                b"for bob",
            ]
            alice, again = await v1_member(b, "alice", since=f"{epoch}:1")
            assert again.recovery == v1.Recovery(True, 2)
            assert again.position == v1.Position(epoch, 4)
            await carol.send_frame(OP_TEXT, b"\nlive")
            got = [await next_message(alice) for _ in range(3)]
            assert got == [
                (OP_BINARY, v1.From("bob", offset=2), b"\x00m2"),
                (OP_TEXT, v1.From("carol", offset=3), b"m3"),
                (OP_TEXT, v1.From("carol", offset=5), b"live"),
            ]
        # (Closed here, so that the nodes' shutdown need not wait out close_timeout.)
        for client in (alice, bob, carol):
            await client.aclose()


# The member comes back to the same node, to the other one (its copy of the history
# answers), or to a node that has no member of the group (the history is read in Redis).
@pytest.mark.parametrize("where", ["a", "b", "c"])
async def test_a_quiet_member_recovers_and_a_position_the_history_lost_is_reported(
    redis_url: str, prefix: str, where: str
) -> None:
    async with cluster(redis_url, prefix, count=3, history_size=3) as (a, b, c):
        again_node = {"a": a, "b": b, "c": c}[where]
        with trio.fail_after(30):
            quiet, welcome = await v1_member(a, "quiet")  # it never gets a message
            assert welcome.position is not None
            plain = await join(b, "plain")
            await caught_up([a.port, b.port])
            await gone(a, quiet)
            await plain.send_frame(OP_TEXT, b"m1")
            await caught_up([a.port, b.port])
            quiet, again = await v1_member(again_node, "quiet", since=welcome.position.token())
            assert again.recovery == v1.Recovery(True, 1)
            assert await next_message(quiet) == (
                OP_TEXT, v1.From("plain", offset=welcome.position.offset + 1), b"m1"
            )  # fmt: skip
            await gone(again_node, quiet)
            for n in range(5):  # more than the history keeps
                await plain.send_frame(OP_TEXT, f"m{n}".encode())
            await caught_up([a.port, b.port])
            quiet, again = await v1_member(again_node, "quiet", since=welcome.position.token())
            assert again.recovery == v1.Recovery(False, 0, v1.POSITION_TOO_OLD)
            assert again.position == v1.Position(welcome.position.epoch, 6)
            # Nothing is replayed: the next message is live.
            await plain.send_frame(OP_TEXT, b"live")
            assert await next_message(quiet) == (OP_TEXT, v1.From("plain", offset=7), b"live")
            # A position of another epoch, or beyond the history, cannot be recovered.
            for since in ("feedfacefeedface:1", f"{welcome.position.epoch}:99"):
                await gone(again_node, quiet)
                quiet, again = await v1_member(again_node, "quiet", since=since)
                assert again.recovery == v1.Recovery(False, 0, v1.EPOCH_CHANGED)
        # (Closed here, so that the nodes' shutdown need not wait out close_timeout.)
        for client in (quiet, plain):
            await client.aclose()


async def test_messages_too_large_to_keep_and_streamed_ones_take_offsets_but_stop_recovery(
    redis_url: str, prefix: str
) -> None:
    big = bytes(3 * 1024 * 1024)  # streams through Redis in pieces
    async with cluster(redis_url, prefix, 3, history_size=100, history_bytes=1000) as (a, b, c):
        with trio.fail_after(30):
            alice, welcome = await v1_member(a, "alice")
            assert welcome.position is not None
            epoch = welcome.position.epoch
            bob, _ = await v1_member(b, "bob")
            carol, _ = await v1_member(a, "carol")
            dave, _ = await v1_member(b, "dave")
            await caught_up([a.port, b.port])
            await bob.send_frame(OP_BINARY, b"\n" + big)
            # The streamed message has its offset on both nodes, the sender's too.
            assert await next_message(alice) == (OP_BINARY, v1.From("bob", offset=1), big)
            assert await next_message(carol) == (OP_BINARY, v1.From("bob", offset=1), big)
            assert await next_message(dave) == (OP_BINARY, v1.From("bob", offset=1), big)
            await gone(a, alice)
            await bob.send_frame(OP_BINARY, b"\n" + bytes(2000))  # over history_bytes
            await carol.send_frame(OP_TEXT, b"\nsmall")
            await carol.send_frame(OP_BINARY, b"\n" + big)  # streamed, from the other node
            await carol.send_frame(OP_TEXT, b"\nafter")
            got = [await next_message(bob) for _ in range(3)]
            assert offsets_of(got) == [3, 4, 5]
            got = [await next_message(dave) for _ in range(4)]
            assert offsets_of(got) == [2, 3, 4, 5]
            # Whichever node answers (c follows no member of the group: Redis does).
            for node, since in ((b, 1), (a, 2), (c, 1), (c, 3)):
                alice, again = await v1_member(node, "alice", since=f"{epoch}:{since}")
                assert again.recovery == v1.Recovery(False, 0, v1.MESSAGE_TOO_LARGE)
                await gone(node, alice)
            for node in (b, c):
                alice, again = await v1_member(node, "alice", since=f"{epoch}:4")
                assert again.recovery == v1.Recovery(True, 1)
                want = (OP_TEXT, v1.From("carol", offset=5), b"after")
                assert await next_message(alice) == want
                await gone(node, alice)
            alice, _ = await v1_member(a, "alice")
        # (Closed here, so that the nodes' shutdown need not wait out close_timeout.)
        for client in (alice, bob, carol, dave):
            await client.aclose()


async def test_concurrent_senders_on_three_nodes_and_a_member_hopping_nodes_miss_nothing(
    redis_url: str, prefix: str
) -> None:
    """Three senders on three nodes send at once while a member reads a stretch, drops,
    and comes back on the next node naming its last offset, again and again: across its
    connections it gets every message exactly once (one offset after another) and each
    sender's in the order sent."""
    per_sender = 300
    async with cluster(redis_url, prefix, count=3, **HISTORY) as nodes:
        with trio.fail_after(60):
            senders = [await join(node, f"s{i}") for i, node in enumerate(nodes)]
            member, welcome = await v1_member(nodes[0], "member")
            assert welcome.position is not None
            position = welcome.position
            await caught_up([node.port for node in nodes])
            received: list[tuple[int, str, int]] = []  # offset, sender, number

            async def send(client: RawClient) -> None:
                for n in range(per_sender):
                    await client.send_frame(OP_TEXT, str(n).encode())
                    if n % 25 == 0:
                        await trio.lowlevel.checkpoint()

            hops = itertools.cycle(nodes[1:] + nodes[:1])
            node = nodes[0]
            async with trio.open_nursery() as nursery:
                for client in senders:
                    nursery.start_soon(send, client)
                while len(received) < 3 * per_sender:
                    for _ in range(97):
                        if len(received) == 3 * per_sender:
                            break
                        _, header, payload = await next_message(member)
                        assert header.offset is not None and header.sender is not None
                        position = v1.Position(position.epoch, header.offset)
                        received.append((header.offset, header.sender, int(payload)))
                    if len(received) == 3 * per_sender:
                        break
                    await gone(node, member)
                    node = next(hops)
                    member, again = await v1_member(node, "member", since=position.token())
                    assert again.recovery is not None and again.recovery.recovered, again
        # (Closed here, so that the nodes' shutdown need not wait out close_timeout.)
        for client in (*senders, member):
            await client.aclose()
    first = welcome.position.offset + 1
    assert [offset for offset, _, _ in received] == list(range(first, first + 3 * per_sender))
    for i in range(3):
        assert [n for _, sender, n in received if sender == f"s{i}"] == list(range(per_sender))


async def test_a_stalled_client_closed_4001_recovers_every_message_through_the_cluster(
    redis_url: str, prefix: str, relay_log: LogLines
) -> None:
    """The Python client, its handler stalled, is closed with 4001 by its node (its
    mailbox full, the group's messages from the other node piling up); it reconnects by
    itself and its handler sees every message once, in order."""
    count = 2000
    recorder = Recorder(as_u32, stall_at=10)
    # close_timeout: node b waits for the stalled client to read its way to the 4001
    # close frame. The cluster helper's 0.5 s is shorter than the rest of the sending
    # may take on a loaded machine: the node then drops the connection, the frame is
    # lost with what the client had not read (1006, not 4001). The test closes its
    # clients before the nodes stop, so that their shutdown does not wait that long.
    settings = dict(history_size=10_000, history_bytes=64 * 1024 * 1024,
                    mailbox_bytes=64 * 1024, slow_member_timeout=0.5, close_timeout=30)  # fmt: skip
    async with cluster(redis_url, prefix, **settings) as (a, b):
        async with trio_wsproxy.open_client(
            b.url, group="g", id="slow", on_disconnect=recorder.on_disconnect
        ) as client:
            recorder.attach(client)
            sender = await join(a, "sender")
            with trio.fail_after(60):
                await caught_up([a.port, b.port])
                await stall_into_4001(recorder, sender, count, b, relay_log)
                await recorder.closed_slow.wait()
                await recorder.saw(count)
        await sender.aclose()
    recorder.check(count)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "stopped"])
async def test_a_client_whose_node_dies_fails_over_and_misses_nothing(
    redis_url: str, prefix: str, how: signal.Signals
) -> None:
    """kill -9 of the node a client is on mid-traffic (its connection drops: 1006), or
    the node stopped (it closes with 1001): the client fails over to the other node,
    names its position there, and its handler sees every message once, in order."""
    count = 600
    recorder = Recorder(as_text)
    async with cluster(redis_url, prefix, count=1, node_ttl=1.0, **HISTORY) as (a,):
        process, url, port = await start_node(redis_url, prefix)
        try:
            async with trio_wsproxy.open_client([url, a.url], group="g", id="member") as client:
                recorder.attach(client)
                sender = await join(a, "sender")
                with trio.fail_after(60):
                    await caught_up([a.port, port])
                    assert known_size(a, "g") == 2
                    for n in range(count):
                        await sender.send_frame(OP_BINARY, str(n).encode())
                        if n == count // 2:
                            await recorder.saw(count // 3)
                            process.send_signal(how)
                    await recorder.saw(count)
                assert client.url.startswith(a.url)
        finally:
            if process.returncode is None:
                await kill(process)
        # (Closed here, so that the nodes' shutdown need not wait out close_timeout.)
        await sender.aclose()
    recorder.check(count)


async def test_a_client_in_three_groups_whose_node_is_killed_recovers_each_group(
    redis_url: str, prefix: str
) -> None:
    """kill -9 of the node a client in three groups is on, mid-traffic in all three: one
    reconnect to the other node recovers every group from its own position (the URL's
    by ?since=, the others by joins naming theirs), each message once and in order."""
    count = 300
    rooms = ("g", "room-2", "room-3")
    recorders = {room: Recorder(as_text) for room in rooms}
    async with cluster(redis_url, prefix, count=1, node_ttl=1.0, **HISTORY) as (a,):
        process, url, port = await start_node(redis_url, prefix)
        try:
            async with trio_wsproxy.open_client([url, a.url], group="g", id="member") as client:
                recorders["g"].attach(client)
                for room in rooms[1:]:
                    recorders[room].attach(await client.join(room))  # type: ignore[arg-type]
                senders = {room: await join(a, f"sender-{room}", room) for room in rooms}
                with trio.fail_after(60):
                    await caught_up([a.port, port])
                    for n in range(count):
                        for room in rooms:
                            await senders[room].send_frame(OP_BINARY, str(n).encode())
                        if n == count // 2:
                            await recorders["room-3"].saw(count // 3)
                            process.send_signal(signal.SIGKILL)
                    for recorder in recorders.values():
                        await recorder.saw(count)
                assert client.url.startswith(a.url)
                assert set(client.groups) == set(rooms)
        finally:
            if process.returncode is None:
                await kill(process)
        for sender in senders.values():
            await sender.aclose()
    for recorder in recorders.values():
        recorder.check(count)


async def test_a_client_in_two_groups_closed_4001_recovers_both(
    redis_url: str, prefix: str, relay_log: LogLines
) -> None:
    """The client's handler of its URL's group stalls until its node closes it with
    4001 (its one mailbox is every group's): it reconnects by itself, and each group's
    handler sees every message once, in order."""
    count = 2000
    stalled, other = Recorder(as_u32, stall_at=10), Recorder(as_u32)
    settings = dict(history_size=10_000, history_bytes=64 * 1024 * 1024,
                    mailbox_bytes=64 * 1024, slow_member_timeout=0.5, close_timeout=30)  # fmt: skip
    async with cluster(redis_url, prefix, **settings) as (a, b):
        async with trio_wsproxy.open_client(
            b.url, group="g", id="slow", on_disconnect=stalled.on_disconnect
        ) as client:
            stalled.attach(client)
            other.attach(await client.join("room-2"))  # type: ignore[arg-type]
            sender = await join(a, "sender")
            elsewhere = await join(a, "sender", "room-2")
            with trio.fail_after(60):
                await caught_up([a.port, b.port])
                for n in range(100):
                    await elsewhere.send_frame(OP_BINARY, n.to_bytes(4, "big"))
                await stall_into_4001(stalled, sender, count, b, relay_log)
                await stalled.closed_slow.wait()
                for n in range(100, 200):
                    await elsewhere.send_frame(OP_BINARY, n.to_bytes(4, "big"))
                await stalled.saw(count)
                await other.saw(200)
        await sender.aclose()
        await elsewhere.aclose()
    stalled.check(count)
    other.check(200)


async def test_a_redis_restart_changes_the_epoch_and_members_are_told(
    private_redis: RedisServer, prefix: str, backplane_log: LogLines
) -> None:
    async with cluster(private_redis.url, prefix, **HISTORY) as (a, b):
        with trio.fail_after(30):
            alice, welcome = await v1_member(a, "alice")
            bob = await join(a, "bob")  # a group on one node: still ordered by Redis
            await caught_up([a.port, b.port])
            await bob.send_frame(OP_TEXT, b"m1")
            _, header, _ = await next_message(alice)
            assert welcome.position is not None and header.offset is not None
            position = v1.Position(welcome.position.epoch, header.offset)
            private_redis.stop()
            # Every member of a group whose history lives in Redis is closed, even on one
            # node: its order comes from Redis. Joins are refused until Redis is back.
            assert (await alice.expect_close())[0] == CloseCode.BACKPLANE_UNAVAILABLE
            assert (await bob.expect_close())[0] == CloseCode.BACKPLANE_UNAVAILABLE
            late = RawClient(await trio.open_tcp_stream("127.0.0.1", a.port))
            status, _, body = await late.handshake("/ws?id=late&groupName=g")
            assert status == 503 and b"backplane" in body
            private_redis.start()
            await backplane_log.wait_for("backplane reconnected", count=2)
            alice, again = await v1_member(b, "alice", since=position.token())
            assert again.recovery == v1.Recovery(False, 0, v1.EPOCH_CHANGED)
            assert again.position is not None and again.position.epoch != position.epoch
        # (Closed here, so that the nodes' shutdown need not wait out close_timeout.)
        await alice.aclose()


async def test_a_flushed_redis_changes_the_epoch_and_members_are_told(
    private_redis: RedisServer, prefix: str, backplane_log: LogLines
) -> None:
    async with cluster(private_redis.url, prefix, node_ttl=1.0, **HISTORY) as (a, b):
        with trio.fail_after(30):
            alice, welcome = await v1_member(a, "alice")
            carol, _ = await v1_member(b, "carol")
            await caught_up([a.port, b.port])
            assert welcome.position is not None
            private_redis.command("FLUSHALL")
            # The nodes find their registrations gone and close the members, who may
            # have missed messages...
            assert (await alice.expect_close())[0] == CloseCode.BACKPLANE_UNAVAILABLE
            assert (await carol.expect_close())[0] == CloseCode.BACKPLANE_UNAVAILABLE
            await backplane_log.wait_for("backplane reconnected", count=2)
            # ...and a member naming its old position is told it cannot recover.
            alice, again = await v1_member(b, "alice", since=welcome.position.token())
            assert again.recovery == v1.Recovery(False, 0, v1.EPOCH_CHANGED)
        # (Closed here, so that the nodes' shutdown need not wait out close_timeout.)
        await alice.aclose()


async def test_a_history_lost_while_the_nodes_stay_connected_closes_its_members(
    redis_url: str, prefix: str
) -> None:
    """The history's keys vanish while the nodes are up (an operator deleted them):
    the next message starts a new epoch, and the members that held the old one are
    closed (4004) and told on their return that they cannot recover."""
    async with cluster(redis_url, prefix, **HISTORY) as (a, b):
        with trio.fail_after(30):
            alice, welcome = await v1_member(a, "alice")
            bob, _ = await v1_member(b, "bob")
            await caught_up([a.port, b.port])
            assert welcome.position is not None
            await redis_call(redis_url, "DEL", *backplane(a).names.history_keys("g"))
            await bob.send_frame(OP_TEXT, b"\nnew epoch")
            assert (await alice.expect_close())[0] == CloseCode.BACKPLANE_UNAVAILABLE
            assert (await bob.expect_close())[0] == CloseCode.BACKPLANE_UNAVAILABLE
            closed = (alice, bob)
            alice, again = await v1_member(b, "alice", since=welcome.position.token())
            assert again.recovery == v1.Recovery(False, 0, v1.EPOCH_CHANGED)
            assert again.position is not None and again.position.offset == 1
        # (Closed here, so that the nodes' shutdown need not wait out close_timeout.)
        for client in (*closed, alice):
            await client.aclose()


async def test_back_ends_read_the_clusters_history_on_any_node(redis_url: str, prefix: str) -> None:
    key = "test-api-key-0123456789"
    async with cluster(redis_url, prefix, history_size=100, history_bytes=1000, api_key=key) as (
        a,
        b,
    ):
        with trio.fail_after(20):
            answer = await call(b.port, "GET", "/api/groups/g/history")
            assert answer.status == 200
            epoch = answer.json["epoch"]
            assert answer.json == {"epoch": epoch, "first": 1, "last": 0, "messages": []}
            alice, _ = await v1_member(a, "alice")
            bob, _ = await v1_member(a, "bob")
            await alice.send_frame(OP_TEXT, "\nhé".encode())
            await alice.send_frame(OP_BINARY, b'{"to":"bob"}\n\x00\xff')
            await alice.send_frame(OP_BINARY, b"\n" + bytes(2000))  # noted, not kept
            for _ in range(3):
                await next_message(bob)
            # Node b has no member of the group: it reads Redis.
            answer = await call(b.port, "GET", "/api/groups/g/history")
            assert answer.json == {
                "epoch": epoch,
                "first": 1,
                "last": 3,
                "messages": [
                    {"offset": 1, "kept": True, "from": "alice", "to": None, "text": "hé"},
                    {"offset": 2, "kept": True, "from": "alice", "to": "bob", "binary": "AP8="},
                    {"offset": 3, "kept": False},
                ],
            }
            answer = await call(b.port, "GET", "/api/groups/g/history?since=1&limit=1")
            assert [m["offset"] for m in answer.json["messages"]] == [2]
            # A back end's post is sequenced too.
            answer = await call(
                b.port, "POST", "/api/groups/g/messages", b"from the back end",
                {"Content-Type": "text/plain"},
            )  # fmt: skip
            assert answer.status < 300, answer
            _, header, payload = await next_message(alice)
            assert (header.offset, payload) == (4, b"from the back end")
        # (Closed here, so that the nodes' shutdown need not wait out close_timeout.)
        for client in (alice, bob):
            await client.aclose()


class Cutter:
    """A TCP forwarder to a relay whose connections can be cut mid-traffic (a network
    drop: no close frame, no FIN from the relay's side)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._scopes: list[trio.CancelScope] = []

    async def serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._forward, listeners)

    async def _forward(self, client: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        with trio.CancelScope() as scope:
            self._scopes.append(scope)

            async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
                async for chunk in source:
                    await sink.send_all(chunk)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, client, upstream)
                nursery.start_soon(pump, upstream, client)
        for stream in (client, upstream):
            await trio.aclose_forcefully(stream)

    def cut(self) -> None:
        for scope in self._scopes:
            scope.cancel()
        self._scopes.clear()


async def test_a_tcp_drop_mid_traffic_is_recovered_exactly_once(
    redis_url: str, prefix: str
) -> None:
    """The client's connection to its node breaks while messages stream to it: it
    reconnects by itself, and its handler sees every message once, in order."""
    count = 1500
    recorder = Recorder(as_text)
    async with cluster(redis_url, prefix, **HISTORY) as (a, b), trio.open_nursery() as nursery:
        cutter = Cutter(b.port)
        await nursery.start(cutter.serve)
        url = f"ws://127.0.0.1:{cutter.port}/ws"
        async with trio_wsproxy.open_client(url, group="g", id="member") as client:
            recorder.attach(client)
            sender = await join(a, "sender")
            with trio.fail_after(60):
                await caught_up([a.port, b.port])
                for n in range(count):
                    await sender.send_frame(OP_BINARY, str(n).encode())
                    if n == count // 2:
                        await recorder.saw(count // 3)
                        cutter.cut()
                await recorder.saw(count)
        # (Closed here, so that the nodes' shutdown need not wait out close_timeout.)
        await sender.aclose()
        nursery.cancel_scope.cancel()
    recorder.check(count)


async def test_nodes_that_disagree_on_history_close_the_members_they_share(
    redis_url: str, prefix: str, backplane_log: LogLines
) -> None:
    """A node without history in a cluster whose other nodes keep it (a misconfigured
    rolling restart, say) cannot be given one order with them: the members that would
    miss messages are closed with 4004, never left with a silent gap."""
    async with (
        cluster(redis_url, prefix, count=1, **HISTORY) as (keeper,),
        cluster(redis_url, prefix, count=1) as (plain_node,),
    ):
        with trio.fail_after(20):
            alice, _ = await v1_member(keeper, "alice")
            bob = await join(plain_node, "bob")
            carol = await join(plain_node, "carol")
            await caught_up([keeper.port, plain_node.port])
            await carol.send_frame(OP_TEXT, b"unsequenced")
            assert (await alice.expect_close())[0] == CloseCode.BACKPLANE_UNAVAILABLE
            await backplane_log.wait_for("give every node of a cluster the same --history-size")
            alice, _ = await v1_member(keeper, "alice")
            await caught_up([keeper.port, plain_node.port])
            await alice.send_frame(OP_TEXT, b"\nsequenced")
            # The plain node's members would miss it: they are closed too.
            assert (await bob.expect_close())[0] == CloseCode.BACKPLANE_UNAVAILABLE
            assert (await carol.expect_close())[0] == CloseCode.BACKPLANE_UNAVAILABLE
        # (Closed here, so that the nodes' shutdown need not wait out close_timeout.)
        for client in (alice, bob, carol):
            await client.aclose()


@pytest.mark.redis_config("--client-output-buffer-limit", "pubsub 256kb 128kb 1")
async def test_a_member_closed_4004_when_its_node_fell_behind_recovers_all_it_missed(
    private_redis: RedisServer, prefix: str
) -> None:
    """Node b stalls; Redis drops its subscription for falling behind; back, it closes
    its members with 4004 (they may have missed messages). With history they lose
    nothing: the member comes back naming its position and gets the rest, in order."""
    url = private_redis.url
    async with cluster(url, prefix, count=1, **HISTORY, history_bytes=64 * 2**20) as (a,):
        process, _url, port = await start_relay(
            "--backplane", url, "--backplane-prefix", prefix, "--history-size", "10000",
            "--history-bytes", "64MiB",
        )  # fmt: skip
        assert process.stderr is not None
        stderr = Output()
        node_b = types.SimpleNamespace(port=port)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stderr.pump, process.stderr)
                sender = await join(a, "sender")
                reader, welcome = await v1_member(node_b, "reader")  # type: ignore[arg-type]
                assert welcome.position is not None
                await caught_up([a.port, port])
                sent = 2000
                await stall_until_dropped(process, sender, a, url, sent)
                received: list[int] = []
                position = welcome.position

                async def read(until: int) -> bytes | None:
                    """Read the numbered messages into ``received`` (and ``position``)
                    until ``until`` came: None then, or the close frame's payload."""
                    nonlocal position
                    while len(received) < until:
                        opcode, data = await reader.recv_message()
                        if opcode == OP_CLOSE:
                            return data
                        header, start = v1.decode_relay_message(data)
                        if isinstance(header, v1.From):
                            assert header.offset is not None
                            position = v1.Position(position.epoch, header.offset)
                            received.append(int(data[start : start + 8]))
                    return None

                with trio.fail_after(20):
                    closed = await read(sent + 1)
                    assert closed is not None
                    assert int.from_bytes(closed[:2], "big") == CloseCode.BACKPLANE_UNAVAILABLE
                    assert len(received) < sent
                    reconnected = await stderr.wait_for("backplane reconnected")
                    while len(received) < sent:
                        await reader.aclose()
                        reader, again = await v1_member(  # type: ignore[arg-type]
                            node_b, "reader", since=position.token()
                        )
                        assert again.recovery == v1.Recovery(True, sent - len(received))
                        closed = await read(sent)
                        if closed is not None:
                            # Node b lost Redis again (a busy machine can make it miss its
                            # heartbeat): 4004 once more, and it recovers again.
                            code = int.from_bytes(closed[:2], "big")
                            assert code == CloseCode.BACKPLANE_UNAVAILABLE, closed
                            reconnected = await stderr.wait_for(
                                "backplane reconnected", reconnected.end()
                            )
                assert received == list(range(sent))
                nursery.cancel_scope.cancel()
        finally:
            process.send_signal(signal.SIGCONT)
            process.kill()
        # (Closed here, so that the nodes' shutdown need not wait out close_timeout.)
        for client in (sender, reader):
            await client.aclose()


async def test_a_history_whose_messages_vanished_in_redis_is_never_replayed_with_a_gap(
    redis_url: str, prefix: str
) -> None:
    """Redis lost the kept messages but not the rest (a maxmemory policy evicted the
    stream, say): a member whose recovery is read from Redis is told its position is
    too old, never "recovered, 0 missed"."""
    async with cluster(redis_url, prefix, count=2, **HISTORY) as (a, b):
        with trio.fail_after(20):
            alice, welcome = await v1_member(a, "alice")
            assert welcome.position is not None
            sender = await join(a, "sender")
            await caught_up([a.port, b.port])
            await gone(a, alice)
            for n in range(3):
                await sender.send_frame(OP_TEXT, f"m{n}".encode())
            await caught_up([a.port, b.port])
            _, stream, _ = backplane(a).names.history_keys("g")
            await redis_call(redis_url, "DEL", stream)
            # Node b has no member of the group: it reads Redis.
            alice, again = await v1_member(b, "alice", since=welcome.position.token())
            assert again.recovery == v1.Recovery(False, 0, v1.POSITION_TOO_OLD)
        # (Closed here, so that the nodes' shutdown need not wait out close_timeout.)
        for client in (alice, sender):
            await client.aclose()
