"""What the Python and JavaScript clients send to, and make of, a group with .NET members
(issue 28): generic names in the group's .NET runtime version, nothing that would knock a
.NET member offline (a top-level Guid, an integer that overflows, an Id that is not a
GUID), a warning for what a .NET member drops without a word, and .NET's answer to a
message without an Id (ReplyId Guid.Empty).

The .NET member here is a bare WebSocket joined as the .NET client joins: what it is sent
is what a .NET ``WsProxyClient`` would read, byte for byte."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio_websocket

from browserdriver import NodeScript, node_path, running
from trio_wsproxy import ClientConfig, Relay, TypeRegistry
from trio_wsproxy.client.incoming import BadMessage, BadMessageKind, Replier
from trio_wsproxy.client.wire import Deliver, DotnetRuntime, encode_message, read_frame
from trio_wsproxy.protocol.envelope import EMPTY_GUID, is_dotnet_guid, message_id_to_send
from trio_wsproxy.protocol.typenames import (
    check_sendable,
    dotnet_generic_name,
    runtime_version_of,
    with_runtime_version,
)
from trio_wsproxy.testing import ClientFactory

ROOT = Path(__file__).parent.parent
GROUP = "dotnet_group"
PLAIN = ClientConfig(offer_v1=False)
LIST = "System.Collections.Generic.List`1"


def list_of_string(version: str) -> str:
    return dotnet_generic_name(LIST, "System.String", version=version)


def envelope(
    message_type: str, message: Any, *, id: str | None = None, reply_id: str | None = None
) -> str:
    return json.dumps(
        {"Id": id, "MessageType": message_type, "Message": message, "ReplyId": reply_id},
        separators=(",", ":"),
    )


@asynccontextmanager
async def dotnet_member(relay: Relay) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A bare WebSocket member, joined as the .NET client joins (a GUID id)."""
    url = f"{relay.url}?id={uuid.uuid4()}&groupName={GROUP}"
    async with trio_websocket.open_websocket_url(url) as ws:
        yield ws


