"""Many groups on one connection (DESIGN.md §8, docs/protocol.md), over real sockets: a v1
member joins and leaves groups with messages of the subprotocol, each answered by its
own welcome or an error event; messages and events of a group other than the URL's
name it; a refused join never closes the connection."""

from __future__ import annotations

import pytest
import trio

import trio_wsproxy
from httpapi import KEY, call
from test_v1 import V1_OFFER, held_list, next_event, next_message, v1_member
from trio_wsproxy import CloseCode, Relay
from trio_wsproxy.protocol import v1
from wsraw import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawClient, mask_frame


async def join(client: RawClient, group: str, since: str | None = None) -> v1.Welcome | v1.Error:
    """Join ``group`` too: the welcome that answers it, or the error event."""
    position = None if since is None else v1.Position.parse(since)
    await client.send_frame(OP_TEXT, v1.join_header(group, position))
    answer = await next_event(client)
    while isinstance(answer, v1.Presence | v1.Members):  # (presence may come between)
        answer = await next_event(client)
    assert isinstance(answer, v1.Welcome | v1.Error), answer
    return answer


async def recv(client: RawClient) -> tuple[int, bytes]:
    """The next message, its bytes as they came, past presence events (which come in
    their own time)."""
    while True:
        opcode, data = await client.recv_message()
        if opcode == OP_TEXT and data.startswith(b'{"event":"presence"'):
            continue
        return opcode, data


async def leave(client: RawClient, group: str) -> v1.Event:
    await client.send_frame(OP_TEXT, v1.leave_header(group))
    answer = await next_event(client)
    while isinstance(answer, v1.Presence | v1.Members):
        answer = await next_event(client)
    assert isinstance(answer, v1.Left | v1.Error), answer
    return answer


async def test_a_member_joins_another_group_and_its_messages_and_events_name_it(
    relay: Relay,
) -> None:
    with trio.fail_after(10):
        alice, _ = await v1_member(relay, "alice", group="lobby")
        bob, _ = await v1_member(relay, "bob", group="room-2")
        plain = await RawClient.open(relay.port, "/ws?id=plain&groupName=room-2")
        await relay.wait_members(3)
        welcome = await join(alice, "room-2")
        # The group's own welcome: its members, alice included.
        assert welcome == v1.Welcome("alice", "room-2", frozenset({"alice", "bob", "plain"}), 3)
        # bob (whose URL named room-2) hears of alice without a group name...
        await held_list(
            bob,
            v1.Welcome("bob", "room-2", frozenset({"bob", "plain"}), 2),
            {"alice", "bob", "plain"},
        )
        # ...and his message reaches alice naming the group, byte for byte.
        await bob.send_frame(OP_TEXT, b"\nhello")
        assert await recv(alice) == (OP_TEXT, b'{"from":"bob","group":"room-2"}\nhello')
        assert await plain.recv_message() == (OP_TEXT, b"hello")
        # alice sends to room-2 by naming it; bob gets today's bytes, plain the payload.
        await alice.send_frame(OP_BINARY, b'{"group":"room-2"}\n\x00\x01')
        assert await recv(bob) == (OP_BINARY, b'{"from":"alice"}\n\x00\x01')
        assert await plain.recv_message() == (OP_BINARY, b"\x00\x01")
        # ...and to one member of it.
        await alice.send_frame(OP_TEXT, b'{"group":"room-2","to":"bob"}\njust you')
        assert await recv(bob) == (OP_TEXT, b'{"from":"alice","direct":true}\njust you')
        # Her URL's group still works as before, untouched.
        carol, _ = await v1_member(relay, "carol", group="lobby")
        await carol.send_frame(OP_TEXT, b"\nin the lobby")
        assert await next_message(alice) == (OP_TEXT, v1.From("carol"), b"in the lobby")
        # A join in room-2 reaches alice as a presence event naming room-2.
        dave, _ = await v1_member(relay, "dave", group="room-2")
        event = await next_event(alice)
        while not (isinstance(event, v1.Presence) and event.group == "room-2"):
            event = await next_event(alice)
        assert "dave" in event.joined and event.count == 4
    for client in (alice, bob, plain, carol, dave):
        await client.aclose()


