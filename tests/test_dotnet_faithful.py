"""The .NET stand-ins held to what the .NET sources do, and Python meeting them.

``dotnet_peer.DotNetClient`` stands in for EasyWebSocketProxy's ``WsProxyClient`` and
``dotnet_middleware`` for its sample Middleware; other tests build on them, so these
tests pin them to the .NET behaviour first: the bytes each envelope goes out as, how an
envelope is read, when the connection is dropped, the one reconnect. Then a Python
client and a .NET one share a group, on this relay and on the Middleware.

Tests marked xfail (strict) are the known interop faults of issue 28, each named; a fix
turns its test into a pass (and the strict mark into a failure to remove).
"""

from __future__ import annotations

import functools
import json
import math
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from dotnet_middleware import (
    Closed,
    ServerSocket,
    accept_websocket,
    open_middleware,
    read_request,
)
from dotnet_peer import (
    BOOLEAN,
    BYTE_ARRAY,
    DOUBLE,
    EMPTY_GUID,
    GERMAN,
    GUID,
    INT32,
    INT64,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    SOCKET_MESSAGE,
    STRING,
    DotNetClient,
    DotNetType,
    FormatError,
    HandlerError,
    JsonError,
    OverflowError_,
    ProtocolError,
    dotnet_url,
    envelope,
    json_double,
    list_of,
    open_dotnet_client,
)
from httpapi import KEY, call
from trio_wsproxy import ClientConfig, Relay, message_type, open_client
from wsraw import RawClient

GROUP = "group_1"
LOWER_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
LIST7 = list_of(STRING, "7.0.0.0")
LIST8 = list_of(STRING, "8.0.0.0")


@message_type("SharedData.Models.SocketMessage", pascal_case=True)
@attrs.frozen
class SocketMessage:
    """The .NET samples' SharedData.Models.SocketMessage."""

    message: str | None
    reply_required: bool = False


def hello(text: str = "Hello from Client 1", reply_required: bool = False) -> dict[str, Any]:
    return {"Message": text, "ReplyRequired": reply_required}


async def raw_member(relay: Relay, member_id: str = "raw") -> RawClient:
    """A bare WebSocket member of GROUP: sees exactly the bytes the others send."""
    return await RawClient.open(relay.port, f"/ws?id={member_id}&groupName={GROUP}")


async def text_of(raw: RawClient) -> str:
    opcode, payload = await raw.recv_message()
    assert opcode == OP_TEXT, (opcode, payload)
    return payload.decode()


# -- the bytes a .NET client sends -------------------------------------------------------

SAMPLE_ENVELOPES: list[tuple[object, DotNetType, str]] = [
    (
        hello(),
        SOCKET_MESSAGE,
        '{"Id":null,"MessageType":"SharedData.Models.SocketMessage",'
        '"Message":{"Message":"Hello from Client 1","ReplyRequired":false},"ReplyId":null}',
    ),
    (
        {"Message": None, "ReplyRequired": False},
        SOCKET_MESSAGE,
        '{"Id":null,"MessageType":"SharedData.Models.SocketMessage",'
        '"Message":{"Message":null,"ReplyRequired":false},"ReplyId":null}',
    ),
    (
        "How do you do? <b>Fish & 'chips'</b> + `x` \"q\" \\ é 😀\n",
        STRING,
        '{"Id":null,"MessageType":"System.String","Message":"How do you do? '
        "\\u003Cb\\u003EFish \\u0026 \\u0027chips\\u0027\\u003C/b\\u003E \\u002B "
        '\\u0060x\\u0060 \\u0022q\\u0022 \\\\ \\u00E9 \\uD83D\\uDE00\\n","ReplyId":null}',
    ),
    (None, STRING, '{"Id":null,"MessageType":"System.String","Message":null,"ReplyId":null}'),
    (True, BOOLEAN, '{"Id":null,"MessageType":"System.Boolean","Message":true,"ReplyId":null}'),
    (-42, INT32, '{"Id":null,"MessageType":"System.Int32","Message":-42,"ReplyId":null}'),
    (
        2**40,
        INT64,
        '{"Id":null,"MessageType":"System.Int64","Message":1099511627776,"ReplyId":null}',
    ),
    (3.0, DOUBLE, '{"Id":null,"MessageType":"System.Double","Message":3,"ReplyId":null}'),
    (0.1, DOUBLE, '{"Id":null,"MessageType":"System.Double","Message":0.1,"ReplyId":null}'),
    (1e20, DOUBLE, '{"Id":null,"MessageType":"System.Double","Message":1E+20,"ReplyId":null}'),
    (
        ["Line 1", "Line 2"],
        LIST7,
        '{"Id":null,"MessageType":"System.Collections.Generic.List\\u00601[[System.String, '
        "System.Private.CoreLib, Version=7.0.0.0, Culture=neutral, "
        'PublicKeyToken=7cec85d7bea7798e]]","Message":["Line 1","Line 2"],"ReplyId":null}',
    ),
    (
        ["Line 1"],
        LIST8,
        '{"Id":null,"MessageType":"System.Collections.Generic.List\\u00601[[System.String, '
        "System.Private.CoreLib, Version=8.0.0.0, Culture=neutral, "
        'PublicKeyToken=7cec85d7bea7798e]]","Message":["Line 1"],"ReplyId":null}',
    ),
]


@pytest.mark.parametrize(("value", "kind", "text"), SAMPLE_ENVELOPES)
def test_an_envelope_is_the_text_system_text_json_writes(
    value: object, kind: DotNetType, text: str
) -> None:
    assert envelope(value, kind) == text
    # And it is JSON any reader understands, with the value in it.
    assert json.loads(text)["MessageType"] == kind.full_name


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3.0, "3"),
        (-0.0, "-0"),
        (0.0001, "0.0001"),
        (0.00001, "1E-05"),
        (1e14, "100000000000000"),
        (1e15, "1E+15"),
        (123.456, "123.456"),
        (2.5e-7, "2.5E-07"),
        (12345678901234567.0, "12345678901234568"),
        (1.7976931348623157e308, "1.7976931348623157E+308"),
        (5e-324, "5E-324"),
    ],
)
def test_doubles_are_written_in_dotnets_shortest_form(value: float, text: str) -> None:
    assert json_double(value) == text
    assert float(text) == value


