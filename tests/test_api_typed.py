"""Typed posts (``?type=``): a back end posts a JSON body and the relay sends it in the
.NET envelope, so that every typed client — Python, JavaScript, .NET — reads it as a
message of that type. Over real sockets, with the refusals a malformed one gets."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import trio_wsproxy
from httpapi import KEY, ApiClient, call
from test_api import members
from test_js_client import js_peer
from test_v1 import next_message, v1_member
from trio_wsproxy import Envelope, Relay, RelayConfig, decode_envelope, encode_envelope
from trio_wsproxy.protocol import v1
from trio_wsproxy.protocol.envelope import encode_envelope_around
from trio_wsproxy.relay.openapi import MAX_TYPE_LENGTH, openapi_document
from wsraw import OP_TEXT

MiB = 1024 * 1024
with_api = pytest.mark.wsproxy_relay(api_key=KEY)
JSON = {"Content-Type": "application/json"}
CHAT = "/api/groups/g/messages?type=Chat.Message"


@trio_wsproxy.message_type("Chat.Message", pascal_case=True)
@attrs.frozen
class ChatMessage:
    """A .NET back end's ``Chat.Message { string Author; string Text; }``."""

    author: str
    text: str


def chat_envelope(body: bytes) -> bytes:
    return b'{"Id":null,"MessageType":"Chat.Message","Message":' + body + b',"ReplyId":null}'


# -- the envelope around a payload that is JSON already ---------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
GUIDS = st.none() | st.uuids().map(str)


@given(type_name=st.text(min_size=1), value=JSON_VALUES, id=GUIDS, reply_id=GUIDS)
def test_the_envelope_around_compact_json_is_the_envelope_of_its_value(
    type_name: str, value: Any, id: str | None, reply_id: str | None
) -> None:
    before, after = encode_envelope_around(type_name, id=id, reply_id=reply_id)
    payload = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    envelope = Envelope(type_name, value, id, reply_id)
    assert before + payload + after == encode_envelope(envelope)


# -- posting a typed message --------------------------------------------------------------


@with_api
async def test_a_typed_post_reaches_a_python_handler_as_the_type_registered_under_its_name(
    relay: Relay,
) -> None:
    got_send, got = trio.open_memory_channel[tuple[Any, trio_wsproxy.Incoming[Any]]](1)
    async with trio_wsproxy.open_client(relay.url, group="g", id="py") as client:
        # Registered under the .NET name (by the decorator), never sent by this client.
        client.on(ChatMessage, lambda value, incoming: got_send.send_nowait((value, incoming)))
        with trio.fail_after(10):
            await relay.wait_members(1, "g")
            body = b'{\n  "Author": "referee",\n  "Text": "the match starts"\n}\n'
            answer = await call(relay.port, "POST", CHAT, body, JSON)
            assert (answer.status, answer.json) == (200, {"recipients": 1})
            value, incoming = await got.receive()
    assert value == ChatMessage("referee", "the match starts")
    assert (incoming.message_type, incoming.sender, incoming.id) == ("Chat.Message", None, None)


@with_api
async def test_plain_v1_and_direct_recipients_get_the_same_envelope_with_the_body_as_it_is(
    relay: Relay,
) -> None:
    (plain,) = await members(relay, "g", "plain")
    watcher, _ = await v1_member(relay, "watcher")
    # Numbers keep their digits; only the whitespace around the body goes.
    body = b'{"Author": "referee", "Score": 1.50, "Big": 12345678901234567890}'
    envelope = chat_envelope(body)
    with trio.fail_after(10):
        answer = await call(relay.port, "POST", CHAT, b" \r\n\t" + body + b"\n", JSON)
        assert answer.json == {"recipients": 2}
        assert await plain.recv_message() == (OP_TEXT, envelope)
        assert await next_message(watcher) == (OP_TEXT, v1.From(None), envelope)
        # To one member: the same envelope, behind the v1 header of a direct message.
        answer = await call(relay.port, "POST", CHAT + "&to=watcher", body, JSON)
        assert answer.json == {"recipients": 1}
        assert await next_message(watcher) == (OP_TEXT, v1.From(None, direct=True), envelope)
        answer = await call(relay.port, "POST", CHAT + "&to=plain", body, JSON)
        assert answer.json == {"recipients": 1}
        assert await plain.recv_message() == (OP_TEXT, envelope)
        # A bare value is a payload too, and the type is escaped as JSON needs.
        path = "/api/groups/g/messages?type=Odd%22Type%20%C3%A9"
        assert (await call(relay.port, "POST", path, b"true", JSON)).status == 200
        opcode, text = await plain.recv_message()
    assert opcode == OP_TEXT
    assert text == '{"Id":null,"MessageType":"Odd\\"Type é","Message":true,"ReplyId":null}'.encode()
    assert decode_envelope(text.decode()) == Envelope('Odd"Type é', True)
    for client in (plain, watcher):
        await client.aclose()


