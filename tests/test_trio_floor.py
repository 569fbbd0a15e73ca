"""benchmarks/trio_floor.py, the measuring stick of the performance page: it relays a
group's whole short frames, with a task per member and with its poller."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio

from relayproc import first_line
from wsraw import OP_BINARY, OP_TEXT, RawClient

FLOOR = Path(__file__).resolve().parent.parent / "benchmarks" / "trio_floor.py"


@pytest.mark.parametrize("flags", [[], ["--poller"]])
async def test_it_relays_a_groups_messages_to_the_rest_of_it(flags: list[str]) -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, str(FLOOR), "0", *flags], stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        port = int((await first_line(process.stdout)).split()[1])
        with trio.fail_after(20):
            alice = await RawClient.open(port, "/ws?id=alice&groupName=pair")
            bob = await RawClient.open(port, "/ws?id=bob&groupName=pair")
            carol = await RawClient.open(port, "/ws?id=carol&groupName=other")
            for n in range(20):
                await alice.send_frame(OP_TEXT, f"ping {n}".encode())
                assert await bob.recv_message() == (OP_TEXT, f"ping {n}".encode())
                await bob.send_frame(OP_BINARY, bytes([n]) * 125)
                assert await alice.recv_message() == (OP_BINARY, bytes([n]) * 125)
            await carol.send_frame(OP_TEXT, b"alone")  # (nobody else in its group)
            # A bad request gets the relay's own answer (no groupName: 400).
            stranger = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
            status, _, _ = await stranger.handshake("/ws?id=stranger")
            assert status == 400
            await stranger.aclose()
            await alice.send_frame(OP_TEXT, b"last")
            assert await bob.recv_message() == (OP_TEXT, b"last")
            for client in (alice, bob, carol):
                await client.aclose()
    finally:
        process.kill()
        await process.wait()
