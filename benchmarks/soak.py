"""Soak: thousands of members join, talk and leave for minutes; then the relay must be
empty and its memory back near where it started.

    python benchmarks/soak.py --members 2000 --seconds 300

Starts ``python -m trio_wsproxy serve`` on a free loopback port, keeps ``--members``
concurrent members cycling (join a random group, send and receive a few messages, leave;
a tenth of them leave by dropping TCP mid-message), reads the relay's memory from /proc
and its registry from /metrics, and prints one JSON line. The time is split into
``--rounds``; exits non-zero when the relay is not empty after every round or its memory
grew by more than ``--max-growth-mib`` from the end of the first round to the end of the
last (the first round brings the process to its working size, which the allocator keeps).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys

import trio
import trio_websocket
from relay_process import metrics, start_relay


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def member(url: str, groups: int, deadline: float, counts: dict[str, int]) -> None:
    rng = random.Random()
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    while trio.current_time() < deadline:
        group = f"soak-{rng.randrange(groups)}"
        ident = f"m{rng.getrandbits(48):x}"
        if rng.random() < 0.1:
            await rude_member(host, int(port), ident, group, counts)
            continue
        try:
            with trio.fail_after(30):
                async with trio_websocket.open_websocket_url(
                    f"{url}?id={ident}&groupName={group}", connect_timeout=10, disconnect_timeout=10
                ) as ws:
                    counts["joins"] += 1
                    for n in range(rng.randint(1, 5)):
                        payload = os.urandom(rng.choice((16, 200, 4000)))
                        await ws.send_message(payload if n % 2 else payload.hex())
                        counts["sent"] += 1
                        with trio.move_on_after(0.05):
                            while True:
                                await ws.get_message()
                                counts["received"] += 1
        except trio_websocket.ConnectionClosed as exc:
            # The relay closed us: note why (e.g. 4001 when this driver falls behind).
            key = f"closed_{exc.reason.code}"
            counts[key] = counts.get(key, 0) + 1
        except (trio_websocket.HandshakeError, OSError) as exc:
            key = f"error_{type(exc).__name__}"
            counts[key] = counts.get(key, 0) + 1
        except trio.TooSlowError:
            counts["stuck"] += 1
        await trio.sleep(rng.random() * 0.2)


async def rude_member(host: str, port: int, ident: str, group: str, counts: dict[str, int]) -> None:
    """Join, start a message, and drop TCP in the middle of it."""
    try:
        stream = await trio.open_tcp_stream(host, port)
        request = (
            f"GET /ws?id={ident}&groupName={group} HTTP/1.1\r\nHost: soak\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await stream.send_all(request.encode())
        with trio.move_on_after(1):
            await stream.receive_some(4096)
        # A masked binary frame announcing 1000 bytes, with only 10 of them.
        await stream.send_all(b"\x82\xfe\x03\xe8" + os.urandom(4) + os.urandom(10))
        await trio.aclose_forcefully(stream)
        counts["dropped"] += 1
    except OSError:
        counts["errors"] += 1


async def soak(
    members: int, groups: int, seconds: float, rounds: int, max_growth: float
) -> dict[str, object]:
    process, url, port = await start_relay()
    try:
        counts = dict.fromkeys(("joins", "sent", "received", "dropped", "stuck"), 0)
        baseline = rss_mib(process.pid)
        peak = baseline
        after: list[float] = []
        empty = True
        for _ in range(rounds):
            deadline = trio.current_time() + seconds / rounds
            async with trio.open_nursery() as nursery:
                for _ in range(members):
                    nursery.start_soon(member, url, groups, deadline, counts)
                while trio.current_time() < deadline:
                    await trio.sleep(0.5)
                    peak = max(peak, rss_mib(process.pid))
            # Dropped connections are noticed at once; give closes a moment to finish.
            await trio.sleep(1)
            figures = await metrics(port)
            empty &= figures["trio_wsproxy_members"] == 0 and figures["trio_wsproxy_groups"] == 0
            after.append(rss_mib(process.pid))
        # The first round raises memory to its working size (the allocator keeps freed
        # arenas); a leak shows as growth from one round's end to the next.
        growth = after[-1] - after[0]
        return {
            "members": members,
            "groups": groups,
            "seconds": seconds,
            "rounds": rounds,
            **counts,
            "relay_empty_after_each_round": empty,
            "rss_start_mib": round(baseline, 1),
            "rss_peak_mib": round(peak, 1),
            "rss_after_rounds_mib": [round(value, 1) for value in after],
            "rss_growth_after_first_round_mib": round(growth, 1),
            "ok": empty and counts["stuck"] == 0 and growth <= max_growth,
        }
    finally:
        process.terminate()
        await process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--rounds", type=int, default=3, help="rounds the time is split into")
    parser.add_argument("--max-growth-mib", type=float, default=5)
    args = parser.parse_args()
    result = trio.run(
        soak, args.members, args.groups, args.seconds, args.rounds, args.max_growth_mib
    )
    print(json.dumps(result), flush=True)
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