async def next_envelope(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    frame = await ws.get_message()
    assert isinstance(frame, str)
    document: dict[str, Any] = json.loads(frame)
    return document


class _NoSender:
    async def send(
        self, value: object, *, as_type: Any = None, reply_to: str | None = None
    ) -> None:
        raise AssertionError("nothing is answered here")


NO_SENDER: Replier = _NoSender()


# -- 1. the runtime version of generic names ---------------------------------------------


def test_the_runtime_version_of_a_generic_name_is_read_and_rewritten_and_nothing_else() -> None:
    dotnet7 = list_of_string("7.0.0.0")
    assert runtime_version_of(dotnet7) == "7.0.0.0"
    assert runtime_version_of("System.String") is None
    assert with_runtime_version(list_of_string("8.0.0.0"), "7.0.0.0") == dotnet7
    own = "Game.Box`1[[Game.Move, Game, Version=1.2.0.0, Culture=neutral, PublicKeyToken=null]]"
    assert with_runtime_version(own, "7.0.0.0") == own  # an application's assembly keeps its


def test_a_client_learns_the_first_runtime_version_it_sees_unless_one_is_pinned() -> None:
    runtime = DotnetRuntime()
    assert runtime.name(list_of_string("8.0.0.0")) == list_of_string("8.0.0.0")
    runtime.learn("System.String")
    assert runtime.version is None
    runtime.learn(list_of_string("7.0.0.0"))
    runtime.learn(list_of_string("9.0.0.0"))  # the first one counts
    assert runtime.name(list_of_string("8.0.0.0")) == list_of_string("7.0.0.0")
    pinned = DotnetRuntime(pinned="10.0.0.0")
    pinned.learn(list_of_string("7.0.0.0"))
    assert pinned.name(list_of_string("8.0.0.0")) == list_of_string("10.0.0.0")
    with pytest.raises(ValueError, match=re.escape("a .NET version")):
        ClientConfig(dotnet_version="8")


async def test_a_python_list_goes_out_in_the_runtime_version_the_dotnet_members_write(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    """A .NET 7 member matches List<string> with Version=7.0.0.0 exactly: once the
    client has seen that name, its lists carry it (before the fix: Version=8.0.0.0, which
    the .NET 7 member drops without a word)."""
    with trio.fail_after(10):
        client = await wsproxy_client(group=GROUP, config=PLAIN)
        async with dotnet_member(wsproxy_relay) as dotnet, client.subscribe(list[str]) as lines:
            await wsproxy_relay.wait_members(2, GROUP)
            await dotnet.send_message(envelope(list_of_string("7.0.0.0"), ["from .NET 7"]))
            assert (await lines.receive()).value == ["from .NET 7"]  # any version reads
            await client.send(["from Python"], as_type=list[str])
            sent = await next_envelope(dotnet)
            assert sent["MessageType"] == list_of_string("7.0.0.0")
            assert sent["Message"] == ["from Python"]


async def test_a_pinned_runtime_version_goes_out_from_the_first_message(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    with trio.fail_after(10):
        client = await wsproxy_client(
            group=GROUP, config=ClientConfig(offer_v1=False, dotnet_version="7.0.0.0")
        )
        async with dotnet_member(wsproxy_relay) as dotnet:
            await wsproxy_relay.wait_members(2, GROUP)
            await client.send([1, 2], as_type=list[int])
            sent = await next_envelope(dotnet)
            assert sent["MessageType"] == dotnet_generic_name(
                LIST, "System.Int32", version="7.0.0.0"
            )


# -- 2. nothing a .NET member cannot read -----------------------------------------------


@attrs.frozen
class Owner:
    owner_id: uuid.UUID


def test_what_would_drop_a_dotnet_member_is_refused_and_what_it_drops_is_a_warning() -> None:
    with pytest.raises(ValueError, match=re.escape("System.Guid cannot be received")):
        check_sendable("System.Guid", str(uuid.uuid4()))
    with pytest.raises(ValueError, match=r'does not fit a System\.Int32.*as_type="System\.Int64"'):
        check_sendable("System.Int32", 2**31)
    with pytest.raises(ValueError, match=re.escape("does not fit a System.Int64")):
        check_sendable("System.Int64", 2**63)
    with pytest.raises(ValueError, match=re.escape("List<System.Int32> element")):
        check_sendable(dotnet_generic_name(LIST, "System.Int32"), [1, 2**40])
    assert check_sendable("System.Int64", 2**40) is None
    assert check_sendable("Game.Owner", {"owner_id": str(uuid.uuid4())}) is None
    for empty in ("", None):
        warning = check_sendable("System.String", empty)
        assert warning is not None and "drops it without a word" in warning


def test_an_int_is_int32_whatever_its_value_and_int64_on_request() -> None:
    types = TypeRegistry()

    def name_of(value: int, as_type: Any = None) -> str:
        frame = encode_message(types, value, as_type, request_id=None, reply_to=None)
        assert isinstance(frame, str)
        name: str = json.loads(frame)["MessageType"]
        return name

    assert name_of(3) == name_of(2**31 - 1) == "System.Int32"
    assert name_of(3, "System.Int64") == name_of(2**40, "System.Int64") == "System.Int64"
    with pytest.raises(ValueError, match=re.escape("System.Int32")):
        name_of(2**40)
    with pytest.raises(ValueError, match=re.escape("System.Int64")):
        name_of(2**70, "System.Int64")
    frame = encode_message(types, Owner(uuid.uuid4()), None, request_id=None, reply_to=None)
    assert isinstance(frame, str)  # a Guid field is fine


async def test_a_top_level_guid_and_an_overflowing_int_never_reach_the_group(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Before the fix, the Guid and 2**70 went out, and each dropped every .NET member's
    connection; 2**40 went out as System.Int64 (missed by On<int>); "" went with no sign."""
    with trio.fail_after(10):
        client = await wsproxy_client(group=GROUP, config=PLAIN)
        async with dotnet_member(wsproxy_relay) as dotnet:
            await wsproxy_relay.wait_members(2, GROUP)
            with pytest.raises(ValueError, match=re.escape("System.Guid")):
                await client.send(uuid.uuid4())
            with pytest.raises(ValueError, match="overflow"):
                await client.send(2**70)
            with pytest.raises(ValueError, match=re.escape("System.Int32")):
                await client.send(2**40)
            await client.send(2**40, as_type="System.Int64")
            await client.send(7)
            with caplog.at_level(logging.WARNING, logger="trio_wsproxy.client"):
                await client.send("")
            assert await next_envelope(dotnet) == {
                "Id": None,
                "MessageType": "System.Int64",
                "Message": 2**40,
                "ReplyId": None,
            }
            assert (await next_envelope(dotnet))["MessageType"] == "System.Int32"
            assert (await next_envelope(dotnet))["Message"] == ""
            assert "drops it without a word" in caplog.text


# -- 3. ids: GUIDs only; Guid.Empty for an answer to a message without an Id -------------


def test_ids_sent_are_lower_case_d_format_guids() -> None:
    guid = uuid.uuid4()
    assert message_id_to_send(str(guid).upper()) == str(guid)
    assert message_id_to_send("{" + str(guid) + "}") == str(guid)
    with pytest.raises(ValueError, match="a GUID"):
        message_id_to_send("request-1")
    assert is_dotnet_guid(str(guid).upper()) and is_dotnet_guid(EMPTY_GUID)
    assert not is_dotnet_guid("{" + str(guid) + "}") and not is_dotnet_guid(guid.hex)
    with pytest.raises(ValueError, match="a GUID"):
        encode_message(TypeRegistry(), "x", None, request_id=None, reply_to="request-1")


def test_a_non_guid_id_is_a_bad_message_and_replyid_guid_empty_an_ordinary_one() -> None:
    types = TypeRegistry()
    for key in ("id", "reply_id"):
        verdict = read_frame(
            envelope("System.String", "hi", **{key: "request-1"}),
            types=types,
            awaiting=set(),
            sender=NO_SENDER,
        )
        assert isinstance(verdict, BadMessage)
        assert verdict.kind is BadMessageKind.INVALID_ENVELOPE and "not a GUID" in verdict.reason
    verdict = read_frame(
        envelope("System.String", "hi", reply_id=EMPTY_GUID),
        types=types,
        awaiting={EMPTY_GUID},
        sender=NO_SENDER,
    )
    assert isinstance(verdict, Deliver) and verdict.incoming.value == "hi"


async def test_a_request_with_a_non_guid_id_is_reported_not_answered(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    """Before the fix the handler ran and its answer echoed "request-1" as ReplyId, which
    drops the connection of every .NET member of the group."""
    bad: list[BadMessage] = []
    with trio.fail_after(10):
        client = await wsproxy_client(group=GROUP, config=PLAIN, on_bad_message=bad.append)

        @client.on(str)
        async def answer(text: str, incoming: Any) -> None:
            await incoming.reply(text.upper())

        async with dotnet_member(wsproxy_relay) as dotnet:
            await wsproxy_relay.wait_members(2, GROUP)
            await dotnet.send_message(envelope("System.String", "one", id="request-1"))
            request_id = str(uuid.uuid4())
            await dotnet.send_message(envelope("System.String", "two", id=request_id))
            assert await next_envelope(dotnet) == {
                "Id": None,
                "MessageType": "System.String",
                "Message": "TWO",
                "ReplyId": request_id,
            }
            assert [b.kind for b in bad] == [BadMessageKind.INVALID_ENVELOPE]
            assert "'request-1' is not a GUID" in bad[0].reason


async def test_an_answer_to_a_message_without_an_id_carries_guid_empty_as_dotnet_does(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    with trio.fail_after(10):
        client = await wsproxy_client(group=GROUP, config=PLAIN)

        @client.on(str)
        async def answer(text: str, incoming: Any) -> None:
            await incoming.reply(text.upper())

        async with dotnet_member(wsproxy_relay) as dotnet, client.subscribe(bool) as answers:
            await wsproxy_relay.wait_members(2, GROUP)
            await dotnet.send_message(envelope("System.String", "no id"))
            assert await next_envelope(dotnet) == {
                "Id": None,
                "MessageType": "System.String",
                "Message": "NO ID",
                "ReplyId": EMPTY_GUID,
            }
            # .NET's ReplyToAsync answer to a message without an Id: an ordinary message.
            await dotnet.send_message(envelope("System.Boolean", True, reply_id=EMPTY_GUID))
            received = await answers.receive()
            assert received.value is True and received.reply_id == EMPTY_GUID


# -- the JavaScript client, the same rules -----------------------------------------------

JS_MEMBER = """
import { connect, EMPTY_GUID, dotnetGenericName } from "%(module)s";
const say = (event) => process.stdout.write(JSON.stringify(event) + "\\n");
const client = await connect(%(url)s, { group: %(group)s, v1: false });
const list8 = dotnetGenericName("System.Collections.Generic.List`1", ["System.String"]);
client.addEventListener("badmessage", (event) => say({ event: "badmessage", ...event.detail }));
client.on(list8, async (lines) => {
  say({ event: "lines", lines, version: client.dotnetVersion });
  await client.send(list8, ["from JS"]);
});
client.on("System.String", async (text, incoming) => {
  await incoming.reply("System.String", text.toUpperCase());
});
const refused = [];
for (const [name, value] of [["System.Guid", "0f8fad5b-d9cb-469f-a165-70867728950e"],
                             ["System.Int32", 2 ** 40], ["System.Int64", 2 ** 70]]) {
  try {
    await client.send(name, value);
  } catch (error) {
    refused.push(name);
  }
}
say({ event: "ready", refused });
"""


class _JsMember(NodeScript):
    def __init__(self, process: trio.Process) -> None:
        super().__init__(process)
        self.lines: trio.MemorySendChannel[dict[str, Any]]
        self.lines, self.said = trio.open_memory_channel[dict[str, Any]](100)

    async def received(self, message: dict[str, Any]) -> None:
        await self.lines.send(message)


async def test_the_js_client_follows_the_same_rules(wsproxy_relay: Relay) -> None:
    """Before the fix the JS member sent a Guid and 2**40 as they were, answered a
    message without an Id not at all, echoed "request-1", and sent its lists with
    Version=8.0.0.0 to a .NET 7 group."""
    script = JS_MEMBER % {
        "module": (ROOT / "clients/js/wsproxy.js").as_uri(),
        "url": json.dumps(wsproxy_relay.url),
        "group": json.dumps(GROUP),
    }
    argv = [node_path(), "--experimental-websocket", "--no-warnings", "--input-type=module"]
    with trio.fail_after(20):
        async with dotnet_member(wsproxy_relay) as dotnet:
            async with running(_JsMember, [*argv, "-e", script]) as js:
                ready = await js.said.receive()
                assert ready == {
                    "event": "ready",
                    "refused": ["System.Guid", "System.Int32", "System.Int64"],
                }, js.stderr
                await dotnet.send_message(envelope("System.String", "no id"))
                assert await next_envelope(dotnet) == {
                    "Id": None,
                    "MessageType": "System.String",
                    "Message": "NO ID",
                    "ReplyId": EMPTY_GUID,
                }
                await dotnet.send_message(envelope("System.String", "bad id", id="request-1"))
                bad = await js.said.receive()
                assert bad["event"] == "badmessage" and "not a GUID" in bad["reason"]
                upper = str(uuid.uuid4()).upper()
                await dotnet.send_message(envelope("System.String", "good id", id=upper))
                assert (await next_envelope(dotnet))["ReplyId"] == upper.lower()
                await dotnet.send_message(envelope(list_of_string("7.0.0.0"), ["from .NET 7"]))
                lines = await js.said.receive()
                assert lines == {
                    "event": "lines",
                    "lines": ["from .NET 7"],
                    "version": "7.0.0.0",
                }
                sent = await next_envelope(dotnet)
                assert sent["MessageType"] == list_of_string("7.0.0.0")


# -- against the faithful .NET stand-in (tests/dotnet_peer.py) ----------------------------


async def test_a_dotnet_7_member_and_a_python_member_understand_each_other(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    """A .NET 7 ``WsProxyClient`` gets the Python member's list (before the fix it was
    named for .NET 8 and ignored), its ``On<long>`` gets a long, the refused Guid and
    overflowing int never reach it (each would have dropped its connection), and its
    answer to a message without an Id (ReplyId Guid.Empty) reaches the Python handlers,
    as the Python answer to one reaches its handlers."""
    from dotnet_peer import BOOLEAN, INT64, STRING, dotnet_url, list_of, open_dotnet_client

    with trio.fail_after(10):
        client = await wsproxy_client(group=GROUP, config=PLAIN)
        async with (
            open_dotnet_client(dotnet_url(wsproxy_relay.url, GROUP), runtime="7.0.0.0") as peer,
            client.subscribe(list[str]) as python_lines,
            client.subscribe(bool) as python_answers,
        ):
            dotnet_lines = peer.collect(list_of(STRING, "7.0.0.0"))
            longs = peer.collect(INT64)
            dotnet_answers = peer.collect(BOOLEAN)
            greetings = peer.collect(STRING)
            await wsproxy_relay.wait_members(2, GROUP)

            await peer.send(["from .NET 7"], list_of(STRING, "7.0.0.0"))
            assert (await python_lines.receive()).value == ["from .NET 7"]
            await client.send(["from Python"], as_type=list[str])
            assert await dotnet_lines.receive() == ["from Python"]

            with pytest.raises(ValueError, match=re.escape("System.Guid")):
                await client.send(uuid.uuid4())
            with pytest.raises(ValueError, match="overflow"):
                await client.send(2**70)
            await client.send(2**40, as_type="System.Int64")
            assert await longs.receive() == 2**40

            await client.send("hello")  # no Id
            greeting = await greetings.receive()
            await peer.reply_to(greeting, True, BOOLEAN)  # ReplyId: Guid.Empty
            answer = await python_answers.receive()
            assert answer.value is True and answer.reply_id == EMPTY_GUID

            async with client.subscribe(str) as texts:
                await peer.send("no id either", STRING)
                incoming = await texts.receive()
                await incoming.reply(False)  # as ReplyToAsync would: Guid.Empty
            assert await dotnet_answers.receive() is False
            assert peer.drops == [] and peer.connects == 1
