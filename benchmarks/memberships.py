"""Many groups on one connection: what a membership costs the relay, and what churn does.

    python benchmarks/memberships.py memory --members 100 --groups 100
    python benchmarks/memberships.py churn --members 10000 --groups 20 --backplane redis://127.0.0.1:6379/0
    python benchmarks/memberships.py traffic --members 1000 --groups 10 --seconds 20

``memory``: M wsproxy.v1 connections each join K groups; the relay's resident memory
(``VmRSS``) after the connections and after the joins, per membership; then the same
M x K memberships as one connection per group, per connection. ``churn``: M members
(one connection each) join K groups each and leave them again, all at once; the relay's
CPU time (user + system), its memory before and after, and with ``--backplane`` the
Redis commands the whole churn cost (``INFO stats`` ``total_commands_processed``).
``traffic``: M members each in K groups of 100 (M x K / 100 groups), one message per group
per second (from one of its members, in turn), for ``--seconds``: deliveries per second
and the relay's CPU per delivery, once multiplexed (M connections, each joining its K
groups) and once as one connection per group (M x K connections).

Starts ``python -m trio_wsproxy serve`` on a free loopback port (its flags after
``--``). Prints one JSON line. Needs ``ulimit -n`` above twice the connection count.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import trio
from burst import Member, frame
from relay_process import start_relay

from trio_wsproxy.protocol import v1


def resident(pid: int) -> int:
    """The process's resident memory, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def answers(member: Member, count: int, kind: type) -> None:
    """Read until ``count`` events of ``kind`` came (presence and the rest skipped)."""
    seen = 0
    while seen < count:
        _, payload = await member.next_payload()
        what, _ = v1.decode_relay_message(payload)
        if isinstance(what, kind):
            seen += 1


async def connect(port: int, names: list[tuple[str, str]]) -> list[Member]:
    """A v1 connection per (id, group), each past its welcome."""
    members = []
    for member_id, group in names:
        member = await Member.join(port, member_id, group, v1.SUBPROTOCOL)
        await answers(member, 1, v1.Welcome)
        members.append(member)
    return members


async def join_all(members: list[Member], groups: list[list[str]], leave: bool = False) -> None:
    async def one(member: Member, names: list[str]) -> None:
        await member.stream.send_all(b"".join(frame(v1.join_header(name)) for name in names))
        await answers(member, len(names), v1.Welcome)
        if leave:
            await member.stream.send_all(b"".join(frame(v1.leave_header(name)) for name in names))
            await answers(member, len(names), v1.Left)

    async with trio.open_nursery() as nursery:
        for member, names in zip(members, groups, strict=True):
            nursery.start_soon(one, member, names)


async def redis_commands(url: str) -> int:
    from trio_wsproxy.backplane.connection import RedisConnection
    from trio_wsproxy.protocol.resp import RedisAddress

    address = RedisAddress.from_url(url)
    connection = await RedisConnection.connect(address, 5)
    async with trio.open_nursery() as nursery:
        await nursery.start(connection.run, address, 5)
        info = await connection.call("INFO", "stats")
        nursery.cancel_scope.cancel()
    assert isinstance(info, bytes)
    for line in info.decode().splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":")[1])
    raise RuntimeError("no total_commands_processed")


async def memory(args: argparse.Namespace, flags: list[str]) -> dict[str, object]:
    m, k = args.members, args.groups
    process, _, port = await start_relay(*flags)
    try:
        base = resident(process.pid)
        members = await connect(port, [(f"m{i}", "home") for i in range(m)])
        connected = resident(process.pid)
        await join_all(members, [[f"g{j}" for j in range(k)] for _ in range(m)])
        joined = resident(process.pid)
    finally:
        process.kill()
        await process.wait()
    process, _, port = await start_relay(*flags)
    try:
        alone = resident(process.pid)
        await connect(port, [(f"m{i}", f"g{j}") for i in range(m) for j in range(k)])
        sockets = resident(process.pid)
    finally:
        process.kill()
        await process.wait()
    return {
        "members": m,
        "groups_each": k,
        "per_connection_bytes": round((connected - base) / m),
        "per_membership_bytes": round((joined - connected) / (m * k)),
        "per_connection_per_group_bytes": round((sockets - alone) / (m * k)),
    }