async def test_a_member_that_leaves_a_group_gets_nothing_more_of_it_and_the_others_see_it_go(
    relay: Relay,
) -> None:
    with trio.fail_after(10):
        alice, _ = await v1_member(relay, "alice", group="lobby")
        bob, bob_welcome = await v1_member(relay, "bob", group="room-2")
        assert isinstance(await join(alice, "room-2"), v1.Welcome)
        await held_list(bob, bob_welcome, {"alice", "bob"})
        assert await leave(alice, "room-2") == v1.Left("room-2")
        await held_list(bob, v1.Welcome("bob", "room-2", frozenset({"alice", "bob"}), 2), {"bob"})
        await bob.send_frame(OP_TEXT, b"\nnot for alice")
        # Nothing of room-2 reaches alice any more: her next message is the lobby's.
        carol, _ = await v1_member(relay, "carol", group="lobby")
        await carol.send_frame(OP_TEXT, b"\nlobby")
        assert await next_message(alice) == (OP_TEXT, v1.From("carol"), b"lobby")
        # Sending to the group she left is an error event; the connection goes on.
        await alice.send_frame(OP_TEXT, b'{"group":"room-2"}\nlate')
        assert await next_event(alice) == v1.Error(
            v1.NOT_IN_GROUP, "not a member of group 'room-2'", group="room-2"
        )
        assert await leave(alice, "room-2") == v1.Error(
            v1.NOT_IN_GROUP, "not a member of group 'room-2'", group="room-2"
        )
        await alice.send_frame(OP_TEXT, b"\nstill here")
        assert await next_message(carol) == (OP_TEXT, v1.From("alice"), b"still here")
    for client in (alice, bob, carol):
        await client.aclose()


async def test_the_urls_group_can_be_left_and_a_connection_in_no_group_stays_open(
    relay: Relay,
) -> None:
    with trio.fail_after(10):
        alice, _ = await v1_member(relay, "alice", group="lobby")
        bob, _ = await v1_member(relay, "bob", group="lobby")
        assert await leave(alice, "lobby") == v1.Left("lobby")
        # In no group: a message without a group name has nowhere to go...
        await alice.send_frame(OP_TEXT, b"\nanyone?")
        assert await next_event(alice) == v1.Error(
            v1.NOT_IN_GROUP, "not a member of group 'lobby'", group="lobby"
        )
        # ...but the connection is alive (it answers pings)...
        await alice.send_frame(OP_PING, b"are you there")
        assert await alice.recv_frame() == (True, OP_PONG, b"are you there")
        assert relay.stats.members == 1
        # ...and may join again: the URL's group's messages carry no group name, as ever.
        welcome = await join(alice, "lobby")
        assert isinstance(welcome, v1.Welcome) and welcome.members == frozenset({"alice", "bob"})
        await bob.send_frame(OP_TEXT, b"\nwelcome back")
        assert await next_message(alice) == (OP_TEXT, v1.From("bob"), b"welcome back")
        await alice.send_frame(OP_TEXT, b"\nthanks")
        assert await next_message(bob) == (OP_TEXT, v1.From("alice"), b"thanks")
    for client in (alice, bob):
        await client.aclose()