@with_api
async def test_a_typed_text_body_is_a_string_and_a_binary_one_base64(relay: Relay) -> None:
    """What the Content-Type says the body is decides the payload: text is a string (to
    a System.String handler), bytes a base64 string (as .NET's serializer writes a
    byte[]) — and the message is text, an envelope, either way."""
    (plain,) = await members(relay, "g", "plain")
    async with trio_wsproxy.open_client(relay.url, group="g", id="py") as client:
        async with client.subscribe(str) as strings:
            with trio.fail_after(10):
                await relay.wait_members(2, "g")
                path = "/api/groups/g/messages?type=System.String"
                text = {"Content-Type": "text/plain; charset=utf-8"}
                body = '{"not": "parsed"} é\n'.encode()
                assert (await call(relay.port, "POST", path, body, text)).status == 200
                incoming = await strings.receive()
                assert (incoming.value, incoming.sender) == ('{"not": "parsed"} é\n', None)
                assert await plain.recv_message() == (
                    OP_TEXT,
                    b'{"Id":null,"MessageType":"System.String","Message":'
                    + json.dumps(body.decode(), ensure_ascii=False).encode()
                    + b',"ReplyId":null}',
                )
                path = "/api/groups/g/messages?type=System.Byte%5B%5D"
                binary = {"Content-Type": "application/octet-stream"}
                assert (await call(relay.port, "POST", path, b"\x00\xff\x10", binary)).status == 200
                assert await plain.recv_message() == (
                    OP_TEXT,
                    b'{"Id":null,"MessageType":"System.Byte[]","Message":"AP8Q","ReplyId":null}',
                )
    await plain.aclose()


@with_api
async def test_a_typed_body_streamed_in_chunks_arrives_as_one_envelope(relay: Relay) -> None:
    (plain,) = await members(relay, "g", "plain")
    text = "x" * (MiB - 100)  # (the envelope makes it a message of over 1 MiB)
    body = json.dumps({"Author": "referee", "Text": text}).encode()
    client = await ApiClient.open(relay.port)
    with trio.fail_after(20):
        await client.send_head("POST", CHAT, JSON)
        for start in range(0, len(body), 65536):
            await client.send_chunk(body[start : start + 65536])
        await client.end()
        assert (await client.answer()).json == {"recipients": 1}
        assert await plain.recv_message() == (OP_TEXT, chat_envelope(body))
    for closing in (client, plain):
        await closing.aclose()


async def test_a_typed_post_reaches_the_js_client_as_a_typed_message() -> None:
    async with trio_wsproxy.open_relay(RelayConfig(port=0, api_key=KEY)) as relay:
        async with js_peer([relay.url], group="mixed", id="js") as js:
            await relay.wait_members(1, "mixed")
            path = "/api/groups/mixed/messages?type=Demo.Say"
            answer = await call(relay.port, "POST", path, b'{"text": "from the back end"}', JSON)
            assert answer.json == {"recipients": 1}
            assert await js.wait_for("said") == {
                "event": "said",
                "value": {"text": "from the back end"},
                "sender": None,
                "direct": False,
            }
            await call(relay.port, "POST", path + "&to=js", b'{"text": "to you"}', JSON)
            said = await js.wait_for("said")
            assert (said["value"], said["direct"]) == ({"text": "to you"}, True)
            assert not [event for event in js.events if event["event"] == "badmessage"]