async def churn(args: argparse.Namespace, flags: list[str]) -> dict[str, object]:
    m, k = args.members, args.groups
    if args.backplane:
        flags = [*flags, "--backplane", args.backplane, "--backplane-prefix", f"churn{os.getpid()}"]
    process, _, port = await start_relay(*flags)
    try:
        members = await connect(port, [(f"m{i}", "home") for i in range(m)])
        before_memory, before_cpu = resident(process.pid), cpu_seconds(process.pid)
        before_redis = await redis_commands(args.backplane) if args.backplane else 0
        started = trio.current_time()
        # Each member's groups overlap with its neighbours': groups of about 100.
        span = max(1, m * k // 100)
        groups = [[f"g{(i + j * 7919) % span}" for j in range(k)] for i in range(m)]
        await join_all(members, groups, leave=True)
        took = trio.current_time() - started
        after_memory, after_cpu = resident(process.pid), cpu_seconds(process.pid)
        after_redis = await redis_commands(args.backplane) if args.backplane else 0
    finally:
        process.kill()
        await process.wait()
    changes = 2 * m * k
    result: dict[str, object] = {
        "members": m,
        "groups_each": k,
        "seconds": round(took, 2),
        "joins_and_leaves_per_s": round(changes / took),
        "relay_cpu_s": round(after_cpu - before_cpu, 2),
        "relay_cpu_us_per_change": round((after_cpu - before_cpu) / changes * 1e6, 1),
        "relay_rss_before_mib": round(before_memory / 2**20, 1),
        "relay_rss_after_mib": round(after_memory / 2**20, 1),
    }
    if args.backplane:
        result["redis_commands"] = after_redis - before_redis
        result["redis_commands_per_change"] = round((after_redis - before_redis) / changes, 2)
    return result


async def measure(
    pid: int,
    readers: list[tuple[Member, int]],
    senders: dict[str, list[tuple[Member, bytes]]],
    seconds: float,
) -> tuple[float, int]:
    """Each group gets a message a second (its members send in turn) for ``seconds``:
    the relay's CPU seconds meanwhile, and the messages its members got."""
    deliveries = [0]

    async def read(member: Member) -> None:
        while True:
            opcode, payload = await member.next_payload()
            if opcode == 1 and not payload.startswith(b'{"event"'):
                deliveries[0] += 1

    async def send() -> None:
        turn = 0
        while True:
            for members in senders.values():
                member, header = members[turn % len(members)]
                await member.stream.send_all(frame(header + b"x" * 32))
            turn += 1
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        for member, _ in readers:
            nursery.start_soon(read, member)
        await trio.sleep(2)  # (presence settles)
        cpu, counted = cpu_seconds(pid), deliveries[0]
        nursery.start_soon(send)
        await trio.sleep(seconds)
        used, delivered = cpu_seconds(pid) - cpu, deliveries[0] - counted
        nursery.cancel_scope.cancel()
    return used, delivered


async def traffic(args: argparse.Namespace, flags: list[str]) -> dict[str, object]:
    m, k, seconds = args.members, args.groups, args.seconds
    count = max(1, m * k // 100)
    # Member i is in groups (i + j * stride) % count, j < k: groups of about 100.
    stride = max(1, count // k)
    plan = [[f"g{(i + j * stride) % count}" for j in range(k)] for i in range(m)]
    result: dict[str, object] = {"members": m, "groups_each": k, "groups": count}
    for shape in ("multiplexed", "socket_per_group"):
        process, _, port = await start_relay(*flags)
        try:
            # Each group's messages are sent by its members in turn (a message a second).
            senders: dict[str, list[tuple[Member, bytes]]] = {}
            readers: list[tuple[Member, int]] = []
            if shape == "multiplexed":
                members = await connect(port, [(f"m{i}", plan[i][0]) for i in range(m)])
                await join_all(members, [names[1:] for names in plan])
                for member, names in zip(members, plan, strict=True):
                    readers.append((member, k))
                    for index, name in enumerate(names):
                        header = b"\n" if index == 0 else v1.member_header(group=name)
                        senders.setdefault(name, []).append((member, header))
            else:
                for i, names in enumerate(plan):
                    for name in names:
                        (member,) = await connect(port, [(f"m{i}", name)])
                        readers.append((member, 1))
                        senders.setdefault(name, []).append((member, b"\n"))
            used, delivered = await measure(process.pid, readers, senders, seconds)
            result[shape] = {
                "connections": len(readers),
                "deliveries_per_s": round(delivered / seconds),
                "relay_cpu_us_per_delivery": round(used / max(1, delivered) * 1e6, 2),
                "relay_rss_mib": round(resident(process.pid) / 2**20, 1),
            }
        finally:
            process.kill()
            await process.wait()
    return result


def main() -> None:
    argv = sys.argv[1:]
    flags = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("memory", "churn", "traffic"))
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--backplane", default=None)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args(argv)
    run = {"memory": memory, "churn": churn, "traffic": traffic}[args.what]
    print(json.dumps(trio.run(run, args, flags)))


if __name__ == "__main__":
    main()
