"""The Python client in many groups on one connection (``wsproxy.v1``; docs/client.md,
"Many groups on one connection"), over real sockets against an in-process relay: a
client joins groups and gets a handle for each, with its own members, handlers,
requests and position; it leaves any of them, the URL's included; a refused join raises
JoinRefused and the client goes on; after a reconnect it rejoins every group, and each
recovers what it missed with its own Resumed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest
import trio

from httpapi import KEY, call
from test_client_v1 import FAST, Answer, Chat, Question, chat_types
from trio_wsproxy import (
    BinaryStream,
    Client,
    GroupHandle,
    Incoming,
    JoinRefused,
    NotInGroup,
    Relay,
    Resumed,
    UnsupportedByRelay,
    mint_token,
    open_client,
)
from trio_wsproxy.protocol import v1
from trio_wsproxy.testing import (
    ClientFactory,
    expect_direct_message,
    expect_message,
    expect_silence,
    join_group,
    wait_for_member,
    wait_for_member_to_leave,
    wait_for_members,
)

SECRET = "a-secret-of-at-least-thirty-two-bytes!"


async def member(make: ClientFactory, group: str, id: str, **options: Any) -> Client:
    """A fixture client that speaks Chat, Question and Answer."""
    return await make(group=group, id=id, types=chat_types(), config=FAST, **options)


async def test_a_client_joins_a_group_and_sends_to_it_and_to_one_member_of_it(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    alice = await member(wsproxy_client, "lobby", "alice")
    bob = await member(wsproxy_client, "room-2", "bob")
    carol = await member(wsproxy_client, "lobby", "carol")
    room = await join_group(alice, "room-2")
    assert isinstance(room, GroupHandle) and room.name == "room-2" and room.joined
    # The welcome answered the join: the group's members are known at once.
    assert room.members == {"bob"} and room.member_count == 1 and room.members_current
    assert set(alice.groups) == {"lobby", "room-2"} and alice.groups["room-2"] is room
    await wait_for_member(alice, "carol")
    assert alice.groups["lobby"].members == {"carol"} == alice.members
    await wait_for_member(bob, "alice")
    await room.send(Chat("to room-2"))
    assert await expect_message(bob, Chat) == Chat("to room-2")
    await room.send(b"\x00binary")
    assert await expect_message(bob, bytes) == b"\x00binary"
    await room.send_to("bob", Chat("to bob in room-2"))
    direct = await expect_direct_message(bob, Chat)
    assert (direct.value, direct.sender) == (Chat("to bob in room-2"), "alice")
    # The client's own API is still the URL's group: carol hears it, bob does not.
    await alice.send(Chat("to the lobby"))
    assert await expect_message(carol, Chat) == Chat("to the lobby")
    await expect_silence(bob)
    # Nor does the lobby hear what went to room-2.
    await expect_silence(carol, within=0)


async def test_each_group_has_its_own_handlers_and_requests(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    alice = await member(wsproxy_client, "lobby", "alice")
    bob = await member(wsproxy_client, "room-2", "bob")
    carol = await member(wsproxy_client, "lobby", "carol")
    room = await alice.join("room-2")
    await wait_for_member(bob, "alice")
    in_lobby: list[Incoming[Chat]] = []
    in_room: list[Incoming[Chat]] = []
    both = trio.Semaphore(0)

    def lobby_chat(chat: Chat, incoming: Incoming[Chat]) -> None:
        in_lobby.append(incoming)
        both.release()

    def room_chat(chat: Chat, incoming: Incoming[Chat]) -> None:
        in_room.append(incoming)
        both.release()

    alice.on(Chat, lobby_chat)
    room.on(Chat, room_chat)

    @room.on(Question)
    async def answer(question: Question, incoming: Incoming[Question]) -> None:
        await incoming.reply(Answer(f"room-2 says {question.text}"))

    await bob.send(Chat("from room-2"))
    await carol.send(Chat("from the lobby"))
    with trio.fail_after(5):
        await both.acquire()
        await both.acquire()
    assert [(i.value.text, i.sender) for i in in_lobby] == [("from the lobby", "carol")]
    assert [(i.value.text, i.sender) for i in in_room] == [("from room-2", "bob")]
    # A question in room-2 is answered by room-2's handler, to the asker only.
    assert await bob.request(Question("hi"), Answer, timeout=5) == Answer("room-2 says hi")
    await expect_silence(carol, within=0)

    # ...and the client asks room-2, whose member answers it there.
    @bob.on(Question)
    async def bob_answers(question: Question, incoming: Incoming[Question]) -> None:
        await incoming.reply(Answer(f"bob heard {question.text}"))

    assert await room.request(Question("q"), Answer, timeout=5, to="bob") == Answer("bob heard q")
    assert room.pending_requests == 0
    room.off(Chat, room_chat)
    await bob.send(Chat("unheard"))
    await carol.send(Chat("heard"))
    with trio.fail_after(5):
        await both.acquire()
    assert [i.value.text for i in in_lobby] == ["from the lobby", "heard"]
    assert len(in_room) == 1


async def test_a_stream_goes_to_a_joined_group_and_comes_from_it_with_its_announcement(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    alice = await member(wsproxy_client, "lobby", "alice")
    bob = await member(wsproxy_client, "room-2", "bob")
    room = await alice.join("room-2")
    await wait_for_member(bob, "alice")
    streams: trio.MemorySendChannel[tuple[Chat, bytes, str | None]]
    streams, streamed = trio.open_memory_channel(2)

    async def save(chat: Chat, stream: BinaryStream) -> None:
        await streams.send((chat, await stream.read_all(1 << 20), stream.sender))

    room.on_stream(Chat, save)  # alice hears streams in room-2...
    bob.on_stream(Chat, save)  # ...and bob in his URL's group, room-2
    pieces = [b"a" * 1000, b"b" * 1000]
    assert await room.send_stream(pieces, announce=Chat("from alice")) == 2000
    assert await bob.send_stream([b"c" * 10], announce=Chat("from bob")) == 10
    with trio.fail_after(5):
        got = {await streamed.receive(), await streamed.receive()}
    assert got == {
        (Chat("from alice"), b"a" * 1000 + b"b" * 1000, "alice"),
        (Chat("from bob"), b"c" * 10, "bob"),
    }


async def test_a_client_that_leaves_a_group_hears_nothing_more_of_it(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    alice = await member(wsproxy_client, "lobby", "alice")
    bob = await member(wsproxy_client, "room-2", "bob")
    room = await join_group(alice, "room-2")
    await wait_for_member(bob, "alice")
    async with room.subscribe(Chat) as chats:
        await bob.send(Chat("before"))
        with trio.fail_after(5):
            assert (await chats.receive()).value == Chat("before")
        await room.leave()
        assert not room.joined and room.standing == "left"
        assert set(alice.groups) == {"lobby"}
        with trio.fail_after(5):  # the group's subscriptions end with it
            with pytest.raises(trio.EndOfChannel):
                await chats.receive()
    await wait_for_member_to_leave(bob, "alice")
    await wait_for_members(wsproxy_relay, 1, group="room-2")
    with pytest.raises(NotInGroup, match="room-2"):
        await room.send(Chat("too late"))
    await room.leave()  # (again: nothing to do)
    # It can join again: a new handle.
    again = await join_group(alice, "room-2")
    assert again is not room and again.joined
    await bob.send(Chat("after"))
    assert await expect_message(again, Chat) == Chat("after")


async def test_a_client_can_leave_its_urls_group_and_join_it_again(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    alice = await member(wsproxy_client, "lobby", "alice")
    carol = await member(wsproxy_client, "lobby", "carol")
    room = await join_group(alice, "room-2")
    lobby = alice.groups["lobby"]
    await lobby.leave()
    assert set(alice.groups) == {"room-2"}
    await wait_for_member_to_leave(carol, "alice")
    with pytest.raises(NotInGroup, match="lobby"):
        await alice.send(Chat("nobody hears"))
    await carol.send(Chat("alice is gone"))
    await expect_silence(alice)
    # Still in room-2, on the same connection.
    bob = await member(wsproxy_client, "room-2", "bob")
    await bob.send(Chat("still here?"))
    assert await expect_message(room, Chat) == Chat("still here?")
    # Joining the URL's group again gives back the client's own API.
    assert await alice.join("lobby") is lobby
    assert set(alice.groups) == {"lobby", "room-2"}
    await wait_for_member(carol, "alice")
    await alice.send(Chat("back"))
    assert await expect_message(carol, Chat) == Chat("back")


@pytest.mark.wsproxy_relay(token_secret=SECRET)
async def test_a_join_the_token_does_not_allow_raises_join_refused_and_the_client_goes_on(
    wsproxy_relay: Relay,
) -> None:
    token = mint_token(SECRET, "alice", ["lobby", "game-*"], ttl=60)
    url = f"{wsproxy_relay.url}?access_token={token}"
    bob_token = mint_token(SECRET, "bob", ["lobby"], ttl=60)
    async with (
        open_client(url, group="lobby", id="alice", types=chat_types(), config=FAST) as alice,
        open_client(
            f"{wsproxy_relay.url}?access_token={bob_token}",
            group="lobby",
            id="bob",
            types=chat_types(),
            config=FAST,
        ) as bob,
    ):
        with pytest.raises(JoinRefused) as refused:
            await alice.join("kitchen")
        error = refused.value
        assert (error.group, error.code) == ("kitchen", v1.NOT_ALLOWED)
        assert "kitchen" in str(error) and v1.NOT_ALLOWED in str(error) and error.detail
        assert set(alice.groups) == {"lobby"}
        game = await alice.join("game-7")  # one the token allows
        assert game.joined
        # The connection went on: the lobby works both ways.
        async with bob.subscribe(Chat) as chats:
            await alice.send(Chat("still here"))
            with trio.fail_after(5):
                assert (await chats.receive()).value == Chat("still here")
        with pytest.raises(JoinRefused) as twice:
            await alice.join("game-7")
        assert twice.value.code == v1.ALREADY_JOINED


@pytest.mark.wsproxy_relay(api_key=KEY)
async def test_a_group_the_back_end_removes_the_client_from_ends_and_the_others_go_on(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    alice = await member(wsproxy_client, "lobby", "alice")
    carol = await member(wsproxy_client, "lobby", "carol")
    room = await join_group(alice, "room-2")
    answer = await call(wsproxy_relay.port, "DELETE", "/api/groups/room-2/members/alice")
    assert answer.status == 204, answer
    with trio.fail_after(5):
        why = await room.wait_left()
    assert why is not None and "back end" in why and room.left_because == why
    assert not room.joined and set(alice.groups) == {"lobby"}
    with pytest.raises(NotInGroup, match="back end"):
        await room.send(Chat("kept out"))
    # Kept out for a while: joining again is refused.
    with pytest.raises(JoinRefused) as refused:
        await alice.join("room-2")
    assert refused.value.code == v1.BANNED
    await alice.send(Chat("still in the lobby"))
    assert await expect_message(carol, Chat) == Chat("still in the lobby")


async def test_joining_needs_the_v1_subprotocol(wsproxy_client: ClientFactory) -> None:
    plain = await wsproxy_client(group="lobby", config=attrs.evolve(FAST, offer_v1=False))
    with pytest.raises(UnsupportedByRelay, match="join"):
        await plain.join("room-2")


@pytest.mark.wsproxy_relay(history_size=100)
async def test_a_join_naming_a_saved_position_gets_what_was_missed_after_its_resumed(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    alice = await member(wsproxy_client, "lobby", "alice")
    bob = await member(wsproxy_client, "room-2", "bob")
    room = await join_group(alice, "room-2")
    await bob.send(Chat("seen"))
    assert await expect_message(room, Chat) == Chat("seen")
    saved = str(room.position)  # what a program saves before it goes
    await room.leave()
    await bob.send(Chat("missed one"))
    await bob.send(Chat("missed two"))
    again = await alice.join("room-2", since=saved)
    got: list[object] = []
    three = trio.Semaphore(0)

    def record(value: object) -> None:
        got.append(value)
        three.release()

    # Registered before the next await: what the join replays was held for them.
    again.on(Resumed, record)
    again.on(Chat, record)
    with trio.fail_after(5):
        for _ in range(3):
            await three.acquire()
    assert got == [Resumed(True, 2), Chat("missed one"), Chat("missed two")]


def hold_reconnecting(client: Client) -> Callable[[], Awaitable[None]]:
    """Make ``client`` wait, before it reconnects, until the returned function is called;
    drop its connection now (its TCP socket closed, as a network drop does)."""
    task = client._task
    connect = task._connect
    go = trio.Event()

    async def held(url: str, **options: Any) -> Any:
        await go.wait()
        return await connect(url, **options)

    task._connect = held
    current = client._link.current
    assert current is not None
    current.ws.drop()

    async def release() -> None:
        go.set()

    return release


@pytest.mark.wsproxy_relay(history_size=100)
async def test_after_a_reconnect_each_group_is_rejoined_and_recovers_with_its_own_resumed(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    bob = await member(wsproxy_client, "room-2", "bob")
    carol = await member(wsproxy_client, "room-3", "carol")
    dave = await member(wsproxy_client, "lobby", "dave")
    got: dict[str, list[object]] = {"lobby": [], "room-2": [], "room-3": []}
    done = trio.Semaphore(0)
    async with open_client(
        wsproxy_relay.url, group="lobby", id="alice", types=chat_types(), config=FAST
    ) as alice:
        rooms = {"lobby": alice.groups["lobby"]}
        rooms["room-2"] = await alice.join("room-2")
        rooms["room-3"] = await alice.join("room-3")

        def recorder(name: str) -> Callable[[object], None]:
            def record(value: object) -> None:
                got[name].append(value)
                done.release()

            return record

        for name, handle in rooms.items():
            handle.on(Chat, recorder(name))
            handle.on(Resumed, recorder(name))
        for sender, text in ((bob, "r2 one"), (carol, "r3 one"), (dave, "lobby one")):
            await sender.send(Chat(text))
        with trio.fail_after(5):
            for _ in range(3):
                await done.acquire()
        positions = {name: handle.position for name, handle in rooms.items()}
        assert all(p is not None and p.offset == 1 for p in positions.values()), positions
        reconnect = hold_reconnecting(alice)
        await wait_for_members(wsproxy_relay, 1, group="room-2")  # (alice is away)
        await wait_for_members(wsproxy_relay, 1, group="room-3")
        # While she is away: two messages in room-2, one in room-3, none in the lobby.
        await bob.send(Chat("r2 two"))
        await bob.send(Chat("r2 three"))
        await carol.send(Chat("r3 two"))
        await reconnect()
        with trio.fail_after(5):
            for _ in range(3 + 3):  # a Resumed per group, and the three missed
                await done.acquire()
        assert got == {
            "lobby": [Chat("lobby one"), Resumed(True, 0)],
            "room-2": [Chat("r2 one"), Resumed(True, 2), Chat("r2 two"), Chat("r2 three")],
            "room-3": [Chat("r3 one"), Resumed(True, 1), Chat("r3 two")],
        }
        assert set(alice.groups) == {"lobby", "room-2", "room-3"}
        before = positions["room-2"]
        assert before is not None and rooms["room-2"].position == v1.Position(before.epoch, 3)
        # Each group works live again.
        await rooms["room-3"].send(Chat("I am back"))
        assert await expect_message(carol, Chat) == Chat("I am back")