@pytest.mark.wsproxy_relay(max_groups_per_member=3, max_id_length=16)
async def test_refused_joins_are_error_events_and_the_connection_goes_on(relay: Relay) -> None:
    with trio.fail_after(10):
        alice, _ = await v1_member(relay, "alice", group="lobby")
        assert await join(alice, "lobby") == v1.Error(
            v1.ALREADY_JOINED, "already in group 'lobby'", group="lobby"
        )
        refused = await join(alice, "x" * 17)
        assert isinstance(refused, v1.Error) and refused.error == v1.BAD_GROUP_NAME
        assert refused.group == "x" * 17
        refused = await join(alice, "tab\there")
        assert isinstance(refused, v1.Error) and refused.error == v1.BAD_GROUP_NAME
        for name in ("a", "b"):
            assert isinstance(await join(alice, name), v1.Welcome)
        refused = await join(alice, "c")
        assert refused == v1.Error(v1.GROUP_LIMIT, "in 3 groups already", group="c")
        # Leaving one makes room.
        assert await leave(alice, "a") == v1.Left("a")
        assert isinstance(await join(alice, "c"), v1.Welcome)
        bob, _ = await v1_member(relay, "bob", group="c")
        await alice.send_frame(OP_TEXT, b'{"group":"c"}\nstill connected')
        assert await next_message(bob) == (OP_TEXT, v1.From("alice"), b"still connected")
        assert relay.counters.join_refusals == {
            v1.ALREADY_JOINED: 1,
            v1.BAD_GROUP_NAME: 2,
            v1.GROUP_LIMIT: 1,
        }
        metrics = await call(relay.port, "GET", "/metrics", auth=False)
        assert b'trio_wsproxy_join_refusals_total{error="group_limit"} 1.0' in metrics.body
    for client in (alice, bob):
        await client.aclose()


@pytest.mark.wsproxy_relay(max_group_members=1)
async def test_a_join_past_a_groups_limit_is_refused_as_full(relay: Relay) -> None:
    with trio.fail_after(10):
        alice, _ = await v1_member(relay, "alice", group="lobby")
        bob, _ = await v1_member(relay, "bob", group="room")
        refused = await join(alice, "room")
        assert isinstance(refused, v1.Error) and (refused.error, refused.group) == (
            v1.GROUP_FULL,
            "room",
        )
        assert "group full" in refused.detail
    for client in (alice, bob):
        await client.aclose()


SECRET = "a-token-secret-of-at-least-32-bytes!"


@pytest.mark.wsproxy_relay(token_secret=SECRET)
async def test_the_token_authorises_every_join_with_its_groups_and_prefixes(relay: Relay) -> None:
    token = trio_wsproxy.mint_token(SECRET, "alice", ["lobby", "room-*"], 60)
    alice = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
    with trio.fail_after(10):
        status, _, body = await alice.handshake(
            f"/ws?id=alice&groupName=lobby&access_token={token}", V1_OFFER
        )
        assert status == 101, body
        assert isinstance(await next_event(alice), v1.Welcome)
        assert isinstance(await join(alice, "room-7"), v1.Welcome)
        assert await join(alice, "secret") == v1.Error(
            v1.NOT_ALLOWED, "access token does not allow this group", group="secret"
        )
        # Refused, and still a member of what it joined.
        assert relay.registry.group("secret") is None
        assert relay.registry.group("room-7") is not None
        await alice.send_frame(OP_PING, b"")
        assert await alice.recv_frame() == (True, OP_PONG, b"")
    await alice.aclose()


async def test_a_message_to_a_group_not_joined_is_dropped_whole_even_in_fragments(
    relay: Relay,
) -> None:
    with trio.fail_after(10):
        alice, _ = await v1_member(relay, "alice", group="lobby")
        bob, _ = await v1_member(relay, "bob", group="lobby")
        await alice.send_frame(OP_TEXT, b'{"group":"nowhere"}\npart one', fin=False)
        await alice.send_frame(OP_CONT, b" part two", fin=False)
        await alice.send_frame(OP_CONT, b" end", fin=True)
        assert await next_event(alice) == v1.Error(
            v1.NOT_IN_GROUP, "not a member of group 'nowhere'", group="nowhere"
        )
        await alice.send_frame(OP_TEXT, b"\nnext")
        assert await next_message(bob) == (OP_TEXT, v1.From("alice"), b"next")
    for client in (alice, bob):
        await client.aclose()


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (b'{"join":"g2"}\nbody', "a join, a leave or a token is its header line alone"),
        (b'{"leave":"g"}\nx', "a join, a leave or a token is its header line alone"),
        (b'{"join":"g2","to":"bob"}\n', "a join takes no field 'to'"),
        (b'{"join":"g2","since":"nonsense"}\n', "is not a position"),
        (b'{"join":7}\n', '"join" must be a non-empty string'),
    ],
)
async def test_a_malformed_join_or_leave_fails_the_connection(
    relay: Relay, message: bytes, why: str
) -> None:
    with trio.fail_after(10):
        alice, _ = await v1_member(relay, "alice")
        await alice.send_frame(OP_TEXT, message)
        opcode, data = await alice.recv_message()
        while opcode != OP_CLOSE:
            opcode, data = await alice.recv_message()
        assert int.from_bytes(data[:2], "big") == CloseCode.PROTOCOL_ERROR
        assert data[2:].decode().startswith("wsproxy.v1: ") and why in data[2:].decode()
    await alice.aclose()


