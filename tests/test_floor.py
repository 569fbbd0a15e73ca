"""One message streams to a group at a time: the group's floor (relay/floor.py)."""

from __future__ import annotations

import trio
import trio.testing

from trio_wsproxy.protocol.message import StreamHead
from trio_wsproxy.relay.floor import Floor
from trio_wsproxy.relay.groups import Group


async def test_a_free_floor_does_not_make_anyone_wait() -> None:
    floor = Floor()
    with trio.fail_after(1):
        await floor.wait("a", lambda: None)


async def test_others_wait_for_the_holder_and_go_on_when_it_releases() -> None:
    floor = Floor()
    floor.take("a")
    flushed: list[str] = []
    order: list[str] = []

    async def sender(name: str) -> None:
        await floor.wait(name, lambda: flushed.append(name))
        order.append(name)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender, "b")
            nursery.start_soon(sender, "a")  # the holder itself never waits
            await trio.testing.wait_all_tasks_blocked()
            assert order == ["a"]
            assert flushed == ["b"]  # b wrote out what it held before it waited
            assert not floor.release("b")  # only the holder releases
            assert floor.release("a")
    assert order == ["a", "b"]
    assert floor.holder is None


async def test_waiters_recheck_when_the_floor_changes_hands() -> None:
    floor = Floor()
    floor.take("remote")
    done = trio.Event()

    async def waiter() -> None:
        await floor.wait("c", lambda: None)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        floor.take("b")  # the channel order gave it to another: c keeps waiting
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()
        floor.release("b")
        with trio.fail_after(5):
            await done.wait()


async def test_a_stream_starts_only_once_messages_that_passed_the_floor_are_queued() -> None:
    # A whole message passed the floor and waits for room at a full mailbox: a stream
    # that takes the floor now must not send its first piece before that message is
    # queued everywhere, or a recipient could get the message between two fragments.
    group = Group("g")
    floor = group.floor
    floor.passing()
    opened = trio.Event()

    async def stream() -> None:
        await group.open_stream(object(), StreamHead("s", text=False))
        opened.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream)
        await trio.testing.wait_all_tasks_blocked()
        assert floor.holder is not None  # it has the floor: no new message passes...
        assert not opened.is_set()  # ...but it waits for the one in flight
        floor.passed()
        with trio.fail_after(5):
            await opened.wait()
