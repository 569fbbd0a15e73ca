"""Small groups: many groups of a few dozen members blast empty messages flat out while
a canary pair in another group times each of its messages and /healthz is asked.

    python benchmarks/small_groups.py                            # 20 groups of 32, 10 s
    python benchmarks/small_groups.py -- --no-shared-poller      # relay flags after --
    python benchmarks/small_groups.py --relay-python OLD/bin/python
    python benchmarks/small_groups.py --relay-src CHECKOUT/src   # another tree's relay

Starts ``python -m trio_wsproxy serve`` on a free loopback port (``--relay-python`` runs
another installation's relay; ``--relay-src`` puts a source tree's ``trio_wsproxy`` first
on the relay's ``PYTHONPATH``, e.g. a worktree of an earlier commit; what follows ``--``
is passed to the relay). The first ``--senders`` members of each blasting group (one
by default) write pre-built masked frames in large batches, one Trio task each, as fast
as the relay reads them: one read of the relay's (64 KiB) holds about 10,900 empty
messages, each for every other member of the group. Every member also reads and
discards what it is sent, so that TCP does not push back on the relay and hide the
stall: one task empties every member's socket every 100 ms in large chunks, without
parsing (a task per socket woke for every few messages the relay wrote once its turns
were short, and took a whole core). Meanwhile two members of a canary group send
one numbered message every 20 ms (one-way latency, sender and receiver in this process,
one clock), and /healthz is asked every 100 ms on a new connection.

Prints a table and then one JSON line: the canary's one-way latency (median, p99, max),
the /healthz times (median, max), the deliveries and messages per second the relay made
(its /metrics counters, the canary's 50 messages/s included), the relay's CPU per
delivery (/proc), and the CPU of this load generator and of everything else on the
machine over the same window (on two cores the load generator competes with the relay).
A canary message or a /healthz answer still missing when the run ends counts at the
time it had waited so far, marked ``>=``.

With one sender per group each read of the relay's is one member's 10,900 messages for
31 recipients, 338,000 deliveries, and up to 20 such reads are ready at once; with
``--senders 32`` up to 640 are. The members that do not send cannot answer the relay's
pings (they do not parse what they read), so they send an unsolicited pong every
``HEARTBEAT`` seconds instead, which the relay counts as hearing from them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
from collections.abc import Sequence

import attrs
import trio
from burst import MASK, Member, frame, healthz
from compare import proc_cpu
from relay_process import metrics, start_relay

#: How often the canary sends, and /healthz is asked.
CANARY_EVERY = 0.02
PROBE_EVERY = 0.1
#: Bytes asked of a blasting member's socket per read: reads are few and cheap.
READ_CHUNK = 1 << 18
#: How often every blasting member's socket is emptied. The relay writes each member
#: little (3.5 million empty messages a second over 640 members is 11 KB/s each), far
#: less than the kernel buffers between them hold for this long, so the relay never
#: waits for these readers. Each read costs about 8 µs of system time here: reading on
#: every wake-up of each socket took a core once the relay wrote in small pieces; 640
#: sockets read ten times a second take about 6 % of one.
READ_EVERY = 0.1
#: Upper bounds on loop counts (each loop also ends at its deadline).
MAX_WRITES = 10**8
MAX_READS = 10**8
#: The kernel's send buffer of a blasting socket: the relay reads far slower than any
#: sender writes, so a bigger one only holds more of the machine's memory.
SEND_BUFFER = 1 << 18
#: How often the members that do not send say something (the relay pings a member
#: after 30 s of silence by default).
HEARTBEAT = 10.0
PONG = b"\x8a\x80" + MASK  # an empty pong, masked (zero mask)


@attrs.define
class Sample:
    """Counters read at one instant: the relay's, this process's and the machine's."""

    at: float
    deliveries: float
    messages: float
    relay_cpu: float
    loadgen_cpu: float
    machine_busy: float
    received_bytes: int


@attrs.define
class Load:
    """What the blasting members saw: bytes read, and members the relay closed."""

    received_bytes: int = 0
    closed: int = 0


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores, /proc/stat)."""
    with open("/proc/stat") as stat:
        ticks = [int(n) for n in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU seconds this process (the load generator) has used."""
    times = os.times()
    return times.user + times.system


