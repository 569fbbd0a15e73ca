"""What the relay process costs: flat memory for huge messages, no CPU when idle.

These run the relay as its own process (``python -m trio_wsproxy serve``) and read its
peak memory and CPU time from /proc, as an operator would see them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import trio

from relayproc import peak_rss_mib, start_relay
from wsraw import OP_PING, OP_PONG, RawClient, stream_mib

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
async def relay_process() -> AsyncIterator[tuple[int, int]]:
    """(pid, port) of a relay running as its own process."""
    process, _url, port = await start_relay()
    try:
        yield process.pid, port
    finally:
        process.terminate()
        with trio.fail_after(10):
            await process.wait()


async def test_a_256_mib_message_crosses_the_relay_intact_with_flat_memory(
    relay_process: tuple[int, int],
) -> None:
    pid, port = relay_process
    sender = await RawClient.open(port, "/ws?id=sender&groupName=bulk")
    receiver = await RawClient.open(port, "/ws?id=receiver&groupName=bulk")
    # A pong proves the receiver's session is reading, so it has joined its group.
    await receiver.send_frame(OP_PING, b"")
    assert (await receiver.recv_frame())[1] == OP_PONG
    await stream_mib(sender, receiver, 256)
    assert peak_rss_mib(pid) < 64


async def test_a_thousand_idle_members_cost_no_cpu(relay_process: tuple[int, int]) -> None:
    pid, port = relay_process
    clients = []
    with trio.fail_after(60):
        for i in range(1000):
            clients.append(await RawClient.open(port, f"/ws?id=m{i}&groupName=g{i // 4}"))
        # A pong from each: every session is up, reading, and has nothing left to do.
        for client in clients:
            await client.send_frame(OP_PING, b"")
        for client in clients:
            assert (await client.recv_frame())[1] == OP_PONG
    before = cpu_seconds(pid)
    # Staying idle for a while is what is measured here (not a settle-wait).
    with trio.fail_after(10):
        await trio.sleep(3)
    used = cpu_seconds(pid) - before
    assert used / 3 < 0.01, f"idle relay used {100 * used / 3:.1f}% CPU"
    for client in clients:
        await client.aclose()
