"""Start ``python -m trio_wsproxy serve`` on a free port, as the benchmark scripts need."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import urlsplit

import trio


async def start_relay(*flags: str, python: str = sys.executable) -> tuple[trio.Process, str, int]:
    """The relay process, the URL it printed and its port (its stdout is a pipe);
    ``python`` runs it (another installation's, to compare releases in one run)."""
    process = await trio.lowlevel.open_process(
        [python, "-m", "trio_wsproxy", "serve", "--port", "0", *flags],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    line = b""
    with trio.fail_after(30):
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some(1)
            if not chunk:
                raise RuntimeError("the relay exited before printing its URL")
            line += chunk
    url = line.decode().strip().rsplit(" ", 1)[1]
    port = urlsplit(url).port
    assert port is not None
    return process, url, port


async def metrics(port: int) -> dict[str, float]:
    """The relay's /metrics at ``port``, unlabelled series only: name -> value."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    await stream.aclose()
    values = {}
    for line in data.decode().split("\r\n\r\n", 1)[1].splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values
