"""Many groups on one connection in a real headless Chromium: the demo page in three rooms
over one WebSocket (its URL's room and two it joined with ``client.join``), talking with
a Python member of each room, who is opened with that room as its URL's group. The
page's room list: join, switch, unread counts, leave.

Fixtures and the driver as in tests/test_browser.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio

import trio_wsproxy
from browserdriver import Browser, Page, open_browser
from demotypes import Chat
from httpapi import KEY, call
from relaynode import RestartableRelay
from test_browser import click, join, logged
from trio_wsproxy import Relay, RelayConfig, open_client, open_relay, serve_relay
from trio_wsproxy.testing import wait_for_member, wait_for_member_to_leave

ROOMS = ("lobby", "room-2", "room-3")


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    async with open_relay(RelayConfig(port=0, demo=True, history_size=100)) as relay:
        yield relay


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with open_browser() as browser:
        yield browser


def unread(room: str) -> str:
    """The unread count the room list shows for ``room`` ("" for none)."""
    return f"document.querySelector('[data-room={room}] .unread').textContent"


async def join_room(page: Page, room: str) -> None:
    """Join ``room`` through the page's form, as a person would, until it is listed."""
    await page.eval(
        f"(() => {{ document.getElementById('newroom').value = {room!r};"
        " document.getElementById('another').requestSubmit(); return true })()"
    )
    await page.wait(f"document.querySelector('[data-room={room}]') !== null")


async def next_chat(
    channel: trio.MemoryReceiveChannel[trio_wsproxy.Incoming[Chat]],
) -> trio_wsproxy.Incoming[Chat]:
    with trio.fail_after(5):
        return await channel.receive()


async def test_one_page_in_three_rooms_talks_with_a_python_member_of_each(
    relay: Relay, browser: Browser
) -> None:
    page = await join(browser, relay, "web")
    async with AsyncExitStack() as stack:
        py = {
            room: await stack.enter_async_context(
                open_client(relay.url, group=room, id=f"py-{room}")
            )
            for room in ROOMS
        }
        chats = {room: await stack.enter_async_context(py[room].subscribe(Chat)) for room in ROOMS}
        await join_room(page, "room-2")
        await join_room(page, "room-3")
        # One connection, three groups; each Python member sees the page in its room.
        assert await page.eval("[...window.demo.client.groups.keys()]") == list(ROOMS)
        for room in ROOMS:
            await wait_for_member(py[room], "web")
        # The room joined last is shown; its member list is its own.
        await page.wait("document.querySelector('[data-member=\"py-room-3\"]') !== null")
        assert await page.eval("document.querySelector('#rooms .current').dataset.room") == "room-3"

        # The page says something in each room: each Python member's first chat is its
        # room's (had a message gone to the wrong group, another would come first).
        for room in ROOMS:
            await page.eval(f"window.demo.show({room!r}) ?? true")
            await page.eval(f"window.demo.say('hello {room}')")
        for room in ROOMS:
            incoming = await next_chat(chats[room])
            assert (incoming.value.text, incoming.sender, incoming.direct) == (
                f"hello {room}",
                "web",
                False,
            )

        # Each Python member talks in its room; lines of a room not shown count unread.
        await page.eval("window.demo.show('room-3') ?? true")
        await py["room-2"].send(Chat("one from room 2"))
        await py["room-2"].send(Chat("two from room 2"))
        await py["lobby"].send(Chat("one from the lobby"))
        await py["room-3"].send(Chat("one from room 3"))
        await page.wait(logged("[room-2] py-room-2: two from room 2"))
        await page.wait(logged("py-lobby: one from the lobby"))
        await page.wait(logged("[room-3] py-room-3: one from room 3"))
        assert await page.eval(unread("room-2")) == "2"
        assert await page.eval(unread("lobby")) == "1"
        assert await page.eval(unread("room-3")) == ""  # shown: read
        shown = await page.eval("document.getElementById('log').textContent")
        assert shown.count("py-room-3: one from room 3") == 1 and "room 2" not in shown

        # Switching shows the room's lines and reads them.
        await page.eval(click("[data-room=room-2]"))
        assert await page.eval(unread("room-2")) == ""
        log = await page.eval("document.getElementById('log').textContent")
        assert "py-room-2: one from room 2" in log and "py-room-2: two from room 2" in log
        assert "lobby" not in log and "room 3" not in log

        # A direct message in a joined room reaches that member only, as direct.
        await page.eval(click('[data-member="py-room-2"]'))
        await page.eval("window.demo.say('just for you')")
        incoming = await next_chat(chats["room-2"])
        assert (incoming.value.text, incoming.direct) == ("just for you", True)

        # Leaving a room (its × in the list): its member sees the page go; the others
        # still talk with it.
        await page.eval(click("[data-leave=room-2]"))
        await wait_for_member_to_leave(py["room-2"], "web")
        await page.wait("document.querySelector('[data-room=room-2]') === null")
        assert await page.eval("[...window.demo.client.groups.keys()]") == ["lobby", "room-3"]
        assert "web" in py["room-3"].members and "web" in py["lobby"].members
        await py["room-3"].send(Chat("still here"))
        await page.wait(logged("[room-3] py-room-3: still here"))
        assert await page.errors() == []