async def test_a_dotnet_client_sends_those_bytes_over_its_socket(relay: Relay) -> None:
    raw = await raw_member(relay)
    async with open_dotnet_client(dotnet_url(relay.url, GROUP)) as peer:
        for value, kind, text in SAMPLE_ENVELOPES:
            await peer.send(value, kind)
            assert await text_of(raw) == text
        await peer.send(b"\x00\xffbytes")
        assert await raw.recv_message() == (OP_BINARY, b"\x00\xffbytes")


async def test_a_request_carries_a_fresh_lowercase_guid_and_its_answer_comes_back(
    relay: Relay,
) -> None:
    raw = await raw_member(relay)
    async with open_dotnet_client(dotnet_url(relay.url, GROUP)) as peer:
        ids = []
        for answer in (True, False):
            async with trio.open_nursery() as nursery:
                got: list[object] = []

                async def ask() -> None:
                    got.append(await peer.request("Shall we?", STRING, BOOLEAN, timeout=10))  # noqa: B023

                nursery.start_soon(ask)
                sent = json.loads(await text_of(raw))
                assert list(sent) == ["Id", "MessageType", "Message", "ReplyId"]
                assert LOWER_GUID.fullmatch(sent["Id"]), sent
                assert (sent["MessageType"], sent["Message"], sent["ReplyId"]) == (
                    "System.String",
                    "Shall we?",
                    None,
                )
                ids.append(sent["Id"])
                await raw.send_frame(
                    OP_TEXT, envelope(answer, BOOLEAN, reply_id=uuid.UUID(sent["Id"])).encode()
                )
            assert got == [answer]
        assert ids[0] != ids[1]


async def test_a_request_unanswered_in_time_returns_none(relay: Relay) -> None:
    await raw_member(relay)
    async with open_dotnet_client(dotnet_url(relay.url, GROUP)) as peer:
        assert await peer.request("anyone?", STRING, BOOLEAN, timeout=0.05) is None


async def test_reply_to_answers_with_the_id_the_message_came_with(relay: Relay) -> None:
    raw = await raw_member(relay)
    async with open_dotnet_client(dotnet_url(relay.url, GROUP)) as peer:
        questions = peer.collect(SOCKET_MESSAGE)
        request_id = uuid.uuid4()
        await raw.send_frame(
            OP_TEXT, envelope(hello("ok?", True), SOCKET_MESSAGE, id=request_id).encode()
        )
        question = await questions.receive()
        await peer.reply_to(question, hello("yes"), SOCKET_MESSAGE)
        assert await text_of(raw) == envelope(hello("yes"), SOCKET_MESSAGE, reply_id=request_id)
        # The Id is taken: a second answer to the same object goes out as Guid.Empty.
        await peer.reply_to(question, hello("again"), SOCKET_MESSAGE)
        assert json.loads(await text_of(raw))["ReplyId"] == str(EMPTY_GUID)


async def test_reply_to_a_message_without_id_sends_guid_empty_which_dotnet_reads_as_a_message(
    relay: Relay,
) -> None:
    raw = await raw_member(relay)
    async with (
        open_dotnet_client(dotnet_url(relay.url, GROUP)) as answerer,
        open_dotnet_client(dotnet_url(relay.url, GROUP)) as listener,
    ):
        texts = answerer.collect(STRING)
        heard = listener.collect(BOOLEAN)
        await raw.send_frame(OP_TEXT, envelope("no id here", STRING).encode())
        received = await texts.receive()
        await answerer.reply_to(received, True, BOOLEAN)
        sent = await text_of(raw)
        while json.loads(sent)["MessageType"] != "System.Boolean":
            sent = await text_of(raw)
        assert sent == envelope(True, BOOLEAN, reply_id=EMPTY_GUID)
        assert await heard.receive() is True  # an ordinary message to every other member


async def test_reply_to_finds_a_primitive_by_its_value(relay: Relay) -> None:
    """``_replyToObjects`` is keyed by the object: a boxed string or bool by its value."""
    raw = await raw_member(relay)
    async with open_dotnet_client(dotnet_url(relay.url, GROUP)) as peer:
        texts = peer.collect(STRING)
        first, second = uuid.uuid4(), uuid.uuid4()
        for request_id in (first, second):
            await raw.send_frame(OP_TEXT, envelope("same", STRING, id=request_id).encode())
            assert await texts.receive() == "same"
        # The second Id was never kept (TryAdd of an equal key), so both answers say
        # the first request's Id and then Guid.Empty.
        await peer.reply_to("same", True, BOOLEAN)
        assert json.loads(await text_of(raw))["ReplyId"] == str(first)
        await peer.reply_to("same", True, BOOLEAN)
        assert json.loads(await text_of(raw))["ReplyId"] == str(EMPTY_GUID)


# -- how a .NET client reads -------------------------------------------------------------


@asynccontextmanager
async def peer_and_raw(relay: Relay) -> AsyncIterator[tuple[DotNetClient, RawClient]]:
    raw = await raw_member(relay)
    async with open_dotnet_client(dotnet_url(relay.url, GROUP)) as peer:
        yield peer, raw


async def marker_arrives(peer: DotNetClient, raw: RawClient, markers: Any) -> None:
    """Send a marker SocketMessage and wait for it: everything before it was read."""
    await raw.send_frame(OP_TEXT, envelope(hello("marker"), SOCKET_MESSAGE).encode())
    while (await markers.receive())["Message"] != "marker":
        pass


GOOD_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.parametrize(
    "bad_id",
    ['"not-a-guid"', '""', '"{0f8fad5b-d9cb-469f-a165-70867728950e}"',
     '"0f8fad5bd9cb469fa16570867728950e"', "42", "true", "{}"],
)  # fmt: skip
async def test_an_id_that_is_not_a_d_format_guid_drops_the_connection_and_reconnects(
    relay: Relay, bad_id: str
) -> None:
    async with peer_and_raw(relay) as (peer, raw):
        messages = peer.collect(SOCKET_MESSAGE)
        text = envelope(hello("a request"), SOCKET_MESSAGE).replace('"Id":null', f'"Id":{bad_id}')
        await raw.send_frame(OP_TEXT, text.encode())
        await peer.wait_connects(2)
        assert [type(e) for e in peer.drops] == [JsonError]
        assert len(peer.abandoned()) == 1  # left open, not closed
        await marker_arrives(peer, raw, messages)
        assert peer.connects == 2