# -- what a typed post may not be -----------------------------------------------------------


@with_api
@pytest.mark.parametrize(
    ("query", "headers", "body", "status", "says"),
    [
        ("type=Chat.Message", JSON, b'{"Author": "referee",', 400, "not JSON"),
        ("type=Chat.Message", JSON, b"", 400, "not JSON"),
        ("type=Chat.Message", JSON, b"hello", 400, "not JSON"),
        ("type=Chat.Message", JSON, b'{"Score": NaN}', 400, "NaN is not JSON"),
        ("type=Chat.Message", JSON, b"[1] [2]", 400, "not JSON"),
        ("type=Chat.Message", JSON, b'"\xff"', 400, "not UTF-8 (byte 1)"),
        ("type=System.String", {"Content-Type": "text/plain"}, b"ok \xff", 400,
         "not UTF-8 (byte 3)"),
        ("type=", JSON, b"{}", 400, "query parameter 'type' is empty"),
        ("type=" + "T" * (MAX_TYPE_LENGTH + 1), JSON, b"{}", 400,
         f"'type' is longer than {MAX_TYPE_LENGTH}"),
        ("type=Chat%0AMessage", JSON, b"{}", 400, "'type' has control characters"),
        ("type=A&type=B", JSON, b"{}", 400, "'type' given more than once"),
        ("type=Chat.Message", JSON, b" " * (MiB + 1), 413, "at most 1 MiB"),
    ],
)  # fmt: skip
async def test_a_wrong_typed_post_gets_a_status_and_a_one_line_reason_and_sends_nothing(
    relay: Relay, query: str, headers: dict[str, str], body: bytes, status: int, says: str
) -> None:
    (member,) = await members(relay, "g", "a")
    with trio.fail_after(10):
        answer = await call(relay.port, "POST", f"/api/groups/g/messages?{query}", body, headers)
        assert answer.status == status, answer
        reason = answer.json["error"]
        assert says in reason and "\n" not in reason, reason
        # Nothing went out: the next message the member gets is the next post.
        answer = await call(relay.port, "POST", CHAT, b"1", JSON)
        assert await member.recv_message() == (OP_TEXT, chat_envelope(b"1"))
    await member.aclose()


@with_api
async def test_a_chunked_typed_body_over_1_mib_is_413_as_it_grows_past_it(relay: Relay) -> None:
    (member,) = await members(relay, "g", "a")
    client = await ApiClient.open(relay.port)
    with trio.fail_after(10):
        await client.send_head("POST", CHAT, JSON)
        await client.send_chunk(b'"' + b"x" * MiB)
        await client.send_chunk(b'x"')
        answer = await client.answer()
    assert answer.status == 413 and "at most 1 MiB" in answer.json["error"]
    await client.aclose()
    with trio.fail_after(10):
        await call(relay.port, "POST", CHAT, b"2", JSON)
        assert await member.recv_message() == (OP_TEXT, chat_envelope(b"2"))
    await member.aclose()


@pytest.mark.wsproxy_relay(api_key=KEY, max_message_size=100)
async def test_the_envelope_counts_toward_the_relays_message_limit(relay: Relay) -> None:
    overhead = len(chat_envelope(b""))
    fits = b'"' + b"x" * (100 - overhead - 2) + b'"'
    with trio.fail_after(10):
        (member,) = await members(relay, "g", "a")
        assert (await call(relay.port, "POST", CHAT, fits, JSON)).status == 200
        assert await member.recv_message() == (OP_TEXT, chat_envelope(fits))
        answer = await call(relay.port, "POST", CHAT, fits[:-1] + b'x"', JSON)
        assert answer.status == 413 and "max_message_size (100 bytes)" in answer.json["error"]
    await member.aclose()


def test_the_openapi_document_has_the_type_parameter() -> None:
    post = openapi_document()["paths"]["/api/groups/{group}/messages"]["post"]
    (parameter,) = [p for p in post["parameters"] if p["name"] == "type"]
    assert parameter["in"] == "query" and not parameter["required"]
    assert parameter["schema"]["maxLength"] == MAX_TYPE_LENGTH
    assert "Chat.Message" in parameter["description"]
