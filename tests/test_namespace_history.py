"""A namespace's own history size (``history_size`` in ``[namespaces.NAME]``), on one
relay and on a cluster over a real Redis: its groups keep that many messages, none with
0, and some even while the relay's own history is off."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from test_backplane import cluster
from test_v1 import next_message, v1_member
from trio_wsproxy import Namespace, Relay, RelayConfig, open_relay
from trio_wsproxy.protocol import v1
from wsraw import OP_TEXT, RawClient

NAMESPACES = (
    Namespace(name="chat", prefix="chat:", history_size=3),
    Namespace(name="game", prefix="game-", history_size=0),
)


async def sent_then_recovered(relays: list[Relay], group: str, count: int) -> v1.Welcome:
    """``count`` messages into ``group`` through the first relay, seen by a member who
    then leaves; the welcome (with its recovery) of that member coming back on the last
    relay from before the first message."""
    sender, _ = await v1_member(relays[0], "sender", group)
    watcher, welcome = await v1_member(relays[-1], "watcher", group)
    for n in range(count):
        await sender.send_frame(OP_TEXT, b"\n%d" % n)
    for n in range(count):
        assert (await next_message(watcher))[2] == b"%d" % n
    await watcher.aclose()
    if welcome.position is None:
        _, again = await v1_member(relays[-1], "again", group)
        return again
    since = f"{welcome.position.epoch}:{welcome.position.offset}"
    _, again = await v1_member(relays[-1], "again", group, since=since)
    await sender.aclose()
    return again


async def recovered(client: RawClient, count: int) -> list[bytes]:
    return [(await next_message(client))[2] for _ in range(count)]


@pytest.mark.parametrize("relay_history", [None, 100])
async def test_a_namespace_keeps_its_own_number_of_messages(relay_history: int | None) -> None:
    config = RelayConfig(
        port=0, close_timeout=0.2, history_size=relay_history, namespaces=NAMESPACES
    )
    async with open_relay(config) as relay:
        with trio.fail_after(10):
            # chat: keeps 3: a member that missed 5 is told its position is too old.
            welcome = await sent_then_recovered([relay], "chat:1", 5)
            assert welcome.recovery == v1.Recovery(False, 0, v1.POSITION_TOO_OLD)
            # One that missed 3 gets them.
            welcome = await sent_then_recovered([relay], "chat:2", 3)
            assert welcome.recovery == v1.Recovery(True, 3)
            # game- keeps none: welcomed without a position.
            welcome = await sent_then_recovered([relay], "game-1", 2)
            assert welcome.position is None
            # Elsewhere: the relay's history, or none.
            welcome = await sent_then_recovered([relay], "lobby", 5)
            if relay_history is None:
                assert welcome.position is None
            else:
                assert welcome.recovery == v1.Recovery(True, 5)


async def test_a_namespaces_history_size_holds_on_a_cluster(redis_url: str, prefix: str) -> None:
    fields: dict[str, Any] = {"history_size": 100, "namespaces": NAMESPACES}
    async with cluster(redis_url, prefix, 2, **fields) as nodes:
        with trio.fail_after(20):
            welcome = await sent_then_recovered(nodes, "chat:1", 5)
            assert welcome.recovery == v1.Recovery(False, 0, v1.POSITION_TOO_OLD)
            welcome = await sent_then_recovered(nodes, "chat:2", 3)
            assert welcome.recovery == v1.Recovery(True, 3)
            welcome = await sent_then_recovered(nodes, "game-1", 2)
            assert welcome.position is None
            welcome = await sent_then_recovered(nodes, "lobby", 5)
            assert welcome.recovery == v1.Recovery(True, 5)
