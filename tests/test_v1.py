"""The wsproxy.v1 subprotocol on one relay, over real sockets: the handshake, the welcome,
sender ids, direct messages, errors as events, presence in batches (DESIGN.md §6)."""

from __future__ import annotations

import json
import os

import pytest
import trio

import trio_wsproxy
from trio_wsproxy import CloseCode, Relay, RelayConfig, open_relay
from trio_wsproxy.protocol import v1
from wsraw import OP_BINARY, OP_CLOSE, OP_CONT, OP_TEXT, RawClient

V1_OFFER = "Sec-WebSocket-Protocol: wsproxy.v1\r\n"


async def v1_member(
    relay: Relay, ident: str, group: str = "g", since: str | None = None
) -> tuple[RawClient, v1.Welcome]:
    """A member that speaks v1 (naming its position ``since``, if given), and the welcome
    it got (its first message)."""
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
    target = f"/ws?id={ident}&groupName={group}" + (f"&since={since}" if since else "")
    status, headers, body = await client.handshake(target, V1_OFFER)
    assert status == 101, (status, body)
    assert headers.get("sec-websocket-protocol") == "wsproxy.v1"
    welcome = await next_event(client)
    assert isinstance(welcome, v1.Welcome)
    return client, welcome


async def next_event(client: RawClient) -> v1.From | v1.Event:
    opcode, data = await client.recv_message()
    assert opcode == OP_TEXT, (opcode, data[:100])
    what, start = v1.decode_relay_message(data)
    assert start == len(data), "an event carries no payload"
    return what


async def next_message(client: RawClient) -> tuple[int, v1.From, bytes]:
    """The next message (not an event): its opcode, header and payload."""
    while True:
        opcode, data = await client.recv_message()
        assert opcode != OP_CLOSE, f"closed {int.from_bytes(data[:2], 'big')}: {data[2:]!r}"
        what, start = v1.decode_relay_message(data)
        if isinstance(what, v1.From):
            return opcode, what, data[start:]
        assert isinstance(what, v1.Presence), what  # presence may come between


async def test_a_client_that_offers_v1_gets_it_and_is_welcomed_with_the_members(
    relay: Relay,
) -> None:
    plain = await RawClient.open(relay.port, "/ws?id=plain&groupName=g")
    with trio.fail_after(10):
        await relay.wait_members(1)
        alice, welcome = await v1_member(relay, "alice")
    # Plain members are listed too; the count is every member, the new one included.
    assert welcome == v1.Welcome("alice", "g", frozenset({"plain", "alice"}), 2)
    await plain.aclose()
    await alice.aclose()


async def test_v1_is_selected_from_a_list_and_unknown_subprotocols_are_declined(
    relay: Relay,
) -> None:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
    extra = "Sec-WebSocket-Protocol: chat, wsproxy.v1\r\n"
    status, headers, _ = await client.handshake("/ws?id=a&groupName=g", extra)
    assert (status, headers.get("sec-websocket-protocol")) == (101, "wsproxy.v1")
    other = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
    status, headers, _ = await other.handshake(
        "/ws?id=b&groupName=g", "Sec-WebSocket-Protocol: chat\r\n"
    )
    # RFC 6455 §4.2.2: no subprotocol header; the client gets the plain contract.
    assert status == 101 and "sec-websocket-protocol" not in headers
    with trio.fail_after(10):
        await client.send_frame(OP_TEXT, b"\nhello")
        assert await other.recv_message() == (OP_TEXT, b"hello")
    await client.aclose()
    await other.aclose()


async def test_sender_ids_reach_v1_members_and_plain_members_get_bare_payloads(
    relay: Relay,
) -> None:
    with trio.fail_after(10):
        plain = await RawClient.open(relay.port, "/ws?id=plain&groupName=g")
        await relay.wait_members(1)
        alice, _ = await v1_member(relay, "alice")
        bob, _ = await v1_member(relay, "bob")
        await plain.send_frame(OP_BINARY, b"\x00\x01raw")
        for member in (alice, bob):
            assert await next_message(member) == (OP_BINARY, v1.From("plain"), b"\x00\x01raw")
        await alice.send_frame(OP_TEXT, "\nhéllo".encode())
        # The exact bytes: the header line, then the payload untouched.
        assert await bob.recv_message() == (OP_TEXT, '{"from":"alice"}\nhéllo'.encode())
        assert await plain.recv_message() == (OP_TEXT, "héllo".encode())
    for member in (plain, alice, bob):
        await member.aclose()


