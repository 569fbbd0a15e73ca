"""The demo page (``--demo``) and the JavaScript client in a real headless Chromium,
driven by Playwright's core (tests/browserdriver.py): pages chatting, presence, direct
messages, a 50 MB file dropped and a file picked on a phone, a Python member in the same
group, a tab replaced by a second one under the same name, a reload and a relay restart
that the pages recover from, and a page load with no error. Also what the relay serves
under /demo/, and nothing else.

Screenshots of the page (desktop and phone) go to a temporary folder, or to the folder
named by ``TRIO_WSPROXY_SCREENSHOTS`` (``docs/img`` refreshes the documentation's).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import trio_wsproxy
from browserdriver import Browser, Page, open_browser
from demotypes import Answer, Ask, Chat
from relaynode import RestartableRelay
from relayproc import first_line, start_relay
from test_security import http_get
from trio_wsproxy import Relay, RelayConfig, open_client, open_relay, serve_relay
from trio_wsproxy.testing import wait_for_member

ROOT = Path(__file__).parent.parent


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    async with open_relay(RelayConfig(port=0, demo=True)) as relay:
        yield relay


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with open_browser() as browser:
        yield browser


def page_url(relay: Relay, name: str, room: str = "lobby") -> str:
    return f"http://127.0.0.1:{relay.port}/demo/?name={name}&room={room}"


async def join(
    browser: Browser,
    relay: Relay,
    name: str,
    room: str = "lobby",
    *,
    tab: str | None = None,
    **view: object,
) -> Page:
    """A page (the driver's ``tab``, else ``name``) that joined ``room`` as ``name``."""
    page = await browser.open(tab or name, page_url(relay, name, room), **view)
    await page.wait("window.demo && window.demo.client && window.demo.client.connected")
    return page


PHONE = dict(width=390, height=760, mobile=True, scale=2)


def logged(text: str) -> str:
    return f"window.demo.log.some(line => line.includes({text!r}))"


def knows(member: str) -> str:
    """True in a page once its client has ``member`` in its member list."""
    return f"window.demo.client.members.has({member!r})"


def shown(selector: str) -> str:
    """True in a page while the element ``selector`` is there and visible."""
    return f"document.querySelector({selector!r})?.checkVisibility() === true"


def click(selector: str) -> str:
    return f"(() => {{ document.querySelector({selector!r}).click(); return true }})()"


# -- what the relay serves --------------------------------------------------------------


async def test_the_demo_is_off_unless_asked_for() -> None:
    async with open_relay(RelayConfig(port=0)) as relay:
        status, _headers, _body = await http_get(relay.port, "/demo/")
        assert status == 404


async def test_only_the_page_and_the_client_are_served(relay: Relay) -> None:
    status, headers, page = await http_get(relay.port, "/demo/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert b'const WS_PATH = "/ws";' in page  # the relay's own path, filled in
    status, headers, module = await http_get(relay.port, "/demo/wsproxy.js")
    assert status == 200 and headers["content-type"] == "text/javascript; charset=utf-8"
    assert module == (ROOT / "clients/js/wsproxy.js").read_bytes()
    for target in (
        "/demo/../pyproject.toml",
        "/demo/%2e%2e/pyproject.toml",
        "/demo/index.html",
        "/demo/wsproxy.js/",
        "/demo//wsproxy.js",
        "/demo/..%2fpyproject.toml",
        "/demo/../../../../etc/passwd",
    ):
        status, _headers, body = await http_get(relay.port, target)
        assert status == 404, (target, body)


async def test_the_relay_prints_the_demo_page_s_address() -> None:
    process, _url, port = await start_relay("--demo")
    try:
        assert process.stdout is not None
        line = (await first_line(process.stdout)).decode().strip()
        assert line == f"demo page at http://127.0.0.1:{port}/demo/"
    finally:
        process.terminate()
        await process.wait()


# -- pages together -----------------------------------------------------------------------


async def test_pages_chat_see_each_other_come_and_go_and_whisper(
    relay: Relay, browser: Browser
) -> None:
    alice = await join(browser, relay, "alice")
    bob = await join(browser, relay, "bob")
    await alice.wait(knows("bob"))
    await bob.wait(knows("alice"))
    # Chat both ways, through the page's own form.
    await alice.eval(
        "(() => { document.getElementById('text').value = 'hi bob';"
        " document.getElementById('compose').requestSubmit(); return true })()"
    )
    await bob.wait(logged("alice: hi bob"))
    await bob.eval("window.demo.say('hi alice')")
    await alice.wait(logged("bob: hi alice"))
    # The member list follows a join and a leave.
    carol = await join(browser, relay, "carol")
    await alice.wait("document.querySelector('[data-member=carol]') !== null")
    await bob.wait(knows("carol"))
    # A click on a member: the next message goes to that member only.
    await alice.eval(click("[data-member=carol]"))
    await alice.eval("window.demo.say('just for carol')")
    await carol.wait(logged("alice (to you only): just for carol"))
    await alice.eval(click("[data-member=carol]"))
    await alice.eval("window.demo.say('for everyone')")
    # Messages from one sender arrive in order: had bob got the direct one, it came first.
    await bob.wait(logged("alice: for everyone"))
    assert not await bob.eval("window.demo.log.some(l => l.includes('just for carol'))")
    await carol.close()
    await alice.wait("document.querySelector('[data-member=carol]') === null")
    await bob.wait(logged("carol left"))


async def test_a_50_mb_file_dropped_on_a_page_arrives_intact(
    relay: Relay, browser: Browser
) -> None:
    sender = await join(browser, relay, "sender")
    receiver = await join(browser, relay, "receiver")
    await sender.wait(knows("receiver"))
    # Dropped as a person would: a drop event carrying a File on the drop zone.
    await sender.eval(
        """(() => {
            const size = 50 * 1000 * 1000;
            const bytes = new Uint8Array(size);
            for (let at = 0; at < size; at += 65536) {
                crypto.getRandomValues(bytes.subarray(at, at + 65536));
            }
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "big.bin"));
            const drop = document.getElementById("drop");
            const init = { dataTransfer: transfer, bubbles: true, cancelable: true };
            drop.dispatchEvent(new DragEvent("drop", init));
            return true;
        })()"""
    )
    await receiver.wait("window.demo.received.length === 1", within=60)
    got = await receiver.eval("window.demo.received[0]")
    await sender.wait("window.demo.sent.length === 1", within=60)
    sent = await sender.eval("window.demo.sent[0]")
    assert got["name"] == "big.bin" and got["size"] == 50_000_000 and got["sender"] == "sender"
    assert got["intact"] is True and got["sha256"] == sent["sha256"] and len(got["sha256"]) == 64
    await receiver.wait(logged("sent big.bin (50000000 bytes, SHA-256 checked)"))


async def test_a_python_member_and_a_page_share_a_group(relay: Relay, browser: Browser) -> None:
    page = await join(browser, relay, "web")
    async with open_client(relay.url, group="lobby", id="py") as py:
        await wait_for_member(py, "web")
        await page.wait(knows("py"))
        # Python -> page, typed.
        await py.send(Chat("hello from python"))
        await page.wait(logged("py: hello from python"))
        # page -> Python, typed.
        async with py.subscribe(Chat) as chats:
            await page.eval("window.demo.say('hello from the browser')")
            with trio.fail_after(5):
                incoming = await chats.receive()
        assert incoming.value.text == "hello from the browser" and incoming.sender == "web"
        # Python asks, the page answers (the demo page answers Demo.Ask).
        answer = await py.request(Ask("are you there?"), Answer, timeout=5)
        assert answer == Answer("web heard: are you there?")

        # The page asks, Python answers.
        @py.on(Ask)
        async def reply(ask: Ask, incoming: trio_wsproxy.Incoming[Ask]) -> None:
            await incoming.reply(Answer(f"python heard: {ask.text}"))

        value = await page.eval(
            "window.demo.client.request('Demo.Ask', {text: 'and you?'}, {timeout: 5000, to: 'py'})"
        )
        assert value == {"text": "python heard: and you?"}
        # A request nobody answers is a rejected promise, never a silent null.
        refused = await page.eval(
            "window.demo.client.request('Demo.Nobody', {}, {timeout: 300})"
            ".then(() => 'answered', e => e.name)"
        )
        assert refused == "RequestTimeout"


async def test_a_file_picked_with_the_button_on_a_phone_is_sent_like_a_dropped_one(
    relay: Relay, browser: Browser
) -> None:
    """A phone cannot drop a file: the page's button opens the file chooser instead."""
    phone = await join(browser, relay, "phone", **PHONE)
    desk = await join(browser, relay, "desk")
    await phone.wait(knows("desk"))
    photo = os.urandom(300_000)
    await phone.choose("#pick", {"photo.jpg": photo})
    await desk.wait("window.demo.received.length === 1", within=30)
    got = await desk.eval("window.demo.received[0]")
    assert got == {
        "name": "photo.jpg",
        "size": len(photo),
        "sha256": hashlib.sha256(photo).hexdigest(),
        "intact": True,
        "sender": "phone",
    }
    await phone.wait("window.demo.sent.length === 1", within=30)
    await phone.wait(logged("you sent photo.jpg (300000 bytes)"))


async def test_on_a_phone_the_join_form_comes_first_and_the_room_once_joined(
    relay: Relay, browser: Browser
) -> None:
    """No empty "In the room" box above the join form: it shows once there is a room."""
    page = await browser.open("phone", f"http://127.0.0.1:{relay.port}/demo/", **PHONE)
    await page.wait(shown("#join"))
    assert not await page.eval(shown("aside"))
    await page.eval(
        "(() => { document.getElementById('name').value = 'pat';"
        " document.getElementById('join').requestSubmit(); return true })()"
    )
    await page.wait("window.demo.client && window.demo.client.connected")
    await page.wait(shown("aside"))
    assert await page.eval("document.getElementById('members').textContent") == "pat (you)"


async def test_the_page_loads_and_chats_without_an_error_or_a_missing_file(
    relay: Relay, browser: Browser
) -> None:
    alice = await join(browser, relay, "alice")
    bob = await join(browser, relay, "bob")
    await alice.wait(knows("bob"))
    await alice.eval("window.demo.say('hi bob')")
    await bob.wait(logged("alice: hi bob"))
    assert await alice.errors() == [] and await bob.errors() == []
    # Its icon is inline, so the browser asks the relay for no /favicon.ico (a 404)
    # even after these checks.
    icon = await alice.eval("document.querySelector('link[rel~=icon]')?.href ?? ''")
    assert icon.startswith("data:image/")


async def test_a_tab_replaced_by_a_second_one_under_its_name_says_so_and_can_rejoin(
    relay: Relay, browser: Browser
) -> None:
    """Close code 4000: a newer connection with the same id took the name. The first tab
    does not pretend to reconnect, shows no stale member list, and offers to rejoin."""
    bob = await join(browser, relay, "bob")
    first = await join(browser, relay, "alice")
    await first.wait("document.querySelector('[data-member=bob]') !== null")
    second = await join(browser, relay, "alice", tab="alice again")
    await first.wait(logged("replaced by another tab"))
    assert await first.eval("document.getElementById('state').textContent") == (
        "replaced by another tab"
    )
    assert not await first.eval(logged("reconnecting"))
    assert await first.eval("document.querySelectorAll('#members li').length") == 0
    assert not await first.eval(shown("aside"))
    assert await first.eval(shown("#rejoin"))
    # Rejoining takes the name back: now the second tab is the replaced one.
    await first.eval(click("#rejoin"))
    await first.wait("window.demo.client.connected")
    await first.wait("document.querySelector('[data-member=bob]') !== null")
    assert not await first.eval(shown("#rejoin"))
    await second.wait(logged("replaced by another tab"))
    await bob.eval("window.demo.say('welcome back')")
    await first.wait(logged("bob: welcome back"))


async def test_a_page_reloaded_mid_traffic_misses_nothing(browser: Browser) -> None:
    """The page keeps the position it has seen in its tab's sessionStorage and names it
    when it connects again, so the relay (keeping history) replays what came meanwhile."""
    async with (
        open_relay(RelayConfig(port=0, demo=True, history_size=1000)) as relay,
        open_client(relay.url, group="lobby", id="py") as py,
    ):
        page = await join(browser, relay, "ann")
        await wait_for_member(py, "ann")
        sent = 0
        talking = True

        async def talk() -> None:
            nonlocal sent
            while talking:
                await py.send(Chat(f"m {sent}"))
                sent += 1
                await trio.sleep(0.01)  # a steady pace, not a flood

        async with trio.open_nursery() as nursery:
            nursery.start_soon(talk)
            await page.wait(logged("py: m 20"))
            # What the page had shown when it went away: its log goes with it.
            await page.eval(
                "(() => { addEventListener('pagehide', () => sessionStorage.setItem("
                "'shown before', JSON.stringify(window.demo.log))); return true })()"
            )
            await page.reload()
            await page.wait("window.demo.client && window.demo.client.connected")
            await page.wait("window.demo.log.filter(l => l.startsWith('py: ')).length >= 20")
            talking = False
        await page.wait(logged(f"py: m {sent - 1}"))
        before = json.loads(await page.eval("sessionStorage.getItem('shown before')"))
        after = await page.eval("window.demo.log")
        lines = [line for line in before + after if line.startswith("py: ")]
        assert lines == [f"py: m {n}" for n in range(sent)]
        resumed = await page.eval("document.getElementById('resumed').textContent")
        assert resumed.startswith("recovered "), resumed


async def test_pages_recover_what_they_missed_across_a_relay_restart(
    browser: Browser, redis_url: str, prefix: str
) -> None:
    """A relay with its history in Redis restarts (on the same port) while pages are
    open: they reconnect by themselves, name their position, and get every message sent
    while the relay was down — in order, then live ones."""
    settings = dict(
        host="127.0.0.1", demo=True, backplane=redis_url, backplane_prefix=prefix,
        history_size=1000,
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        # Where the Python sender stays while the pages' node restarts.
        other = await nursery.start(serve_relay, RelayConfig(port=0, **settings))
        node = RestartableRelay(nursery)
        relay = await node.start(**settings)
        pages = [await join(browser, relay, name, "h") for name in ("ann", "ben")]
        async with open_client(other.url, group="h", id="py") as py:
            for name in ("ann", "ben"):
                await wait_for_member(py, name)
            await py.send(Chat("before the restart"))
            for page in pages:
                await page.wait(logged("py: before the restart"))
            await node.stop()  # the relay stops: its members get 1001
            for page in pages:
                await page.wait("window.demo.client.state === 'reconnecting'")
            for n in range(10):
                await py.send(Chat(f"missed {n}"))
            started = time.monotonic()
            await node.start(**settings)
            for page in pages:
                await page.wait(
                    "document.getElementById('resumed').textContent === 'recovered 10 messages'"
                )
            recovered_after = time.monotonic() - started
            await py.send(Chat("after the restart"))
            for page in pages:
                await page.wait(logged("py: after the restart"))
                lines = await page.eval("window.demo.log.filter(l => l.startsWith('py: '))")
                assert lines == [
                    "py: before the restart",
                    *[f"py: missed {n}" for n in range(10)],
                    "py: after the restart",
                ]
        print(f"pages recovered {recovered_after:.2f} s after the relay was back")
        nursery.cancel_scope.cancel()


async def test_screenshots_of_the_demo_desktop_and_phone(
    relay: Relay, browser: Browser, tmp_path: Path
) -> None:
    folder = Path(os.environ.get("TRIO_WSPROXY_SCREENSHOTS", tmp_path))
    alice = await join(browser, relay, "alice", "lobby", width=1100, height=700)
    phone = await join(browser, relay, "bob", "lobby", **PHONE)
    await alice.wait(knows("bob"))
    await alice.eval("window.demo.say('Hello from the desktop')")
    await phone.wait(logged("alice: Hello from the desktop"))
    await phone.eval("window.demo.say('And hello from a phone')")
    await alice.wait(logged("bob: And hello from a phone"))
    await alice.eval(click("[data-member=bob]"))
    await alice.screenshot(folder / "demo-desktop.png")
    await phone.screenshot(folder / "demo-phone.png")
    for name, width in (("demo-desktop.png", 1100), ("demo-phone.png", 780)):
        header = (folder / name).read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">I", header[16:20])[0] == width
    # Nothing horizontal to scroll on the phone.
    assert await phone.eval("document.documentElement.scrollWidth <= window.innerWidth")