async def sample(port: int, pid: int, load: Load, deadline: float) -> Sample | None:
    """The relay's counters from /metrics and the CPU figures, read the moment the
    relay's answer arrives (it renders and writes it in one go); None if it did not
    answer by ``deadline``."""
    with trio.move_on_at(deadline):
        figures = await metrics(port)
        return Sample(
            at=trio.current_time(),
            deliveries=figures["trio_wsproxy_deliveries_total"],
            messages=figures["trio_wsproxy_messages_total"],
            relay_cpu=proc_cpu(pid),
            loadgen_cpu=own_cpu(),
            machine_busy=machine_busy(),
            received_bytes=load.received_bytes,
        )
    return None


def ticks(start: float, every: float, stop: float) -> int:
    """How many ticks of ``every`` seconds fit between ``start`` and ``stop``, plus one."""
    return int((stop - start) / every) + 1


async def next_tick(start: float, every: float) -> None:
    """Sleep until the next tick of ``every`` seconds from ``start`` (strictly after
    now); ticks already past are skipped, so a late loop does not catch up in a burst."""
    now = trio.current_time()
    await trio.sleep_until(start + every * (math.floor((now - start) / every) + 1))


async def blast(member: Member, batch: bytes, stop: float) -> None:
    """Write ``batch`` over and over until ``stop``."""
    with trio.move_on_at(stop):
        for _ in range(MAX_WRITES):
            await member.stream.send_all(batch)


def drain(fd: int, chunks: list[bytearray], load: Load) -> bool:
    """Read and drop what is waiting on ``fd`` (a bounded amount); False once the relay
    has closed it."""
    for _ in range(64):
        try:
            count = os.readv(fd, chunks)
        except BlockingIOError:
            return True
        except OSError:
            count = 0
        if not count:
            load.closed += 1
            return False
        load.received_bytes += count
        if count < READ_CHUNK:
            return True
    return True


async def discard(members: list[Member], load: Load) -> None:
    """Every ``READ_EVERY``, read and drop all the relay has sent ``members`` (until
    cancelled): plain non-blocking reads of their sockets in one task, no wake-up per
    socket."""
    chunks = [bytearray(READ_CHUNK)]  # every read is dropped at once
    fds = [member.stream.socket.fileno() for member in members]
    for _ in range(MAX_READS):
        fds = [fd for fd in fds if drain(fd, chunks, load)]
        await trio.sleep(READ_EVERY)


async def heartbeat(silent: list[Member], start: float, until: float) -> None:
    """Send each silent member's unsolicited pong every ``HEARTBEAT`` seconds."""
    for _ in range(ticks(start, HEARTBEAT, until)):
        for member in silent:
            await member.stream.send_all(PONG)
        await next_tick(start, HEARTBEAT)
        if trio.current_time() >= until:
            return


@attrs.define
class Canary:
    """A pair in a group of its own: ping sends a numbered message every
    ``CANARY_EVERY``; pong notes how long each took to arrive."""

    ping: Member
    pong: Member
    sent: dict[int, float] = attrs.field(factory=dict)
    latencies: list[float] = attrs.field(factory=list)
    sending: bool = True
    receiving: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    async def send(self, start: float, stop: float) -> None:
        for number in range(ticks(start, CANARY_EVERY, stop)):
            await next_tick(start, CANARY_EVERY)
            if trio.current_time() >= stop:
                break
            self.sent[number] = trio.current_time()
            await self.ping.stream.send_all(frame(str(number).encode()))
        self.sending = False
        if not self.sent:
            self.receiving.cancel()

    async def receive(self, until: float) -> None:
        """Note arrivals until every message sent has arrived, or ``until``."""
        self.receiving.deadline = until
        with self.receiving:
            for _ in range(MAX_READS):
                opcode, payload = await self.pong.next_payload()
                if opcode == 1:
                    self.latencies.append(trio.current_time() - self.sent.pop(int(payload)))
                    if not self.sending and not self.sent:
                        return

    def missing(self, now: float) -> list[float]:
        """How long each message that never arrived has waited by ``now``."""
        return [now - at for at in self.sent.values()]


async def probe(
    port: int, start: float, stop: float, until: float, times: list[float], cut: list[float]
) -> None:
    """Ask /healthz every ``PROBE_EVERY`` until ``stop``, each on a new connection and
    without waiting for the answers before (a stalled relay has many outstanding); an
    answer still missing at ``until`` goes to ``cut`` with its wait so far."""

    async def ask() -> None:
        asked = trio.current_time()
        with trio.move_on_at(until):
            times.append(await healthz(port))
            return
        cut.append(trio.current_time() - asked)

    async with trio.open_nursery() as asking:
        for _ in range(ticks(start, PROBE_EVERY, stop)):
            await next_tick(start, PROBE_EVERY)
            if trio.current_time() >= stop:
                return
            asking.start_soon(ask)