async def test_a_direct_message_reaches_its_member_only_and_in_order(relay: Relay) -> None:
    with trio.fail_after(10):
        alice, _ = await v1_member(relay, "alice")
        bob, _ = await v1_member(relay, "bob")
        plain = await RawClient.open(relay.port, "/ws?id=plain&groupName=g")
        carol, _ = await v1_member(relay, "carol")
        await alice.send_frame(OP_TEXT, b'{"to":"bob"}\nfor bob')
        await alice.send_frame(OP_BINARY, b'{"to":"plain"}\n\xffbin')
        await alice.send_frame(OP_TEXT, b"\nfor all")
        assert await bob.recv_message() == (OP_TEXT, b'{"from":"alice","direct":true}\nfor bob')
        assert await next_message(bob) == (OP_TEXT, v1.From("alice"), b"for all")
        # A direct message to a plain member arrives as a plain message.
        assert await plain.recv_message() == (OP_BINARY, b"\xffbin")
        assert await plain.recv_message() == (OP_TEXT, b"for all")
        # Carol heard only the broadcast.
        assert await next_message(carol) == (OP_TEXT, v1.From("alice"), b"for all")
    for member in (alice, bob, plain, carol):
        await member.aclose()


async def test_a_direct_message_to_nobody_is_an_error_event_for_its_sender(relay: Relay) -> None:
    with trio.fail_after(10):
        alice, _ = await v1_member(relay, "alice")
        bob, _ = await v1_member(relay, "bob", group="other")
        await alice.send_frame(OP_TEXT, b'{"to":"bob"}\nhi')  # bob is in another group
        error = await next_event(alice)
        assert isinstance(error, v1.Error)
        assert (error.error, error.to) == ("no_such_member", "bob")
        await alice.send_frame(OP_TEXT, b'{"to":"alice"}\nme')
        error = await next_event(alice)
        assert isinstance(error, v1.Error) and error.to == "alice"
        # The session goes on.
        carol, _ = await v1_member(relay, "carol")
        await alice.send_frame(OP_TEXT, b'{"to":"carol"}\nhi')
        assert await next_message(carol) == (OP_TEXT, v1.From("alice", direct=True), b"hi")
    assert relay.counters.direct_failures == 2
    for member in (alice, bob, carol):
        await member.aclose()


SECRET = "a-token-secret-of-at-least-32-bytes!"


