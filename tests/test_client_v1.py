"""The client over the ``wsproxy.v1`` subprotocol: sender ids, who is in the group,
messages to one member, replies to the requester only — and, where the relay does not
select v1, the plain protocol exactly as before.

Most tests run against :class:`FakeRelay` below, a small v1 relay on trio-websocket
that speaks the codec (``trio_wsproxy.protocol.v1``) and lets a test hold presence
events back, add members that are only ids ("virtual" members), refuse a member's
reconnection, or write any frame to a member. :class:`TestAgainstRelay` runs the same
behaviour through the real relay (the ``wsproxy_relay`` fixture).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import pytest
import trio
import trio_websocket

from trio_wsproxy import Relay
from trio_wsproxy.client.client import (
    BadMessage,
    BadMessageKind,
    Client,
    ClientConfig,
    ClientError,
    ClosedByRelay,
    ConnectError,
    DeliveryFailed,
    Disconnected,
    Incoming,
    Joined,
    Left,
    MemberNotFound,
    UnsupportedByRelay,
    open_client,
)
from trio_wsproxy.client.membership import MemberList
from trio_wsproxy.client.wire import (
    check_member_id,
    encode_message,
    frame_for,
    split_relay_message,
)
from trio_wsproxy.protocol import v1
from trio_wsproxy.protocol.envelope import Envelope, encode_envelope
from trio_wsproxy.protocol.typenames import TypeRegistry
from trio_wsproxy.protocol.v1 import (
    MAX_MEMBER_HEADER,
    NO_SUCH_MEMBER,
    SUBPROTOCOL,
    TO_GROUP,
    Error,
    Event,
    From,
    Members,
    Presence,
    ToGroup,
    ToMember,
    V1Error,
    Welcome,
    encode_event,
    from_header,
    header_end,
    parse_member_header,
)
from trio_wsproxy.testing import ClientFactory

GROUP = "lobby"
# Reconnect fast, so that the tests stay quick.
FAST = ClientConfig(
    connect_timeout=2, reconnect_min_delay=0.02, reconnect_max_delay=0.1, send_timeout=3
)
PLAIN = attrs.evolve(FAST, offer_v1=False)


@attrs.frozen
class Chat:
    text: str


@attrs.frozen
class Question:
    text: str


@attrs.frozen
class Answer:
    text: str


def chat_types() -> TypeRegistry:
    types = TypeRegistry()
    for tp in (Chat, Question, Answer):
        types.register(tp)
    return types


def chat_text(text: str) -> str:
    """A Chat as its envelope: what a member's client writes for ``send(Chat(text))``."""
    return encode_envelope(Envelope(f"{__name__}.Chat", {"text": text}))


def string_text(text: str) -> str:
    """A str as its envelope, as the client (and .NET) writes it."""
    return encode_envelope(Envelope("System.String", text))


# -- a fake v1 relay ----------------------------------------------------------------------


@attrs.define(eq=False)
class FakeMember:
    """A member of the fake relay: a real connection, or only an id (``ws`` None) whose
    frames are kept in ``inbox``."""

    id: str
    group: str
    ws: trio_websocket.WebSocketConnection | None
    v1: bool
    inbox: list[str | bytes] = attrs.Factory(list)


