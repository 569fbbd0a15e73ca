"""The examples run as documented, against a relay started as an operator would."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import trio
import trio_websocket as tw

from relayproc import Output, first_line, start_relay

EXAMPLES = Path(__file__).parent.parent / "examples"
# The examples print without flushing: lines reach a pipe only unbuffered.
UNBUFFERED = {**os.environ, "PYTHONUNBUFFERED": "1"}


def example(*args: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / args[0]), *args[1:]]


async def run_example(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process(
            example(*args), capture_stdout=True, capture_stderr=True, check=False, env=UNBUFFERED
        )


async def test_the_ported_dotnet_demo_runs_to_the_end() -> None:
    relay, url, _port = await start_relay()
    try:
        result = await run_example("demo.py", "--url", url, "--group", "demo")
        assert result.returncode == 0, result.stderr.decode()[-2000:]
    finally:
        relay.terminate()
        await relay.wait()


async def test_a_file_goes_through_the_relay_and_checks_out(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(5 * 1024 * 1024 + 123))
    out = tmp_path / "out"
    out.mkdir()
    relay, url, _port = await start_relay()
    receiver = await trio.lowlevel.open_process(
        example("file_transfer.py", "--url", url, "receive", "--out", str(out), "--once"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=UNBUFFERED,
    )
    assert receiver.stdout is not None and receiver.stderr is not None
    said, complained = Output(), Output()
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(said.pump, receiver.stdout)
                nursery.start_soon(complained.pump, receiver.stderr)
                # The receiver must be there first. It says so once connected, and a
                # member is in its group before its connection is answered.
                await said.wait_for("waiting for files in group")
                sent = await run_example("file_transfer.py", "--url", url, "send", str(source))
                assert sent.returncode == 0, sent.stderr.decode()[-2000:]
                assert await receiver.wait() == 0, complained.text[-2000:]
        copies = list(out.iterdir())
        assert len(copies) == 1
        assert (
            hashlib.sha256(copies[0].read_bytes()).digest()
            == hashlib.sha256(source.read_bytes()).digest()
        )
    finally:
        if receiver.returncode is None:
            receiver.kill()
            await receiver.wait()
        relay.terminate()
        await relay.wait()


async def test_the_embedded_relay_runs_beside_its_bot() -> None:
    process = await trio.lowlevel.open_process(
        example("embedded_relay.py", "--port", "0"), stdout=subprocess.PIPE, env=UNBUFFERED
    )
    assert process.stdout is not None
    try:
        line = await first_line(process.stdout)
        url = line.decode().strip().rsplit(" ", 1)[1]
        async with tw.open_websocket_url(f"{url}?id=alice&groupName=lobby") as ws:
            with trio.fail_after(10):
                # The bot may not have joined yet, and the example says nothing when it
                # has (a ping before that reaches nobody): ask until it answers.
                while True:
                    await ws.send_message("ping")
                    with trio.move_on_after(0.5):
                        assert await ws.get_message() == "pong"
                        break
    finally:
        process.terminate()
        await process.wait()
