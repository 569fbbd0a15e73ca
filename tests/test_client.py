"""The typed client, end to end through a real relay: what a member of a group can count on.

A "raw .NET peer" below is a bare trio-websocket connection that writes and expects the
exact JSON text the .NET EasyWebSocketProxy client does.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import json
import logging
import ssl
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
import trio_websocket
import trustme
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

from relaynode import RestartableRelay
from trio_wsproxy import Relay, RelayConfig, open_relay
from trio_wsproxy.client.client import (
    BadMessage,
    BadMessageKind,
    Client,
    ClientClosed,
    ClientConfig,
    ClosedByRelay,
    ConnectError,
    Disconnected,
    HandshakeRefused,
    Incoming,
    NotConnected,
    ReplyError,
    RequestTimeout,
    connection_url,
    open_client,
    reconnect_delay,
)
from trio_wsproxy.protocol.typenames import TypeRegistry
from trio_wsproxy.testing import ClientFactory

GROUP = "group_1"
DOTNET_LIST_OF_STRING = (
    "System.Collections.Generic.List`1[[System.String, System.Private.CoreLib, "
    "Version=8.0.0.0, Culture=neutral, PublicKeyToken=7cec85d7bea7798e]]"
)
# Reconnect fast and give up fast, so that the tests stay quick.
FAST = ClientConfig(
    connect_timeout=2, reconnect_min_delay=0.02, reconnect_max_delay=0.1, send_timeout=3
)


@attrs.frozen
class SocketMessage:
    message: str
    reply_required: bool = False


class Suit(enum.Enum):
    HEARTS = "hearts"
    SPADES = "spades"


@attrs.frozen
class Card:
    suit: Suit
    rank: int


@attrs.frozen
class Hand:
    player: str
    cards: list[Card]
    dealt_at: dt.datetime
    nickname: str | None = None
    best: Card | None = None


def dotnet_types() -> TypeRegistry:
    """A registry that speaks the .NET demo's SharedData.Models.SocketMessage."""
    types = TypeRegistry()
    types.register(SocketMessage, "SharedData.Models.SocketMessage", pascal_case=True)
    return types