class FakeRelay:
    """A v1 relay in miniature (see the module docstring). ``speaks_v1`` False makes it
    a plain relay; ``welcome`` False a v1 relay that never welcomes; ``close_at_join`` a
    relay that closes every new connection with that code at once; ``presence_limit``
    the group size over which it keeps no member list."""

    def __init__(
        self,
        *,
        speaks_v1: bool = True,
        welcome: bool = True,
        close_at_join: int | None = None,
        presence_limit: int | None = None,
    ) -> None:
        self.speaks_v1 = speaks_v1
        self.welcome = welcome
        self.close_at_join = close_at_join
        self.presence_limit = presence_limit
        self.url = ""
        self.groups: dict[str, dict[str, FakeMember]] = {}
        #: Every frame members sent, with the sender's id, as the relay read it.
        self.received: list[tuple[str, str | bytes]] = []
        #: Ids whose (re)connections are refused with 503 for now.
        self.refused: set[str] = set()
        self._held: dict[str, tuple[frozenset[str], list[tuple[str, str]]]] | None = None
        self._changed = trio.Event()

    # -- what a test does with it --------------------------------------------------------

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    async def wait_received(self, count: int) -> list[tuple[str, str | bytes]]:
        await self.wait_until(lambda: len(self.received) >= count)
        return self.received[:count]

    async def wait_members(self, count: int, group: str = GROUP) -> None:
        await self.wait_until(lambda: len(self.groups.get(group, {})) == count)

    async def add(self, member_id: str, group: str = GROUP) -> FakeMember:
        """A virtual member joins."""
        member = FakeMember(member_id, group, None, True)
        await self._join(member)
        return member

    async def remove(self, member_id: str, group: str = GROUP) -> None:
        """A member leaves (a real one is closed with 1000)."""
        member = self.groups[group][member_id]
        if member.ws is not None:
            await member.ws.aclose(1000)
            await self.wait_until(lambda: member_id not in self.groups[group])
        else:
            await self._leave(member)

    async def say(
        self, sender: str, payload: str | bytes, *, to: str | None = None, group: str = GROUP
    ) -> None:
        """``sender`` (a virtual member) sends ``payload``, to the group or to ``to``."""
        target: ToGroup | ToMember = TO_GROUP if to is None else ToMember(to)
        await self._route(self.groups[group][sender], target, payload)

    async def inject(self, member_id: str, frame: str | bytes, group: str = GROUP) -> None:
        """Write ``frame`` to a member as it is."""
        await self._deliver(self.groups[group][member_id], frame)

    async def drop(self, member_id: str, code: int = 1012, group: str = GROUP) -> None:
        """Close a member's connection with ``code`` (its client reconnects after 1012)."""
        member = self.groups[group][member_id]
        assert member.ws is not None
        await member.ws.aclose(code, "the fake relay dropped it")
        await self.wait_until(lambda: self.groups[group].get(member_id) is not member)

    def hold_presence(self) -> None:
        """From now on, collect joins and leaves instead of telling them..."""
        self._held = {name: (frozenset(members), []) for name, members in self.groups.items()}

    async def release_presence(self) -> None:
        """... and tell them now, one batch per group, as the codec says a batch is."""
        held, self._held = self._held or {}, None
        for name, (before, changes) in held.items():
            after = frozenset(self.groups.get(name, {}))
            joined = [m for kind, m in changes if kind == "join" and m in after - before]
            left = [m for kind, m in changes if kind == "leave" and m in before - after]
            event = Presence(tuple(dict.fromkeys(joined)), tuple(dict.fromkeys(left)), len(after))
            for member in list(self.groups.get(name, {}).values()):
                await self._tell(member, event)

    # -- the relay -----------------------------------------------------------------------

    async def serve(self, request: trio_websocket.WebSocketRequest) -> None:
        query = parse_qs(urlsplit(request.path).query)
        member_id, group = query["id"][0], query["groupName"][0]
        if member_id in self.refused:
            await request.reject(503, body=b"not now")
            return
        v1 = self.speaks_v1 and SUBPROTOCOL in request.proposed_subprotocols
        ws = await request.accept(subprotocol=SUBPROTOCOL if v1 else None)
        if self.close_at_join is not None:
            await ws.aclose(self.close_at_join, "closed at once")
            return
        member = FakeMember(member_id, group, ws, v1)
        older = self.groups.get(group, {}).pop(member_id, None)
        if older is not None and older.ws is not None:
            await older.ws.aclose(4000, "replaced by a newer connection")
        await self._join(member)
        try:
            while True:
                frame = await ws.get_message()
                self.received.append((member_id, frame))
                self._notify()
                await self._read(member, frame)
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            if self.groups.get(group, {}).get(member_id) is member:
                await self._leave(member)

    async def _read(self, member: FakeMember, frame: str | bytes) -> None:
        if not member.v1:
            await self._route(member, TO_GROUP, frame)
            return
        data = frame.encode() if isinstance(frame, str) else frame
        end = header_end(data)
        if end is None:
            assert member.ws is not None
            await member.ws.aclose(1002, "no header line")
            return
        target = parse_member_header(data[: end - 1])
        payload = frame[len(data[:end].decode()) :] if isinstance(frame, str) else frame[end:]
        await self._route(member, target, payload)

    async def _route(
        self, sender: FakeMember, target: ToGroup | ToMember, payload: str | bytes
    ) -> None:
        members = self.groups[sender.group]
        if isinstance(target, ToMember):
            recipient = members.get(target.to)
            if recipient is None or recipient is sender:
                detail = f"no member {target.to!r} in group {sender.group!r}"
                await self._tell(sender, Error(NO_SUCH_MEMBER, detail, target.to))
                return
            await self._deliver(recipient, self._framed(recipient, sender, payload, True))
            return
        for recipient in list(members.values()):
            if recipient is not sender:
                await self._deliver(recipient, self._framed(recipient, sender, payload, False))

    @staticmethod
    def _framed(
        recipient: FakeMember, sender: FakeMember, payload: str | bytes, direct: bool
    ) -> str | bytes:
        if not recipient.v1:
            return payload
        header = from_header(sender.id, direct)
        return header.decode() + payload if isinstance(payload, str) else header + payload

    def _listed(self, group: str) -> frozenset[str] | None:
        members = self.groups.get(group, {})
        if self.presence_limit is not None and len(members) > self.presence_limit:
            return None
        return frozenset(members)

    async def _join(self, member: FakeMember) -> None:
        members = self.groups.setdefault(member.group, {})
        listed_before = self._listed(member.group)
        members[member.id] = member
        self._notify()
        if self.welcome:
            listed = self._listed(member.group)
            await self._tell(member, Welcome(member.id, member.group, listed, len(members)))
        await self._changed_membership(member, "join", listed_before)

    async def _leave(self, member: FakeMember) -> None:
        listed_before = self._listed(member.group)
        del self.groups[member.group][member.id]
        self._notify()
        await self._changed_membership(member, "leave", listed_before)

    async def _changed_membership(
        self, member: FakeMember, kind: str, listed_before: frozenset[str] | None
    ) -> None:
        group = member.group
        listed = self._listed(group)
        count = len(self.groups[group])
        others = [m for m in self.groups[group].values() if m is not member]
        if (listed is None) != (listed_before is None):
            for other in others:
                await self._tell(other, Members(listed, count))
        elif listed is None:
            pass  # over the presence limit: no presence events
        elif self._held is not None:
            self._held.setdefault(group, (frozenset(), []))[1].append((kind, member.id))
        else:
            joined = (member.id,) if kind == "join" else ()
            left = (member.id,) if kind == "leave" else ()
            for other in others:
                await self._tell(other, Presence(joined, left, count))

    async def _tell(self, member: FakeMember, event: Event) -> None:
        if member.v1:
            await self._deliver(member, encode_event(event).decode())

    async def _deliver(self, member: FakeMember, frame: str | bytes) -> None:
        if member.ws is None:
            member.inbox.append(frame)
            self._notify()
            return
        try:
            await member.ws.send_message(frame)
        except trio_websocket.ConnectionClosed:
            pass

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