async def test_a_non_guid_reply_id_drops_the_connection_too(relay: Relay) -> None:
    async with peer_and_raw(relay) as (peer, raw):
        text = envelope("an answer", STRING).replace('"ReplyId":null', '"ReplyId":"req-1"')
        await raw.send_frame(OP_TEXT, text.encode())
        await peer.wait_connects(2)
        assert [type(e) for e in peer.drops] == [JsonError]


async def test_an_upper_case_guid_is_read(relay: Relay) -> None:
    async with peer_and_raw(relay) as (peer, raw):
        messages = peer.collect(SOCKET_MESSAGE)
        text = envelope(hello("upper"), SOCKET_MESSAGE, id=uuid.UUID(GOOD_ID))
        await raw.send_frame(OP_TEXT, text.replace(GOOD_ID, GOOD_ID.upper()).encode())
        assert (await messages.receive())["Message"] == "upper"
        assert peer.connects == 1


@pytest.mark.parametrize(
    "text",
    ["not json", "[1, 2]", '"a string"', '{"Id":null,}', '{"Message":NaN,"MessageType":"x"}',
     '{"Id":null} trailing', '{"MessageType":1,"Message":"x"}', ""],
)  # fmt: skip
async def test_text_that_is_no_envelope_drops_the_connection(relay: Relay, text: str) -> None:
    async with peer_and_raw(relay) as (peer, raw):
        await raw.send_frame(OP_TEXT, text.encode())
        await peer.wait_connects(2)
        assert [type(e) for e in peer.drops] == [JsonError]


async def test_json_nested_deeper_than_64_drops_the_connection(relay: Relay) -> None:
    async with peer_and_raw(relay) as (peer, raw):
        messages = peer.collect(SOCKET_MESSAGE)
        fine = '{"MessageType":"x","Message":' + "[" * 63 + "]" * 63 + "}"
        await raw.send_frame(OP_TEXT, fine.encode())
        await marker_arrives(peer, raw, messages)
        assert peer.connects == 1
        deep = '{"MessageType":"x","Message":' + "[" * 64 + "]" * 64 + "}"
        await raw.send_frame(OP_TEXT, deep.encode())
        await peer.wait_connects(2)


@pytest.mark.parametrize(
    "text",
    [
        '{"Id":null,"MessageType":"System.String","Message":null,"ReplyId":null}',
        '{"Id":null,"MessageType":"System.String","Message":"","ReplyId":null}',
        '{"MessageType":"System.String"}',
        '{"MessageType":"Some.Unknown.Type","Message":"x"}',
        '{"messagetype":"System.String","message":"names are case-sensitive"}',
        "null",
        '{"Id":null,"MessageType":"SharedData.Models.SocketMessage","Message":"null"}',
    ],
)
async def test_these_are_dropped_silently(relay: Relay, text: str) -> None:
    async with peer_and_raw(relay) as (peer, raw):
        texts = peer.collect(STRING)
        messages = peer.collect(SOCKET_MESSAGE)
        await raw.send_frame(OP_TEXT, text.encode())
        await marker_arrives(peer, raw, messages)
        assert peer.connects == 1 and not peer.drops
        assert peer.ignored
        with pytest.raises(trio.WouldBlock):
            texts.receive_nowait()


async def test_an_empty_reply_is_dropped_and_the_request_waits_for_a_real_one(
    relay: Relay,
) -> None:
    async with peer_and_raw(relay) as (peer, raw):
        async with trio.open_nursery() as nursery:
            got: list[object] = []

            async def ask() -> None:
                got.append(await peer.request("q", STRING, STRING, timeout=10))

            nursery.start_soon(ask)
            request_id = uuid.UUID(json.loads(await text_of(raw))["Id"])
            await raw.send_frame(OP_TEXT, envelope("", STRING, reply_id=request_id).encode())
            await raw.send_frame(OP_TEXT, envelope("real", STRING, reply_id=request_id).encode())
        assert got == ["real"]


async def test_a_reply_is_matched_by_its_reply_id_alone(relay: Relay) -> None:
    async with peer_and_raw(relay) as (peer, raw):
        async with trio.open_nursery() as nursery:
            got: list[object] = []

            async def ask() -> None:
                got.append(await peer.request(hello(), SOCKET_MESSAGE, SOCKET_MESSAGE, timeout=10))

            nursery.start_soon(ask)
            request_id = uuid.UUID(json.loads(await text_of(raw))["Id"])
            text = envelope(hello("answer"), SOCKET_MESSAGE, reply_id=request_id)
            text = text.replace("SharedData.Models.SocketMessage", "Whatever.Else")
            await raw.send_frame(OP_TEXT, text.encode())
        assert got == [hello("answer")]


async def test_a_reply_to_someone_else_is_handled_as_an_ordinary_message(relay: Relay) -> None:
    async with peer_and_raw(relay) as (peer, raw):
        messages = peer.collect(SOCKET_MESSAGE)
        text = envelope(hello("for another"), SOCKET_MESSAGE, reply_id=uuid.uuid4())
        await raw.send_frame(OP_TEXT, text.encode())
        assert (await messages.receive())["Message"] == "for another"


