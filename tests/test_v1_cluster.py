"""wsproxy.v1 presence across relay nodes on one Redis: members on other nodes are
listed, announced as they join and leave, and a message carries its sender's id."""

from __future__ import annotations

import trio

from test_backplane import caught_up, cluster, join
from test_v1 import held_list, next_message, v1_member
from trio_wsproxy.protocol import v1
from wsraw import OP_TEXT


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