@asynccontextmanager
async def fake_relay(**options: Any) -> AsyncIterator[FakeRelay]:
    relay = FakeRelay(**options)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            trio_websocket.serve_websocket, relay.serve, "127.0.0.1", 0, None
        )
        relay.url = f"ws://127.0.0.1:{server.port}/ws"
        yield relay
        nursery.cancel_scope.cancel()


def channel() -> tuple[trio.MemorySendChannel[Any], trio.MemoryReceiveChannel[Any]]:
    return trio.open_memory_channel[Any](1000)


async def caught_up(relay: FakeRelay, client: Client, via: str) -> None:
    """Return once ``client`` has read everything ``relay`` wrote to it so far: a mark
    that the virtual member ``via`` sends after it has arrived."""
    async with client.subscribe(bytes) as marks:
        await relay.say(via, b"mark", to=client.id)
        await marks.receive()


async def wait_for_member(client: Client, member_id: str) -> None:
    """Return once ``member_id`` is in ``client.members`` (subscribed before looking, so
    that a join read meanwhile is not missed)."""
    async with client.subscribe(Joined) as joins:
        while member_id not in client.members:
            await joins.receive()


# -- the client's view of its group, without a network ------------------------------------


def welcome(members: set[str] | None, count: int | None = None, me: str = "me") -> Welcome:
    listed = None if members is None else frozenset(members | {me})
    return Welcome(me, GROUP, listed, count if count is not None else len(members or ()) + 1)


def test_the_first_welcome_sets_the_other_members_without_announcing_them() -> None:
    membership = MemberList("me")
    assert (membership.members, membership.count, membership.current) == (frozenset(), None, False)
    assert membership.welcome(welcome({"a", "b"})) == []
    assert membership.members == {"a", "b"}
    assert membership.count == 2
    assert membership.current


def test_a_later_welcome_announces_exactly_the_difference() -> None:
    membership = MemberList("me")
    membership.welcome(welcome({"a", "b", "c"}))
    membership.connection_ended()
    assert not membership.current
    assert membership.members == {"a", "b", "c"}  # as last known while away
    assert membership.welcome(welcome({"b", "d", "a0"})) == [
        Joined("a0"),
        Joined("d"),
        Left("a"),
        Left("c"),
    ]
    assert membership.members == {"b", "d", "a0"}


def test_a_presence_batch_announces_its_joins_then_its_leaves_each_in_order() -> None:
    membership = MemberList("me")
    membership.welcome(welcome({"a", "b"}))
    changes = membership.presence(Presence(("z", "y", "me", "a"), ("b", "ghost"), 4))
    assert changes == [Joined("z"), Joined("y"), Left("b")]  # nothing known twice or unknown
    assert membership.members == {"a", "z", "y"}
    assert membership.count == 3


def test_over_the_presence_limit_the_list_stays_as_last_known_and_only_the_count_moves() -> None:
    membership = MemberList("me")
    membership.welcome(welcome({"a", "b"}))
    assert membership.members_list(Members(None, 900)) == []
    assert not membership.current
    assert membership.members == {"a", "b"}
    assert membership.presence(Presence(("c",), ("a",), 901)) == []
    assert membership.count == 900
    assert membership.members_list(Members(frozenset({"me", "b", "c"}), 3)) == [
        Joined("c"),
        Left("a"),
    ]
    assert membership.current


def test_a_big_group_on_the_first_welcome_is_announced_when_its_list_comes() -> None:
    membership = MemberList("me")
    assert membership.welcome(welcome(None, count=5000)) == []
    assert (membership.members, membership.count, membership.current) == (frozenset(), 4999, False)
    assert not membership.known_absent("anyone")  # nothing is known, so nothing is refused
    assert membership.members_list(Members(frozenset({"me", "a"}), 2)) == [Joined("a")]


def test_a_member_heard_from_before_its_join_is_told_is_not_refused() -> None:
    membership = MemberList("me")
    membership.welcome(welcome({"a"}))
    assert membership.known_absent("late")
    membership.heard_from("late")  # its message overtook the (batched) presence event
    assert not membership.known_absent("late")
    membership.presence(Presence((), (), 2))  # a batch after the message: authoritative
    assert membership.known_absent("late")
    assert not membership.known_absent("a")


def test_a_v1_message_is_its_header_line_then_the_payload_untouched() -> None:
    assert frame_for("{}", None) == "\n{}"
    assert frame_for(b"\x00\n", None) == b"\n\x00\n"
    assert frame_for("x", "bob") == '{"to":"bob"}\nx'
    assert frame_for(b"x", "bøb") == '{"to":"bøb"}\n'.encode() + b"x"
    assert parse_member_header(b'{"to":"bob"}') == ToMember("bob")
    assert encode_message(TypeRegistry(), "x", None, request_id=None, reply_to=None) == (
        string_text("x")
    )