@pytest.mark.wsproxy_relay(token_secret=SECRET)
async def test_tokens_keep_direct_messages_and_presence_inside_the_allowed_group(
    relay: Relay,
) -> None:
    async def joined(ident: str, group: str, token_groups: list[str]) -> RawClient:
        token = trio_wsproxy.mint_token(SECRET, ident, token_groups, 60)
        client = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
        target = f"/ws?id={ident}&groupName={group}&access_token={token}"
        status, _, body = await client.handshake(target, V1_OFFER)
        assert status == 101, body
        return client

    with trio.fail_after(10):
        bob = await joined("bob", "g2", ["g2"])
        alice = await joined("alice", "g1", ["g1"])
        welcome = await next_event(alice)
        # Presence lists the group the token allows, nobody from elsewhere...
        assert isinstance(welcome, v1.Welcome) and welcome.members == frozenset({"alice"})
        # ...a message to a member of another group reaches nobody...
        await alice.send_frame(OP_TEXT, b'{"to":"bob"}\nhi bob')
        error = await next_event(alice)
        assert isinstance(error, v1.Error) and (error.error, error.to) == ("no_such_member", "bob")
        # ...and the token does not let alice into bob's group to address him there.
        intruder = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
        token = trio_wsproxy.mint_token(SECRET, "alice", ["g1"], 60)
        status, _, _ = await intruder.handshake(
            f"/ws?id=alice&groupName=g2&access_token={token}", V1_OFFER
        )
        assert status == 403
        welcome = await next_event(bob)
        assert isinstance(welcome, v1.Welcome) and welcome.members == frozenset({"bob"})
    for client in (alice, bob, intruder):
        await client.aclose()


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (b"no line feed", "ended inside its header line"),
        (b"[1]\n", "not a JSON object"),
        (b'{"to":5}\n', '"to" must be a non-empty string'),
        (b'{"too":"x"}\n', "unknown header field 'too'"),
        (b"\xff\n", "not a JSON object"),
        ('{"to":"x"}'.encode("utf-16-le") + b"\n", "not a JSON object"),  # UTF-8 only
    ],
)
async def test_a_malformed_header_line_fails_the_connection_with_1002_and_a_reason(
    relay: Relay, header: bytes, why: str
) -> None:
    with trio.fail_after(10):
        alice, _ = await v1_member(relay, "alice")
        await alice.send_frame(OP_BINARY, header)
        code, reason = await alice.expect_close()
    assert code == CloseCode.PROTOCOL_ERROR
    assert reason.startswith("wsproxy.v1: ") and why in reason


async def test_a_header_line_longer_than_the_limit_fails_before_the_message_ends(
    relay: Relay,
) -> None:
    with trio.fail_after(10):
        alice, _ = await v1_member(relay, "alice")
        await alice.send_frame(OP_BINARY, b"x" * v1.MAX_MEMBER_HEADER, fin=False)
        code, reason = await alice.expect_close()
    assert code == CloseCode.PROTOCOL_ERROR and "no header line within" in reason


