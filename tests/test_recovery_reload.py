"""Recovery after a restart (issue 34, item 6): a program that saved the position it
had reached — a bot restarted, a page reloaded — starts a new client from it and gets
exactly what it missed; and nothing replayed is lost to timing, because messages that
come before the first handler or subscription are held for it. Over real sockets,
against a real relay keeping history."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import trio_wsproxy
from trio_wsproxy import Client, ClientConfig, Incoming, Relay, Resumed, open_client

with_history = pytest.mark.wsproxy_relay(history_size=100)


async def bot_run(relay: Relay, saved: Path, until: str) -> tuple[list[str], list[Resumed]]:
    """One run of a bot that keeps its position in a file: it starts from the position
    saved there (if any), saves the position after each message it handles, and stops
    once it has handled ``until``. Returns what it handled and the Resumed it was told."""
    file = trio.Path(saved)
    since = await file.read_text() if await file.exists() else None
    got: list[str] = []
    resumed: list[Resumed] = []
    done = trio.Event()
    async with open_client(relay.url, group="g", id="bot", since=since) as bot:

        @bot.on(str)
        def handle(text: str, incoming: Incoming[str]) -> None:
            got.append(text)
            assert bot.position is not None and bot.position.offset == incoming.offset
            saved.write_text(str(bot.position))
            if text == until:
                done.set()

        bot.on(Resumed, resumed.append)
        await done.wait()
    return got, resumed


@with_history
async def test_a_restarted_bot_gets_exactly_what_it_missed_from_its_saved_position(
    relay: Relay, tmp_path: Path
) -> None:
    saved = tmp_path / "position"
    with trio.fail_after(20):
        async with open_client(relay.url, group="g", id="alice") as alice:
            async with trio.open_nursery() as nursery:
                first: list[tuple[list[str], list[Resumed]]] = []

                async def first_run() -> None:
                    first.append(await bot_run(relay, saved, until="two"))

                nursery.start_soon(first_run)
                await relay.wait_members(2, "g")
                await alice.send("one")
                await alice.send("two")
            assert first == [(["one", "two"], [])]  # the first run names nothing
            position = await trio.Path(saved).read_text()
            epoch = position.rpartition(":")[0]
            assert position == f"{epoch}:2"
            # While the bot is down.
            for text in ("three", "four", "five"):
                await alice.send(text)
            async with trio.open_nursery() as nursery:
                second: list[tuple[list[str], list[Resumed]]] = []

                async def second_run() -> None:
                    second.append(await bot_run(relay, saved, until="live"))

                nursery.start_soon(second_run)
                await relay.wait_members(2, "g")
                await alice.send("live")
    # Exactly what it missed, after the Resumed that says so; then live ones.
    assert second == [(["three", "four", "five", "live"], [Resumed(True, 3)])]
    assert await trio.Path(saved).read_text() == f"{epoch}:6"


@with_history
async def test_the_position_is_none_before_the_welcome_and_str_gives_epoch_offset(
    relay: Relay,
) -> None:
    assert Client(relay.url, group="g").position is None
    with pytest.raises(ValueError, match="not a position"):
        Client(relay.url, group="g", since="no offset")
    position = trio_wsproxy.Position("9f86d081884c7d65", 17)
    assert trio_wsproxy.Position.parse("9f86d081884c7d65:17") == position
    assert str(position) == "9f86d081884c7d65:17"
    with trio.fail_after(10):
        async with open_client(relay.url, group="g") as client:
            assert client.position is not None and client.position.offset == 0
            # A Position and its str() name the same place.
            async with open_client(relay.url, group="g", since=client.position) as again:
                assert again.position == client.position


@with_history
async def test_a_position_from_an_older_relay_run_is_reported_not_replayed(
    relay: Relay,
) -> None:
    with trio.fail_after(10):
        async with (
            open_client(relay.url, group="g", since="an-older-epoch:5") as client,
            client.subscribe(Resumed) as resumes,
        ):
            resumed = (await resumes.receive()).value
            assert resumed == Resumed(False, 0, "epoch_changed")
            assert client.position is not None and client.position.epoch != "an-older-epoch"


@with_history
async def test_replayed_messages_wait_for_a_handler_registered_late_in_the_block(
    relay: Relay,
) -> None:
    """The block awaits something else before it registers its handlers — after the
    whole replay was read: every replayed message, and the Resumed before them, still
    reach the handlers, in order."""
    with trio.fail_after(20):
        async with open_client(relay.url, group="g", id="alice") as alice:
            async with open_client(relay.url, group="g", id="bob") as bob:
                saved = bob.position
            assert saved is not None
            for n in range(20):
                await alice.send(f"missed {n}")
            got: list[object] = []
            async with open_client(relay.url, group="g", id="bob", since=str(saved)) as bob:
                await trio.testing.wait_all_tasks_blocked()  # the replay is read meanwhile
                assert bob.stats.messages_received == 20
                bob.on(Resumed, got.append)
                bob.on(str, got.append)
                async with bob.subscribe(str) as texts:
                    for _ in range(20):
                        await texts.receive()
            assert got == [Resumed(True, 20), *[f"missed {n}" for n in range(20)]]
            assert bob.stats.unhandled == 0


@with_history
async def test_a_first_subscription_gets_what_came_before_it(relay: Relay) -> None:
    with trio.fail_after(20):
        async with open_client(relay.url, group="g", id="alice") as alice:
            async with open_client(relay.url, group="g", id="bob") as bob:
                await relay.wait_members(2, "g")
                await alice.send("early")
                await trio.testing.wait_all_tasks_blocked()
                assert bob.stats.messages_received == 1
                async with bob.subscribe(str) as texts:
                    assert (await texts.receive()).value == "early"


@with_history
async def test_a_client_that_registers_nothing_holds_read_ahead_messages_at_most(
    relay: Relay,
) -> None:
    """The hold is bounded: past read_ahead messages they are handed out as they come —
    to nobody, as before — and hooks were never held."""
    connected = trio.Event()
    config = ClientConfig(read_ahead=4)
    with trio.fail_after(20):
        async with open_client(relay.url, group="g", id="alice") as alice:
            async with open_client(
                relay.url,
                group="g",
                id="quiet",
                config=config,
                on_connect=lambda _: connected.set(),
            ) as quiet:
                await connected.wait()
                await relay.wait_members(2, "g")
                for n in range(10):
                    await alice.send(f"m{n}")
                while quiet.stats.unhandled < 10:
                    await trio.testing.wait_all_tasks_blocked(cushion=0.01)
                assert quiet.stats.unhandled == 10
                assert quiet.position is not None and quiet.position.offset == 10


@with_history
async def test_the_position_is_what_was_handed_out_not_what_was_read_ahead(relay: Relay) -> None:
    """A program that saves the position and exits while its handler is busy has not
    been given what the client read ahead: a client started from it gets those again."""
    release, busy, all_seen = trio.Event(), trio.Event(), trio.Event()
    seen: list[tuple[str, int | None, int | None]] = []
    with trio.fail_after(20):
        async with (
            open_client(relay.url, group="g", id="alice") as alice,
            open_client(relay.url, group="g", id="bob") as bob,
        ):

            @bob.on(str)
            async def slow(text: str, incoming: Incoming[str]) -> None:
                position = bob.position
                seen.append((text, incoming.offset, None if position is None else position.offset))
                busy.set()
                await release.wait()
                if len(seen) == 5:
                    all_seen.set()

            await relay.wait_members(2, "g")
            for n in range(5):
                await alice.send(f"m{n}")
            await busy.wait()
            while bob.stats.messages_received < 5:
                await trio.testing.wait_all_tasks_blocked(cushion=0.01)
            assert bob.position is not None and bob.position.offset == 1  # not 5
            release.set()
            await all_seen.wait()
            assert bob.position.offset == 5
    assert seen == [(f"m{n}", n + 1, n + 1) for n in range(5)]
