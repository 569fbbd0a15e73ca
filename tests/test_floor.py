"""One message streams to a group at a time: the group's floor (relay/floor.py)."""

from __future__ import annotations

import trio
import trio.testing

from trio_wsproxy.relay.floor import Floor


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