async def test_the_header_limit_holds_however_the_header_line_is_fragmented(
    relay: Relay,
) -> None:
    with trio.fail_after(10):
        alice, _ = await v1_member(relay, "alice")
        piece = b"x" * (v1.MAX_MEMBER_HEADER // 4)
        await alice.send_frame(OP_BINARY, piece, fin=False)
        await alice.send_frame(OP_CONT, b"", fin=False)
        for _ in range(3):
            await alice.send_frame(OP_CONT, piece, fin=False)
        code, reason = await alice.expect_close()
    assert code == CloseCode.PROTOCOL_ERROR and "no header line within" in reason


async def test_a_header_line_in_many_small_fragments_reads_as_in_one(relay: Relay) -> None:
    with trio.fail_after(10):
        alice, _ = await v1_member(relay, "alice")
        bob, _ = await v1_member(relay, "bob")
        message = b'{"to":"bob"}\nhello'
        await alice.send_frame(OP_TEXT, message[:1], fin=False)
        await alice.send_frame(OP_CONT, b"", fin=False)
        for index in range(1, len(message) - 1):
            await alice.send_frame(OP_CONT, message[index : index + 1], fin=False)
        await alice.send_frame(OP_CONT, message[-1:])
        assert await next_message(bob) == (OP_TEXT, v1.From("alice", direct=True), b"hello")
    for member in (alice, bob):
        await member.aclose()


async def test_a_large_direct_message_streams_to_its_member_with_the_header_ahead(
    relay: Relay,
) -> None:
    with trio.fail_after(30):
        alice, _ = await v1_member(relay, "alice")
        bob, _ = await v1_member(relay, "bob")
        carol, _ = await v1_member(relay, "carol")
        chunk = os.urandom(1_000_003)
        # The header line itself split over two frames.
        await alice.send_frame(OP_BINARY, b'{"to":', fin=False)
        await alice.send_frame(OP_CONT, b'"bob"}\n' + chunk, fin=False)
        for _ in range(3):
            await alice.send_frame(OP_CONT, chunk, fin=False)
        await alice.send_frame(OP_CONT, b"end")
        await alice.send_frame(OP_TEXT, b"\nafter")
        opcode, what, payload = await next_message(bob)
        assert (opcode, what) == (OP_BINARY, v1.From("alice", direct=True))
        assert payload == chunk * 4 + b"end"
        assert await next_message(bob) == (OP_TEXT, v1.From("alice"), b"after")
        assert await next_message(carol) == (OP_TEXT, v1.From("alice"), b"after")
    for member in (alice, bob, carol):
        await member.aclose()


async def held_list(client: RawClient, welcome: v1.Welcome, until: set[str]) -> int:
    """Apply presence events as a client does until the list is ``until``; the number
    of events it took."""
    assert welcome.members is not None
    members, events = set(welcome.members), 0
    while members != until:
        event = await next_event(client)
        assert isinstance(event, v1.Presence), event
        events += 1
        members |= set(event.joined)
        members -= set(event.left)
        assert event.count >= len(members)
    return events


async def test_a_burst_of_joins_and_leaves_arrives_as_a_few_batched_events(
    relay: Relay,
) -> None:
    burst = 300
    with trio.fail_after(60):
        watcher, welcome = await v1_member(relay, "watcher")
        others: list[RawClient] = []

        async def one(n: int) -> None:
            others.append(await RawClient.open(relay.port, f"/ws?id=m{n}&groupName=g"))

        async with trio.open_nursery() as nursery:
            for n in range(burst):
                nursery.start_soon(one, n)
        everyone = {"watcher"} | {f"m{n}" for n in range(burst)}
        joined_events = await held_list(watcher, welcome, everyone)
        for member in others:
            await member.aclose()
        left_welcome = v1.Welcome("watcher", "g", frozenset(everyone), burst + 1)
        left_events = await held_list(watcher, left_welcome, {"watcher"})
    # Hundreds of changes, each batch a fraction of a second's worth.
    assert joined_events + left_events < burst // 10, (joined_events, left_events)
    assert relay.registry.member_count == 1
    await watcher.aclose()


async def test_a_member_welcomed_inside_a_batch_ends_with_the_exact_list() -> None:
    async with open_relay(RelayConfig(port=0)) as relay:
        with trio.fail_after(30):
            first, first_welcome = await v1_member(relay, "first")
            a = await RawClient.open(relay.port, "/ws?id=a&groupName=g")
            b = await RawClient.open(relay.port, "/ws?id=b&groupName=g")
            await relay.wait_members(3)
            # Within one batch: a leaves, late joins (welcomed without a), b leaves.
            await a.aclose()
            await relay.wait_members(2)
            late, late_welcome = await v1_member(relay, "late")
            assert late_welcome.members == frozenset({"first", "b", "late"})
            await b.aclose()
            await relay.wait_members(2)
            for client, welcome in ((first, first_welcome), (late, late_welcome)):
                await held_list(client, welcome, {"first", "late"})
        await first.aclose()
        await late.aclose()


async def test_above_the_presence_limit_a_group_has_counts_only() -> None:
    async with open_relay(RelayConfig(port=0, presence_limit=3)) as relay:
        with trio.fail_after(30):
            watcher, _ = await v1_member(relay, "watcher")
            plain = [await RawClient.open(relay.port, f"/ws?id=p{n}&groupName=g") for n in range(3)]
            await relay.wait_members(4)
            event = await next_event(watcher)
            while isinstance(event, v1.Presence):  # (the first joins, under the limit)
                event = await next_event(watcher)
            assert event == v1.Members(None, 4)
            late, welcome = await v1_member(relay, "late")
            assert (welcome.members, welcome.count) == (None, 5)
            await plain[0].aclose()
            await plain[1].aclose()
            await relay.wait_members(3)
            event = await next_event(watcher)
            assert event == v1.Members(frozenset({"watcher", "p2", "late"}), 3)
        for client in (watcher, plain[2], late):
            await client.aclose()


def test_the_relay_headers_are_compact_json_lines() -> None:
    assert v1.from_header("a") == b'{"from":"a"}\n'
    assert json.loads(v1.from_header("ü\n", direct=True)) == {"from": "ü\n", "direct": True}