@asynccontextmanager
async def dotnet_peer(
    relay: Relay, group: str = GROUP
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A bare WebSocket member, joined the way the .NET client joins."""
    url = f"{relay.url}?id={uuid.uuid4()}&groupName={group}"
    async with trio_websocket.open_websocket_url(url) as ws:
        yield ws


def collector() -> tuple[trio.MemorySendChannel[Any], trio.MemoryReceiveChannel[Any]]:
    return trio.open_memory_channel[Any](1000)


# -- the URL and the backoff, without sockets ---------------------------------------------


def test_a_base_url_and_a_group_make_the_dotnet_url_with_a_fresh_uuid4_id() -> None:
    url, client_id, group = connection_url("ws://127.0.0.1:8765/ws", group="group 1")
    assert group == "group 1"
    assert uuid.UUID(client_id).version == 4
    assert url == f"ws://127.0.0.1:8765/ws?id={client_id}&groupName=group+1"
    assert connection_url("ws://h/ws", group="g")[1] != client_id


def test_a_dotnet_url_is_used_as_it_is() -> None:
    url = "ws://localhost:5000/ws?id=3f2504e0-4f89-41d3-9a0c-0305e82c3301&groupName=group_1"
    assert connection_url(url) == (url, "3f2504e0-4f89-41d3-9a0c-0305e82c3301", "group_1")
    assert connection_url(url, group="group_1")[2] == "group_1"
    assert connection_url("wss://h/ws?token=t&groupName=g", id="me")[0] == (
        "wss://h/ws?id=me&groupName=g&token=t"
    )


@pytest.mark.parametrize(
    ("url", "keywords", "message"),
    [
        ("ws://h/ws?groupName=a", {"group": "b"}, "contradicts"),
        ("ws://h/ws?id=x&groupName=a", {"id": "y"}, "contradicts"),
        ("ws://h/ws", {}, "no group"),
        ("ws://h/ws?groupName=", {}, "no group"),
        ("http://h/ws", {"group": "g"}, "ws:// or wss://"),
        ("ws:///ws", {"group": "g"}, "no host"),
    ],
)
def test_a_url_that_does_not_name_one_group_is_refused(
    url: str, keywords: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        connection_url(url, **keywords)


def test_reconnect_delays_double_up_to_the_cap_and_jitter_only_shortens_them() -> None:
    def delays(rand: float) -> list[float]:
        return [
            reconnect_delay(n, min_delay=0.5, max_delay=4, jitter=0.5, rand=lambda: rand)
            for n in range(6)
        ]

    assert delays(0.0) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert delays(1.0) == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert reconnect_delay(10_000, min_delay=1, max_delay=30, jitter=0) == 30


# -- connecting ---------------------------------------------------------------------------


async def test_a_dotnet_style_url_joins_the_group_and_id_in_it() -> None:
    with trio.fail_after(5):
        async with open_relay(RelayConfig(port=0)) as relay:
            url = f"{relay.url}?id=client-1&groupName=lobby"
            async with open_client(url) as client:
                assert (client.id, client.group, client.connected) == ("client-1", "lobby", True)
                await relay.wait_members(1, "lobby")


async def test_a_base_url_with_group_joins_under_a_generated_id() -> None:
    with trio.fail_after(5):
        async with open_relay(RelayConfig(port=0)) as relay:
            async with open_client(relay.url, group="lobby") as client:
                assert uuid.UUID(client.id).version == 4
                await relay.wait_members(1, "lobby")


async def test_a_refused_handshake_raises_with_the_status_and_the_relays_reason() -> None:
    with trio.fail_after(5):
        async with open_relay(RelayConfig(port=0, max_id_length=16)) as relay:
            with pytest.raises(HandshakeRefused) as caught:
                async with open_client(relay.url, group=GROUP, id="x" * 17):
                    pytest.fail("connected with an over-long id")
            assert caught.value.status_code == 400
            assert caught.value.reason
            assert "\n" not in caught.value.reason
            assert caught.value.reason in str(caught.value)

            wrong_path = relay.url.replace("/ws", "/nope")
            with pytest.raises(HandshakeRefused) as caught:
                async with open_client(wrong_path, group=GROUP):
                    pytest.fail("connected to an unknown path")
            assert caught.value.status_code == 404


async def test_an_unreachable_relay_raises_promptly_with_a_clear_message() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()  # nothing listens there now
    with trio.fail_after(2):
        with pytest.raises(ConnectError, match=f"could not connect to ws://127.0.0.1:{port}/ws"):
            async with open_client(f"ws://127.0.0.1:{port}/ws", group=GROUP):
                pytest.fail("connected to a closed port")


@pytest.mark.alone
async def test_a_relay_that_never_answers_the_handshake_times_out_as_configured() -> None:
    async def accept_and_stay_silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    with trio.fail_after(3):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, accept_and_stay_silent, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            start = trio.current_time()
            with pytest.raises(ConnectError, match=r"within 0\.3 s"):
                async with open_client(
                    f"ws://127.0.0.1:{port}/ws",
                    group=GROUP,
                    config=ClientConfig(connect_timeout=0.3),
                ):
                    pytest.fail("connected to a silent server")
            assert trio.current_time() - start < 1.5
            nursery.cancel_scope.cancel()


# -- typed messages -----------------------------------------------------------------------


async def test_typed_messages_reach_the_other_members_structured_and_not_the_sender(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    hand = Hand(
        player="ann",
        cards=[Card(Suit.HEARTS, 10), Card(Suit.SPADES, 1)],
        dealt_at=dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC),
        best=Card(Suit.SPADES, 1),
    )
    values: list[object] = [SocketMessage("Hello from Client 1"), hand, "text", True, 42, 2.5]
    with trio.fail_after(5):
        a = await wsproxy_client(group=GROUP)
        b = await wsproxy_client(group=GROUP)
        outsider = await wsproxy_client(group="other group")
        got_b, seen_b = collector()
        got_a, seen_a = collector()
        got_other, seen_other = collector()
        for tp in (SocketMessage, Hand, str, bool, int, float):
            b.on(tp, got_b.send)
            a.on(tp, got_a.send)
            outsider.on(tp, got_other.send)
        await wsproxy_relay.wait_members(2, GROUP)
        for value in values:
            await a.send(value)
        received = [await seen_b.receive() for _ in values]
        assert received == values
        assert [type(v) for v in received] == [type(v) for v in values]
        await b.send("ping back")
        assert await seen_a.receive() == "ping back"  # nothing of a's own came first
        assert seen_other.statistics().current_buffer_used == 0
        assert a.stats.messages_sent == len(values)
        assert b.stats.messages_received == len(values)


async def test_binary_frames_reach_bytes_handlers_untouched(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    payloads = [b"", b"\x00" * 10, bytes(range(256)) * 40, b'{"looks":"like json"}']
    with trio.fail_after(5):
        a = await wsproxy_client(group=GROUP)
        b = await wsproxy_client(group=GROUP)
        got, seen = collector()
        b.on(bytes, got.send)
        await wsproxy_relay.wait_members(2, GROUP)
        for payload in payloads:
            await a.send(payload)
        await a.send(bytearray(b"mutable"))
        await a.send(memoryview(b"a view"))
        received = [await seen.receive() for _ in range(len(payloads) + 2)]
        assert received == [*payloads, b"mutable", b"a view"]
        assert all(type(item) is bytes for item in received)


async def test_a_100_mib_message_goes_through_both_ways(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    big = bytes(range(256)) * (100 * 1024 * 1024 // 256)
    with trio.fail_after(20):
        a = await wsproxy_client(group=GROUP)
        b = await wsproxy_client(group=GROUP)
        got, seen = collector()
        a.on(bytes, got.send)
        b.on(bytes, got.send)
        a.on(str, got.send)
        await wsproxy_relay.wait_members(2, GROUP)
        await a.send(big)
        assert await seen.receive() == big
        await b.send(big)
        assert await seen.receive() == big
        # Typed messages have no size limit either (trio-websocket's default is 1 MiB).
        text = "é" * (4 * 1024 * 1024)
        await b.send(text)
        assert await seen.receive() == text


async def test_a_message_over_the_configured_limit_ends_the_client_with_1009() -> None:
    with trio.fail_after(5):
        async with open_relay(RelayConfig(port=0)) as relay:
            async with open_client(relay.url, group=GROUP) as a:
                with pytest.raises(ClosedByRelay) as caught:
                    async with open_client(
                        relay.url, group=GROUP, config=ClientConfig(max_message_size=1000)
                    ) as b:
                        b.on(bytes, lambda data: None)
                        await relay.wait_members(2, GROUP)
                        await a.send(b"x" * 1001)
                        await trio.sleep_forever()
                assert caught.value.code == 1009


# -- type names and .NET interop ----------------------------------------------------------


async def test_types_go_out_under_their_default_or_registered_names(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    types = TypeRegistry()
    types.register(Card, "Cards.Card", pascal_case=True)
    with trio.fail_after(5):
        client = await wsproxy_client(group=GROUP, types=types)
        async with dotnet_peer(wsproxy_relay) as peer:
            await wsproxy_relay.wait_members(2, GROUP)
            await client.send(SocketMessage("hi"))
            await client.send(Card(Suit.HEARTS, 3))
            await client.send(2**40, as_type="System.Int64")
            first = json.loads(await peer.get_message())
            assert first["MessageType"] == f"{SocketMessage.__module__}.SocketMessage"
            assert first["Message"] == {"message": "hi", "reply_required": False}
            assert json.loads(await peer.get_message())["Message"] == {
                "Suit": "hearts",
                "Rank": 3,
            }
            assert json.loads(await peer.get_message())["MessageType"] == "System.Int64"


async def test_python_messages_are_byte_identical_to_what_dotnet_writes(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    expected = [
        '{"Id":null,"MessageType":"SharedData.Models.SocketMessage",'
        '"Message":{"Message":"Hello from Client 1","ReplyRequired":false},"ReplyId":null}',
        '{"Id":null,"MessageType":"System.String","Message":"How do you do?","ReplyId":null}',
        '{"Id":null,"MessageType":"System.Boolean","Message":true,"ReplyId":null}',
        '{"Id":null,"MessageType":"System.Int32","Message":7,"ReplyId":null}',
        '{"Id":null,"MessageType":"System.Double","Message":0.5,"ReplyId":null}',
        f'{{"Id":null,"MessageType":"{DOTNET_LIST_OF_STRING}",'
        '"Message":["Line 1","Line 2"],"ReplyId":null}',
    ]
    with trio.fail_after(5):
        client = await wsproxy_client(group=GROUP, types=dotnet_types())
        async with dotnet_peer(wsproxy_relay) as peer:
            await wsproxy_relay.wait_members(2, GROUP)
            await client.send(SocketMessage("Hello from Client 1"))
            await client.send("How do you do?")
            await client.send(True)
            await client.send(7)
            await client.send(0.5)
            await client.send(["Line 1", "Line 2"], as_type=list[str])
            assert [await peer.get_message() for _ in expected] == expected
            with pytest.raises(TypeError, match="as_type=list"):
                await client.send(["no", "type"])


async def test_what_a_dotnet_client_sends_reaches_python_handlers(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    dotnet6_list = DOTNET_LIST_OF_STRING.replace("8.0.0.0", "6.0.0.0")
    frames = [
        '{"Id":null,"MessageType":"SharedData.Models.SocketMessage",'
        '"Message":{"Message":"Hello from Client 1","ReplyRequired":false},"ReplyId":null}',
        '{"Id":null,"MessageType":"System.String","Message":"a question","ReplyId":null}',
        f'{{"Id":null,"MessageType":"{dotnet6_list}",'
        '"Message":["Line 1","Line 2"],"ReplyId":null}',
        '{"Id":null,"MessageType":"System.Int64","Message":9007199254740993,"ReplyId":null}',
    ]
    with trio.fail_after(5):
        client = await wsproxy_client(group=GROUP, types=dotnet_types())
        got, seen = collector()
        for tp in (SocketMessage, str, list[str], int):
            client.on(tp, got.send)
        data, seen_bytes = collector()
        client.on(bytes, data.send)
        async with dotnet_peer(wsproxy_relay) as peer:
            await wsproxy_relay.wait_members(2, GROUP)
            for frame in frames:
                await peer.send_message(frame)
            await peer.send_message(b"Hello from Client 1! This is a byte array!")
            assert [await seen.receive() for _ in frames] == [
                SocketMessage("Hello from Client 1"),
                "a question",
                ["Line 1", "Line 2"],
                9007199254740993,
            ]
            assert await seen_bytes.receive() == b"Hello from Client 1! This is a byte array!"


async def test_a_dotnet_client_answers_a_python_request_as_dotnet_does(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    question = "This is a question. How do you do?"
    with trio.fail_after(5):
        client = await wsproxy_client(group=GROUP)
        async with dotnet_peer(wsproxy_relay) as peer, trio.open_nursery() as nursery:
            await wsproxy_relay.wait_members(2, GROUP)

            async def answer_like_dotnet() -> None:
                request = json.loads(await peer.get_message())
                assert request["MessageType"] == "System.String"
                assert request["Message"] == question
                assert request["ReplyId"] is None
                assert uuid.UUID(request["Id"]).version == 4
                await peer.send_message(
                    '{"Id":null,"MessageType":"System.Boolean","Message":true,'
                    f'"ReplyId":"{request["Id"]}"}}'
                )

            nursery.start_soon(answer_like_dotnet)
            assert await client.request(question, bool, timeout=5) is True
            assert client.pending_requests == 0


async def test_a_python_handler_answers_a_dotnet_request_as_dotnet_expects(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    request_id = str(uuid.uuid4())
    with trio.fail_after(5):
        client = await wsproxy_client(group=GROUP, types=dotnet_types())

        @client.on(SocketMessage)
        async def answer(message: SocketMessage, incoming: Incoming[SocketMessage]) -> None:
            if message.reply_required and incoming.wants_reply:
                await incoming.reply(SocketMessage("This is my answer from Client 2!"))

        @client.on(str)
        async def yes(question: str, incoming: Incoming[str]) -> None:
            await incoming.reply(True)

        async with dotnet_peer(wsproxy_relay) as peer:
            await wsproxy_relay.wait_members(2, GROUP)
            await peer.send_message(
                f'{{"Id":"{request_id}","MessageType":"SharedData.Models.SocketMessage",'
                '"Message":{"Message":"This message is waiting for an answer!",'
                '"ReplyRequired":true},"ReplyId":null}'
            )
            assert await peer.get_message() == (
                '{"Id":null,"MessageType":"SharedData.Models.SocketMessage",'
                '"Message":{"Message":"This is my answer from Client 2!",'
                f'"ReplyRequired":false}},"ReplyId":"{request_id}"}}'
            )
            await peer.send_message(
                f'{{"Id":"{request_id.upper()}","MessageType":"System.String",'
                '"Message":"How do you do?","ReplyId":null}'
            )
            # .NET reads the Id into a Guid and writes it back as Guid.ToString() does.
            assert await peer.get_message() == (
                '{"Id":null,"MessageType":"System.Boolean","Message":true,'
                f'"ReplyId":"{request_id}"}}'
            )


# -- receiving without callbacks ----------------------------------------------------------


async def test_receive_waits_for_the_next_message_of_its_type_only() -> None:
    with trio.fail_after(5):
        async with open_relay(RelayConfig(port=0)) as relay:
            async with (
                open_client(relay.url, group=GROUP) as a,
                open_client(relay.url, group=GROUP) as b,
            ):
                await relay.wait_members(2, GROUP)
                async with trio.open_nursery() as nursery:
                    result: list[SocketMessage] = []

                    async def wait_for_one() -> None:
                        result.append(await b.receive(SocketMessage))

                    nursery.start_soon(wait_for_one)
                    await trio.testing.wait_all_tasks_blocked()
                    await a.send("not this")
                    await a.send(SocketMessage("this one"))
                assert result == [SocketMessage("this one")]
                assert b.stats.unhandled == 1  # the str had nowhere to go

                with trio.move_on_after(0.1) as waited:  # the caller's scope is the timeout
                    await b.receive(SocketMessage)
                assert waited.cancelled_caught


async def test_a_subscription_is_an_async_iterator_of_incoming_messages_in_order(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    with trio.fail_after(5):
        a = await wsproxy_client(group=GROUP)
        b = await wsproxy_client(group=GROUP)
        await wsproxy_relay.wait_members(2, GROUP)
        async with b.subscribe(int) as numbers, b.subscribe(buffer=100) as everything:
            for n in range(50):
                await a.send(n)
            await a.send(b"raw")
            received = []
            async for incoming in numbers:
                assert incoming.message_type == "System.Int32"
                assert incoming.id is None and not incoming.wants_reply
                received.append(incoming.value)
                if len(received) == 50:
                    break
            assert received == list(range(50))
            all_values = [(await everything.receive()).value for _ in range(51)]
            assert all_values == [*range(50), b"raw"]


# -- request / reply ----------------------------------------------------------------------


async def test_a_request_returns_the_answer_which_handlers_do_not_see(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    with trio.fail_after(5):
        asker = await wsproxy_client(group=GROUP)
        answerer = await wsproxy_client(group=GROUP)

        @answerer.on(SocketMessage)
        async def shout(message: SocketMessage, incoming: Incoming[SocketMessage]) -> None:
            await incoming.reply(SocketMessage(message.message.upper()))

        stray, seen_stray = collector()
        asker.on(SocketMessage, stray.send)
        await wsproxy_relay.wait_members(2, GROUP)
        answer = await asker.request(SocketMessage("how do you do?"), SocketMessage)
        assert answer == SocketMessage("HOW DO YOU DO?")
        assert asker.pending_requests == 0
        await answerer.send(SocketMessage("plain"))
        assert await seen_stray.receive() == SocketMessage("plain")  # not the answer


async def test_many_concurrent_requests_each_get_their_own_answer(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    count = 40
    with trio.fail_after(10):
        asker = await wsproxy_client(group=GROUP)
        answerer = await wsproxy_client(group=GROUP)
        waiting: list[Incoming[int]] = []

        @answerer.on(int)
        async def answer_all_backwards(number: int, incoming: Incoming[int]) -> None:
            waiting.append(incoming)
            if len(waiting) == count:  # answer in the reverse order of arrival
                for question in reversed(waiting):
                    await question.reply(f"twice {question.value} is {2 * question.value}")

        await wsproxy_relay.wait_members(2, GROUP)
        answers: dict[int, str] = {}

        async def ask(n: int) -> None:
            answers[n] = await asker.request(n, str, timeout=5)

        async with trio.open_nursery() as nursery:
            for n in range(count):
                nursery.start_soon(ask, n)
        assert answers == {n: f"twice {n} is {2 * n}" for n in range(count)}
        assert asker.pending_requests == 0


@pytest.mark.alone
async def test_an_unanswered_request_raises_and_leaves_nothing_behind(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    with trio.fail_after(5):
        asker = await wsproxy_client(group=GROUP)
        slow = await wsproxy_client(group=GROUP)
        questions, seen_questions = collector()
        slow.on(str, lambda question, incoming: questions.send_nowait(incoming))
        late, seen_late = collector()
        asker.on(bool, lambda answer, incoming: late.send_nowait(incoming))
        await wsproxy_relay.wait_members(2, GROUP)
        start = trio.current_time()
        with pytest.raises(RequestTimeout) as caught:
            await asker.request("anyone?", bool, timeout=0.2)
        assert isinstance(caught.value, trio.TooSlowError)
        assert 0.2 <= trio.current_time() - start < 1
        assert asker.pending_requests == 0
        # The answer that comes too late is an ordinary message, marked as a reply.
        question = await seen_questions.receive()
        assert question.id == caught.value.request_id
        await question.reply(True)
        late_answer = await seen_late.receive()
        assert (late_answer.value, late_answer.reply_id) == (True, caught.value.request_id)


async def test_an_answer_that_does_not_fit_the_reply_type_raises_reply_error(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    with trio.fail_after(5):
        asker = await wsproxy_client(group=GROUP)
        answerer = await wsproxy_client(group=GROUP)

        @answerer.on(str)
        async def wrong_type(question: str, incoming: Incoming[str]) -> None:
            await incoming.reply("yes")

        await wsproxy_relay.wait_members(2, GROUP)
        with pytest.raises(ReplyError, match="expected true or false"):
            await asker.request("well?", bool)
        assert asker.stats.bad_payload == 1


async def test_replying_to_a_message_that_asked_for_nothing_answers_guid_empty(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    with trio.fail_after(5):
        a = await wsproxy_client(group=GROUP)
        b = await wsproxy_client(group=GROUP)
        received, seen = collector()
        b.on(str, lambda text, incoming: received.send_nowait(incoming))
        await wsproxy_relay.wait_members(2, GROUP)
        await a.send("no question")
        incoming = await seen.receive()
        assert not incoming.wants_reply
        a.on(bool, lambda answer, incoming: received.send_nowait(incoming))
        await incoming.reply(True)  # as .NET's ReplyToAsync: ReplyId Guid.Empty
        answer = await seen.receive()
        assert answer.value is True
        assert answer.reply_id == "00000000-0000-0000-0000-000000000000"


# -- handlers -----------------------------------------------------------------------------


async def test_sync_and_async_handlers_run_in_registration_order_and_can_be_removed(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    calls: list[str] = []
    with trio.fail_after(5):
        a = await wsproxy_client(group=GROUP)
        b = await wsproxy_client(group=GROUP)
        done, seen_done = collector()

        def first(text: str) -> None:
            calls.append(f"sync {text}")

        @b.on(str)
        async def second(text: str) -> None:
            await trio.lowlevel.checkpoint()
            calls.append(f"async {text}")

        b.on(str, first)
        b.on(str, lambda text, incoming: calls.append(f"{incoming.message_type} {text}"))
        b.on(bool, done.send)
        await wsproxy_relay.wait_members(2, GROUP)
        await a.send("one")
        await a.send(True)
        await seen_done.receive()
        b.off(str, first)
        with pytest.raises(ValueError, match="not a handler"):
            b.off(str, first)
        await a.send("two")
        await a.send(True)
        await seen_done.receive()
        assert calls == [
            "async one",
            "sync one",
            "System.String one",
            "async two",
            "System.String two",
        ]


async def test_a_handlers_exception_comes_out_of_the_async_with_as_itself() -> None:
    class Boom(Exception):
        pass

    with trio.fail_after(5):
        async with open_relay(RelayConfig(port=0)) as relay:
            async with open_client(relay.url, group=GROUP) as a:
                with pytest.raises(Boom, match="bad handler") as caught:
                    async with open_client(relay.url, group=GROUP) as b:

                        @b.on(str)
                        def explode(text: str) -> None:
                            raise Boom("bad handler")

                        await relay.wait_members(2, GROUP)
                        await a.send("trigger")
                        await trio.sleep_forever()
                assert any("System.String" in note for note in caught.value.__notes__)
                await relay.wait_members(1, GROUP)  # b left


async def test_with_an_error_hook_a_handlers_exception_is_reported_and_the_client_goes_on(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    errors: list[tuple[Exception, object]] = []
    with trio.fail_after(5):
        a = await wsproxy_client(group=GROUP)
        b = await wsproxy_client(
            group=GROUP,
            on_handler_error=lambda error, incoming: errors.append((error, incoming.value)),
        )
        got, seen = collector()

        @b.on(int)
        async def fragile(number: int) -> None:
            if number == 0:
                raise ZeroDivisionError("no zeros")
            await got.send(number)

        await wsproxy_relay.wait_members(2, GROUP)
        for n in (1, 0, 2):
            await a.send(n)
        assert [await seen.receive(), await seen.receive()] == [1, 2]
        assert [(type(e), value) for e, value in errors] == [(ZeroDivisionError, 0)]
        assert b.stats.handler_errors == 1


async def test_slow_handlers_make_the_client_wait_but_lose_nothing(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    count = 500
    with trio.fail_after(10):
        a = await wsproxy_client(group=GROUP)
        b = await wsproxy_client(group=GROUP, config=ClientConfig(read_ahead=2))
        release = trio.Event()
        received: list[int] = []
        got_all = trio.Event()

        @b.on(int)
        async def slow(number: int) -> None:
            await release.wait()  # stuck until everything has been sent
            received.append(number)
            if len(received) == count:
                got_all.set()

        await wsproxy_relay.wait_members(2, GROUP)
        for n in range(count):
            await a.send(n)
        release.set()
        await got_all.wait()
        assert received == list(range(count))
        assert b.stats.disconnects == 0


# -- bad data from the group --------------------------------------------------------------


async def test_bad_data_is_logged_once_counted_reported_and_survived(
    caplog: pytest.LogCaptureFixture,
    wsproxy_relay: Relay,
    wsproxy_client: ClientFactory,
) -> None:
    bad_frames = [
        ("Hello, this is not JSON", BadMessageKind.INVALID_JSON),
        ('["an", "array"]', BadMessageKind.INVALID_ENVELOPE),
        (
            '{"Id":null,"MessageType":"Nobody.Knows.This","Message":1,"ReplyId":null}',
            BadMessageKind.UNKNOWN_TYPE,
        ),
        (
            '{"Id":null,"MessageType":"SharedData.Models.SocketMessage",'
            '"Message":{"Message":42,"ReplyRequired":"no"},"ReplyId":null}',
            BadMessageKind.BAD_PAYLOAD,
        ),
    ]
    reported: list[BadMessage] = []
    caplog.set_level(logging.INFO, logger="trio_wsproxy.client")
    with trio.fail_after(5):
        client = await wsproxy_client(
            group=GROUP, types=dotnet_types(), on_bad_message=reported.append
        )
        got, seen = collector()
        client.on(SocketMessage, got.send)
        async with dotnet_peer(wsproxy_relay) as peer:
            await wsproxy_relay.wait_members(2, GROUP)
            for frame, _ in bad_frames:
                await peer.send_message(frame)
            await peer.send_message(
                '{"Id":null,"MessageType":"SharedData.Models.SocketMessage",'
                '"Message":{"Message":"still here","ReplyRequired":false},"ReplyId":null}'
            )
            assert await seen.receive() == SocketMessage("still here")
        assert [(bad.kind, bad.text) for bad in reported] == [
            (kind, frame) for frame, kind in bad_frames
        ]
        assert "expected true or false, got str @ $.reply_required" in reported[3].reason
        stats = client.stats
        assert (stats.invalid_json, stats.invalid_envelope) == (1, 1)
        assert (stats.unknown_type, stats.bad_payload, stats.bad_messages) == (1, 1, 4)
        assert client.connected
    ignored = [r for r in caplog.records if r.name == "trio_wsproxy.client" and "ignored" in r.msg]
    assert len(ignored) == len(bad_frames)
    for record, bad in zip(ignored, reported, strict=True):
        assert bad.reason in record.getMessage()


# -- reconnecting -------------------------------------------------------------------------


async def test_after_the_relay_restarts_the_client_reconnects_with_the_same_id_and_handlers() -> (
    None
):
    events: list[object] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            relay = RestartableRelay(nursery)
            first = await relay.start()
            async with (
                open_client(
                    first.url,
                    group=GROUP,
                    id="steady",
                    config=FAST,
                    on_connect=lambda client: events.append("connected"),
                    on_disconnect=events.append,
                ) as client,
                open_client(first.url, group=GROUP, config=FAST) as other,
            ):
                got, seen = collector()
                client.on(str, got.send)
                await first.wait_members(2, GROUP)
                await relay.stop()
                second = await relay.start()
                assert second.port == first.port
                await second.wait_members(2, GROUP)
                await other.send("after the restart")
                assert await seen.receive() == "after the restart"
                assert client.id == "steady"
                assert second.group_size(GROUP) == 2
                assert events[0] == "connected"
                assert events[1] == Disconnected(1001, "relay shutting down", reconnecting=True)
                assert events[2] == "connected"
                assert client.stats.connects == 2
            nursery.cancel_scope.cancel()


async def test_a_send_while_disconnected_waits_for_the_connection() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            relay = RestartableRelay(nursery)
            first = await relay.start()
            async with open_client(first.url, group=GROUP, config=FAST) as client:
                await first.wait_members(1, GROUP)
                await relay.stop()
                sent = trio.Event()

                async def send_it() -> None:
                    await client.send("sent while away")
                    sent.set()

                nursery.start_soon(send_it)
                # Everything has run as far as it can: the send is waiting, not pending.
                await trio.testing.wait_all_tasks_blocked()
                assert not sent.is_set() and not client.connected
                second = await relay.start()
                await sent.wait()
                assert second.stats.messages == 1  # it reached the new relay
            nursery.cancel_scope.cancel()


@pytest.mark.alone
async def test_a_send_raises_not_connected_when_the_relay_stays_away() -> None:
    config = attrs.evolve(FAST, send_timeout=0.3)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            relay = RestartableRelay(nursery)
            first = await relay.start()
            async with open_client(first.url, group=GROUP, config=config) as client:
                await first.wait_members(1, GROUP)
                await relay.stop()
                start = trio.current_time()
                with pytest.raises(NotConnected, match="not sent"):
                    await client.send("into the void")
                assert 0.3 <= trio.current_time() - start < 1
            nursery.cancel_scope.cancel()


async def test_with_reconnect_off_a_dropped_connection_ends_the_client() -> None:
    disconnects: list[Disconnected] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            relay = RestartableRelay(nursery)
            first = await relay.start()
            with pytest.raises(ClosedByRelay) as caught:
                async with open_client(
                    first.url,
                    group=GROUP,
                    config=ClientConfig(reconnect=False),
                    on_disconnect=disconnects.append,
                ) as client:
                    await first.wait_members(1, GROUP)
                    await relay.stop()
                    await trio.sleep_forever()
            assert caught.value.code == 1001
            assert disconnects == [Disconnected(1001, "relay shutting down", reconnecting=False)]
            assert client.closed
            with pytest.raises(ClientClosed):
                await client.send("too late")
            nursery.cancel_scope.cancel()


async def test_reconnecting_gives_up_after_the_configured_attempts() -> None:
    config = attrs.evolve(FAST, max_reconnect_attempts=3)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            relay = RestartableRelay(nursery)
            first = await relay.start()
            with pytest.raises(ConnectError, match="after 3 attempts"):
                async with open_client(first.url, group=GROUP, config=config):
                    await first.wait_members(1, GROUP)
                    await relay.stop()
                    await trio.sleep_forever()
            nursery.cancel_scope.cancel()


async def test_a_relay_that_refuses_the_reconnect_for_good_ends_the_client() -> None:
    disconnects: list[Disconnected] = []

    async def record(event: Disconnected) -> None:
        await trio.lowlevel.checkpoint()
        disconnects.append(event)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            relay = RestartableRelay(nursery)
            first = await relay.start()
            with pytest.raises(HandshakeRefused) as caught:
                async with open_client(
                    first.url, group=GROUP, id="a-long-id", config=FAST, on_disconnect=record
                ):
                    await first.wait_members(1, GROUP)
                    await relay.stop()
                    await relay.start(max_id_length=4)  # this relay refuses our id
                    await trio.sleep_forever()
            assert caught.value.status_code == 400
            assert disconnects == [Disconnected(1001, "relay shutting down", reconnecting=True)]
            nursery.cancel_scope.cancel()


async def test_a_client_replaced_by_a_newer_one_with_its_id_stops_and_says_so() -> None:
    disconnects: list[Disconnected] = []
    with trio.fail_after(5):
        async with open_relay(RelayConfig(port=0)) as relay:
            with pytest.raises(ClosedByRelay) as caught:
                async with open_client(
                    relay.url, group=GROUP, id="twin", config=FAST, on_disconnect=disconnects.append
                ) as older:
                    await relay.wait_members(1, GROUP)
                    async with open_client(relay.url, group=GROUP, id="twin", config=FAST):
                        await trio.sleep_forever()
            assert caught.value.code == 4000
            assert "replaced" in str(caught.value)
            assert disconnects == [Disconnected(4000, caught.value.reason, reconnecting=False)]
            assert older.stats.connects == 1  # it did not fight back


async def test_a_relay_that_stops_answering_pings_is_left() -> None:
    async def accept_then_go_silent(stream: trio.SocketStream) -> None:
        connection = WSConnection(ConnectionType.SERVER)
        while True:
            connection.receive_data(await stream.receive_some())
            for event in connection.events():
                if isinstance(event, Request):
                    await stream.send_all(connection.send(AcceptConnection()))
                    await trio.sleep_forever()

    config = ClientConfig(ping_interval=0.05, ping_timeout=0.1, reconnect=False, close_timeout=0.1)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, accept_then_go_silent, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            with pytest.raises(ClosedByRelay) as caught:
                async with open_client(f"ws://127.0.0.1:{port}/ws", group=GROUP, config=config):
                    await trio.sleep_forever()
            assert caught.value.code == 1006
            nursery.cancel_scope.cancel()


async def test_pings_keep_a_healthy_connection_up(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    config = ClientConfig(ping_interval=0.02, ping_timeout=0.5)
    with trio.fail_after(5):
        client = await wsproxy_client(group=GROUP, config=config)
        # Ten ping intervals of staying up are the behaviour under test, not a settle-wait.
        await trio.sleep(0.2)
        assert client.connected
        assert client.stats.disconnects == 0


# -- closing ------------------------------------------------------------------------------


async def test_closing_the_client_closes_with_1000_and_stops_it() -> None:
    close_codes: trio.MemorySendChannel[int]
    close_codes, seen_codes = trio.open_memory_channel[int](10)

    async def record_close(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                await ws.get_message()
        except trio_websocket.ConnectionClosed as closed:
            assert closed.reason is not None
            await close_codes.send(closed.reason.code)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                trio_websocket.serve_websocket, record_close, "127.0.0.1", 0, None
            )
            url = f"ws://127.0.0.1:{server.port}/ws"
            async with open_client(url, group=GROUP) as client:
                assert client.connected
            assert client.closed and not client.connected
            assert await seen_codes.receive() == 1000
            with pytest.raises(ClientClosed):
                await client.send("after close")

            async with open_client(url, group=GROUP) as client:
                await client.aclose()
                await client.aclose()  # idempotent
                assert await seen_codes.receive() == 1000
                with pytest.raises(ClientClosed):
                    await client.send("after aclose")
            nursery.cancel_scope.cancel()


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_relay(
    request: pytest.FixtureRequest, certificate_authority: trustme.CA, tmp_path: Path
) -> ssl.SSLContext:
    """Serve this test's wsproxy_relay over TLS (list it before wsproxy_relay): marks the test
    with the certificate files, which only exist per test, and returns a context trusting them."""
    cert = certificate_authority.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    request.node.add_marker(pytest.mark.wsproxy_relay(certfile=str(certfile), keyfile=str(keyfile)))
    trusting = ssl.create_default_context()
    certificate_authority.configure_trust(trusting)
    return trusting


async def test_members_exchange_typed_messages_over_wss_and_untrusted_relays_are_refused(
    tls_relay: ssl.SSLContext, wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    trusting = tls_relay
    with trio.fail_after(5):
        assert wsproxy_relay.url.startswith("wss://")
        a = await wsproxy_client(group=GROUP, ssl_context=trusting)
        b = await wsproxy_client(group=GROUP, ssl_context=trusting)
        got, seen = collector()
        b.on(SocketMessage, got.send)
        await wsproxy_relay.wait_members(2, GROUP)
        await a.send(SocketMessage("over TLS"))
        assert await seen.receive() == SocketMessage("over TLS")
        with pytest.raises(ConnectError, match=r"TLS handshake .* failed"):
            async with open_client(wsproxy_relay.url, group=GROUP):  # the system CAs only
                pytest.fail("trusted a certificate nobody vouches for")
    with pytest.raises(ValueError, match="wss://"):
        Client("ws://h/ws", group=GROUP, ssl_context=trusting)


def test_client_repr_says_who_and_where() -> None:
    client = Client("ws://h/ws", group="g", id="me")
    assert repr(client) == "<Client id='me' group='g' disconnected>"