def test_the_relay_s_header_comes_off_and_the_payload_keeps_its_kind() -> None:
    text = from_header("zoë").decode() + "é\n{}"
    assert split_relay_message(text) == (From("zoë"), "é\n{}")
    binary = from_header("a", direct=True) + b"\n\xff"
    assert split_relay_message(binary) == (From("a", direct=True), b"\n\xff")
    event = encode_event(Error(NO_SUCH_MEMBER, "gone", "b")).decode()
    assert split_relay_message(event) == (Error(NO_SUCH_MEMBER, "gone", "b"), "")
    for bad in ("no header", b"\xff\n", "[]\n{}"):
        with pytest.raises(V1Error):
            split_relay_message(bad)


VECTORS = json.loads(
    (Path(__file__).parent.parent / "docs" / "protocol-vectors.json").read_text("utf-8")
)["vectors"]


def vectors(direction: str) -> list[Any]:
    """The vectors of well-formed messages in ``direction``."""
    return [
        pytest.param(vector, id=vector["name"])
        for vector in VECTORS
        if vector["direction"] == direction and "error" not in vector["meaning"]
    ]


def as_received(vector: dict[str, Any]) -> str | bytes:
    """The vector's message as trio-websocket hands it over: text as str."""
    data = bytes.fromhex(vector["hex"])
    return data.decode() if vector["opcode"] == "text" else data


@pytest.mark.parametrize("vector", vectors("relay-to-member"))
def test_the_client_reads_every_relay_vector_as_it_says(vector: dict[str, Any]) -> None:
    meaning = vector["meaning"]
    header, payload = split_relay_message(as_received(vector))
    if "from" in meaning:
        assert header == From(
            meaning["from"], meaning["direct"], meaning.get("offset"), meaning.get("group")
        )
        expected = bytes.fromhex(meaning["payload_hex"])
        assert payload == (expected.decode() if vector["opcode"] == "text" else expected)
    else:
        assert not isinstance(header, From)
        assert encode_event(header) == bytes.fromhex(vector["hex"])
        assert payload == ""


@pytest.mark.parametrize(
    "vector",
    [
        v
        for v in vectors("member-to-relay")
        if not bytes.fromhex(v.values[0]["hex"]).startswith(b"{}")
    ],
)  # (an empty header object is read, never written)
def test_the_client_writes_every_member_vector_byte_for_byte(vector: dict[str, Any]) -> None:
    meaning = vector["meaning"]
    if "join" in meaning or "leave" in meaning or "token" in meaning:
        since = meaning.get("since")
        written: str | bytes = (
            v1.join_header(meaning["join"], None if since is None else v1.Position.parse(since))
            if "join" in meaning
            else v1.leave_header(meaning["leave"])
            if "leave" in meaning
            else v1.refresh_header(meaning["token"])
        ).decode()
    else:
        payload = bytes.fromhex(meaning["payload_hex"])
        written = frame_for(
            payload.decode() if vector["opcode"] == "text" else payload,
            meaning["to"],
            meaning.get("group"),
        )
    assert written == as_received(vector)


def test_a_member_id_must_be_able_to_address_one_member() -> None:
    assert check_member_id("bob") == "bob"
    with pytest.raises(ValueError, match="not empty"):
        check_member_id("")
    with pytest.raises(TypeError, match="str"):
        check_member_id(7)
    with pytest.raises(ValueError, match="too long"):
        check_member_id("x" * MAX_MEMBER_HEADER)


# -- plain or v1 --------------------------------------------------------------------------


async def test_a_client_speaks_v1_when_the_relay_selects_it_and_knows_who_is_there() -> None:
    with trio.fail_after(5):
        async with fake_relay() as relay:
            await relay.add("bob")
            await relay.add("carol")
            async with open_client(relay.url, group=GROUP, id="alice", config=FAST) as alice:
                # The welcome is in before open_client returns.
                assert alice.protocol == SUBPROTOCOL
                assert alice.members == {"bob", "carol"}  # never itself
                assert alice.member_count == 2
                assert alice.members_current


async def test_a_relay_that_does_not_select_v1_gets_the_plain_protocol_byte_for_byte() -> None:
    with trio.fail_after(5):
        async with fake_relay(speaks_v1=False) as relay:
            types = chat_types()
            async with open_client(relay.url, group=GROUP, id="alice", types=types) as alice:
                assert alice.protocol is None
                assert (alice.members, alice.member_count) == (frozenset(), None)
                assert not alice.members_current
                got, seen = channel()
                alice.on(Chat, lambda chat, incoming: got.send_nowait(incoming))
                await relay.add("bob")
                await relay.say("bob", chat_text("hi"))
                incoming = await seen.receive()
                assert (incoming.value, incoming.sender, incoming.direct) == (
                    Chat("hi"),
                    None,
                    False,
                )
                await alice.send(Chat("hello"))
                await alice.send(b"\x00raw")
                assert await relay.wait_received(2) == [
                    ("alice", chat_text("hello")),
                    ("alice", b"\x00raw"),
                ]
                with pytest.raises(UnsupportedByRelay, match=f"does not speak {SUBPROTOCOL}"):
                    await alice.send_to("bob", Chat("secret"))
                with pytest.raises(UnsupportedByRelay):
                    await alice.request(Question("?"), Answer, to="bob")
                await alice.send("after")
                assert len(await relay.wait_received(3)) == 3  # the refused ones never went


