"""The memory of a relay holding the histories of many groups at their bounds.

    python benchmarks/history_memory.py                       # 10,000 groups, 100 x 1 KiB
    python benchmarks/history_memory.py --groups 10000 --messages 1000 --size 100

Starts ``python -m trio_wsproxy serve --history-size SIZE --history-bytes BYTES`` (the
relay a process of its own; the relay-wide ``--max-history-bytes`` and
``--max-history-groups`` off unless given), joins one member to each of ``--groups`` groups, and has
each send ``--messages`` messages of ``--size`` bytes into its group (the messages reach
nobody, and every one is kept: the history's bounds are what is measured). Prints one
JSON line: the relay's resident memory with the members connected and nothing kept, and
once every message is in, and what that comes to per group and per kept byte. Needs
``ulimit -n`` above twice the group count.

With ``--backplane URL`` the relay is a cluster node: the histories live in Redis (its
``used_memory`` before and after is reported too), and the node keeps its copy of the
tail of each group's history (see docs/protocol.md, history on a cluster).
"""

from __future__ import annotations

import argparse
import json
import struct
import uuid

import trio
from burst import MASK, Member, rss_mib
from relay_process import metrics, start_relay

from trio_wsproxy.backplane.connection import RedisConnection
from trio_wsproxy.protocol.resp import RedisAddress


async def redis_used_mib(url: str) -> float:
    """Redis's ``used_memory``, in MiB."""
    address = RedisAddress.from_url(url)
    connection = await RedisConnection.connect(address, 5)
    async with trio.open_nursery() as nursery:
        await nursery.start(connection.run, address, 5)
        info = await connection.call("INFO", "memory")
        nursery.cancel_scope.cancel()
    assert isinstance(info, bytes)
    for line in info.decode().splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1]) / 2**20
    raise RuntimeError("INFO memory gave no used_memory")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=100, help="messages per group")
    parser.add_argument("--size", type=int, default=1024, help="bytes per message")
    parser.add_argument("--history-size", type=int, default=1000)
    parser.add_argument("--history-bytes", default="1MiB")
    parser.add_argument("--backplane", help="a Redis URL: the relay is a cluster node")
    # The relay-wide bounds (128 MiB and 10,000 histories by default) would cap the
    # default run (10,000 groups x 100 x 1 KiB): off unless given.
    parser.add_argument("--max-history-bytes", default="none")
    parser.add_argument("--max-history-groups", default="none")
    args = parser.parse_args()
    flags = ["--history-size", str(args.history_size), "--history-bytes", args.history_bytes]
    flags += ["--max-history-bytes", args.max_history_bytes]
    flags += ["--max-history-groups", args.max_history_groups]
    if args.backplane:
        prefix = f"bench-history-memory-{uuid.uuid4().hex[:8]}"
        flags += ["--backplane", args.backplane, "--backplane-prefix", prefix]
    process, _url, port = await start_relay(*flags)
    redis_before = redis_after = 0.0
    try:
        with trio.fail_after(1800):
            members = [await Member.join(port, "m", f"g{n}") for n in range(args.groups)]
            before, _ = rss_mib(process.pid)
            if args.backplane:
                redis_before = await redis_used_mib(args.backplane)
            payload = b"x" * args.size
            header = (
                struct.pack("!BBH", 0x82, 0x80 | 126, args.size)
                if args.size >= 126
                else struct.pack("!BB", 0x82, 0x80 | args.size)
            )
            burst = (header + MASK + payload) * args.messages
            for member in members:
                await member.stream.send_all(burst)
            wanted = args.groups * args.messages
            while True:  # /metrics has no event to await: a benchmark may poll
                if (await metrics(port))["trio_wsproxy_messages_total"] >= wanted:
                    break
                await trio.sleep(0.2)
            if args.backplane:
                # Redis takes the last of them a moment later: until its memory holds.
                while (now := await redis_used_mib(args.backplane)) != redis_after:
                    redis_after = now
                    await trio.sleep(1.0)
            after, peak = rss_mib(process.pid)
            for member in members:
                await member.stream.aclose()
    finally:
        process.kill()
    kept = args.groups * args.messages * args.size
    print(
        json.dumps(
            {
                "groups": args.groups,
                "messages_per_group": args.messages,
                "bytes_each": args.size,
                "history_size": args.history_size,
                "history_bytes": args.history_bytes,
                "rss_connected_mib": round(before, 1),
                "rss_with_histories_mib": round(after, 1),
                "peak_mib": round(peak, 1),
                "kib_per_group": round((after - before) * 1024 / args.groups, 1),
                "memory_per_payload_byte": round((after - before) * 2**20 / kept, 2),
                **(
                    {
                        "redis_before_mib": round(redis_before, 1),
                        "redis_after_mib": round(redis_after, 1),
                        "redis_per_payload_byte": round(
                            (redis_after - redis_before) * 2**20 / kept, 2
                        ),
                    }
                    if args.backplane
                    else {}
                ),
            }
        )
    )


if __name__ == "__main__":
    trio.run(main)