def quantile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def relay_module(python: str) -> str:
    """Where the relay's ``trio_wsproxy`` is imported from (with this environment)."""
    done = subprocess.run(
        [python, "-c", "import trio_wsproxy; print(trio_wsproxy.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


async def run(args: argparse.Namespace) -> Result:
    """Start the relay, measure, stop the relay (everything within a time limit)."""
    process, _url, port = await start_relay(*args.relay_args, python=args.relay_python)
    try:
        with trio.fail_after(args.seconds + args.grace + 120 + args.groups * args.size * 0.05):
            return await measure(args, port, process.pid)
    finally:
        process.kill()
        with trio.CancelScope(shield=True, deadline=trio.current_time() + 10):
            await process.wait()


async def measure(args: argparse.Namespace, port: int, pid: int) -> Result:
    """Join the members, blast for ``args.seconds`` while the canary and the prober
    run, and wait up to ``args.grace`` more for their last messages and answers."""
    groups = [
        [await Member.join(port, f"g{g}m{m}", f"small{g}") for m in range(args.size)]
        for g in range(args.groups)
    ]
    ping = await Member.join(port, "ping", "canary")
    canary = Canary(ping, await Member.join(port, "pong", "canary"))
    senders = [member for group in groups for member in group[: args.senders]]
    silent = [member for group in groups for member in group[args.senders :]]
    for member in senders:
        member.stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    one = frame(b"x" * args.payload)
    batch = one * (args.batch_kib * 1024 // len(one))
    load = Load()
    await trio.sleep(0.3)  # let the joins settle on the relay
    healthz_times: list[float] = []
    healthz_cut: list[float] = []
    async with trio.open_nursery() as readers:
        readers.start_soon(discard, [member for group in groups for member in group], load)
        before = await sample(port, pid, load, trio.current_time() + 10)
        if before is None:
            raise RuntimeError("the idle relay did not answer /metrics within 10 s")
        start = trio.current_time()
        stop = start + args.seconds
        until = stop + args.grace
        after: list[Sample | None] = [None]
        readers.start_soon(heartbeat, silent, start, until)

        async def sample_at_stop() -> None:
            await trio.sleep_until(stop)
            after[0] = await sample(port, pid, load, until)

        async with trio.open_nursery() as measured:
            for member in senders:
                measured.start_soon(blast, member, batch, stop)
            measured.start_soon(canary.receive, until)
            measured.start_soon(canary.send, start, stop)
            measured.start_soon(probe, port, start, stop, until, healthz_times, healthz_cut)
            measured.start_soon(sample_at_stop)
        ended = trio.current_time()
        readers.cancel_scope.cancel()
    return Result(
        canary=Times(canary.latencies, canary.missing(ended)),
        healthz=Times(healthz_times, healthz_cut),
        rates=Rates.between(before, after[0], args.payload) if after[0] is not None else None,
        members_closed_by_relay=load.closed,
    )


@attrs.frozen
class Times:
    """Waits in seconds (messages' one-way latencies, or /healthz answers); ``missing``
    of them never ended and count at how long they had waited by the end."""

    ended: list[float]
    missing: list[float]

    def figures(self, prefix: str) -> dict[str, float | int | None]:
        every = self.ended + self.missing

        def ms(value: float) -> float:
            return round(value * 1000, 1)

        return {
            f"{prefix}_count": len(every),
            f"{prefix}_missing": len(self.missing),
            f"{prefix}_p50_ms": ms(statistics.median(every)) if every else None,
            f"{prefix}_p99_ms": ms(quantile(every, 0.99)) if every else None,
            f"{prefix}_max_ms": ms(max(every)) if every else None,
        }


@attrs.frozen
class Rates:
    """The relay's work between two samples, and the CPU it and the rest took."""

    window_s: float
    deliveries_per_s: int
    messages_per_s: int
    received_by_loadgen_per_s: int
    relay_cpu_s: float
    relay_cpu_us_per_delivery: float | None
    loadgen_cpu_s: float
    other_cpu_s: float

    @classmethod
    def between(cls, before: Sample, after: Sample, payload: int) -> Rates:
        wall = after.at - before.at
        deliveries = after.deliveries - before.deliveries
        relay_cpu = after.relay_cpu - before.relay_cpu
        loadgen_cpu = after.loadgen_cpu - before.loadgen_cpu
        received = (after.received_bytes - before.received_bytes) / (2 + payload)
        return cls(
            window_s=round(wall, 2),
            deliveries_per_s=round(deliveries / wall),
            messages_per_s=round((after.messages - before.messages) / wall),
            received_by_loadgen_per_s=round(received / wall),
            relay_cpu_s=round(relay_cpu, 2),
            relay_cpu_us_per_delivery=(
                round(relay_cpu / deliveries * 1e6, 3) if deliveries else None
            ),
            loadgen_cpu_s=round(loadgen_cpu, 2),
            other_cpu_s=round(
                after.machine_busy - before.machine_busy - relay_cpu - loadgen_cpu, 2
            ),
        )


@attrs.frozen
class Result:
    """One run's figures; ``rates`` is None if the relay never answered /metrics."""

    canary: Times
    healthz: Times
    rates: Rates | None
    members_closed_by_relay: int

    def figures(self) -> dict[str, object]:
        rates = attrs.asdict(self.rates) if self.rates is not None else {}
        return {
            **self.canary.figures("canary"),
            **self.healthz.figures("healthz"),
            **rates,
            "members_closed_by_relay": self.members_closed_by_relay,
        }


def table(args: argparse.Namespace, result: Result) -> str:
    """The run's figures as a few lines of text."""

    def row(name: str, times: Times, p99: bool) -> str:
        every = times.ended + times.missing
        if not every:
            return f"{name:24}{'-':>10}"
        cells = [statistics.median(every), quantile(every, 0.99) if p99 else None, max(every)]
        text = [f"{value * 1000:,.1f}" if value is not None else "" for value in cells]
        if times.missing:
            text[2] = ">=" + text[2]
        return f"{name:24}{text[0]:>10}{text[1]:>10}{text[2]:>12}   {len(every)}"

    relay = " ".join(args.relay_args) or "defaults"
    lines = [
        f"{args.groups} groups x {args.size} members ({args.senders} sending), "
        f"{args.payload}-byte messages, {args.seconds:g} s; relay: {relay}",
        f"{'':24}{'median':>10}{'p99':>10}{'max':>12}   count",
        row("canary latency (ms)", result.canary, p99=True)
        + f" messages, {len(result.canary.missing)} never arrived",
        row("/healthz (ms)", result.healthz, p99=False)
        + f" probes, {len(result.healthz.missing)} unanswered",
    ]
    rates = result.rates
    if rates is not None:
        lines += [
            f"relayed: {rates.deliveries_per_s:,} deliveries/s, {rates.messages_per_s:,} "
            f"messages/s (the load generator read {rates.received_by_loadgen_per_s:,}/s)",
            f"relay CPU: {rates.relay_cpu_s} s over {rates.window_s} s "
            f"({rates.relay_cpu_s / rates.window_s:.0%} of a core), "
            f"{rates.relay_cpu_us_per_delivery} us per delivery",
            f"load generator CPU: {rates.loadgen_cpu_s} s; everything else: "
            f"{rates.other_cpu_s} s (of {os.cpu_count()} cores x {rates.window_s} s)",
        ]
    else:
        lines.append("the relay did not answer /metrics before the run ended: no rates")
    if result.members_closed_by_relay:
        lines.append(f"the relay closed {result.members_closed_by_relay} blasting members")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=20, help="blasting groups")
    parser.add_argument("--size", type=int, default=32, help="members per blasting group")
    parser.add_argument("--senders", type=int, default=1, help="members of each group that send")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long they blast")
    parser.add_argument("--payload", type=int, default=0, help="bytes per message (0-125)")
    parser.add_argument("--batch-kib", type=int, default=256, help="KiB per sender write")
    parser.add_argument(
        "--grace",
        type=float,
        default=15.0,
        help="seconds after the blast for late canary messages and /healthz answers",
    )
    parser.add_argument("--relay-python", default=sys.executable, help="the relay's Python")
    parser.add_argument("--relay-src", help="a source tree put first on the relay's path")
    parser.add_argument("relay_args", nargs="*", help="relay flags, after --")
    args = parser.parse_args()
    if not 0 <= args.payload <= 125:
        parser.error("--payload: 0 to 125 bytes (one short frame)")
    if not 1 <= args.senders <= args.size or args.groups < 1 or args.seconds <= 0:
        parser.error("need at least one group, 1 <= --senders <= --size, --seconds > 0")
    if args.relay_src:
        # The relay inherits this process's environment.
        path = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [args.relay_src, path]))
    module = relay_module(args.relay_python)
    result = trio.run(run, args)
    print(table(args, result))
    print(json.dumps({"relay_module": module, **vars(args), **result.figures()}))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
