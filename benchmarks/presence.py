"""What presence costs: N wsproxy.v1 members join one group within about a second, then
all reconnect at once; the relay's CPU time, the events it queued and what the members
received.

    python benchmarks/presence.py                       # 2,000 members, lists kept
    python benchmarks/presence.py --members 2000 --presence-limit 1000   # counts only

Every member reads everything throughout; a phase ends when every member's view says
the group has all N members again (from its welcome or a later event).
"""

from __future__ import annotations

import argparse
import json
import os

import trio
from burst import Member
from relay_process import metrics, start_relay


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def presence_events(port: int) -> int:
    return int((await metrics(port))["trio_wsproxy_presence_events_total"])


class Watcher:
    """One member's view: the group's size as its events last said, and what it got."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self.count = 0
        self.events = 0
        self.bytes = 0

    async def read(self, full: int, done: trio.Semaphore | None) -> None:
        try:
            while True:
                _opcode, payload = await self.member.next_payload()
                self.events += 1
                self.bytes += len(payload)
                if _opcode != 1:
                    continue  # (a ping, or the close of the phase)
                header = json.loads(payload[: payload.index(b"\n")])
                was_full = self.count == full
                self.count = header.get("count", self.count)
                if self.count == full and not was_full and done is not None:
                    done.release()
        except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def phase(port: int, pid: int, members: int, spread: float) -> dict[str, float]:
    """Join ``members`` v1 members over ``spread`` seconds; the figures until every one
    of them sees them all."""
    cpu, events = cpu_seconds(pid), await presence_events(port)
    ready = trio.Semaphore(members)
    for _ in range(members):
        await ready.acquire()
    watchers: list[Watcher] = []
    started = trio.current_time()
    async with trio.open_nursery() as nursery:

        async def join(n: int) -> None:
            await trio.sleep(spread * n / members)
            watcher = Watcher(await Member.join(port, f"m{n}", "big", "wsproxy.v1"))
            watchers.append(watcher)
            nursery.start_soon(watcher.read, members, ready)

        for n in range(members):
            nursery.start_soon(join, n)
        for _ in range(members):
            await ready.acquire()
        took = trio.current_time() - started
        result = {
            "seconds_until_every_view_is_full": round(took, 2),
            "relay_cpu_s": round(cpu_seconds(pid) - cpu, 2),
            "events_queued": await presence_events(port) - events,
            "events_per_member": round(sum(w.events for w in watchers) / members, 1),
            "kib_per_member": round(sum(w.bytes for w in watchers) / members / 1024, 1),
        }
        for watcher in watchers:
            await watcher.member.stream.aclose()
        nursery.cancel_scope.cancel()
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--presence-limit", type=int, default=None)
    args = parser.parse_args()
    limit = args.presence_limit if args.presence_limit is not None else args.members
    relay, _url, port = await start_relay("--presence-limit", str(limit))
    try:
        joins = await phase(port, relay.pid, args.members, spread=1.0)
        print(json.dumps({"phase": "join within 1 s", "members": args.members, **joins}))
        # All at once: every member of the previous phase closed, the new ones join
        # together (no spread).
        again = await phase(port, relay.pid, args.members, spread=0.0)
        print(json.dumps({"phase": "all reconnect at once", "members": args.members, **again}))
    finally:
        relay.terminate()
        await relay.wait()


if __name__ == "__main__":
    trio.run(main)
