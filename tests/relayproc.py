"""A relay as its own process, as an operator runs it: ``python -m trio_wsproxy serve``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from urllib.parse import urlsplit

import trio


async def start_relay(
    *flags: str, env: Mapping[str, str] | None = None
) -> tuple[trio.Process, str, int]:
    """Start ``python -m trio_wsproxy serve --port 0 FLAGS`` (``env`` added to the
    environment); return the process, the URL it printed and its port. Its stdout and
    stderr are pipes."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_wsproxy", "serve", "--port", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    text = (await first_line(process.stdout)).decode().strip()
    assert text.startswith("trio-wsproxy relay listening on ws://127.0.0.1:"), text
    url = text.rsplit(" ", 1)[1]
    port = urlsplit(url).port
    assert port is not None
    return process, url, port


async def first_line(stream: trio.abc.ReceiveStream, output: Output | None = None) -> bytes:
    """The first line a process writes on ``stream`` (a relay's "listening" line), within
    30 s; fails the test, with what ``output`` collected of its other output, if the
    process ends first."""
    line = b""
    with trio.fail_after(30):
        while not line.endswith(b"\n"):
            chunk = await stream.receive_some(1)
            assert chunk, f"exited before its first line:\n{output.text if output else ''}"
            line += chunk
    return line


def peak_rss_mib(pid: int) -> float:
    """The most memory process ``pid`` has used so far (VmHWM), in MiB (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


class Output:
    """A process's output, collected as it comes, to wait for lines in."""

    def __init__(self) -> None:
        self.text = ""
        self.closed = False
        self._grew = trio.Event()

    async def pump(self, stream: trio.abc.ReceiveStream) -> None:
        async for chunk in stream:
            self.text += chunk.decode(errors="replace")
            self._grew.set()
            self._grew = trio.Event()
        self.closed = True
        self._grew.set()

    async def wait_for(self, pattern: str, start: int = 0) -> re.Match[str]:
        """The first match of ``pattern`` at or after ``start``, once it has come in."""
        with trio.fail_after(15):
            while (match := re.compile(pattern).search(self.text, start)) is None:
                assert not self.closed, f"{pattern!r} never came in:\n{self.text}"
                await self._grew.wait()
        return match
