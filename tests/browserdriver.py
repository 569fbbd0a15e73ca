"""Headless Chromium for the suite, through Playwright's core (tests/browser/driver.mjs):
open pages, run JavaScript in them, wait for a condition, pick files in a page's file
chooser, reload, read what went wrong in a page, take screenshots. One Chromium serves the
whole session; each page is in a browser context of its own, and a test's pages are closed
when it ends.

Needs Node.js, Debian's ``chromium`` and ``npm install`` in ``tests/browser``
(``.ci/run`` does both); without them the tests are skipped with what is missing — except
on CI, where they fail (as the Redis tests do).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
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


class _Driver:
    """The session's one driver process (tests/browser/driver.mjs and its Chromium),
    started by the first test that opens a browser and ended with the session
    (:func:`shutdown`): launching Chromium costs about a second, which each test that
    used a browser paid. A plain ``Popen``, since it outlives each test's Trio run; each
    test talks to it through streams of its own (:class:`Browser`)."""

    def __init__(self, node: str) -> None:
        self.log = tempfile.TemporaryFile()  # its stderr, for failure messages
        self.process = subprocess.Popen(
            [node, str(HERE / "driver.mjs")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env={"CHROMIUM": CHROMIUM, "PATH": "/usr/bin:/bin"},
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin, self.stdout = self.process.stdin.fileno(), self.process.stdout.fileno()
        #: Command ids, unique over the session (a late reply is never taken for another's).
        self.ids = itertools.count(1)
        #: What it printed after its last whole line.
        self.buffer = b""
        self.version = ""
        #: Set when a command was cut off while being written (the next would be garbled).
        self.broken = False

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def close(self) -> None:
        """Let it close Chromium (it ends with its standard input); kill it if it hangs."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


_driver: _Driver | None = None


def shutdown() -> None:
    """End the session's driver, if a test started one (tests/conftest.py, at the end)."""
    global _driver
    if _driver is not None:
        _driver.close()
        _driver = None


class Browser:
    """A test's own use of the session's Chromium: every page it opens is in a browser
    context of its own (fresh storage, cache and cookies, as in a new browser), and all of
    them are closed when the test ends (:func:`open_browser`)."""

    def __init__(self, driver: _Driver, stdin: trio.abc.SendStream) -> None:
        self.driver = driver
        self.version = driver.version
        self._stdin = stdin
        self._waiting: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._ended = False
        #: Set once the driver said its version (this test or an earlier one), or exited.
        self.started = trio.Event()
        if driver.version:
            self.started.set()

    async def _pump(self, stdout: trio.abc.ReceiveStream) -> None:
        """Hand each reply to the command waiting for it; a reply nobody waits for (to a
        command cancelled, in this test or an earlier one) is dropped."""
        driver = self.driver
        while True:
            chunk = await stdout.receive_some()
            if not chunk:
                self._ended = True
                self.started.set()
                for send in self._waiting.values():
                    send.close()  # (each waiting command learns that it exited)
                return
            *lines, driver.buffer = (driver.buffer + chunk).split(b"\n")
            for line in lines:
                if line:
                    message = json.loads(line)
                    if message["id"] == 0:
                        driver.version = self.version = message["value"]
                        self.started.set()
                    elif (waiting := self._waiting.pop(message["id"], None)) is not None:
                        await waiting.send(message)

    async def command(self, cmd: str, **fields: Any) -> Any:
        """Run one driver command and return its value (BrowserError if it failed)."""
        number = next(self.driver.ids)
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._waiting[number] = send
        try:
            line = json.dumps({"id": number, "cmd": cmd, **fields}) + "\n"
            try:
                await self._stdin.send_all(line.encode())
            except BaseException:
                self.driver.broken = True
                raise
            try:
                reply = await receive.receive()
            except trio.EndOfChannel:
                raise BrowserError(f"the driver exited: {self.driver.stderr()}") from None
        finally:
            self._waiting.pop(number, None)
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
    """The session's Chromium (launched on first use) for the block; the pages opened in
    it are closed after."""
    global _driver
    node = _check_installed()
    if _driver is not None and (_driver.broken or _driver.process.poll() is not None):
        shutdown()  # (it exited, or a test left it garbled: this test gets a new one)
    if _driver is None:
        _driver = _Driver(node)
    driver = _driver
    # Streams of this test's own, on duplicates of the pipes' descriptors.
    stdin = trio.lowlevel.FdStream(os.dup(driver.stdin))
    stdout = trio.lowlevel.FdStream(os.dup(driver.stdout))
    browser = Browser(driver, stdin)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(browser._pump, stdout)
            with trio.fail_after(30):
                await browser.started.wait()
            if not driver.version:
                raise BrowserError(f"the driver exited: {driver.stderr()}")
            try:
                yield browser
            finally:
                # Close every page this test opened; a driver that cannot is replaced.
                driver.broken = True
                if not browser._ended and driver.process.poll() is None:
                    with trio.CancelScope(shield=True), trio.move_on_after(30):
                        with contextlib.suppress(BrowserError):
                            await browser.command("reset")
                            driver.broken = False
            nursery.cancel_scope.cancel()
    finally:
        await stdin.aclose()
        await stdout.aclose()
