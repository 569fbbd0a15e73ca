"""How relayed messages reach each kind of member: the subprotocol seam.

A member speaks the plain protocol unless its handshake selected a subprotocol; fan-out
frames each message once per encoding among its recipients. The relay ships no
subprotocol yet, so these tests register one of their own to show that recipients of
different encodings each get theirs while a plain member still gets the contract byte
for byte.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from trio_wsproxy import RelayConfig, open_relay
from trio_wsproxy.protocol import encoding as encodings
from trio_wsproxy.protocol.encoding import PLAIN, Encoding, encoding_for
from trio_wsproxy.protocol.frames import frame, frame_header
from trio_wsproxy.protocol.message import Message, StreamHead
from wsraw import OP_BINARY, OP_CONT, OP_TEXT, RawClient


class Tagged(Encoding):
    """A test subprotocol: every whole message arrives as text ``<sender>|<payload>``."""

    __slots__ = ("framed",)

    def __init__(self) -> None:
        super().__init__("test.tagged")
        self.framed = 0

    def message(self, message: Message) -> bytes:
        self.framed += 1
        body = message.sender.encode() + b"|" + message.payload
        return frame_header(1, len(body)) + body


@pytest.fixture
def tagged(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tagged]:
    encoding = Tagged()
    monkeypatch.setitem(encodings.SUBPROTOCOLS, encoding.subprotocol, encoding)
    yield encoding


def test_plain_frames_a_message_as_the_wire_contract_says() -> None:
    assert PLAIN.message(Message("a", True, b"hi")) == frame(OP_TEXT, b"hi")
    assert PLAIN.message(Message("a", False, b"\x00" * 300)) == frame(OP_BINARY, b"\x00" * 300)


def test_plain_frames_pieces_as_fragments_of_one_message() -> None:
    head = StreamHead("a", text=False)
    assert PLAIN.piece(head, b"x", first=True, last=False) == frame(OP_BINARY, b"x", False)
    assert PLAIN.piece(head, b"y", first=False, last=False) == frame(OP_CONT, b"y", False)
    assert PLAIN.piece(head, b"z", first=False, last=True) == frame(OP_CONT, b"z", True)
    text = StreamHead("a", text=True)
    assert PLAIN.piece(text, b"x", first=True, last=True) == frame(OP_TEXT, b"x", True)


def test_no_subprotocol_is_plain() -> None:
    assert encoding_for(None) is PLAIN


async def join(port: int, member: str, offer: str | None = None) -> tuple[RawClient, str | None]:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    extra = f"Sec-WebSocket-Protocol: {offer}\r\n" if offer is not None else ""
    status, headers, body = await client.handshake(f"/ws?id={member}&groupName=g", extra)
    assert status == 101, body
    return client, headers.get("sec-websocket-protocol")


async def test_an_unknown_subprotocol_is_declined_and_the_member_gets_plain_frames() -> None:
    async with open_relay(RelayConfig(port=0)) as relay:
        a, selected = await join(relay.port, "a", "chat.v9, other")
        assert selected is None  # RFC 6455 §4.2.2: no header when none is accepted
        b, _ = await join(relay.port, "b")
        with trio.fail_after(5):
            await relay.wait_members(2, "g")
            await b.send_frame(OP_TEXT, b"hello")
            assert await a.recv_message() == (OP_TEXT, b"hello")
        for client in (a, b):
            await client.aclose()  # (a raw client answers no close frame: the relay waits)


async def test_a_known_subprotocol_is_selected_from_the_offer(tagged: Tagged) -> None:
    async with open_relay(RelayConfig(port=0)) as relay:
        client, selected = await join(relay.port, "a", "chat.v9, test.tagged")
        assert selected == "test.tagged"
        await client.aclose()


async def test_each_encoding_gets_its_own_framing_once_per_message(tagged: Tagged) -> None:
    async with open_relay(RelayConfig(port=0)) as relay:
        tagged_members = [await join(relay.port, f"t{i}", "test.tagged") for i in range(3)]
        plain_members = [await join(relay.port, f"p{i}") for i in range(2)]
        sender, _ = await join(relay.port, "s")
        with trio.fail_after(5):
            await relay.wait_members(6, "g")
            await sender.send_frame(OP_BINARY, b"\x01\x02")
            for member, _ in tagged_members:
                assert await member.recv_message() == (OP_TEXT, b"s|\x01\x02")
            for member, _ in plain_members:
                assert await member.recv_message() == (OP_BINARY, b"\x01\x02")
        assert tagged.framed == 1  # once for its three members, not once each
        for member, _ in [*tagged_members, *plain_members, (sender, None)]:
            await member.aclose()
