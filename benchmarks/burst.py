"""Burst: one group's members all send at once while a canary pair in another group
bounces a message and /healthz is asked; or many single-member groups all leave at once.

    python benchmarks/burst.py --members 2000            # a group of 2,000 bursts
    python benchmarks/burst.py --members 5000
    python benchmarks/burst.py --disconnect 19000        # 19,000 one-member groups leave
    python benchmarks/burst.py --hold 10000 --kib 100     # 10,000 unfinished messages

Starts ``python -m trio_wsproxy serve`` on a free loopback port (pass ``--relay-python``
to run another installation's relay, e.g. the previous release, in the same run). The
burst members send 7 bytes each and never read, as the attack that found the defect did;
one more member reads everything, and the burst is over when it has every message.
Prints one JSON line: the burst's duration and deliveries per second (the big group's
throughput), the canary's longest gap between round trips, and the slowest /healthz.
Needs ``ulimit -n`` above twice the member count (each connection is a socket here and
one in the relay).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys

import trio
from relay_process import start_relay

MASK = b"\x00\x00\x00\x00"  # a zero mask: the frame's bytes are its payload


def frame(payload: bytes) -> bytes:
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + MASK + payload


class Member:
    """A bare WebSocket client: enough to join, send a frame and count messages."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    @classmethod
    async def join(cls, port: int, member: str, group: str, subprotocol: str = "") -> Member:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        offer = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
        await stream.send_all(
            f"GET /ws?id={member}&groupName={group} HTTP/1.1\r\nHost: b\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\n{offer}\r\n".encode()
        )
        client = cls(stream)
        while b"\r\n\r\n" not in client.buffer:
            client.buffer += await stream.receive_some(65536)
        head, _, rest = bytes(client.buffer).partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(head.decode(errors="replace"))
        client.buffer = bytearray(rest)
        return client

    async def next_payload(self) -> tuple[int, bytes]:
        """The next frame's opcode and payload (the relay's frames are unmasked)."""
        while True:
            if len(self.buffer) >= 2:
                length, start = self.buffer[1] & 0x7F, 2
                if length == 126 and len(self.buffer) >= 4:
                    length, start = struct.unpack_from("!H", self.buffer, 2)[0], 4
                elif length == 127 and len(self.buffer) >= 10:
                    length, start = struct.unpack_from("!Q", self.buffer, 2)[0], 10
                if length < 126 or start > 2:
                    if len(self.buffer) >= start + length:
                        opcode = self.buffer[0] & 0x0F
                        payload = bytes(self.buffer[start : start + length])
                        del self.buffer[: start + length]
                        if opcode == 0x9:
                            # Answer the relay's keepalive pings, as any client does: a
                            # burst of 5,000 lasts longer than ping_interval + timeout.
                            pong = struct.pack("!BB", 0x8A, 0x80 | len(payload))
                            await self.stream.send_all(pong + MASK + payload)
                            continue
                        return opcode, payload
            data = await self.stream.receive_some(1 << 20)
            if not data:
                raise EOFError("the relay closed the connection")
            self.buffer += data


async def healthz(port: int) -> float:
    started = trio.current_time()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n")
    while await stream.receive_some(65536):
        pass
    await stream.aclose()
    return trio.current_time() - started


async def watched(port: int, work: object) -> dict[str, float]:
    """Run ``work()`` while the canary bounces and /healthz is asked; their worst times."""
    ping = await Member.join(port, "ping", "canary")
    pong = await Member.join(port, "pong", "canary")
    gaps, probes = [0.0], [0.0]
    done = trio.Event()
    running = trio.Event()

    async def canary() -> None:
        last = trio.current_time()
        while not done.is_set():
            await ping.stream.send_all(frame(b"tick"))
            while (await pong.next_payload())[0] != 1:
                pass
            now = trio.current_time()
            gaps.append(now - last)
            last = now
            running.set()

    async def probe() -> None:
        while not done.is_set():
            probes.append(await healthz(port))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(canary)
        await running.wait()
        nursery.start_soon(probe)
        started = trio.current_time()
        await work()  # type: ignore[operator]
        took = trio.current_time() - started
        done.set()
    return {"seconds": round(took, 2), "canary_max_gap_s": round(max(gaps), 3),
            "healthz_max_s": round(max(probes), 3)}  # fmt: skip