async def test_offer_v1_false_connects_as_a_plain_client_to_a_v1_relay() -> None:
    with trio.fail_after(5):
        async with fake_relay() as relay:
            async with open_client(relay.url, group=GROUP, config=PLAIN) as client:
                assert client.protocol is None
                await client.send("plain")
                assert await relay.wait_received(1) == [(client.id, string_text("plain"))]


# -- sending over v1 ----------------------------------------------------------------------


async def test_over_v1_a_message_is_the_plain_payload_behind_a_header_line() -> None:
    with trio.fail_after(5):
        async with fake_relay() as relay:
            await relay.add("bob")
            types = chat_types()
            async with open_client(relay.url, group=GROUP, id="alice", types=types) as alice:
                await alice.send(Chat("to all"))
                await alice.send(b"\n{binary}\n")
                await alice.send_to("bob", Chat("to bob"))
                await alice.send_to("bob", b"\x00")
                assert await relay.wait_received(4) == [
                    ("alice", "\n" + chat_text("to all")),
                    ("alice", b"\n\n{binary}\n"),
                    ("alice", '{"to":"bob"}\n' + chat_text("to bob")),
                    ("alice", b'{"to":"bob"}\n\x00'),
                ]
                bob = relay.groups[GROUP]["bob"]
                assert bob.inbox[-2:] == [
                    '{"from":"alice","direct":true}\n' + chat_text("to bob"),
                    b'{"from":"alice","direct":true}\n\x00',
                ]


async def test_messages_carry_their_sender_and_whether_they_were_direct() -> None:
    with trio.fail_after(5):
        async with fake_relay() as relay:
            await relay.add("bob")
            async with open_client(relay.url, group=GROUP, id="alice", types=chat_types()) as alice:
                async with alice.subscribe() as messages:
                    await relay.say("bob", chat_text("to all"))
                    await relay.say("bob", b"\n\xff raw\n", to="alice")
                    await relay.say("bob", "", to="alice")  # an empty text: not JSON
                    first = await messages.receive()
                    assert (first.value, first.sender, first.direct) == (
                        Chat("to all"),
                        "bob",
                        False,
                    )
                    second = await messages.receive()
                    assert (second.value, second.sender, second.direct) == (
                        b"\n\xff raw\n",
                        "bob",
                        True,
                    )
                    assert type(second.value) is bytes
                async with alice.subscribe(Chat) as chats:
                    await relay.say("bob", chat_text("later"))
                    assert (await chats.receive()).value == Chat("later")
                assert alice.stats.invalid_json == 1
                assert alice.stats.messages_received == 4


async def test_send_to_a_member_the_relay_s_list_lacks_raises_and_sends_nothing() -> None:
    with trio.fail_after(5):
        async with fake_relay() as relay:
            await relay.add("bob")
            async with open_client(relay.url, group=GROUP, id="alice") as alice:
                with pytest.raises(MemberNotFound, match="no member 'zed'") as caught:
                    await alice.send_to("zed", "hello?")
                assert caught.value.member_id == "zed"
                assert isinstance(caught.value, ClientError)
                assert isinstance(caught.value, LookupError)
                with pytest.raises(MemberNotFound):
                    await alice.request("anyone?", str, to="zed")
                assert alice.pending_requests == 0
                with pytest.raises(ValueError, match="not empty"):
                    await alice.send_to("", "hello?")
                await alice.send_to("bob", "hello")
                assert await relay.wait_received(1) == [
                    ("alice", '{"to":"bob"}\n' + string_text("hello"))
                ]


async def test_a_member_heard_from_before_the_relay_announced_it_can_be_answered() -> None:
    with trio.fail_after(5):
        async with fake_relay() as relay:
            async with open_client(relay.url, group=GROUP, id="alice", types=chat_types()) as alice:
                greeted = trio.Event()

                async def greet_back(chat: Chat, incoming: Incoming[Chat]) -> None:
                    assert incoming.sender is not None
                    await alice.send_to(incoming.sender, Chat("welcome"))
                    greeted.set()

                alice.on(Chat, greet_back)
                relay.hold_presence()  # the relay batches: bob's join is told later
                bob = await relay.add("bob")
                await relay.say("bob", chat_text("hi, I am new"))
                await greeted.wait()
                assert "bob" not in alice.members
                await relay.wait_until(lambda: len(bob.inbox) == 2)  # its welcome, then ours
                assert bob.inbox[1] == '{"from":"alice","direct":true}\n' + chat_text("welcome")
                async with alice.subscribe(Joined) as joins:
                    await relay.release_presence()
                    assert (await joins.receive()).value == Joined("bob")
                assert alice.members == {"bob"}


# -- who is in the group ------------------------------------------------------------------


async def test_joins_and_leaves_reach_handlers_and_subscriptions_as_joined_and_left() -> None:
    with trio.fail_after(5):
        async with fake_relay() as relay:
            await relay.add("bob")
            async with open_client(relay.url, group=GROUP, id="alice") as alice:
                got, seen = channel()
                alice.on(Joined, got.send)
                seen_members: list[frozenset[str]] = []
                alice.on(Left, lambda left: seen_members.append(alice.members))
                async with alice.subscribe(Left) as leaves:
                    await relay.add("carol")
                    assert await seen.receive() == Joined("carol")
                    await relay.remove("bob")
                    left = await leaves.receive()
                    assert (left.value, left.sender, left.message_type) == (Left("bob"), None, None)
                assert seen_members == [frozenset({"carol"})]
                assert alice.members == {"carol"}
                assert alice.member_count == 1
                assert alice.stats.unhandled == 0  # events are not unhandled messages


