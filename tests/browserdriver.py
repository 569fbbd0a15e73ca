"""Headless Chromium for the suite, through Playwright's core (tests/browser/driver.mjs):
open pages, run JavaScript in them, wait for a condition, pick files in a page's file
chooser, reload, read what went wrong in a page, take screenshots.

Needs Node.js, Debian's ``chromium`` and ``npm install`` in ``tests/browser``
(``.ci/run`` does both); without them the tests are skipped with what is missing — except
on CI, where they fail (as the Redis tests do).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

HERE = Path(__file__).parent / "browser"
CHROMIUM = "/usr/bin/chromium"


class BrowserError(AssertionError):
    """What the page or the driver said went wrong."""


class NodeScript:
    """A running Node.js script that prints one JSON object per line: each goes to
    :meth:`received`, in order; what it writes to stderr is kept, for failure messages.
    Run one with :func:`running`."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.stderr = b""

    async def received(self, message: dict[str, Any]) -> None:
        """One line the script printed."""

    def ended(self) -> None:
        """The script closed its output (it exited)."""

    async def _pump(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line:
                    await self.received(json.loads(line))
        self.ended()

    async def _pump_errors(self) -> None:
        assert self.process.stderr is not None
        async for chunk in self.process.stderr:
            self.stderr += chunk


Script = TypeVar("Script", bound=NodeScript)


@asynccontextmanager
async def running(
    kind: Callable[[trio.Process], Script], argv: list[str], **options: Any
) -> AsyncIterator[Script]:
    """Run ``argv`` (a Node.js script) as a ``kind`` while the block runs; killed after."""
    process = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options
    )
    script = kind(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(script._pump)
            nursery.start_soon(script._pump_errors)
            yield script
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


class Browser(NodeScript):
    def __init__(self, process: trio.Process) -> None:
        super().__init__(process)
        self._ids = itertools.count(1)
        self._waiting: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self.version = ""
        #: Set once the driver said its version, or exited.
        self.started = trio.Event()

    async def received(self, message: dict[str, Any]) -> None:
        if message["id"] == 0:
            self.version = message["value"]
            self.started.set()
        else:
            await self._waiting.pop(message["id"]).send(message)

    def ended(self) -> None:
        self.started.set()  # (it exited: whoever waits for it learns so)

    async def command(self, cmd: str, **fields: Any) -> Any:
        """Run one driver command and return its value (BrowserError if it failed)."""
        assert self.process.stdin is not None
        number = next(self._ids)
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._waiting[number] = send
        line = json.dumps({"id": number, "cmd": cmd, **fields}) + "\n"
        await self.process.stdin.send_all(line.encode())
        reply = await receive.receive()
        if not reply["ok"]:
            raise BrowserError(f"{cmd} failed: {reply['error']}")
        return reply["value"]

    async def open(self, name: str, url: str, **viewport: Any) -> Page:
        await self.command("open", page=name, url=url, **viewport)
        return Page(self, name)


class Page:
    def __init__(self, browser: Browser, name: str) -> None:
        self.browser = browser
        self.name = name

    async def eval(self, js: str) -> Any:
        """The value of the JavaScript expression ``js`` (awaited if a promise)."""
        return await self.browser.command("eval", page=self.name, js=js)

    async def wait(self, js: str, within: float = 10.0) -> None:
        """Until the expression ``js`` is truthy in the page (BrowserError after ``within``
        seconds, with the page's log)."""
        try:
            await self.browser.command("wait", page=self.name, js=js, timeout=int(within * 1000))
        except BrowserError as error:
            log = await self.eval("window.demo ? window.demo.log : []")
            errors = await self.browser.command("errors", page=self.name)
            raise BrowserError(
                f"{self.name}: never {js!r}; its log {log}; errors {errors}"
            ) from error

    async def choose(self, selector: str, files: dict[str, bytes]) -> None:
        """Click ``selector`` (what opens a file chooser, as a person would) and pick
        ``files`` (name -> content) in the chooser it opens."""
        chosen = [
            {"name": name, "base64": base64.b64encode(data).decode()}
            for name, data in files.items()
        ]
        await self.browser.command("choose", page=self.name, selector=selector, files=chosen)

    async def reload(self) -> None:
        """Reload the page (the same tab: its sessionStorage stays), until it has loaded."""
        await self.browser.command("reload", page=self.name)

    async def errors(self) -> list[str]:
        """What went wrong in the page so far: console errors, uncaught exceptions, and
        responses with a status of 400 or more."""
        errors: list[str] = await self.browser.command("errors", page=self.name)
        return errors

    async def screenshot(self, path: Path) -> None:
        await self.browser.command("screenshot", page=self.name, path=str(path))

    async def close(self) -> None:
        await self.browser.command("close", page=self.name)


def missing(what: str) -> None:
    """Skip, saying what is missing and how to get it, except on CI (the ``CI``
    environment variable set), where it fails the run: CI must not skip these tests."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI must not skip the browser tests)")
    pytest.skip(what)


def node_path() -> str:
    """Node's path (Node.js 20 or newer), else a skip or failure (see :func:`missing`)."""
    node = shutil.which("node")
    if node is None:
        missing("node (Node.js 20 or newer) is not installed")
    assert node is not None
    return node


def _check_installed() -> str:
    """Node's path, once node, Chromium and playwright-core are known to be there."""
    node = node_path()
    if not os.path.exists(CHROMIUM):
        missing(f"{CHROMIUM} is not installed: apt-get install chromium (.ci/run does)")
    if not os.path.isdir(HERE / "node_modules" / "playwright-core"):
        missing("playwright-core is not installed: npm install in tests/browser (.ci/run does)")
    return node


@asynccontextmanager
async def open_browser() -> AsyncIterator[Browser]:
    node = _check_installed()
    argv = [node, str(HERE / "driver.mjs")]
    env = {"CHROMIUM": CHROMIUM, "PATH": "/usr/bin:/bin"}
    async with running(Browser, argv, stdin=subprocess.PIPE, env=env) as browser:
        with trio.fail_after(30):
            await browser.started.wait()
        if not browser.version:
            await browser.process.wait()
            raise BrowserError(f"the driver exited: {browser.stderr.decode()[-3000:]}")
        yield browser
