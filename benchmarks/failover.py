"""Failover time: from ``kill -9`` of a relay node to its clients sending again through
another node of the same cluster.

    python benchmarks/failover.py                      # 20 clients, 3 rounds
    python benchmarks/failover.py --clients 100 --min-delay 0.1

Each round starts two relay processes (A and B) sharing the Redis at ``--redis`` under a
fresh prefix. A watcher joins on B; ``--clients`` typed clients join on A with the URLs
``[A, B]`` and each sends a numbered message every 10 ms. Then A is killed with SIGKILL.
For each client, the figure is the time from the kill to the watcher receiving that
client's first message sent after it (through B). Prints one JSON line per round and
the medians.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import uuid
from pathlib import Path

import attrs
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from relay_process import failover_arguments, report_rounds, start_relay

from trio_wsproxy import ClientConfig, open_client


@attrs.define
class Tick:
    sender: str
    n: int


async def one_round(redis: str, clients: int, min_delay: float) -> dict[str, float]:
    prefix = f"bench-failover-{uuid.uuid4().hex[:8]}"
    flags = ("--backplane", redis, "--backplane-prefix", prefix, "--node-ttl", "3")
    node_a, url_a, _ = await start_relay(*flags)
    node_b, url_b, _ = await start_relay(*flags)
    config = ClientConfig(reconnect_min_delay=min_delay)
    killed_at: float | None = None
    back: dict[str, float] = {}
    all_back = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            watcher = await nursery.start(_open, url_b, "watch", config)

            @watcher.on(Tick)
            def seen(tick: Tick) -> None:
                if killed_at is not None and tick.sender not in back and tick.n < 0:
                    back[tick.sender] = trio.current_time() - killed_at
                    if len(back) == clients:
                        all_back.set()

            after_kill = trio.Event()

            async def member(name: str) -> None:
                async with open_client([url_a, url_b], group="g", id=name, config=config) as c:
                    n = 0
                    while True:
                        # Numbers turn negative once A is dead: those are the ones timed.
                        await c.send(Tick(name, -1 if after_kill.is_set() else n))
                        n += 1
                        await trio.sleep(0.01)

            for index in range(clients):
                nursery.start_soon(member, f"c{index}")
            await trio.sleep(1.0)
            killed_at = trio.current_time()
            os.kill(node_a.pid, signal.SIGKILL)
            after_kill.set()
            with trio.fail_after(60):
                await all_back.wait()
            nursery.cancel_scope.cancel()
    finally:
        for node in (node_a, node_b):
            node.kill()
    times = sorted(back.values())
    return {
        "clients": clients,
        "median_s": round(statistics.median(times), 3),
        "max_s": round(times[-1], 3),
        "min_s": round(times[0], 3),
    }


async def _open(url: str, name: str, config: ClientConfig, *, task_status: trio.TaskStatus) -> None:
    async with open_client(url, group="g", id=name, config=config) as client:
        task_status.started(client)
        await trio.sleep_forever()


async def main() -> None:
    args = failover_arguments(__doc__).parse_args()
    await report_rounds(
        "failover", args.rounds,
        lambda: one_round(args.redis, args.clients, args.min_delay),
        ("median_s", "max_s", "min_s"), min_delay=args.min_delay,
    )  # fmt: skip


if __name__ == "__main__":
    trio.run(main)