@pytest.mark.parametrize(
    ("kind", "message", "value"),
    [
        (INT32, '"42"', 42),  # a JSON string is fine: Convert.ToInt32("42")
        (INT32, " 7 ", 7),
        (INT64, "-9223372036854775808", -(2**63)),
        (STRING, "true", "True"),  # JsonElement.ToString()
        (STRING, "3.50", "3.50"),
        (STRING, '{ "a" : [1, 2] }', '{ "a" : [1, 2] }'),
        (BOOLEAN, '"TRUE"', True),
        (BOOLEAN, '" false "', False),
        (DOUBLE, "3", 3.0),
        (DOUBLE, '"1,000.5"', 1000.5),  # AllowThousands, in the invariant culture
        (DOUBLE, "1e400", math.inf),
        (SOCKET_MESSAGE, '{"Message":"hi","Extra":1}', hello("hi")),
        (SOCKET_MESSAGE, '{"ReplyRequired":true}', {"Message": None, "ReplyRequired": True}),
        (SOCKET_MESSAGE, '{"message":"hi"}', {"Message": None, "ReplyRequired": False}),
        # A string holding JSON is parsed as the class: ToString() unquotes it.
        (SOCKET_MESSAGE, '"{\\"Message\\":\\"inner\\"}"', hello("inner")),
        (LIST7, '["a", null]', ["a", None]),
    ],
)
async def test_primitives_go_through_convert_and_the_rest_through_the_serializer(
    relay: Relay, kind: DotNetType, message: str, value: object
) -> None:
    async with peer_and_raw(relay) as (peer, raw):
        received = peer.collect(kind)
        text = f'{{"MessageType":{json.dumps(kind.full_name)},"Message":{message}}}'
        await raw.send_frame(OP_TEXT, text.encode())
        assert await received.receive() == value
        assert peer.connects == 1


@pytest.mark.parametrize(
    ("kind", "message", "error"),
    [
        (INT32, "3.0", FormatError),
        (INT32, "1e3", FormatError),
        (INT32, "2147483648", OverflowError_),
        (INT64, str(2**70), OverflowError_),
        (BOOLEAN, "1", FormatError),
        (DOUBLE, '"3,5x"', FormatError),
        (GUID, f'"{GOOD_ID}"', JsonError),  # the unquoted GUID is not JSON
        (SOCKET_MESSAGE, '{"Message":"x","ReplyRequired":"false"}', JsonError),
        (SOCKET_MESSAGE, '{"Message":3}', JsonError),
        (SOCKET_MESSAGE, "[1]", JsonError),
        (LIST7, "[1]", JsonError),
        (BYTE_ARRAY, '"AQID"', JsonError),  # On<byte[]> never reads a text envelope
    ],
)
async def test_a_payload_that_does_not_convert_drops_the_connection(
    relay: Relay, kind: DotNetType, message: str, error: type[Exception]
) -> None:
    async with peer_and_raw(relay) as (peer, raw):
        peer.collect(kind)
        text = f'{{"MessageType":{json.dumps(kind.full_name)},"Message":{message}}}'
        await raw.send_frame(OP_TEXT, text.encode())
        await peer.wait_connects(2)
        assert [type(e) for e in peer.drops] == [error]


async def test_convert_follows_the_current_culture(relay: Relay) -> None:
    raw = await raw_member(relay)
    async with open_dotnet_client(dotnet_url(relay.url, GROUP), culture=GERMAN) as peer:
        doubles = peer.collect(DOUBLE)
        for message in ("3.5", '"3,5"'):
            await raw.send_frame(
                OP_TEXT, f'{{"MessageType":"System.Double","Message":{message}}}'.encode()
            )
        assert [await doubles.receive(), await doubles.receive()] == [35.0, 3.5]


async def test_the_first_handler_of_a_type_wins(relay: Relay) -> None:
    async with peer_and_raw(relay) as (peer, raw):
        first, second = peer.collect(STRING), list[object]()
        assert not peer.on(STRING, second.append)
        await raw.send_frame(OP_TEXT, envelope("x", STRING).encode())
        assert await first.receive() == "x"
        assert second == []


async def test_a_handler_that_throws_drops_the_connection(relay: Relay) -> None:
    async with peer_and_raw(relay) as (peer, raw):

        def fail(value: object) -> None:
            raise RuntimeError("a bug in the handler")

        peer.on(STRING, fail)
        await raw.send_frame(OP_TEXT, envelope("x", STRING).encode())
        await peer.wait_connects(2)
        assert [type(e) for e in peer.drops] == [HandlerError]


async def test_binary_frames_go_to_the_byte_array_handler(relay: Relay) -> None:
    async with peer_and_raw(relay) as (peer, raw):
        blobs = peer.collect(BYTE_ARRAY)
        await raw.send_frame(OP_BINARY, b"\x01\x02")
        assert await blobs.receive() == b"\x01\x02"


# -- closes, reconnects, giving up: against a scripted server ----------------------------

Script = Callable[[ServerSocket], Awaitable[None]]


@asynccontextmanager
async def scripted_server(*scripts: Script) -> AsyncIterator[tuple[str, list[str]]]:
    """A server that upgrades a connection per script, in order, and refuses (503,
    before the upgrade) every connection after them. Yields its URL and the targets."""
    queue = list(scripts)
    targets: list[str] = []

    async def handle(stream: trio.SocketStream) -> None:
        if not queue:
            sock = ServerSocket(stream)
            _method, target, _headers = await read_request(sock)
            targets.append(target)
            await sock.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            await trio.aclose_forcefully(stream)
            return
        script = queue.pop(0)
        sock, target = await accept_websocket(stream)
        targets.append(target)
        try:
            await script(sock)
        except Closed:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws", targets
        nursery.cancel_scope.cancel()


async def test_a_close_is_never_answered_reconnected_once_at_once_then_given_up() -> None:
    first_done = trio.Event()
    silence: list[bytes] = []

    async def close_then_listen(sock: ServerSocket) -> None:
        await sock.send(OP_CLOSE, (1001).to_bytes(2, "big") + b"going away")
        await second_connected.wait()
        # No close frame back, and the TCP connection left open: the receive would
        # see bytes or EOF (Closed) if the client had answered or closed.
        with trio.move_on_after(0.2):
            silence.append(bytes(await sock.stream.receive_some(1)))
        first_done.set()

    second_connected = trio.Event()

    async def close_again(sock: ServerSocket) -> None:
        second_connected.set()
        await first_done.wait()
        await sock.send(OP_CLOSE, (4000).to_bytes(2, "big"))
        await trio.sleep_forever()

    async with scripted_server(close_then_listen, close_again) as (url, targets):
        query = "?id=0f8fad5b-d9cb-469f-a165-70867728950e&groupName=g"
        async with open_dotnet_client(url + query) as peer:
            await peer.wait_gave_up()
            assert silence == []
            assert (peer.connects, peer.attempts) == (2, 3)
            assert peer.closes_received == [(1001, "going away"), (4000, "")]
            assert all(isinstance(e, JsonError) for e in peer.drops)  # "" is no JSON
            assert not peer.connected
            assert targets == [f"/ws{query}"] * 3  # the same URL, the same id
            await peer.send("into the void", STRING)
            assert peer.sends_skipped == 1


