"""Recovery after a node dies: from ``kill -9`` of a relay node to its clients having
replayed, through another node, every message they missed.

    python benchmarks/history_failover.py                    # 20 clients, 5,000 missed, 3 rounds
    python benchmarks/history_failover.py --clients 50 --backlog 20000

Each round starts two relay processes (A and B) with ``--history-size`` on the Redis at
``--redis``, under a fresh prefix. ``--clients`` Python clients join on A with the URLs
``[A, B]``; a sender on B sends numbered messages. Once every client has the first
100, A is killed with SIGKILL and the sender at once sends ``--backlog`` more, as fast
as B takes them, while the clients are away (they wait ``--min-delay``, their first
backoff, before reconnecting). Each client fails over to B, names its
position, and gets what it missed replayed from the group's history in Redis. The
figures: the time from the kill to a client having every message (median and the
slowest), and the replay rate, messages replayed to all clients together per second of
replaying. Every client's messages are checked: each exactly once, in order.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import uuid
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from relay_process import failover_arguments, report_rounds, start_relay

from trio_wsproxy import ClientConfig, Incoming, Resumed, open_client

WARMUP = 100


async def one_round(
    redis: str, clients: int, backlog: int, size: int, min_delay: float
) -> dict[str, float]:
    prefix = f"bench-history-{uuid.uuid4().hex[:8]}"
    flags = ("--backplane", redis, "--backplane-prefix", prefix, "--node-ttl", "3",
             "--history-size", str(backlog + 2 * WARMUP), "--history-bytes", "256MiB")  # fmt: skip
    node_a, url_a, _ = await start_relay(*flags)
    node_b, url_b, _ = await start_relay(*flags)
    total = WARMUP + backlog
    config = ClientConfig(reconnect_min_delay=min_delay)
    seen: dict[str, list[int]] = {f"c{n}": [] for n in range(clients)}
    resumed_at: dict[str, float] = {}
    missed: dict[str, int] = {}
    done_at: dict[str, float] = {}
    warm, all_done = trio.Event(), trio.Event()
    killed_at = 0.0
    try:
        async with trio.open_nursery() as nursery:

            async def member(name: str, *, task_status: trio.TaskStatus[None]) -> None:
                async with open_client([url_a, url_b], group="g", id=name, config=config) as c:

                    async def on_bytes(value: bytes, _: Incoming[bytes]) -> None:
                        numbers = seen[name]
                        numbers.append(int.from_bytes(value[:4], "big"))
                        if len(numbers) == WARMUP and all(len(s) >= WARMUP for s in seen.values()):
                            warm.set()
                        if len(numbers) == total:
                            done_at[name] = trio.current_time() - killed_at
                            if len(done_at) == clients:
                                all_done.set()

                    async def on_resumed(value: Resumed, _: object) -> None:
                        resumed_at[name] = trio.current_time()
                        missed[name] = value.missed

                    c.on(bytes, on_bytes)
                    c.on(Resumed, on_resumed)
                    task_status.started()
                    await trio.sleep_forever()

            for name in seen:
                await nursery.start(member, name)
            async with open_client(url_b, group="g", id="sender") as sender:
                padding = bytes(max(0, size - 4))
                for n in range(WARMUP):
                    await sender.send(n.to_bytes(4, "big") + padding)
                with trio.fail_after(60):
                    await warm.wait()
                killed_at = trio.current_time()
                os.kill(node_a.pid, signal.SIGKILL)
                for n in range(WARMUP, total):
                    await sender.send(n.to_bytes(4, "big") + padding)
                with trio.fail_after(120):
                    await all_done.wait()
            nursery.cancel_scope.cancel()
    finally:
        for node in (node_a, node_b):
            node.kill()
    for name, numbers in seen.items():
        assert numbers == list(range(total)), f"{name}: not every message once, in order"
    times = sorted(done_at.values())
    replaying = max(done_at.values()) + killed_at - min(resumed_at.values())
    return {
        "clients": clients,
        "backlog": backlog,
        "replayed_per_client": int(statistics.median(missed.values())),
        "median_s": round(statistics.median(times), 3),
        "max_s": round(times[-1], 3),
        "replayed_per_s": round(sum(missed.values()) / replaying),
    }


async def main() -> None:
    parser = failover_arguments(__doc__)
    parser.add_argument("--backlog", type=int, default=5000, help="messages sent while away")
    parser.add_argument("--size", type=int, default=100, help="bytes per message")
    args = parser.parse_args()
    await report_rounds(
        "history failover", args.rounds,
        lambda: one_round(args.redis, args.clients, args.backlog, args.size, args.min_delay),
        ("replayed_per_client", "median_s", "max_s", "replayed_per_s"),
        min_delay=args.min_delay,
    )  # fmt: skip


if __name__ == "__main__":
    trio.run(main)