async def burst(port: int, members: int) -> dict[str, float]:
    crowd = [await Member.join(port, f"m{n}", "crowd") for n in range(members)]
    witness = await Member.join(port, "witness", "crowd")

    async def work() -> None:
        for member in crowd:
            await member.stream.send_all(frame(b"burst!!"))
        seen = 0
        while seen < members:
            opcode, _ = await witness.next_payload()
            seen += opcode == 1

    figures = await watched(port, work)
    figures["deliveries_per_s"] = round(members * members / figures["seconds"])
    return figures


async def disconnect(port: int, members: int) -> dict[str, float]:
    alone = [await Member.join(port, f"a{n}", f"g{n}") for n in range(members)]

    async def work() -> None:
        for member in alone:
            await member.stream.aclose()
        # The relay has let every one go once /metrics says so.
        while True:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: b\r\n\r\n")
            body = b""
            while chunk := await stream.receive_some(65536):
                body += chunk
            if b"\ntrio_wsproxy_members 2.0\n" in body:
                return
            await trio.sleep(0.05)

    return await watched(port, work)


def rss_mib(pid: int) -> tuple[float, float]:
    """(now, peak) resident memory of process ``pid``, in MiB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line[:5]] = int(line.split()[1]) / 1024
    return values["VmRSS"], values["VmHWM"]


async def hold(port: int, pid: int, members: int, kib: int) -> dict[str, float]:
    """``members`` members each send ``kib`` KiB of one message and do not end it: the
    relay's memory with all of them held (bounded by --max-buffered-bytes), then after
    they all end their messages and leave."""
    crowd = [await Member.join(port, f"h{n}", f"g{n}") for n in range(members)]
    before, _ = rss_mib(pid)
    part = struct.pack("!BBQ", 0x02, 0x80 | 127, kib * 1024) + MASK + b"x" * (kib * 1024)

    async def send(member: Member) -> None:
        await member.stream.send_all(part)

    async with trio.open_nursery() as nursery:
        for member in crowd:
            nursery.start_soon(send, member)
    # The relay reads what its bound lets it; what it does not stays in the kernel.
    held_at = trio.current_time()
    now, peak = rss_mib(pid)
    while trio.current_time() - held_at < 5:  # a figure over time, not an event
        await trio.sleep(0.5)
        now, peak = rss_mib(pid)
    for member in crowd:
        await member.stream.aclose()
    return {"members": members, "kib_each": kib, "rss_connected_mib": round(before, 1),
            "rss_holding_mib": round(now, 1), "peak_mib": round(peak, 1)}  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--members", type=int, help="members of the bursting group")
    what.add_argument("--disconnect", type=int, help="one-member groups that leave at once")
    what.add_argument("--hold", type=int, help="members holding an unfinished message each")
    parser.add_argument("--kib", type=int, default=100, help="KiB each --hold member sends")
    parser.add_argument("--relay-python", default=sys.executable, help="the relay's Python")
    args = parser.parse_args()
    process, _url, port = await start_relay("--close-timeout", "1", python=args.relay_python)
    try:
        with trio.fail_after(1800):
            if args.members:
                figures = await burst(port, args.members)
            elif args.hold:
                figures = await hold(port, process.pid, args.hold, args.kib)
            else:
                figures = await disconnect(port, args.disconnect)
    finally:
        process.kill()
    print(json.dumps({"relay_python": args.relay_python, **vars(args), **figures}))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    trio.run(main)