async def test_a_refused_connect_returns_false_and_is_not_retried() -> None:
    async with scripted_server() as (url, targets):
        async with open_dotnet_client(url, connect=False) as peer:
            assert await peer.try_connect() is False
            assert peer.gave_up and peer.attempts == 1 and targets == ["/ws"]


async def test_pings_are_answered_and_keepalive_sends_unsolicited_pongs() -> None:
    frames: list[tuple[int, bytes]] = []
    seen = trio.Event()

    async def ping(sock: ServerSocket) -> None:
        await sock.send(OP_PING, b"abc")
        while len(frames) < 2:
            _fin, opcode, payload = await sock.frame()
            frames.append((opcode, payload))
        seen.set()
        await trio.sleep_forever()

    async with scripted_server(ping) as (url, _targets):
        async with open_dotnet_client(url, keepalive=0.05):
            await seen.wait()
    assert (OP_PONG, b"abc") in frames and (OP_PONG, b"") in frames


async def test_disconnect_sends_close_1000_and_no_reconnect_follows() -> None:
    got: list[tuple[int, bytes]] = []

    async def expect_close(sock: ServerSocket) -> None:
        _fin, opcode, payload = await sock.frame()
        got.append((opcode, payload))
        await sock.send(OP_CLOSE, payload)

    async with scripted_server(expect_close) as (url, targets):
        async with open_dotnet_client(url) as peer:
            await peer.disconnect()
            await peer.wait_drops(1)
            assert got == [(OP_CLOSE, (1000).to_bytes(2, "big"))]
            assert peer.attempts == 1 and targets == ["/ws"]


@pytest.mark.parametrize(
    "frame",
    [
        b"\x81\x80\x00\x00\x00\x00",  # a server frame must not be masked
        b"\xc1\x00",  # RSV1 (compressed) without permessage-deflate
        b"\x09\x00",  # a fragmented ping
        b"\x80\x00",  # a continuation with no message begun
        b"\x88\x01\x00",  # a close frame of one byte
        b"\x88\x02\x03\xed",  # close code 1005, which may not be sent
    ],
)
async def test_a_protocol_error_is_answered_with_a_close_and_drops_the_connection(
    frame: bytes,
) -> None:
    got: list[tuple[int, bytes]] = []

    async def masked_frame(sock: ServerSocket) -> None:
        await sock.write(frame)
        _fin, opcode, payload = await sock.frame()
        got.append((opcode, payload[:2]))
        await trio.sleep_forever()

    async def stay(sock: ServerSocket) -> None:
        await trio.sleep_forever()

    async with scripted_server(masked_frame, stay) as (url, _targets):
        async with open_dotnet_client(url) as peer:
            await peer.wait_connects(2)
            assert [type(e) for e in peer.drops] == [ProtocolError]
    assert got == [(OP_CLOSE, (1002).to_bytes(2, "big"))]


# -- the Middleware ----------------------------------------------------------------------


async def test_middleware_relays_between_dotnet_clients_requests_included() -> None:
    async with open_middleware() as middleware:
        async with (
            open_dotnet_client(dotnet_url(middleware.url, GROUP)) as one,
            open_dotnet_client(dotnet_url(middleware.url, GROUP)) as two,
        ):
            await middleware.wait_until(lambda: len(middleware.groups.get(GROUP, [])) == 2)
            questions = two.collect(SOCKET_MESSAGE)
            blobs = two.collect(BYTE_ARRAY)
            await one.send(hello(), SOCKET_MESSAGE)
            assert await questions.receive() == hello()
            await one.send(b"\x00bytes")
            assert await blobs.receive() == b"\x00bytes"
            async with trio.open_nursery() as nursery:
                got: list[object] = []

                async def ask() -> None:
                    got.append(
                        await one.request(hello("?", True), SOCKET_MESSAGE, SOCKET_MESSAGE, 10)
                    )

                nursery.start_soon(ask)
                question = await questions.receive()
                await two.reply_to(question, hello("answer"), SOCKET_MESSAGE)
            assert got == [hello("answer")]


@pytest.mark.parametrize("path", ["/ws", "/WS", "/ws/", "/Ws/"])
async def test_middleware_routes_ws_in_any_case_with_a_trailing_slash(path: str) -> None:
    async with open_middleware() as middleware:
        raw = await RawClient.open(middleware.port, f"{path}?id={uuid.uuid4()}&groupName=g")
        await middleware.wait_until(lambda: len(middleware.joined) == 1)
        await raw.stream.aclose()


@pytest.mark.parametrize(
    ("target", "status"), [("/other?id=x&groupName=g", 404), ("/wss?id=x&groupName=g", 404)]
)
async def test_middleware_answers_other_paths_with_404(target: str, status: int) -> None:
    async with open_middleware() as middleware:
        raw = RawClient(await trio.open_tcp_stream("127.0.0.1", middleware.port))
        assert (await raw.handshake(target))[0] == status


async def test_middleware_answers_a_plain_get_with_400() -> None:
    async with open_middleware() as middleware:
        stream = await trio.open_tcp_stream("127.0.0.1", middleware.port)
        await stream.send_all(b"GET /ws?id=x&groupName=g HTTP/1.1\r\nHost: m\r\n\r\n")
        assert (await stream.receive_some(100)).startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize("member_id", ["alice", "", "0f8fad5b-d9cb-469f-a165"])
async def test_middleware_aborts_after_the_101_for_an_id_that_is_no_guid(member_id: str) -> None:
    async with open_middleware() as middleware:
        raw = await RawClient.open(middleware.port, f"/ws?id={member_id}&groupName=g")
        with pytest.raises(EOFError):  # no close frame: the connection just ends
            await raw.recv_frame()
        assert middleware.joined == [] and len(middleware.aborted) == 1


