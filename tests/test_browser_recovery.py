"""A page reloaded mid-traffic recovers (issue 34, item 6), in a real headless Chromium:
it keeps what it has shown and its position in the tab's sessionStorage
(tests/js/recovery.html), reconnects from that position after the reload, and has shown
every message exactly once, in order — those sent while it reloaded included."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from browserdriver import Browser, BrowserError, Page, open_browser
from trio_wsproxy import Relay, RelayConfig, open_client, open_relay

ROOT = Path(__file__).parent.parent
# What the page's origin serves: the page and the client, nothing else.
FILES = {
    "/recovery.html": (ROOT / "tests/js/recovery.html", "text/html; charset=utf-8"),
    "/wsproxy.js": (ROOT / "clients/js/wsproxy.js", "text/javascript; charset=utf-8"),
}


async def serve_page(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """A web server for the page's origin (sessionStorage needs one); ``started`` with
    its port."""

    async def answer(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            request += chunk
        target = request.split(b" ")[1].decode().partition("?")[0]
        found = FILES.get(target)
        if found is None:
            status, kind, body = "404 Not Found", "text/plain", b"not found"
        else:
            status, kind = "200 OK", found[1]
            body = await trio.Path(found[0]).read_bytes()
        head = f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
        await stream.send_all(f"{head}Connection: close\r\n\r\n".encode() + body)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, host="127.0.0.1")
        listeners = await nursery.start(serve, answer, 0)
        task_status.started(listeners[0].socket.getsockname()[1])


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with open_browser() as browser:
        yield browser


async def reloaded(page: Page, loads: int) -> None:
    """Until the page has loaded for the ``loads``-th time and connected (a wait that
    began before the reload may end with the page it watched: then it waits again)."""
    for _ in range(3):
        try:
            await page.wait(f"window.app && window.app.loads === {loads}", within=20)
            return
        except BrowserError:
            pass
    await page.wait(f"window.app && window.app.loads === {loads}", within=20)


async def test_a_page_reloaded_mid_traffic_shows_every_message_once_in_order(
    browser: Browser,
) -> None:
    count = 300
    sent = [f"m{n}" for n in range(count)]
    async with trio.open_nursery() as nursery:
        relay: Relay = await nursery.start(_relay)
        port = await nursery.start(serve_page)
        url = (
            f"http://127.0.0.1:{port}/recovery.html"
            f"?relay=ws://127.0.0.1:{relay.port}/ws&group=chat&id=web"
        )
        page = await browser.open("web", url)
        await reloaded(page, 1)
        async with open_client(relay.url, group="chat", id="py") as py:
            await relay.wait_members(2, "chat")

            async def send_all() -> None:
                for text in sent:  # a steady flow, over about three seconds
                    await py.send(text)
                    await trio.sleep(0.01)

            nursery.start_soon(send_all)
            await page.wait("window.app.shown.length >= 30")
            await page.eval("(setTimeout(() => location.reload(), 0), true)")
            await reloaded(page, 2)
            app = await page.eval("({since: window.app.since, shown: window.app.shown.length})")
            assert app["since"] is not None and app["shown"] >= 30
            await page.wait(f"window.app.shown.length >= {count}", within=30)
            shown = await page.eval("window.app.shown")
            resumed = await page.eval("window.app.resumed")
        nursery.cancel_scope.cancel()
    assert shown == sent  # each once, in order: none lost in the reload, none twice
    assert len(resumed) == 1 and resumed[0]["recovered"] is True, resumed


async def _relay(task_status: trio.TaskStatus[Relay] = trio.TASK_STATUS_IGNORED) -> None:
    async with open_relay(RelayConfig(port=0, history_size=1000)) as relay:
        task_status.started(relay)
        await trio.sleep_forever()