async def test_a_large_message_streams_to_a_joined_group_with_its_name_ahead(
    relay: Relay,
) -> None:
    with trio.fail_after(10):
        alice, _ = await v1_member(relay, "alice", group="lobby")
        bob, _ = await v1_member(relay, "bob", group="room-2")
        assert isinstance(await join(alice, "room-2"), v1.Welcome)
        chunk = b"x" * 65536
        await alice.send_frame(OP_BINARY, b'{"group":"room-2"}\n' + chunk, fin=False)
        for _ in range(30):
            await alice.send_frame(OP_CONT, chunk, fin=False)
        await alice.send_frame(OP_CONT, b"end", fin=True)
        opcode, header, payload = await next_message(bob)
        assert (opcode, header) == (OP_BINARY, v1.From("alice"))
        assert payload == chunk * 31 + b"end"
    for client in (alice, bob):
        await client.aclose()


@pytest.mark.wsproxy_relay(history_size=100)
async def test_each_group_recovers_from_its_own_position_after_a_reconnect(relay: Relay) -> None:
    with trio.fail_after(10):
        alice, lobby_welcome = await v1_member(relay, "alice", group="lobby")
        room = await join(alice, "room-2")
        assert isinstance(room, v1.Welcome) and room.position is not None
        assert lobby_welcome.position is not None
        bob, _ = await v1_member(relay, "bob", group="lobby")
        carol, _ = await v1_member(relay, "carol", group="room-2")
        await bob.send_frame(OP_TEXT, b"\nlobby 1")
        await carol.send_frame(OP_TEXT, b"\nroom 1")
        _, seen_lobby, _ = await next_message(alice)
        _, data = await recv(alice)
        seen_room, _ = v1.decode_relay_message(data)
        assert isinstance(seen_room, v1.From) and seen_room.group == "room-2"
        assert seen_lobby.offset == 1 and seen_room.offset == 1
        # alice drops (a 4001, a lost network...): both groups go on without her.
        await alice.aclose()
        await relay.wait_members(4)  # (bob, carol, and the rooms' other memberships gone)
        for text in (b"\nlobby 2", b"\nlobby 3"):
            await bob.send_frame(OP_TEXT, text)
        await carol.send_frame(OP_TEXT, b"\nroom 2")
        await carol.send_frame(OP_BINARY, b"\n\x00room 3")
        # One reconnect: the URL's group by ?since=, each other group by a join with since.
        lobby_at = v1.Position(lobby_welcome.position.epoch, 1)
        room_at = v1.Position(room.position.epoch, 1)
        alice, welcome = await v1_member(relay, "alice", group="lobby", since=str(lobby_at))
        assert welcome.recovery == v1.Recovery(True, 2)
        got = [await next_message(alice) for _ in range(2)]
        assert [(m[1].offset, m[2]) for m in got] == [(2, b"lobby 2"), (3, b"lobby 3")]
        answer = await join(alice, "room-2", since=str(room_at))
        assert isinstance(answer, v1.Welcome) and answer.recovery == v1.Recovery(True, 2)
        replay = [await recv(alice) for _ in range(2)]
        assert replay == [
            (OP_TEXT, b'{"from":"carol","group":"room-2","offset":2}\nroom 2'),
            (OP_BINARY, b'{"from":"carol","group":"room-2","offset":3}\n\x00room 3'),
        ]
        # A position of another epoch is answered per group, as ever.
        assert await leave(alice, "room-2") == v1.Left("room-2")
        answer = await join(alice, "room-2", since="feedfacefeedface:3")
        assert isinstance(answer, v1.Welcome)
        assert answer.recovery == v1.Recovery(False, 0, v1.EPOCH_CHANGED)
    for client in (alice, bob, carol):
        await client.aclose()