async def test_a_refused_join_says_why_and_the_page_stays_in_its_rooms(browser: Browser) -> None:
    config = RelayConfig(port=0, demo=True, max_groups_per_member=2)
    async with open_relay(config) as relay:
        page = await join(browser, relay, "web")
        await join_room(page, "room-2")
        refused = await page.eval(
            "window.demo.client.join('room-3').then(() => 'joined', e => [e.name, e.code, e.group])"
        )
        assert refused == ["JoinRefused", "group_limit", "room-3"]
        assert await page.eval("[...window.demo.client.groups.keys()]") == ["lobby", "room-2"]
        async with open_client(relay.url, group="room-2", id="py") as py:
            await wait_for_member(py, "web")
            await py.send(Chat("after the refusal"))
            await page.wait(logged("[room-2] py: after the refusal"))


async def test_after_a_relay_restart_the_page_recovers_each_room_from_its_own_position(
    browser: Browser, redis_url: str, prefix: str
) -> None:
    """The page's node restarts (history in Redis): the page reconnects, names its URL's
    room's position, joins the two others again each with its own, and shows every
    message each room got meanwhile, in order, then live ones."""
    settings: dict[str, Any] = dict(
        host="127.0.0.1", demo=True, backplane=redis_url, backplane_prefix=prefix,
        history_size=1000,
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        # Where the Python members stay while the page's node restarts.
        other = await nursery.start(serve_relay, RelayConfig(port=0, **settings))
        node = RestartableRelay(nursery)
        relay = await node.start(**settings)
        page = await join(browser, relay, "web")
        await join_room(page, "room-2")
        await join_room(page, "room-3")
        async with AsyncExitStack() as stack:
            py = {
                room: await stack.enter_async_context(
                    open_client(other.url, group=room, id=f"py-{room}")
                )
                for room in ROOMS
            }
            for room in ROOMS:
                await wait_for_member(py[room], "web")
                await py[room].send(Chat(f"{room} before"))
            for room in ROOMS:
                await page.wait(logged(f"py-{room}: {room} before"))
            await node.stop()  # the relay stops: the page gets 1001
            await page.wait("window.demo.client.state === 'reconnecting'")
            for n in range(5):
                for room in ROOMS:
                    await py[room].send(Chat(f"{room} missed {n}"))
            await node.start(**settings)
            for room in ROOMS:
                await page.wait(logged(f"{room} missed 4"))
                await py[room].send(Chat(f"{room} after"))
            for room in ROOMS:
                await page.wait(logged(f"{room} after"))
                said = await page.eval(
                    f"window.demo.log.filter(l => l.includes('py-{room}: '))"
                    ".map(l => l.split(': ')[1])"
                )
                assert said == [
                    f"{room} before",
                    *[f"{room} missed {n}" for n in range(5)],
                    f"{room} after",
                ], room
                where = "" if room == "lobby" else f"[{room}] "
                recovered = f"{where}recovered 5 missed messages"
                assert await page.eval(f"window.demo.log.includes({recovered!r})"), room
            assert await page.eval("[...window.demo.client.groups.keys()]") == list(ROOMS)
        nursery.cancel_scope.cancel()


async def test_a_room_the_back_end_removes_the_page_from_leaves_the_list_saying_why(
    browser: Browser,
) -> None:
    async with open_relay(RelayConfig(port=0, demo=True, api_key=KEY)) as relay:
        page = await join(browser, relay, "web")
        await join_room(page, "room-2")
        answer = await call(relay.port, "DELETE", "/api/groups/room-2/members/web")
        assert answer.status == 204, answer
        await page.wait("document.querySelector('[data-room=room-2]') === null")
        assert await page.eval(logged("out of room-2: "))
        assert await page.eval("[...window.demo.client.groups.keys()]") == ["lobby"]
        assert await page.eval("document.querySelector('#rooms .current').dataset.room") == "lobby"
        # Kept out for a while: joining again is refused, and says so.
        refused = await page.eval(
            "window.demo.client.join('room-2').then(() => 'joined', e => [e.name, e.code])"
        )
        assert refused == ["JoinRefused", "banned"]
        assert await page.eval("window.demo.client.connected")