async def test_a_presence_batch_yields_its_joins_then_its_leaves_in_order() -> None:
    with trio.fail_after(5):
        async with fake_relay() as relay:
            for member in ("b", "c"):
                await relay.add(member)
            async with open_client(relay.url, group=GROUP, id="alice") as alice:
                got, seen = channel()
                alice.on(Joined, got.send)
                alice.on(Left, got.send)
                relay.hold_presence()
                await relay.add("z")
                await relay.remove("c")
                await relay.add("y")
                await relay.add("gone")
                await relay.remove("gone")  # in and out within one batch: not told at all
                await relay.remove("b")
                await relay.release_presence()
                assert [await seen.receive() for _ in range(4)] == [
                    Joined("z"),
                    Joined("y"),
                    Left("c"),
                    Left("b"),
                ]
                assert alice.members == {"z", "y"}


async def test_a_subscription_to_every_message_gets_messages_but_not_events() -> None:
    with trio.fail_after(5):
        async with fake_relay() as relay:
            async with open_client(relay.url, group=GROUP, id="alice", types=chat_types()) as alice:
                async with alice.subscribe() as everything, alice.subscribe(Joined) as joins:
                    await relay.add("bob")
                    await relay.say("bob", chat_text("first message"))
                    assert (await joins.receive()).value == Joined("bob")
                    assert (await everything.receive()).value == Chat("first message")


async def test_after_a_reconnect_joined_and_left_say_what_changed_while_away() -> None:
    disconnects: list[tuple[Disconnected, bool, frozenset[str]]] = []
    with trio.fail_after(10):
        async with fake_relay() as relay:
            for member in ("bob", "carol"):
                await relay.add(member)
            connected = trio.Event()

            def on_disconnect(event: Disconnected) -> None:
                disconnects.append((event, alice.members_current, alice.members))

            async with open_client(
                relay.url,
                group=GROUP,
                id="alice",
                config=FAST,
                on_connect=lambda client: connected.set(),
                on_disconnect=on_disconnect,
            ) as alice:
                got, seen = channel()
                alice.on(Joined, got.send)
                alice.on(Left, got.send)
                relay.refused.add("alice")  # keep alice away while the group changes
                await relay.drop("alice", 1012)
                await relay.remove("carol")
                await relay.add("dave")
                connected = trio.Event()
                relay.refused.clear()
                await connected.wait()
                assert [await seen.receive() for _ in range(2)] == [Joined("dave"), Left("carol")]
                assert alice.members == {"bob", "dave"}
                assert alice.members_current
                assert seen.statistics().current_buffer_used == 0
            event, current, members = disconnects[0]
            assert (event.code, event.reconnecting) == (1012, True)
            assert not current
            assert members == {"bob", "carol"}  # as last known while away


async def test_over_the_presence_limit_members_are_frozen_and_send_to_leaves_it_to_the_relay() -> (
    None
):
    with trio.fail_after(5):
        async with fake_relay(presence_limit=3) as relay:
            await relay.add("bob")
            async with open_client(relay.url, group=GROUP, id="alice") as alice:
                got, seen = channel()
                alice.on(Joined, got.send)
                alice.on(Left, got.send)
                alice.on(DeliveryFailed, got.send)
                await relay.add("carol")
                assert await seen.receive() == Joined("carol")
                await relay.add("dave")  # four: over the limit
                await caught_up(relay, alice, via="carol")
                assert not alice.members_current
                assert alice.members == {"bob", "carol"}
                assert alice.member_count == 3
                await alice.send_to("zed", "hello?")  # not known absent: the relay answers
                assert await seen.receive() == DeliveryFailed(
                    "zed", NO_SUCH_MEMBER, "no member 'zed' in group 'lobby'"
                )
                await relay.remove("bob")  # three again: the list comes back
                assert [await seen.receive() for _ in range(2)] == [Joined("dave"), Left("bob")]
                assert alice.members_current
                assert alice.members == {"carol", "dave"}


# -- request and reply to one member ------------------------------------------------------


async def test_a_request_to_one_member_is_answered_by_it_alone_and_only_to_the_requester() -> None:
    with trio.fail_after(5):
        async with fake_relay() as relay:
            types = chat_types()
            async with (
                open_client(relay.url, group=GROUP, id="bob", types=types) as bob,
                open_client(relay.url, group=GROUP, id="carol", types=types) as carol,
                open_client(relay.url, group=GROUP, id="alice", types=types) as alice,
            ):
                questions: list[tuple[str, Question, str | None]] = []

                async def answer(question: Question, incoming: Incoming[Question]) -> None:
                    questions.append((incoming.sender or "", question, incoming.reply_id))
                    await incoming.reply(Answer(f"{bob.id} says yes"))

                bob.on(Question, answer)
                carol.on(Question, answer)
                carol_heard, carol_messages = channel()
                carol.on(Answer, carol_heard.send)
                carol.on(Chat, carol_heard.send)
                await relay.wait_members(3)
                assert alice.members == {"bob", "carol"}  # from its welcome
                reply = await alice.request(Question("shall we?"), Answer, to="bob")
                assert reply == Answer("bob says yes")
                assert questions == [("alice", Question("shall we?"), None)]
                bob_reply = [frame for sender, frame in relay.received if sender == "bob"]
                assert isinstance(bob_reply[0], str)
                assert bob_reply[0].startswith('{"to":"alice"}\n')
                await alice.send(Chat("done"))  # carol's first message: nothing came before
                assert await carol_messages.receive() == Chat("done")