@pytest.mark.wsproxy_relay(api_key=KEY)
async def test_the_back_end_removes_a_member_from_one_of_its_groups(relay: Relay) -> None:
    with trio.fail_after(10):
        alice, _ = await v1_member(relay, "alice", group="lobby")
        assert isinstance(await join(alice, "room-2"), v1.Welcome)
        answer = await call(relay.port, "DELETE", "/api/groups/room-2/members/alice")
        assert answer.status == 204, answer
        left = await next_event(alice)
        while isinstance(left, v1.Presence):
            left = await next_event(alice)
        assert isinstance(left, v1.Left) and left.group == "room-2" and left.reason
        # Kept out of that group for a while, as a reconnect would be...
        refused = await join(alice, "room-2")
        assert isinstance(refused, v1.Error) and refused.error == v1.BANNED
        # ...and still in the lobby. Removed from its last group, it is closed (4005).
        answer = await call(relay.port, "DELETE", "/api/groups/lobby/members/alice")
        assert answer.status == 204
        assert (await alice.expect_close())[0] == CloseCode.REMOVED
    await alice.aclose()


@pytest.mark.wsproxy_relay(api_key=KEY, token_secret=SECRET)
async def test_a_user_on_three_devices_is_one_group_of_its_own(relay: Relay) -> None:
    """Each device its own id, all in the user's own group (allowed by the user's token
    only): the back end reaches every device with one post, and one device leaves
    without the others."""
    devices: dict[str, RawClient] = {}
    with trio.fail_after(10):
        for device in ("alice-phone", "alice-laptop", "alice-tablet"):
            token = trio_wsproxy.mint_token(SECRET, device, ["lobby", "user:alice"], 60)
            client = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
            status, _, body = await client.handshake(
                f"/ws?id={device}&groupName=lobby&access_token={token}", V1_OFFER
            )
            assert status == 101, body
            assert isinstance(await next_event(client), v1.Welcome)
            assert isinstance(await join(client, "user:alice"), v1.Welcome)
            devices[device] = client
        # bob's token does not let him into alice's own group.
        token = trio_wsproxy.mint_token(SECRET, "bob", ["lobby", "user:bob"], 60)
        bob = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
        status, _, _ = await bob.handshake(
            f"/ws?id=bob&groupName=lobby&access_token={token}", V1_OFFER
        )
        assert status == 101 and isinstance(await next_event(bob), v1.Welcome)
        refused = await join(bob, "user:alice")
        assert isinstance(refused, v1.Error) and refused.error == v1.NOT_ALLOWED
        answer = await call(
            relay.port,
            "POST",
            "/api/groups/user:alice/messages",
            b"you have mail",
            {"Content-Type": "text/plain"},
        )
        assert (answer.status, answer.json) == (200, {"recipients": 3})
        for client in devices.values():
            assert await recv(client) == (
                OP_TEXT,
                b'{"from":null,"group":"user:alice"}\nyou have mail',
            )
        # The laptop leaves alice's group; the phone and the tablet stay.
        assert await leave(devices["alice-laptop"], "user:alice") == v1.Left("user:alice")
        answer = await call(
            relay.port,
            "POST",
            "/api/groups/user:alice/messages",
            b"again",
            {"Content-Type": "text/plain"},
        )
        assert answer.json == {"recipients": 2}
        for device in ("alice-phone", "alice-tablet"):
            assert await recv(devices[device]) == (
                OP_TEXT,
                b'{"from":null,"group":"user:alice"}\nagain',
            )
    for client in (*devices.values(), bob):
        await client.aclose()


