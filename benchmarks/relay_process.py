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
