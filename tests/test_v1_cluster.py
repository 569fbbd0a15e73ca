"""wsproxy.v1 across relay nodes on one Redis: members on other nodes are listed,
announced as they join and leave (and as they leave when their node dies), a message
carries its sender's id, and direct messages reach a member on any node, in order with
the sender's broadcasts."""

from __future__ import annotations

import types

import trio

from relayproc import start_relay
from test_backplane import MiB, caught_up, cluster, join, kill, known_size
from test_v1 import held_list, next_event, next_message, v1_member
from trio_wsproxy.protocol import v1
from wsraw import OP_BINARY, OP_TEXT


async def test_members_on_other_nodes_are_listed_and_announced(redis_url: str, prefix: str) -> None:
    async with cluster(redis_url, prefix) as (a, b):
        with trio.fail_after(30):
            early = await join(b, "early")
            await caught_up([a.port, b.port])
            watcher, welcome = await v1_member(a, "watcher")
            # A member on the other node is in the welcome...
            assert welcome.members == frozenset({"watcher", "early"})
            assert welcome.count == 2
            # ...one joining there is announced...
            late = await join(b, "late")
            everyone = {"watcher", "early", "late"}
            await held_list(watcher, welcome, everyone)
            # ...its messages carry its id...
            await late.send_frame(OP_TEXT, b"hi from b")
            assert await next_message(watcher) == (OP_TEXT, v1.From("late"), b"hi from b")
            # ...and so does its leaving.
            await late.aclose()
            listed = v1.Welcome("watcher", "g", frozenset(everyone), 3)
            await held_list(watcher, listed, {"watcher", "early"})
        await early.aclose()
        await watcher.aclose()


async def test_direct_messages_reach_members_on_another_node_in_order_with_broadcasts(
    redis_url: str, prefix: str
) -> None:
    async with cluster(redis_url, prefix) as (a, b):
        with trio.fail_after(30):
            sender, _ = await v1_member(a, "sender")
            near, _ = await v1_member(a, "near")
            far, _ = await v1_member(b, "far")
            plain = await join(b, "plain")
            await caught_up([a.port, b.port])
            assert known_size(a, "g") == 4
            # Broadcasts and messages to one member on the other node, interleaved.
            sent: list[tuple[str | None, bytes]] = []
            for n in range(40):
                to = "far" if n % 3 else None
                header = b"\n" if to is None else b'{"to":"far"}\n'
                payload = f"m{n}".encode()
                sent.append((to, payload))
                await sender.send_frame(OP_TEXT, header + payload)
            # A direct message to a plain member on the other node arrives plain.
            await sender.send_frame(OP_BINARY, b'{"to":"plain"}\n\x00to plain')
            await sender.send_frame(OP_TEXT, b"\nlast")
            # The member it was for gets every message, in the order they were sent...
            for to, payload in [*sent, (None, b"last")]:
                want = v1.From("sender", direct=to is not None)
                assert await next_message(far) == (OP_TEXT, want, payload)
            # ...the others only the broadcasts.
            broadcasts = [payload for to, payload in sent if to is None] + [b"last"]
            for payload in broadcasts:
                assert await next_message(near) == (OP_TEXT, v1.From("sender"), payload)
            for payload in broadcasts[:-1]:
                assert await plain.recv_message() == (OP_TEXT, payload)
            assert await plain.recv_message() == (OP_BINARY, b"\x00to plain")
            assert await plain.recv_message() == (OP_TEXT, b"last")
            # Someone in no node's group: an error event, as on one node.
            await sender.send_frame(OP_TEXT, b'{"to":"nobody"}\nhi')
            error = await next_event(sender)
            # (The sender was told who joined in a batch, which a busy machine may send
            # late: the error is the first event that is not presence.)
            while isinstance(error, v1.Presence):
                error = await next_event(sender)
            assert isinstance(error, v1.Error) and error.to == "nobody"
        for client in (sender, near, far, plain):
            await client.aclose()


async def test_a_large_direct_message_streams_to_its_member_on_another_node_only(
    redis_url: str, prefix: str
) -> None:
    async with cluster(redis_url, prefix) as (a, b):
        with trio.fail_after(30):
            sender, _ = await v1_member(a, "sender")
            near, _ = await v1_member(a, "near")
            far, _ = await v1_member(b, "far")
            other, _ = await v1_member(b, "other")
            await caught_up([a.port, b.port])
            big = bytes(range(256)) * (8 * MiB // 256)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender.send_frame, OP_BINARY, b'{"to":"far"}\n' + big)
                opcode, header, payload = await next_message(far)
            assert (opcode, header) == (OP_BINARY, v1.From("sender", direct=True))
            assert payload == big
            # Nobody else got any of it: their next message is the one sent after it.
            await sender.send_frame(OP_TEXT, b"\nafter")
            for client in (near, other, far):
                assert await next_message(client) == (OP_TEXT, v1.From("sender"), b"after")
        for client in (sender, near, far, other):
            await client.aclose()


async def test_a_killed_nodes_members_are_announced_as_leaving(redis_url: str, prefix: str) -> None:
    async with cluster(redis_url, prefix, count=1, node_ttl=1.0) as (a,):
        process, _url, port = await start_relay(
            "--backplane", redis_url, "--backplane-prefix", prefix, "--node-ttl", "1"
        )
        try:
            with trio.fail_after(30):
                node_b = types.SimpleNamespace(port=port)
                gone = [(await v1_member(node_b, f"gone{n}"))[0] for n in range(3)]  # type: ignore[arg-type]
                await caught_up([a.port, port])
                watcher, welcome = await v1_member(a, "watcher")
                assert welcome.members == frozenset({"watcher", "gone0", "gone1", "gone2"})
                await kill(process)
                # The node that reaps it announces its members' leaves to everyone.
                await held_list(watcher, welcome, {"watcher"})
                await watcher.send_frame(OP_TEXT, b'{"to":"gone0"}\nstill there?')
                error = await next_event(watcher)
                assert isinstance(error, v1.Error) and error.to == "gone0"
        finally:
            process.kill()
        del gone
        await watcher.aclose()