async def test_a_member_in_a_thousand_groups_starves_nobody(relay: Relay) -> None:
    """1,000 joins sent at once take turns with the fan-out of others: a pair talking
    meanwhile is answered at once, and every join is answered in order."""
    with trio.fail_after(30):
        many, _ = await v1_member(relay, "many", group="g-0")
        ping, _ = await v1_member(relay, "ping", group="pair")
        pong, _ = await v1_member(relay, "pong", group="pair")
        names = [f"g-{index}" for index in range(1, 1000)]
        await many.send(b"".join(_client_frame(v1.join_header(name)) for name in names))
        # The pair talks while the joins are carried out.
        for round_trip in range(20):
            await ping.send_frame(OP_TEXT, b"\n%d" % round_trip)
            assert (await next_message(pong))[2] == b"%d" % round_trip
        welcomed = []
        while len(welcomed) < len(names):
            event = await next_event(many)
            if isinstance(event, v1.Welcome):
                welcomed.append(event.group)
        assert welcomed == names
        assert relay.stats.members == 1002
        # Every group is its own: a message to the last reaches a member there.
        last, _ = await v1_member(relay, "last", group="g-999")
        await many.send_frame(OP_TEXT, b'{"group":"g-999"}\nfrom many')
        assert await next_message(last) == (OP_TEXT, v1.From("many"), b"from many")
    for client in (many, ping, pong, last):
        await client.aclose()


def _client_frame(payload: bytes) -> bytes:
    """A masked text frame, as a client sends it (for many frames in one write)."""
    return mask_frame(OP_TEXT, payload)


async def test_across_nodes_a_joined_group_is_followed_while_a_membership_is_in_it(
    redis_url: str, prefix: str
) -> None:
    from redisserver import subscribers
    from test_backplane import backplane, caught_up, cluster

    async with cluster(redis_url, prefix, history_size=50) as (a, b):
        channel = backplane(a).names.group_channel("room").decode()
        with trio.fail_after(30):
            alice, _ = await v1_member(a, "alice", group="lobby")
            bob, bob_welcome = await v1_member(b, "bob", group="room")
            await caught_up([a.port, b.port])
            assert await subscribers(redis_url, channel) == 1  # node b only
            welcome = await join(alice, "room")
            assert isinstance(welcome, v1.Welcome)
            assert welcome.members == frozenset({"alice", "bob"})
            assert await subscribers(redis_url, channel) == 2
            await held_list(bob, bob_welcome, {"alice", "bob"})
            # Messages cross the nodes both ways, to the group and to one member.
            await bob.send_frame(OP_TEXT, b"\nfrom b")
            assert await recv(alice) == (
                OP_TEXT,
                b'{"from":"bob","group":"room","offset":1}\nfrom b',
            )
            await alice.send_frame(OP_TEXT, b'{"group":"room","to":"bob"}\nto bob')
            assert await next_message(bob) == (
                OP_TEXT,
                v1.From("alice", direct=True, offset=2),
                b"to bob",
            )
            # Leaving the group's last membership on node a unsubscribes it there.
            assert await leave(alice, "room") == v1.Left("room")
            await held_list(bob, v1.Welcome("bob", "room", frozenset({"alice", "bob"}), 2), {"bob"})
            while await subscribers(redis_url, channel) > 1:  # noqa: ASYNC110
                await trio.sleep(0.02)  # (Redis says when it has unsubscribed, nothing else)
            # The history is the group's on any node: alice recovers room on node b.
            await bob.send_frame(OP_TEXT, b"\nmissed")
            assert welcome.position is not None
            since = f"{welcome.position.epoch}:2"
            elsewhere, _ = await v1_member(b, "alice", group="lobby")
            answer = await join(elsewhere, "room", since=since)
            assert isinstance(answer, v1.Welcome) and answer.recovery == v1.Recovery(True, 1)
            assert await recv(elsewhere) == (
                OP_TEXT,
                b'{"from":"bob","group":"room","offset":3}\nmissed',
            )
        for client in (alice, bob, elsewhere):
            await client.aclose()