async def test_a_reply_to_a_plain_requester_goes_to_it_alone() -> None:
    with trio.fail_after(5):
        async with fake_relay() as relay:
            types = chat_types()
            async with (
                open_client(relay.url, group=GROUP, id="bob", types=types) as bob,
                open_client(relay.url, group=GROUP, id="carol", types=types) as carol,
                open_client(
                    relay.url, group=GROUP, id="dotnet", types=types, config=PLAIN
                ) as plain,
            ):
                assert plain.protocol is None

                async def answer(question: Question, incoming: Incoming[Question]) -> None:
                    assert incoming.sender == "dotnet"
                    await incoming.reply(Answer("yes"))

                bob.on(Question, answer)
                carol_heard, carol_messages = channel()
                carol.on(Answer, carol_heard.send)
                carol.on(Chat, carol_heard.send)
                await relay.wait_members(3)
                assert await plain.request(Question("?"), Answer) == Answer("yes")
                await plain.send(Chat("done"))
                assert await carol_messages.receive() == Chat("done")


async def test_a_request_to_a_member_that_is_not_there_fails_without_waiting_out_the_timeout() -> (
    None
):
    with trio.fail_after(5):
        async with fake_relay(presence_limit=1) as relay:
            await relay.add("bob")  # two members: no list, so the relay must say
            async with open_client(relay.url, group=GROUP, id="alice") as alice:
                assert not alice.members_current
                with pytest.raises(MemberNotFound, match="'zed' was not delivered") as caught:
                    await alice.request("anyone?", str, to="zed", timeout=30)
                assert caught.value.member_id == "zed"
                assert alice.pending_requests == 0


# -- what the relay gets wrong ------------------------------------------------------------


async def test_a_frame_without_a_readable_header_is_a_bad_message_and_the_client_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    got, seen = channel()
    with trio.fail_after(5):
        async with fake_relay() as relay:
            await relay.add("bob")
            async with open_client(
                relay.url, group=GROUP, id="alice", on_bad_message=got.send
            ) as alice:
                with caplog.at_level(logging.WARNING, "trio_wsproxy.client"):
                    await relay.inject("alice", "no header line at all")
                    await relay.inject("alice", b"\xfe\xff\n")
                    await relay.say("bob", "is this on?", to="alice")  # not JSON: after them
                    bad: list[BadMessage] = [await seen.receive() for _ in range(3)]
                assert [b.kind for b in bad] == [BadMessageKind.INVALID_HEADER] * 2 + [
                    BadMessageKind.INVALID_JSON
                ]
                assert bad[0].text == "no header line at all"
                assert alice.stats.invalid_header == 2
                assert alice.stats.bad_messages == 3
                assert "no header line" in caplog.text
                assert alice.connected


async def test_a_v1_relay_that_never_welcomes_fails_the_connect_in_connect_timeout() -> None:
    with trio.fail_after(5):
        async with fake_relay(welcome=False) as relay:
            config = ClientConfig(connect_timeout=0.3)
            with pytest.raises(ConnectError, match=r"sent no welcome within 0\.3 s"):
                async with open_client(relay.url, group=GROUP, config=config):
                    pytest.fail("connected without a welcome")


async def test_a_connection_closed_before_its_welcome_ends_by_its_close_code() -> None:
    disconnects: list[Disconnected] = []
    with trio.fail_after(5):
        async with fake_relay(close_at_join=1008) as relay:
            with pytest.raises(ClosedByRelay) as caught:
                async with open_client(
                    relay.url, group=GROUP, config=FAST, on_disconnect=disconnects.append
                ):
                    await trio.sleep_forever()
            assert caught.value.code == 1008  # a policy close is final, as in plain
            assert disconnects == [Disconnected(1008, "closed at once", reconnecting=False)]


async def test_an_event_handler_s_error_says_which_event_it_was_handling() -> None:
    def fail(joined: Joined) -> None:
        raise RuntimeError("no room")

    with trio.fail_after(5):
        async with fake_relay() as relay:
            with pytest.raises(RuntimeError) as caught:
                async with open_client(relay.url, group=GROUP, id="alice") as alice:
                    alice.on(Joined, fail)
                    await relay.add("bob")
                    await trio.sleep_forever()
            assert "handling a Joined event" in caught.value.__notes__[0]


# -- against the real relay (needs the relay's side of wsproxy.v1) -----------------------