@pytest.mark.parametrize(
    "member_id",
    ["0F8FAD5B-D9CB-469F-A165-70867728950E", "0f8fad5bd9cb469fa16570867728950e",
     "{0f8fad5b-d9cb-469f-a165-70867728950e}", "(0f8fad5b-d9cb-469f-a165-70867728950e)"],
)  # fmt: skip
async def test_middleware_takes_any_format_new_guid_takes(member_id: str) -> None:
    async with open_middleware() as middleware:
        await RawClient.open(middleware.port, f"/ws?id={member_id}&groupName=g")
        await middleware.wait_until(lambda: len(middleware.joined) == 1)
        assert middleware.joined == [("g", uuid.UUID(GOOD_ID))]


async def test_middleware_shares_one_queue_between_two_connections_of_one_id() -> None:
    async with open_middleware() as middleware:
        twins = [
            await RawClient.open(middleware.port, f"/ws?id={GOOD_ID}&groupName=g"),
            await RawClient.open(middleware.port, f"/ws?id={GOOD_ID.upper()}&groupName=g"),
        ]
        sender = await RawClient.open(middleware.port, f"/ws?id={uuid.uuid4()}&groupName=g")
        await middleware.wait_until(lambda: len(middleware.joined) == 3)
        assert len(middleware.groups["g"]) == 2  # one session for both twins
        count = 20
        for i in range(count):
            await sender.send_frame(OP_TEXT, f"m{i}".encode())
        seen: list[list[bytes]] = [[], []]
        all_seen = trio.Event()

        async def read(i: int) -> None:
            while True:
                seen[i].append((await twins[i].recv_message())[1])
                if sum(map(len, seen)) == count:
                    all_seen.set()

        async with trio.open_nursery() as nursery:
            for i in (0, 1):
                nursery.start_soon(read, i)
            await all_seen.wait()
            nursery.cancel_scope.cancel()
        # Each message went to one of the two, never to both; both got some.
        assert sorted(seen[0] + seen[1]) == sorted(f"m{i}".encode() for i in range(count))
        assert seen[0] and seen[1]
        # A twin's messages go to the others only, not to its twin.
        await twins[0].send_frame(OP_TEXT, b"from a twin")
        assert await sender.recv_message() == (OP_TEXT, b"from a twin")


async def test_middleware_never_answers_a_close_frame() -> None:
    async with open_middleware() as middleware:
        raw = await RawClient.open(middleware.port, f"/ws?id={uuid.uuid4()}&groupName=g")
        await middleware.wait_until(lambda: len(middleware.joined) == 1)
        await raw.send_frame(OP_CLOSE, (1000).to_bytes(2, "big"))
        with pytest.raises(EOFError):
            await raw.recv_frame()
        await middleware.wait_until(lambda: "g" not in middleware.groups)


# -- Python and .NET in one group --------------------------------------------------------


async def test_socket_messages_both_ways_on_the_relay(relay: Relay) -> None:
    async with (
        open_dotnet_client(dotnet_url(relay.url, GROUP)) as peer,
        open_client(relay.url, group=GROUP) as client,
    ):
        from_python = peer.collect(SOCKET_MESSAGE)
        async with client.subscribe(SocketMessage) as from_dotnet:
            await peer.send(hello("Hello from .NET <&>"), SOCKET_MESSAGE)
            assert (await from_dotnet.receive()).value == SocketMessage("Hello from .NET <&>")
        await client.send(SocketMessage("Hello from Python", True))
        assert await from_python.receive() == hello("Hello from Python", True)
        assert peer.connects == 1 and not peer.drops


async def test_primitives_and_lists_from_dotnet_reach_python(relay: Relay) -> None:
    async with (
        open_dotnet_client(dotnet_url(relay.url, GROUP)) as peer,
        open_client(relay.url, group=GROUP) as client,
    ):
        send, received = trio.open_memory_channel[object](10)
        for python_type in (str, bool, int, float, list[str]):
            client.on(python_type, send.send_nowait)
        sent: list[tuple[object, DotNetType]] = [
            ("é\"<'>", STRING), (True, BOOLEAN), (-5, INT32), (2**40, INT64), (3.0, DOUBLE),
            (["Line 1", "Line 2"], LIST7), (["Line 3"], LIST8),
        ]  # fmt: skip
        for value, kind in sent:
            await peer.send(value, kind)
        for value, _kind in sent:
            assert await received.receive() == value


async def test_requests_and_replies_both_ways_on_the_relay(relay: Relay) -> None:
    async with (
        open_dotnet_client(dotnet_url(relay.url, GROUP)) as peer,
        open_client(relay.url, group=GROUP) as client,
    ):

        def answer(question: dict[str, Any]) -> None:
            if question["ReplyRequired"]:
                peer.nursery.start_soon(
                    peer.reply_to, question, hello("This is my answer!"), SOCKET_MESSAGE
                )

        peer.on(SOCKET_MESSAGE, answer)

        async def shall_we(question: str, incoming: Any) -> None:
            await incoming.reply(question == "Shall we?")

        client.on(str, shall_we)
        reply = await client.request(
            SocketMessage("How do you do?", True), SocketMessage, timeout=10
        )
        assert reply == SocketMessage("This is my answer!")
        assert await peer.request("Shall we?", STRING, BOOLEAN, timeout=10) is True
        assert await peer.request("Or not?", STRING, BOOLEAN, timeout=10) is False
        assert peer.connects == 1 and not peer.drops


async def test_binary_both_ways_on_the_relay(relay: Relay) -> None:
    async with (
        open_dotnet_client(dotnet_url(relay.url, GROUP)) as peer,
        open_client(relay.url, group=GROUP) as client,
    ):
        blobs = peer.collect(BYTE_ARRAY)
        big = bytes(range(256)) * 1000
        async with client.subscribe(bytes) as from_dotnet:
            await peer.send(big)
            assert (await from_dotnet.receive()).value == big
        await client.send(b"\x00from Python")
        assert await blobs.receive() == b"\x00from Python"


async def test_python_reads_a_dotnet_reply_to_a_message_without_id(relay: Relay) -> None:
    async with (
        open_dotnet_client(dotnet_url(relay.url, GROUP)) as peer,
        open_client(relay.url, group=GROUP) as client,
    ):
        texts = peer.collect(STRING)
        async with client.subscribe(bool) as answers:
            await client.send("no id")
            await peer.reply_to(await texts.receive(), True, BOOLEAN)
            incoming = await answers.receive()
        assert (incoming.value, incoming.reply_id) == (True, str(EMPTY_GUID))


