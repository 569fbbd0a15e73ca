"""What the back end's publish hook costs: one HTTP call per message, measured.

    python benchmarks/publish_hook.py --messages 2000 --rounds 3

Starts a back end (trio + h11 on a loopback port, answering every hook at once with
``{"allow": true}``) and, in turn, two relays (``python -m trio_wsproxy serve``): one with
``--publish-hook`` pointed at it, one without. Through each, a pair in one group:

- ``pingpong``: one message in flight (a two-player game's move and its answer): round
  trips per second and the median round trip;
- ``burst``: the sender writes ``--messages`` messages at once and the other member counts
  them: messages per second.

With the relay's CPU (user + system, from /proc) per message for each. Prints one JSON
line per round and relay, then the medians. The back end runs in this process: its own
time is in neither relay's CPU.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys

import h11
import trio
from burst import Member, frame
from relay_process import metrics, start_relay

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def answer_hooks(stream: trio.SocketStream) -> None:
    """A back end that allows every message at once (keep-alive)."""
    conn = h11.Connection(h11.SERVER)
    body = b'{"allow":true}'
    headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
            elif isinstance(event, h11.EndOfMessage):
                await stream.send_all(
                    conn.send(h11.Response(status_code=200, headers=headers))
                    + conn.send(h11.Data(data=body))
                    + conn.send(h11.EndOfMessage())
                )
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return
    except (trio.BrokenResourceError, h11.RemoteProtocolError):
        return


async def one_relay(flags: list[str], messages: int, pairs_port: dict[str, float]) -> None:
    process, _, port = await start_relay(*flags)
    try:
        a = await Member.join(port, "a", "game-1")
        b = await Member.join(port, "b", "game-1")
        with trio.fail_after(60):
            # Ping-pong: a sends, b answers, one message in flight.
            rounds = max(200, messages // 4)
            cpu = cpu_seconds(process.pid)
            times = []
            for n in range(rounds):
                started = trio.current_time()
                await a.stream.send_all(frame(b"%d" % n))
                await b.next_payload()
                await b.stream.send_all(frame(b"ok"))
                await a.next_payload()
                times.append(trio.current_time() - started)
            pairs_port["pingpong_per_s"] = rounds / sum(times)
            pairs_port["pingpong_p50_ms"] = statistics.median(times) * 1000
            pairs_port["pingpong_cpu_us_per_msg"] = (
                (cpu_seconds(process.pid) - cpu) / (2 * rounds) * 1e6
            )
            # Burst: all at once.
            cpu = cpu_seconds(process.pid)
            started = trio.current_time()
            await a.stream.send_all(b"".join(frame(b"move %d" % n) for n in range(messages)))
            for _ in range(messages):
                await b.next_payload()
            elapsed = trio.current_time() - started
            pairs_port["burst_per_s"] = messages / elapsed
            pairs_port["burst_cpu_us_per_msg"] = (cpu_seconds(process.pid) - cpu) / messages * 1e6
            figures = await metrics(port)
            pairs_port["relayed"] = figures.get("trio_wsproxy_messages_total", 0.0)
    finally:
        process.terminate()
        await process.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, answer_hooks, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/hooks/publish"
        results: dict[str, list[dict[str, float]]] = {"hooked": [], "unhooked": []}
        for _ in range(args.rounds):
            for name, flags in (("hooked", ["--publish-hook", url]), ("unhooked", [])):
                figures: dict[str, float] = {}
                await one_relay(flags, args.messages, figures)
                results[name].append(figures)
                print(json.dumps({"relay": name, **figures}), flush=True)
        summary = {
            name: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
            for name, rounds in results.items()
        }
        hooked, unhooked = summary["hooked"], summary["unhooked"]
        summary["ratios"] = {
            "pingpong_per_s": hooked["pingpong_per_s"] / unhooked["pingpong_per_s"],
            "burst_per_s": hooked["burst_per_s"] / unhooked["burst_per_s"],
            "pingpong_cpu_us_per_msg": hooked["pingpong_cpu_us_per_msg"]
            / max(unhooked["pingpong_cpu_us_per_msg"], 1e-9),
        }
        print(json.dumps({"summary": summary, "python": sys.version.split()[0]}), flush=True)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