class TestAgainstRelay:
    """The same behaviour through the real relay: these pass once the relay selects
    ``wsproxy.v1`` and speaks it."""

    async def test_a_client_speaks_v1_with_the_relay_and_sees_the_others(
        self, wsproxy_relay: Relay, wsproxy_client: ClientFactory
    ) -> None:
        with trio.fail_after(5):
            bob = await wsproxy_client(group=GROUP, id="bob")
            alice = await wsproxy_client(group=GROUP, id="alice")
            assert alice.protocol == SUBPROTOCOL
            assert alice.members == {"bob"}  # from its welcome
            assert alice.members_current
            await wait_for_member(bob, "alice")
            async with bob.subscribe(Joined) as joins, bob.subscribe(Left) as leaves:
                carol = await wsproxy_client(group=GROUP, id="carol")
                assert (await joins.receive()).value == Joined("carol")
                await carol.aclose()
                assert (await leaves.receive()).value == Left("carol")
            assert bob.members == {"alice"}
            assert bob.member_count == 1

    async def test_messages_carry_their_sender_and_direct_ones_reach_one_member(
        self, wsproxy_relay: Relay, wsproxy_client: ClientFactory
    ) -> None:
        types = chat_types()
        with trio.fail_after(5):
            alice = await wsproxy_client(group=GROUP, id="alice", types=types)
            bob = await wsproxy_client(group=GROUP, id="bob", types=types)
            carol = await wsproxy_client(group=GROUP, id="carol", types=types)
            await wait_for_member(alice, "carol")
            async with bob.subscribe(Chat) as bobs, carol.subscribe(Chat) as carols:
                await alice.send(Chat("to all"))
                await alice.send_to("carol", Chat("to carol"))
                await alice.send(Chat("to all again"))
                got = [await bobs.receive() for _ in range(2)]
                assert [(i.value.text, i.sender, i.direct) for i in got] == [
                    ("to all", "alice", False),
                    ("to all again", "alice", False),
                ]
                got = [await carols.receive() for _ in range(3)]
                assert [(i.value.text, i.sender, i.direct) for i in got] == [
                    ("to all", "alice", False),
                    ("to carol", "alice", True),
                    ("to all again", "alice", False),
                ]

    async def test_a_request_to_one_member_is_answered_to_the_requester_alone(
        self, wsproxy_relay: Relay, wsproxy_client: ClientFactory
    ) -> None:
        types = chat_types()
        with trio.fail_after(5):
            alice = await wsproxy_client(group=GROUP, id="alice", types=types)
            bob = await wsproxy_client(group=GROUP, id="bob", types=types)
            carol = await wsproxy_client(group=GROUP, id="carol", types=types)

            async def answer(question: Question, incoming: Incoming[Question]) -> None:
                await incoming.reply(Answer("yes"))

            bob.on(Question, answer)
            carol.on(Question, answer)
            await wait_for_member(alice, "bob")
            await wsproxy_relay.wait_members(3, GROUP)
            async with carol.subscribe() as carols:
                assert await alice.request(Question("?"), Answer, to="bob") == Answer("yes")
                await alice.send(Chat("done"))
                assert (await carols.receive()).value == Chat("done")

    async def test_a_message_to_a_member_that_left_is_reported_not_lost(
        self, wsproxy_relay: Relay, wsproxy_client: ClientFactory
    ) -> None:
        with trio.fail_after(5):
            alice = await wsproxy_client(group=GROUP, id="alice")
            bob = await wsproxy_client(group=GROUP, id="bob")
            await wait_for_member(alice, "bob")
            with pytest.raises(MemberNotFound):
                await alice.send_to("nobody", "hello?")
            async with alice.subscribe(DeliveryFailed) as failures:
                await bob.aclose()
                await wsproxy_relay.wait_members(1, GROUP)
                # alice may not have heard that bob left yet: then the relay tells her.
                try:
                    await alice.send_to("bob", "hello?")
                except MemberNotFound:
                    return
                failed = (await failures.receive()).value
                assert (failed.to, failed.error) == ("bob", NO_SUCH_MEMBER)

    @pytest.mark.wsproxy_relay(presence_limit=1)
    async def test_over_the_presence_limit_the_relay_reports_what_it_cannot_deliver(
        self, wsproxy_relay: Relay, wsproxy_client: ClientFactory
    ) -> None:
        with trio.fail_after(5):
            bob = await wsproxy_client(group=GROUP, id="bob")
            alice = await wsproxy_client(group=GROUP, id="alice")
            assert not alice.members_current  # two members: over the limit, a count only
            assert alice.member_count == 1
            async with alice.subscribe(DeliveryFailed) as failures:
                await alice.send_to("zed", "hello?")
                failed = (await failures.receive()).value
                assert (failed.to, failed.error) == ("zed", NO_SUCH_MEMBER)
                with pytest.raises(MemberNotFound, match="'zed' was not delivered"):
                    await alice.request("anyone?", str, to="zed", timeout=30)
            async with bob.subscribe(str) as bobs:
                await alice.send_to("bob", "still there?")
                incoming = await bobs.receive()
                assert (incoming.value, incoming.sender, incoming.direct) == (
                    "still there?",
                    "alice",
                    True,
                )

    async def test_a_plain_member_sees_plain_messages_in_a_mixed_group(
        self, wsproxy_relay: Relay, wsproxy_client: ClientFactory
    ) -> None:
        types = chat_types()
        with trio.fail_after(5):
            plain = await wsproxy_client(group=GROUP, id="plain", types=types, config=PLAIN)
            alice = await wsproxy_client(group=GROUP, id="alice", types=types)
            await wsproxy_relay.wait_members(2, GROUP)
            assert plain.protocol is None
            assert alice.protocol == SUBPROTOCOL
            async with plain.subscribe(Chat) as plains, alice.subscribe(Chat) as alices:
                await alice.send(Chat("to all"))
                await alice.send_to("plain", Chat("to you"))
                got = [await plains.receive() for _ in range(2)]
                assert [(i.value.text, i.sender, i.direct) for i in got] == [
                    ("to all", None, False),
                    ("to you", None, False),
                ]
                await plain.send(Chat("from plain"))
                incoming = await alices.receive()
                assert (incoming.value, incoming.sender) == (Chat("from plain"), "plain")