@pytest.mark.wsproxy_relay(api_key=KEY, max_groups_per_member=3)
async def test_the_back_end_lists_a_members_groups_and_adds_it_to_one(relay: Relay) -> None:
    with trio.fail_after(10):
        alice, _ = await v1_member(relay, "alice", group="lobby")
        plain = await RawClient.open(relay.port, "/ws?id=plain&groupName=lobby")
        await relay.wait_members(2)
        answer = await call(relay.port, "GET", "/api/groups/lobby/members/alice/groups")
        assert answer.json == {"id": "alice", "group": "lobby", "groups": ["lobby"]}
        # The back end puts alice in room-2: she gets its welcome, as if she had joined.
        answer = await call(relay.port, "PUT", "/api/groups/lobby/members/alice/groups/room-2")
        assert (answer.status, answer.json["groups"]) == (200, ["lobby", "room-2"])
        welcome = await next_event(alice)
        while not isinstance(welcome, v1.Welcome):
            welcome = await next_event(alice)
        assert welcome == v1.Welcome("alice", "room-2", frozenset({"alice"}), 1)
        # Either of her groups names her connection.
        answer = await call(relay.port, "GET", "/api/groups/room-2/members/alice/groups")
        assert answer.json["groups"] == ["lobby", "room-2"]
        # Refusals are answers with a status, and nothing changes for her.
        answer = await call(relay.port, "PUT", "/api/groups/lobby/members/alice/groups/room-2")
        assert answer.status == 409 and "already in group" in answer.json["error"]
        answer = await call(relay.port, "PUT", "/api/groups/lobby/members/alice/groups/room-3")
        assert answer.status == 200
        answer = await call(relay.port, "PUT", "/api/groups/lobby/members/alice/groups/room-4")
        assert answer.status == 409 and "in 3 groups already" in answer.json["error"]
        answer = await call(relay.port, "PUT", "/api/groups/lobby/members/plain/groups/room-2")
        assert answer.status == 409 and "plain member" in answer.json["error"]
        answer = await call(relay.port, "PUT", "/api/groups/lobby/members/nobody/groups/x")
        assert answer.status == 404
        answer = await call(relay.port, "GET", "/api/groups/lobby/members/nobody/groups")
        assert answer.status == 404
    for client in (alice, plain):
        await client.aclose()


async def test_across_nodes_the_back_end_lists_and_adds_a_members_groups_on_any_node(
    redis_url: str, prefix: str
) -> None:
    from test_backplane import caught_up, cluster

    async with cluster(redis_url, prefix, api_key=KEY) as (a, b):
        with trio.fail_after(30):
            alice, _ = await v1_member(a, "alice", group="lobby")
            assert isinstance(await join(alice, "room-2"), v1.Welcome)
            await caught_up([a.port, b.port])
            # Node b answers for alice, who is on node a, from Redis.
            answer = await call(b.port, "GET", "/api/groups/room-2/members/alice/groups")
            assert answer.json == {"id": "alice", "group": "room-2", "groups": ["lobby", "room-2"]}
            # ...and asks node a to put her in room-3 too.
            answer = await call(b.port, "PUT", "/api/groups/lobby/members/alice/groups/room-3")
            assert answer.status == 202
            assert b.counters.api_requests[202] == 1  # (counted as answered)
            welcome = await next_event(alice)
            while not isinstance(welcome, v1.Welcome):
                welcome = await next_event(alice)
            assert welcome.group == "room-3"
            answer = await call(b.port, "GET", "/api/groups/lobby/members/alice/groups")
            assert answer.json["groups"] == ["lobby", "room-2", "room-3"]
            # Removing her from one of them (on any node) leaves her in the others.
            answer = await call(b.port, "DELETE", "/api/groups/room-2/members/alice")
            assert answer.status == 204
            left = await next_event(alice)
            while not isinstance(left, v1.Left):
                left = await next_event(alice)
            assert left.group == "room-2"
            answer = await call(b.port, "GET", "/api/groups/lobby/members/alice/groups")
            assert answer.json["groups"] == ["lobby", "room-3"]
        await alice.aclose()


