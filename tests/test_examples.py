"""The examples run as documented, against a relay started as an operator would."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import trio
import trio_websocket as tw

from relayproc import start_relay

EXAMPLES = Path(__file__).parent.parent / "examples"


async def run_example(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process(
            [sys.executable, str(EXAMPLES / args[0]), *args[1:]],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def relay_has_members(port: int, count: int) -> None:
    """Wait until another process's relay reports ``count`` members on /metrics."""
    with trio.fail_after(20):
        while True:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
            body = b""
            while chunk := await stream.receive_some(65536):
                body += chunk
            await stream.aclose()
            if f"\ntrio_wsproxy_members {float(count)}\n".encode() in body:
                return
            await trio.sleep(0.05)


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
    relay, url, port = await start_relay()
    try:
        async with trio.open_nursery() as nursery:
            received: list[subprocess.CompletedProcess[bytes]] = []

            async def receive() -> None:
                received.append(
                    await run_example(
                        "file_transfer.py", "--url", url, "receive", "--out", str(out), "--once"
                    )
                )

            nursery.start_soon(receive)
            await relay_has_members(port, 1)  # the receiver must be there first
            sent = await run_example("file_transfer.py", "--url", url, "send", str(source))
            assert sent.returncode == 0, sent.stderr.decode()[-2000:]
        assert received[0].returncode == 0, received[0].stderr.decode()[-2000:]
        copies = list(out.iterdir())
        assert len(copies) == 1
        assert (
            hashlib.sha256(copies[0].read_bytes()).digest()
            == hashlib.sha256(source.read_bytes()).digest()
        )
    finally:
        relay.terminate()
        await relay.wait()


async def test_the_embedded_relay_runs_beside_its_bot() -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, str(EXAMPLES / "embedded_relay.py"), "--port", "0"],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        line = b""
        with trio.fail_after(20):
            while not line.endswith(b"\n"):
                line += await process.stdout.receive_some(1)
        url = line.decode().strip().rsplit(" ", 1)[1]
        async with tw.open_websocket_url(f"{url}?id=alice&groupName=lobby") as ws:
            with trio.fail_after(10):
                while True:  # the bot may not have joined yet: ask until it answers
                    await ws.send_message("ping")
                    with trio.move_on_after(0.5):
                        assert await ws.get_message() == "pong"
                        break
    finally:
        process.terminate()
        await process.wait()