async def test_python_and_dotnet_share_a_group_on_the_middleware() -> None:
    async with open_middleware() as middleware:
        async with (
            open_dotnet_client(dotnet_url(middleware.url, GROUP)) as peer,
            open_client(middleware.url, group=GROUP) as client,
        ):
            await middleware.wait_until(lambda: len(middleware.groups.get(GROUP, [])) == 2)
            from_python = trio.open_memory_channel[dict[str, Any]](10)

            def on_message(message: dict[str, Any]) -> None:
                if message["ReplyRequired"]:
                    peer.nursery.start_soon(peer.reply_to, message, hello("yes"), SOCKET_MESSAGE)
                from_python[0].send_nowait(message)

            peer.on(SOCKET_MESSAGE, on_message)
            async with client.subscribe(SocketMessage) as from_dotnet:
                await peer.send(hello("via the Middleware"), SOCKET_MESSAGE)
                assert (await from_dotnet.receive()).value == SocketMessage("via the Middleware")
            await client.send(SocketMessage("back"))
            assert await from_python[1].receive() == hello("back")
            reply = await client.request(SocketMessage("?", True), SocketMessage, timeout=10)
            assert reply == SocketMessage("yes")


# -- issue 28: what a .NET member cannot take -----------------------------------------


async def dotnet_stays_and_sees_marker(peer: DotNetClient, markers: Any) -> None:
    """Wait for the marker SocketMessage; the .NET member is still on its first connection."""
    with trio.fail_after(10):
        while (await markers.receive())["Message"] != "marker":
            pass
    assert (peer.connects, peer.drops) == (1, [])


async def test_python_lists_go_out_in_the_configured_runtime_version(relay: Relay) -> None:
    config = ClientConfig(dotnet_version="7.0.0.0")
    async with (
        open_dotnet_client(dotnet_url(relay.url, GROUP), runtime="7.0.0.0") as peer,
        open_client(relay.url, group=GROUP, config=config) as client,
    ):
        lists, markers = peer.collect(LIST7), peer.collect(SOCKET_MESSAGE)
        await client.send(["Line 1"], as_type=list[str])
        await client.send(SocketMessage("marker"))
        await dotnet_stays_and_sees_marker(peer, markers)
        assert lists.receive_nowait() == ["Line 1"]


async def test_python_lists_go_out_in_the_runtime_version_the_group_uses(relay: Relay) -> None:
    async with (
        open_dotnet_client(dotnet_url(relay.url, GROUP), runtime="7.0.0.0") as peer,
        open_client(relay.url, group=GROUP) as client,
    ):
        lists, markers = peer.collect(LIST7), peer.collect(SOCKET_MESSAGE)
        async with client.subscribe(list[str]) as from_dotnet:
            await peer.send(["from .NET 7"], LIST7)
            await from_dotnet.receive()
        await client.send(["Line 1"], as_type=list[str])
        await client.send(SocketMessage("marker"))
        await dotnet_stays_and_sees_marker(peer, markers)
        assert lists.receive_nowait() == ["Line 1"]


@pytest.mark.parametrize(
    ("value", "handler_type"), [(uuid.UUID(GOOD_ID), GUID), (2**70, INT64), (2**40, INT32)]
)
async def test_python_refuses_what_would_knock_a_dotnet_member_offline(
    relay: Relay, value: object, handler_type: DotNetType
) -> None:
    async with (
        open_dotnet_client(dotnet_url(relay.url, GROUP)) as peer,
        open_client(relay.url, group=GROUP) as client,
    ):
        peer.collect(handler_type)
        markers = peer.collect(SOCKET_MESSAGE)
        with pytest.raises(ValueError):
            await client.send(value)
        await client.send(SocketMessage("marker"))
        await dotnet_stays_and_sees_marker(peer, markers)


async def test_a_python_int_is_an_int32_whatever_its_value_and_a_long_is_asked_for(
    relay: Relay,
) -> None:
    raw = await raw_member(relay)
    async with (
        open_dotnet_client(dotnet_url(relay.url, GROUP)) as peer,
        open_client(relay.url, group=GROUP) as client,
    ):
        longs = peer.collect(INT64)
        for value in (5, -(2**31), 2**31 - 1):
            await client.send(value)
            assert json.loads(await text_of(raw))["MessageType"] == "System.Int32"
        await client.send(2**40, as_type="System.Int64")
        assert json.loads(await text_of(raw))["MessageType"] == "System.Int64"
        assert await longs.receive() == 2**40