async def test_joins_and_leaves_racing_traffic_see_a_gapless_run_per_membership(
    relay: Relay,
) -> None:
    """A member joins and leaves a group again and again while another blasts numbered
    messages into it: within each membership (from its welcome to its left), what it
    gets is a run of consecutive numbers, and nothing comes after its left."""
    count = 3000
    with trio.fail_after(30):
        blaster, _ = await v1_member(relay, "blaster", group="room")
        hopper, _ = await v1_member(relay, "hopper", group="lobby")
        runs: list[list[int]] = []
        done = trio.Event()

        async def blast() -> None:
            for n in range(count):
                await blaster.send_frame(OP_BINARY, b"\n" + n.to_bytes(4, "big"))
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blast)
            while not done.is_set() or len(runs) < 3:
                await hopper.send_frame(OP_TEXT, v1.join_header("room"))
                run: list[int] | None = None
                leaving = False
                while True:
                    _, data = await hopper.recv_message()
                    what, start = v1.decode_relay_message(data)
                    if isinstance(what, v1.Welcome):
                        assert what.group == "room" and run is None
                        run = []
                    elif isinstance(what, v1.From):
                        assert what.group == "room" and run is not None, what
                        run.append(int.from_bytes(data[start:], "big"))
                    elif isinstance(what, v1.Left):
                        assert run is not None and leaving
                        runs.append(run)
                        break
                    if run is not None and not leaving and (len(run) >= 3 or done.is_set()):
                        # Leave while messages are still coming.
                        await hopper.send_frame(OP_TEXT, v1.leave_header("room"))
                        leaving = True
            nursery.cancel_scope.cancel()
        assert sum(1 for run in runs if run) >= 2, "the joins did not race the traffic"
        end = -1
        for run in filter(None, runs):
            assert run == list(range(run[0], run[0] + len(run)))
            assert run[0] > end  # (and later memberships see later messages)
            end = run[-1]
        # Nothing of the room came after the last left: the lobby's next message is next.
        await blaster.send_frame(OP_TEXT, b"\nlast")  # (to the room: hopper is not in it)
        other, _ = await v1_member(relay, "other", group="lobby")
        await other.send_frame(OP_TEXT, b"\nlobby")
        assert await next_message(hopper) == (OP_TEXT, v1.From("other"), b"lobby")
    for client in (blaster, hopper, other):
        await client.aclose()


@pytest.mark.wsproxy_relay(
    history_size=1000, history_bytes=4 << 20, mailbox_bytes=64 << 10, slow_member_timeout=30
)
async def test_recoveries_of_many_joins_wait_for_the_member_to_read_the_earlier_ones(
    relay: Relay,
) -> None:
    """What a join recovers is queued outside the mailbox's bound; a member that names
    positions in many groups and does not read holds at most about one more group's
    history than its bound, not every group's."""
    rooms = [f"room-{n}" for n in range(6)]
    payload = bytes(16 << 10)
    with trio.fail_after(30):
        writer, _ = await v1_member(relay, "writer", group="lobby")
        epochs = {}
        for room in rooms:
            welcome = await join(writer, room)
            assert isinstance(welcome, v1.Welcome) and welcome.position is not None
            epochs[room] = welcome.position.epoch
            for _ in range(40):  # 640 KiB of history per room
                await writer.send_frame(OP_BINARY, b'{"group":"%s"}\n' % room.encode() + payload)
        reader, _ = await v1_member(relay, "reader", group="lobby")
        await reader.send(
            b"".join(
                mask_frame(OP_TEXT, v1.join_header(room, v1.Position(epochs[room], 0)))
                for room in rooms
            )
        )
        (session,) = [each for each in relay.sessions if each.id == "reader"]
        await trio.testing.wait_all_tasks_blocked(0.2)
        mailbox = session.mailbox
        # Waiting for the reader: not every room is joined, and what is queued outside
        # the bound is about one room's history more than the bound, not six.
        assert len(session.group_names) < 1 + len(rooms)
        assert mailbox.catch_up <= mailbox.capacity + 41 * (len(payload) + 64)
        # Once it reads, every room comes, each recovered whole.
        recovered: dict[str, int] = {}
        while len(recovered) < len(rooms) or sum(recovered.values()) < 40 * len(rooms):
            _, data = await reader.recv_message()
            what, _ = v1.decode_relay_message(data)
            if isinstance(what, v1.Welcome):
                assert what.recovery == v1.Recovery(True, 40)
                recovered[what.group] = 0
            elif isinstance(what, v1.From) and what.group is not None:
                recovered[what.group] += 1
        assert recovered == dict.fromkeys(rooms, 40)
    for client in (writer, reader):
        await client.aclose()
