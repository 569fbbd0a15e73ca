"""What the Python client does with the back end's refusals (DESIGN.md §9): a message the
publish hook refuses is a DeliveryFailed for handlers, and the client stays in the group
(the URL's or a joined one); a join the join hook refuses when the client rejoins after
a reconnect still takes it out of that group."""

from __future__ import annotations

from typing import Any

import trio

from hookserver import back_end
from test_client_groups import hold_reconnecting
from test_client_v1 import FAST
from trio_wsproxy import DeliveryFailed, RelayConfig, open_client, open_relay


def config(**settings: Any) -> RelayConfig:
    return RelayConfig(port=0, ping_interval=None, close_timeout=0.2, **settings)


async def no_cheating(body: dict[str, Any]) -> dict[str, Any]:
    if body["hook"] == "publish" and "cheat" in body["text"]:
        return {"allow": False, "status": 422, "reason": "no cheating"}
    return {"allow": True}


async def test_a_refused_message_is_a_delivery_failure_and_the_client_stays_in_its_groups() -> None:
    async with back_end(no_cheating) as server:
        async with open_relay(config(publish_hook=server.url)) as relay:
            with trio.fail_after(10):
                async with (
                    open_client(relay.url, group="lobby", id="bob") as bob_lobby,
                    open_client(relay.url, group="room-2", id="bob2") as bob_room,
                    open_client(relay.url, group="lobby", id="alice", config=FAST) as alice,
                ):
                    room = await alice.join("room-2")
                    async with (
                        alice.subscribe(DeliveryFailed) as lobby_failures,
                        room.subscribe(DeliveryFailed) as room_failures,
                        bob_lobby.subscribe(str) as lobby_heard,
                        bob_room.subscribe(str) as room_heard,
                    ):
                        await alice.send("cheat")
                        await room.send("cheat")
                        for failures in (lobby_failures, room_failures):
                            failed = (await failures.receive()).value
                            refusal = (failed.error, failed.detail)
                            assert refusal == ("message_refused", "no cheating")
                        assert set(alice.groups) == {"lobby", "room-2"}
                        # Still in both: the next messages go through.
                        await alice.send("fair")
                        await room.send("fair too")
                        assert (await lobby_heard.receive()).value == "fair"
                        assert (await room_heard.receive()).value == "fair too"


async def test_a_join_refused_on_a_rejoin_after_a_reconnect_takes_the_client_out() -> None:
    refuse = False

    async def answer(body: dict[str, Any]) -> dict[str, Any]:
        if refuse and body["group"] == "room-2":
            return {"allow": False, "status": 403, "reason": "not any more"}
        return {"allow": True}

    async with back_end(answer) as server:
        async with open_relay(config(join_hook=server.url)) as relay:
            with trio.fail_after(10):
                async with open_client(relay.url, group="lobby", id="alice", config=FAST) as alice:
                    room = await alice.join("room-2")
                    reconnect = hold_reconnecting(alice)
                    refuse = True
                    await reconnect()
                    # The relay refuses the rejoin: the client is out of room-2 only.
                    assert await room.wait_left() == "refused"
                    assert set(alice.groups) == {"lobby"}
                    assert not room.joined
                    await alice.send("still in the lobby")
