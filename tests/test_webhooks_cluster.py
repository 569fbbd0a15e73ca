"""Webhooks on a cluster (real Redis): each event is told by exactly one node —
occupied and vacated for the whole cluster, a dead node's members' leaves by the node
that reaps it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from urllib.parse import urlsplit

import trio

from relayproc import first_line, start_relay
from test_backplane import caught_up, cluster, join, kill
from trio_wsproxy import Relay, serve_relay
from trio_wsproxy.protocol.webhooks import WebhookEvent
from webhookserver import SECRET, WebhookBackEnd
from wsraw import RawClient

WEBHOOKS = {"webhook_secret": SECRET, "webhook_interval": 0.05}


def told(events: list[WebhookEvent]) -> Counter[tuple[str, str, str | None]]:
    return Counter((e.type, e.group, e.member) for e in events)


def prefix_of(node: Relay) -> str:
    assert node.webhooks is not None
    return node.webhooks._prefix


async def test_two_nodes_tell_each_event_once_and_occupancy_for_the_cluster(
    redis_url: str, prefix: str
) -> None:
    async with WebhookBackEnd().running() as back_end:
        async with cluster(redis_url, prefix, webhook_url=back_end.url, **WEBHOOKS) as (a, b):
            first = await join(a, "alice", "room")
            second = await join(b, "bob", "room")
            third = await join(a, "carol", "room")
            await caught_up([a.port, b.port])
            for client in (first, second, third):
                await client.aclose()
            # (The probes of caught_up come and go in groups of their own: left aside.)
            room = lambda: [e for e in back_end.delivered if e.group == "room"]  # noqa: E731
            await back_end.wait_until(lambda: len(room()) == 8)
            assert told(room()) == {
                ("occupied", "room", None): 1,
                ("join", "room", "alice"): 1,
                ("join", "room", "bob"): 1,
                ("join", "room", "carol"): 1,
                ("leave", "room", "alice"): 1,
                ("leave", "room", "bob"): 1,
                ("leave", "room", "carol"): 1,
                ("vacated", "room", None): 1,
            }
            # Each member's events come from its own node.
            by_node = {e.member: e.id.split("-")[0] for e in room() if e.member}
            assert by_node == {"alice": prefix_of(a), "bob": prefix_of(b), "carol": prefix_of(a)}
            # And nothing at all is told twice, probes included.
            events = back_end.delivered
            assert len({e.id for e in events}) == len(events)
            assert max(told(events).values()) == 1


async def test_a_killed_node_s_leaves_are_told_once_by_the_node_that_reaps_it(
    redis_url: str, prefix: str
) -> None:
    async with WebhookBackEnd().running() as back_end:
        async with cluster(
            redis_url, prefix, count=1, node_ttl=1.0, webhook_url=back_end.url, **WEBHOOKS
        ) as (a,):
            process, _url, port = await start_relay(
                "--backplane", redis_url, "--backplane-prefix", prefix, "--node-ttl", "1",
                "--webhook-url", back_end.url, "--webhook-interval", "0.05",
                env={"TRIO_WSPROXY_WEBHOOK_SECRET": SECRET},
            )  # fmt: skip
            try:
                here = await join(a, "here", "shared")
                ghosts = [
                    await RawClient.open(port, f"/ws?id=gone{n}&groupName=shared") for n in range(3)
                ]
                alone = await RawClient.open(port, "/ws?id=lonely&groupName=only-there")
                await caught_up([a.port, port])
                ours = lambda: [  # noqa: E731
                    e for e in back_end.delivered if e.group in ("shared", "only-there")
                ]
                # Joins and occupancy, told by the node each happened on, before the kill.
                await back_end.wait_until(lambda: len(ours()) == 7)
                await kill(process)
                # Node a reaps node b within node_ttl and a reaper round, and tells its
                # members' leaves (1006: their connections ended unseen) and the group
                # that they leave empty.
                await back_end.wait_until(lambda: len(ours()) == 12, within=10)
                after = ours()[7:]
                assert told(after) == {
                    ("leave", "shared", "gone0"): 1,
                    ("leave", "shared", "gone1"): 1,
                    ("leave", "shared", "gone2"): 1,
                    ("leave", "only-there", "lonely"): 1,
                    ("vacated", "only-there", None): 1,
                }
                assert {e.code for e in after if e.type == "leave"} == {1006}
                assert {e.id.split("-")[0] for e in after} == {prefix_of(a)}
                # "shared" still has a member here: it was never vacated.
                assert ("vacated", "shared", None) not in told(back_end.delivered)
                events = back_end.delivered
                assert len({e.id for e in events}) == len(events)
            finally:
                process.kill()
            del here, ghosts, alone


async def test_a_node_that_stops_tells_its_leaves_and_the_groups_it_empties_once(
    redis_url: str, prefix: str
) -> None:
    async with WebhookBackEnd().running() as back_end:
        async with cluster(redis_url, prefix, count=1, webhook_url=back_end.url, **WEBHOOKS) as (
            a,
        ):
            config = a.config
            async with trio.open_nursery() as node_b:
                b = await node_b.start(serve_relay, config)
                here = await join(a, "stays", "shared")
                leaving = await join(b, "goes", "shared")
                alone = [await join(b, f"solo{n}", f"solo-{n}") for n in range(3)]
                await caught_up([a.port, b.port])
                ours = lambda: [  # noqa: E731
                    e for e in back_end.delivered if not e.group.startswith("probe")
                ]
                await back_end.wait_until(lambda: len(ours()) == 9)
                node_b.cancel_scope.cancel()  # a graceful stop: its members get 1001
            # All told by the time the node has stopped (within its close_timeout), and
            # each once: nothing more comes from the node that stays.
            assert len(ours()) == 16
            after = ours()[9:]
            assert told(after) == {
                ("leave", "shared", "goes"): 1,
                **{("leave", f"solo-{n}", f"solo{n}"): 1 for n in range(3)},
                **{("vacated", f"solo-{n}", None): 1 for n in range(3)},
            }
            assert {e.code for e in after if e.type == "leave"} == {1001}
            # "shared" keeps its member on node a: never vacated.
            assert ("vacated", "shared", None) not in told(back_end.delivered)
            del here, leaving, alone


async def test_an_id_that_moves_to_another_node_is_a_leave_4000_there_and_a_join_here(
    redis_url: str, prefix: str
) -> None:
    async with WebhookBackEnd().running() as back_end:
        async with cluster(redis_url, prefix, webhook_url=back_end.url, **WEBHOOKS) as (a, b):
            old = await join(a, "dup", "room")
            await back_end.wait_until(lambda: len(back_end.delivered) == 2)
            new = await join(b, "dup", "room")
            with trio.fail_after(5):
                code, _ = await old.expect_close()
            assert code == 4000
            room = lambda: [e for e in back_end.delivered if e.group == "room"]  # noqa: E731
            await back_end.wait_until(lambda: len(room()) == 4)
            assert [(e.type, e.member, e.code) for e in room()[:2]] == [
                ("occupied", None, None),
                ("join", "dup", None),
            ]
            # (From two nodes: in either order.)
            assert sorted((e.type, e.code, e.id.split("-")[0]) for e in room()[2:]) == sorted(
                [("join", None, prefix_of(b)), ("leave", 4000, prefix_of(a))]
            )
            await new.aclose()
            await back_end.wait_until(lambda: len(room()) == 6)
            assert [(e.type, e.code) for e in room()[4:]] == [("leave", 1006), ("vacated", None)]


async def test_workers_of_one_relay_tell_each_event_once(redis_url: str, prefix: str) -> None:
    async with WebhookBackEnd().running() as back_end:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "trio_wsproxy", "serve", "--port", "0", "--workers", "2",
             "--backplane", redis_url, "--backplane-prefix", prefix,
             "--webhook-url", back_end.url, "--webhook-interval", "0.05"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "TRIO_WSPROXY_WEBHOOK_SECRET": SECRET},
        )  # fmt: skip
        try:
            assert process.stdout is not None
            line = (await first_line(process.stdout)).decode()
            port = urlsplit(line.split("listening on ")[1].split()[0]).port
            assert port is not None, line
            clients = [await RawClient.open(port, f"/ws?id=w{n}&groupName=w") for n in range(20)]
            for client in clients:
                await client.aclose()
            ours = lambda: [e for e in back_end.delivered if e.group == "w"]  # noqa: E731
            await back_end.wait_until(lambda: len(ours()) == 42, within=20)
            assert Counter(e.type for e in ours()) == {
                "occupied": 1, "join": 20, "leave": 20, "vacated": 1,
            }  # fmt: skip
            assert len({e.id for e in ours()}) == 42
            assert len({e.id.split("-")[0] for e in ours()}) <= 2  # (one prefix per worker)
        finally:
            process.terminate()
            with trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
