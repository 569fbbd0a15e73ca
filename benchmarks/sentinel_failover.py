"""Redis Sentinel failovers under traffic: what each costs the members of a cluster with
history on, and that nothing is lost without a signal.

    python benchmarks/sentinel_failover.py                       # every scenario, 3 rounds
    python benchmarks/sentinel_failover.py --scenario kill-master --clients 50 --rate 1000

Each round starts three Redis servers (a master, two replicas) and three sentinels on free
ports (down-after-milliseconds 400, failover-timeout 2000: ``tests/sentinelset.py``), then
two relay processes (A, B) with ``--backplane redis+sentinel://...`` and
``--history-size``. ``--clients`` Python clients join the group with the URLs ``[A, B]``
or ``[B, A]`` (half each); a sender sends numbered messages at ``--rate`` a second. Once
every client has the first ones, the scenario's event happens:

- ``kill-master``: the master is killed with SIGKILL;
- ``kill-sentinel``: one sentinel is killed with SIGKILL (the nodes watch another);
- ``pause-master``: the master is stopped (SIGSTOP) until the sentinels have promoted a
  replica and the failover timeout has passed, then resumed: it comes back believing it
  is the master until the sentinels make it a replica; the nodes must not follow it.

The sender goes on for ``--after`` seconds after the cluster flows again. Figures: the
time from the event until the sentinels name the new master (``failover_s``, polled every
50 ms), the time from the event to a client's first new message (median and slowest), messages
delivered, members that recovered (and messages replayed), members told they could not
(``epoch_changed``...), and ``silent``: messages some member got that another skipped
without being told — it must be 0 (a client slower than 5 s to get a new message has its
connections and closes printed to stderr); and (``pause-master``) how long the old master
believed it was the master after it resumed (``demoted_s``: until ``ROLE`` says slave).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from relay_process import report_rounds, start_relay

from sentinelset import FAILOVER_TIMEOUT_MS, SentinelSet
from trio_wsproxy import Client, ClientConfig, Disconnected, Incoming, Resumed, open_client

SCENARIOS = ("kill-master", "kill-sentinel", "pause-master")
WARMUP = 50
#: A client that takes longer than this to get a new message has its story printed.
SLOW = 5.0


class Seen:
    """What one client got: numbers, and the recovery answers between them."""

    def __init__(self) -> None:
        self.numbers: list[int] = []
        self.times: list[float] = []
        #: (index into numbers where it came, recovered, missed, reason)
        self.answers: list[tuple[int, bool, int, str | None]] = []
        #: (time, what) of each connection made and lost, for the slowest client's story.
        self.story: list[tuple[float, str]] = []

    def silent_gaps(self, everything: set[int]) -> int:
        """Messages of the group (someone got them) in this client's span that it skipped
        without a not-recovered answer between its neighbours."""
        if not self.numbers:
            return 0
        got = set(self.numbers)
        untold = 0
        for index in range(1, len(self.numbers)):
            before, after = self.numbers[index - 1], self.numbers[index]
            skipped = [n for n in range(before + 1, after) if n in everything and n not in got]
            if skipped and not any(
                i == index and not recovered for i, recovered, _, _ in self.answers
            ):
                untold += len(skipped)
        return untold


async def one_round(scenario: str, clients: int, rate: float, after: float) -> dict[str, float]:
    prefix = f"bench-sentinel-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as directory:
        servers = SentinelSet(Path(directory))
        servers.start()
        try:
            await servers.ready()
            return await _measure(servers, scenario, prefix, clients, rate, after)
        finally:
            servers.stop()


async def _measure(
    servers: SentinelSet, scenario: str, prefix: str, clients: int, rate: float, after: float
) -> dict[str, float]:
    flags = ("--backplane", servers.url(), "--backplane-prefix", prefix, "--node-ttl", "3",
             "--history-size", "100000")  # fmt: skip
    node_a, url_a, _ = await start_relay(*flags)
    node_b, url_b, _ = await start_relay(*flags)
    seen = {f"c{n}": Seen() for n in range(clients)}
    warm = trio.Event()
    progress = [trio.Event()]  # set (and replaced) whenever a client gets a message
    event_at = 0.0
    sent = 0
    master = servers.redis[0].port
    switched = demoted = 0.0
    config = ClientConfig(reconnect_min_delay=0.1, reconnect_max_delay=1.0)
    try:
        async with trio.open_nursery() as nursery:

            async def member(name: str, urls: list[str], *, task_status: trio.TaskStatus) -> None:
                record = seen[name]

                def connected(client: Client) -> None:
                    record.story.append((trio.current_time(), f"connected to {client.url}"))

                def lost(gone: Disconnected) -> None:
                    record.story.append((trio.current_time(), f"closed {gone.code}: {gone.reason}"))

                async with open_client(
                    urls, group="g", id=name, config=config, on_connect=connected,
                    on_disconnect=lost,
                ) as c:  # fmt: skip

                    async def on_bytes(value: bytes, _: Incoming[bytes]) -> None:
                        record.numbers.append(int.from_bytes(value[:4], "big"))
                        record.times.append(trio.current_time())
                        progress[0].set()
                        progress[0] = trio.Event()
                        if all(len(s.numbers) >= WARMUP for s in seen.values()):
                            warm.set()

                    async def on_resumed(value: Resumed, _: object) -> None:
                        record.answers.append(
                            (len(record.numbers), value.recovered, value.missed, value.reason)
                        )

                    c.on(bytes, on_bytes)
                    c.on(Resumed, on_resumed)
                    task_status.started()
                    await trio.sleep_forever()

            for n, name in enumerate(seen):
                urls = [url_a, url_b] if n % 2 else [url_b, url_a]
                await nursery.start(member, name, urls)

            async def send(*, task_status: trio.TaskStatus) -> None:
                nonlocal sent
                async with open_client([url_a, url_b], group="g", id="sender", config=config) as s:
                    task_status.started()
                    while True:
                        try:
                            await s.send(sent.to_bytes(4, "big"))
                            sent += 1
                        except Exception:  # (away: the client reconnects)
                            pass
                        await trio.sleep(1 / rate)

            await nursery.start(send)
            with trio.fail_after(60):
                await warm.wait()
            event_at = trio.current_time()
            before = sent
            if scenario == "kill-master":
                servers.kill_master(master)
                await servers.wait_master_not(master)
                switched = trio.current_time() - event_at
            elif scenario == "kill-sentinel":
                servers.sentinels[0].stop()
            else:
                servers.pause(master)
                await servers.wait_master_not(master)
                switched = trio.current_time() - event_at
                # (Paused past the failover timeout too, whichever is later.)
                await trio.sleep_until(event_at + FAILOVER_TIMEOUT_MS / 1000)
            # Flowing again: every client got a message sent after the event.
            with trio.fail_after(60):
                while not all(any(n > before for n in s.numbers) for s in seen.values()):
                    await progress[0].wait()
            if scenario == "pause-master":
                servers.resume(master)
                resumed = trio.current_time()
                with trio.fail_after(60):
                    while True:  # (another process's state: no event to wait for)
                        if await servers.role(master) == b"slave":
                            demoted = trio.current_time() - resumed
                            break
                        await trio.sleep(0.1)
            await trio.sleep(after)
            last = sent - 1
            with trio.fail_after(30):
                while not all(s.numbers and s.numbers[-1] >= last for s in seen.values()):
                    await progress[0].wait()
            nursery.cancel_scope.cancel()
    finally:
        for node in (node_a, node_b):
            node.kill()
    everything = set().union(*(set(s.numbers) for s in seen.values()))
    firsts = {
        name: next(t for n, t in zip(s.numbers, s.times, strict=True) if n > before) - event_at
        for name, s in seen.items()
    }
    flowing = sorted(firsts.values())
    slowest = max(firsts, key=firsts.__getitem__)
    if firsts[slowest] > SLOW:
        # (A client this slow is worth a look: what happened to it, from the event on.)
        print(f"slowest client {slowest}: first new message at {firsts[slowest]:.2f}s",
              file=sys.stderr)  # fmt: skip
        for at, what in seen[slowest].story:
            print(f"  {at - event_at:+.3f}s {what}", file=sys.stderr)
    answers = [a for s in seen.values() for a in s.answers]
    for name, s in seen.items():
        assert s.numbers == sorted(set(s.numbers)), f"{name}: a message twice or out of order"
    return {
        "failover_s": round(switched, 3),
        "flowing_median_s": round(statistics.median(flowing), 3),
        "flowing_max_s": round(flowing[-1], 3),
        "sent": sent,
        "delivered": sum(len(s.numbers) for s in seen.values()),
        "recovered": sum(1 for a in answers if a[1]),
        "replayed": sum(a[2] for a in answers if a[1]),
        "told_not_recovered": sum(1 for a in answers if not a[1]),
        "silent": sum(s.silent_gaps(everything) for s in seen.values()),
        "demoted_s": round(demoted, 3),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=SCENARIOS, action="append")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rate", type=float, default=200.0, help="messages a second")
    parser.add_argument("--after", type=float, default=2.0, help="seconds of traffic after")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for scenario in args.scenario or SCENARIOS:
        await report_rounds(
            f"sentinel {scenario}", args.rounds,
            lambda s=scenario: one_round(s, args.clients, args.rate, args.after),
            ("failover_s", "flowing_median_s", "flowing_max_s", "delivered", "recovered",
             "told_not_recovered", "silent", "demoted_s"),
            clients=args.clients, rate=args.rate,
        )  # fmt: skip


if __name__ == "__main__":
    trio.run(main)