async def test_a_python_empty_string_is_not_lost_without_a_word(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        open_dotnet_client(dotnet_url(relay.url, GROUP)) as peer,
        open_client(relay.url, group=GROUP) as client,
    ):
        texts = peer.collect(STRING)
        await client.send("")
        await client.send("after")
        assert await texts.receive() == "after"  # .NET dropped the "" ...
        assert peer.ignored == ["Message null or empty (System.String)"]
        # ... and the sender was told so.
        assert any('""' in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


async def test_a_python_client_never_answers_with_a_reply_id_dotnet_cannot_read(
    relay: Relay,
) -> None:
    """A .NET member drops its connection on a ReplyId that is not a GUID (see above), so
    a Python client must not echo a request's non-GUID Id back to the group."""
    raw = await raw_member(relay)
    async with open_client(relay.url, group=GROUP) as client:

        async def answer(question: str, incoming: Any) -> None:
            if incoming.id is not None:
                await incoming.reply(True)
            if question == "then":  # handled in order: the first one is behind us
                await client.send(SocketMessage("marker"))

        client.on(str, answer)
        text = envelope("a question", STRING).replace('"Id":null', '"Id":"req-1"')
        await raw.send_frame(OP_TEXT, text.encode())
        await raw.send_frame(OP_TEXT, envelope("then", STRING).encode())
        with trio.fail_after(10):
            while (sent := json.loads(await text_of(raw)))["MessageType"] == "System.Boolean":
                assert sent["ReplyId"] is None or LOWER_GUID.fullmatch(sent["ReplyId"]), sent
        assert sent["Message"] == {"Message": "marker", "ReplyRequired": False}


# -- issue 28: what the relay does with a .NET member's habits ---------------------------


@pytest.mark.parametrize("path", ["/WS", "/ws/", "/Ws/"])
async def test_a_dotnet_client_joins_by_the_paths_aspnet_routes(relay: Relay, path: str) -> None:
    raw = await raw_member(relay)
    url = dotnet_url(relay.url.removesuffix("/ws") + path, GROUP)
    async with open_dotnet_client(url) as peer:
        await peer.send("joined", STRING)
        assert await text_of(raw) == envelope("joined", STRING)


async def test_two_dotnet_clients_with_one_id_do_not_storm_for_ever(relay: Relay) -> None:
    url = dotnet_url(relay.url, GROUP, id=GOOD_ID)
    async with open_dotnet_client(url) as one, open_dotnet_client(url, connect=False) as two:
        assert await two.try_connect()
        with trio.fail_after(10):
            # Woken by either client's changes: the one refused may be either.
            async with trio.open_nursery() as nursery:
                for client in (one, two):

                    async def watch(client: DotNetClient = client) -> None:
                        await client.wait_until(lambda: one.gave_up or two.gave_up)
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(watch)
        # One of them is refused and, being .NET, never comes back; the other stays.
        assert one.gave_up != two.gave_up
        survivor = two if one.gave_up else one
        await survivor.wait_until(lambda: survivor.connected)
        total = one.connects + two.connects
        with trio.move_on_after(0.2):
            await survivor.wait_until(lambda: one.connects + two.connects > total)
        assert one.connects + two.connects == total


@pytest.mark.wsproxy_relay(api_key=KEY)
async def test_a_dotnet_member_removed_by_the_api_stays_out(relay: Relay) -> None:
    url = dotnet_url(relay.url, GROUP, id=GOOD_ID)
    async with open_dotnet_client(url) as peer:
        answer = await call(relay.port, "DELETE", f"/api/groups/{GROUP}/members/{GOOD_ID}")
        assert answer.status == 204
        with trio.fail_after(10):
            await peer.wait_gave_up()  # its one reconnect was refused: it is gone for good
        assert peer.closes_received[0][0] == 4005
        members = (await call(relay.port, "GET", f"/api/groups/{GROUP}/members")).json
        assert GOOD_ID not in json.dumps(members)


async def test_on_the_middleware_a_dotnet_clients_abandoned_socket_takes_half_its_messages() -> (
    None
):
    """After a drop, .NET connects again with the same id and leaves the old socket open:
    the Middleware keeps both in one session, and its two senders split the queue, so
    about half of what follows goes to the socket nobody reads."""
    async with open_middleware() as middleware:
        async with (
            open_dotnet_client(dotnet_url(middleware.url, GROUP)) as peer,
            open_dotnet_client(dotnet_url(middleware.url, GROUP)) as sender,
        ):
            await middleware.wait_until(lambda: len(middleware.joined) == 2)
            texts = peer.collect(STRING)
            peer.collect(INT32)
            await sender.send("1.5", STRING)  # as System.Int32 below: Convert throws
            sent = sender.sent[-1][1].replace(b"System.String", b"System.Int32")
            await sender._send_frame(OP_TEXT, sent)
            assert await texts.receive() == "1.5"
            await peer.wait_connects(2)
            await middleware.wait_until(lambda: len(middleware.joined) == 3)
            assert len(middleware.groups[GROUP]) == 2  # the two sockets share one session
            count = 20
            for i in range(count):
                await sender.send(f"m{i}", STRING)
            live: list[str] = []
            lost: list[str] = []
            (abandoned,) = peer.abandoned()
            all_seen = trio.Event()

            def note(into: list[str], text: str) -> None:
                into.append(text)
                if len(live) + len(lost) == count:
                    all_seen.set()

            async def read_live() -> None:
                async for text in texts:
                    note(live, text)

            async def read_abandoned() -> None:
                while True:
                    _opcode, payload = await abandoned.receive()
                    note(lost, json.loads(payload)["Message"])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_live)
                nursery.start_soon(read_abandoned)
                await all_seen.wait()
                nursery.cancel_scope.cancel()
            assert sorted(live + lost) == sorted(f"m{i}" for i in range(count))
            assert live and lost


# -- recorded frames, for the other clients' tests ----------------------------------------

FRAMES_FILE = Path(__file__).parent / "js" / "dotnet-frames.json"
REQUEST_ID = uuid.UUID("7c9e6679-7425-40de-944b-e07fc1f90ae7")


def frames_document() -> dict[str, Any]:
    """What tests/js/dotnet-frames.json holds: each sample value with its .NET type and the
    exact text frame a .NET 7 or 8 WsProxyClient sends for it."""
    samples = [
        {"type": kind.full_name, "value": value, "id": None, "replyId": None, "frame": text}
        for value, kind, text in SAMPLE_ENVELOPES
    ]
    for value, kind, message_id, reply_id in [
        (hello("How do you do?", True), SOCKET_MESSAGE, REQUEST_ID, None),
        (True, BOOLEAN, None, REQUEST_ID),
        (True, BOOLEAN, None, EMPTY_GUID),
    ]:
        samples.append(
            {
                "type": kind.full_name,
                "value": value,
                "id": message_id and str(message_id),
                "replyId": reply_id and str(reply_id),
                "frame": envelope(value, kind, id=message_id, reply_id=reply_id),
            }
        )
    return {
        "about": "Text frames exactly as EasyWebSocketProxy's .NET WsProxyClient sends them "
        "(System.Text.Json, default options), written by tests/test_dotnet_faithful.py",
        "frames": samples,
    }


def test_the_recorded_frames_are_what_the_stand_in_sends() -> None:
    written = json.loads(FRAMES_FILE.read_text(encoding="utf-8"))
    assert written == frames_document(), (
        'regenerate: python -c \'import sys, json; sys.path[:0] = ["tests"]; '
        "import test_dotnet_faithful as t; "
        't.FRAMES_FILE.write_text(json.dumps(t.frames_document(), indent=2) + "\\n")\''
    )
    for sample in written["frames"]:
        parsed = json.loads(sample["frame"])
        assert (parsed["MessageType"], parsed["Message"]) == (sample["type"], sample["value"])
        assert (parsed["Id"], parsed["ReplyId"]) == (sample["id"], sample["replyId"])
