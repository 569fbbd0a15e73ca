"""The client's decisions, without a network: which relay URL to try next, whether and how
long to wait before reconnecting, and what a received frame is.

These live in modules that import no trio (import-linter holds them to it, see
tests/test_layers.py); the connection task only carries them out.
"""

from __future__ import annotations

import uuid
from typing import Any

import attrs
import pytest

import trio_wsproxy
from trio_wsproxy.client.config import DEFAULT_RECONNECT_CODES, ClientConfig
from trio_wsproxy.client.dispatch import takes_incoming
from trio_wsproxy.client.incoming import BadMessage, BadMessageKind
from trio_wsproxy.client.policy import (
    ReconnectPolicy,
    RoundFailed,
    close_meaning,
    reconnect_delay,
    reconnects_after,
    refusal_is_final,
)
from trio_wsproxy.client.urls import relay_address, round_order
from trio_wsproxy.client.wire import Deliver, Reply, encode_message, read_frame, read_reply
from trio_wsproxy.protocol.backoff import backoff_delay
from trio_wsproxy.protocol.envelope import Envelope, decode_envelope, encode_envelope

# No jitter, so that every delay can be named exactly.
STEADY = ClientConfig(reconnect_min_delay=0.5, reconnect_max_delay=4.0, reconnect_jitter=0.0)
SOCKET_MESSAGE = "SharedData.Models.SocketMessage"


@attrs.frozen
class SocketMessage:
    message: str
    reply_required: bool = False


def dotnet_types() -> trio_wsproxy.TypeRegistry:
    types = trio_wsproxy.TypeRegistry()
    types.register(SocketMessage, SOCKET_MESSAGE, pascal_case=True)
    return types


class RecordingSender:
    """Stands in for the client that :meth:`Incoming.reply` answers through."""

    def __init__(self) -> None:
        self.sent: list[tuple[object, Any, str | None]] = []

    async def send(
        self, value: object, *, as_type: Any = None, reply_to: str | None = None
    ) -> None:
        self.sent.append((value, as_type, reply_to))


def envelope_text(message: Any, *, id: str | None = None, reply_id: str | None = None) -> str:
    return encode_envelope(Envelope(SOCKET_MESSAGE, message, id=id, reply_id=reply_id))


def read(frame: str | bytes, awaiting: tuple[str, ...] = ()) -> Deliver | Reply | BadMessage:
    return read_frame(frame, types=dotnet_types(), awaiting=awaiting, sender=RecordingSender())


# -- which URL next ------------------------------------------------------------------------


def test_the_first_round_tries_the_urls_in_the_order_given() -> None:
    assert round_order(3, None) == (0, 1, 2)


@pytest.mark.parametrize(("current", "order"), [(0, (1, 2, 0)), (1, (2, 0, 1)), (2, (0, 1, 2))])
def test_a_later_round_starts_after_the_url_just_lost_and_ends_with_it(
    current: int, order: tuple[int, ...]
) -> None:
    assert round_order(3, current) == order


def test_with_one_url_every_round_is_that_url() -> None:
    assert round_order(1, None) == round_order(1, 0) == (0,)


def test_a_relay_address_has_the_default_port_of_its_scheme() -> None:
    assert relay_address("ws://relay.example/ws").port == 80
    assert relay_address("wss://relay.example/ws").port == 443
    assert relay_address("wss://relay.example:8443/ws").port == 8443
    assert relay_address("wss://relay.example/ws").secure
    assert not relay_address("ws://relay.example/ws").secure


def test_a_relay_address_names_the_upgrade_target_and_a_host_header_without_user_info() -> None:
    address = relay_address("ws://user:secret@Relay.Example:8765/ws?id=a&groupName=g")
    assert address.host == "relay.example"
    assert address.authority == "Relay.Example:8765"
    assert address.resource == "/ws?id=a&groupName=g"
    assert relay_address("ws://relay.example").resource == "/"


def test_a_url_without_a_host_has_no_relay_address() -> None:
    with pytest.raises(ValueError, match="no host"):
        relay_address("ws:///ws")


# -- whether and when to reconnect ---------------------------------------------------------


@pytest.mark.parametrize("code", sorted(DEFAULT_RECONNECT_CODES))
def test_the_client_reconnects_after_the_relay_s_transient_codes(code: int) -> None:
    assert reconnects_after(code, ClientConfig())


@pytest.mark.parametrize("code", [1000, 1002, 1007, 1008, 1009, 4000])
def test_the_client_stops_after_codes_that_would_recur_or_fight(code: int) -> None:
    assert not reconnects_after(code, ClientConfig())


def test_with_reconnect_off_no_code_brings_the_client_back() -> None:
    config = ClientConfig(reconnect=False)
    assert not any(reconnects_after(code, config) for code in DEFAULT_RECONNECT_CODES)


def test_the_reconnect_codes_are_the_config_s() -> None:
    # mypy's attrs plugin types the field's frozenset converter as taking Iterable[_T_co].
    config = ClientConfig(reconnect_codes=frozenset({4000}))  # type: ignore[arg-type]
    assert reconnects_after(4000, config)
    assert not reconnects_after(1001, config)


@pytest.mark.parametrize(
    ("status", "final"), [(400, True), (404, True), (500, False), (503, False)]
)
def test_a_4xx_refusal_is_final_and_a_5xx_is_worth_another_try(status: int, final: bool) -> None:
    assert refusal_is_final(status) is final


def test_close_codes_are_explained_in_words() -> None:
    assert "replaced" in close_meaning(4000)
    assert close_meaning(4999) == "no meaning known"


@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_reconnect_delay_is_the_package_s_one_backoff(fraction: float) -> None:
    def rand() -> float:
        return fraction

    for attempt in range(8):
        assert reconnect_delay(
            attempt, min_delay=0.5, max_delay=4, jitter=0.5, rand=rand
        ) == backoff_delay(attempt, first=0.5, longest=4, jitter=0.5, rand=rand)


def test_the_first_connect_tries_every_url_at_once() -> None:
    policy = ReconnectPolicy(STEADY, url_count=3)
    plan = policy.next_round(0)
    assert plan.order == (0, 1, 2)
    assert plan.delay is None


def test_a_first_connect_that_fails_everywhere_is_not_retried() -> None:
    policy = ReconnectPolicy(attrs.evolve(STEADY, max_reconnect_attempts=5), url_count=2)
    assert policy.round_failed() is RoundFailed.NEVER_CONNECTED
    assert policy.failed_rounds == 0


def test_after_a_lost_connection_each_failed_round_doubles_the_wait_up_to_the_cap() -> None:
    policy = ReconnectPolicy(STEADY, url_count=3)
    policy.connected()
    delays = []
    for _ in range(6):
        plan = policy.next_round(1)
        assert plan.order == (2, 0, 1)
        delays.append(plan.delay)
        assert policy.round_failed() is RoundFailed.RETRY
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_connection_starts_the_backoff_over() -> None:
    policy = ReconnectPolicy(STEADY, url_count=1)
    policy.connected()
    policy.round_failed()
    policy.round_failed()
    assert policy.next_round(0).delay == 2.0
    policy.connected()
    assert policy.next_round(0).delay == 0.5


def test_the_client_gives_up_after_max_reconnect_attempts_failed_rounds_in_a_row() -> None:
    policy = ReconnectPolicy(attrs.evolve(STEADY, max_reconnect_attempts=3), url_count=2)
    policy.connected()
    verdicts = [policy.round_failed() for _ in range(3)]
    assert verdicts == [RoundFailed.RETRY, RoundFailed.RETRY, RoundFailed.GIVE_UP]
    assert policy.failed_rounds == 3


def test_without_a_limit_the_client_never_gives_up() -> None:
    policy = ReconnectPolicy(STEADY, url_count=1)
    policy.connected()
    assert all(policy.round_failed() is RoundFailed.RETRY for _ in range(1000))
    assert policy.next_round(0).delay == STEADY.reconnect_max_delay


# -- what a received frame is ---------------------------------------------------------------


def test_a_binary_frame_goes_to_the_bytes_handlers_as_it_is() -> None:
    verdict = read(b"\x00\xff")
    assert isinstance(verdict, Deliver)
    assert verdict.message_type is bytes
    assert verdict.incoming.value == b"\x00\xff"
    assert verdict.incoming.message_type is verdict.incoming.id is None


def test_a_typed_message_goes_to_the_handlers_of_its_registered_type() -> None:
    request_id = str(uuid.uuid4())
    verdict = read(envelope_text({"Message": "hi", "ReplyRequired": True}, id=request_id))
    assert isinstance(verdict, Deliver)
    assert verdict.message_type is SocketMessage
    assert verdict.incoming.value == SocketMessage("hi", reply_required=True)
    assert verdict.incoming.message_type == SOCKET_MESSAGE
    assert verdict.incoming.id == request_id
    assert verdict.incoming.wants_reply


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ("not json", BadMessageKind.INVALID_JSON),
        ('{"Message": 1}', BadMessageKind.INVALID_ENVELOPE),
        (
            encode_envelope(Envelope("Some.Other.App.Type", {})),
            BadMessageKind.UNKNOWN_TYPE,
        ),
        (envelope_text({"ReplyRequired": False}), BadMessageKind.BAD_PAYLOAD),
    ],
)
def test_a_frame_the_client_cannot_use_is_a_bad_message_of_its_kind(
    frame: str, kind: BadMessageKind
) -> None:
    verdict = read(frame)
    assert isinstance(verdict, BadMessage)
    assert verdict.kind is kind
    assert verdict.text == frame
    assert verdict.reason


def test_an_answer_to_a_waiting_request_is_a_reply_whatever_its_guid_spelling() -> None:
    request_id = str(uuid.uuid4())
    frame = envelope_text({"Message": "yes"}, reply_id=request_id.upper())
    verdict = read(frame, awaiting=(request_id,))
    assert verdict == Reply(request_id, decode_envelope(frame), frame)


def test_a_reply_id_nobody_waits_for_makes_an_ordinary_message() -> None:
    late = str(uuid.uuid4())
    verdict = read(envelope_text({"Message": "too late"}, reply_id=late), awaiting=())
    assert isinstance(verdict, Deliver)
    assert verdict.incoming.reply_id == late


def test_a_reply_is_structured_into_the_type_the_request_asked_for() -> None:
    request_id = str(uuid.uuid4())
    frame = envelope_text({"Message": "yes"}, reply_id=request_id)
    reply = Reply(request_id, decode_envelope(frame), frame)
    assert read_reply(reply, SocketMessage, dotnet_types()) == (SocketMessage("yes"), None)
    value, bad = read_reply(reply, int, dotnet_types())
    assert value is None
    assert bad is not None
    assert bad.kind is BadMessageKind.BAD_PAYLOAD
    assert bad.reason.startswith(f"reply {request_id} ({SOCKET_MESSAGE})")
    assert bad.text == frame


async def test_an_incoming_message_replies_through_its_client_with_its_id() -> None:
    sender = RecordingSender()
    request_id = str(uuid.uuid4())
    frame = envelope_text({"Message": "question"}, id=request_id)
    verdict = read_frame(frame, types=dotnet_types(), awaiting=(), sender=sender)
    assert isinstance(verdict, Deliver)
    await verdict.incoming.reply(SocketMessage("answer"))
    assert sender.sent == [(SocketMessage("answer"), None, request_id)]


# -- what a message to send becomes ---------------------------------------------------------


def test_bytes_travel_as_one_binary_frame_untouched() -> None:
    types = dotnet_types()
    frame = encode_message(types, bytearray(b"\x01\x02"), None, request_id=None, reply_to=None)
    assert frame == b"\x01\x02"
    assert type(frame) is bytes


def test_a_binary_frame_cannot_carry_an_id() -> None:
    with pytest.raises(ValueError, match="no Id or ReplyId"):
        encode_message(dotnet_types(), b"x", None, request_id="r", reply_to=None)


def test_a_container_must_say_which_type_it_travels_as() -> None:
    with pytest.raises(TypeError, match="as_type=list"):
        encode_message(dotnet_types(), ["a"], None, request_id=None, reply_to=None)
    frame = encode_message(dotnet_types(), ["a"], list[str], request_id=None, reply_to=None)
    assert isinstance(frame, str)
    assert decode_envelope(frame).message == ["a"]


def test_a_typed_message_travels_as_the_dotnet_envelope() -> None:
    frame = encode_message(
        dotnet_types(),
        SocketMessage("hi"),
        None,
        request_id=None,
        reply_to="0F8FAD5B-D9CB-469F-A165-70867728950E",
    )
    assert frame == (  # the ReplyId as .NET writes a Guid: lower case
        '{"Id":null,"MessageType":"SharedData.Models.SocketMessage",'
        '"Message":{"Message":"hi","ReplyRequired":false},'
        '"ReplyId":"0f8fad5b-d9cb-469f-a165-70867728950e"}'
    )


# -- which handlers take the Incoming -------------------------------------------------------


def test_a_handler_with_a_second_positional_parameter_gets_the_incoming() -> None:
    class Bot:
        def on_value(self, value: object) -> None: ...
        def on_both(self, value: object, incoming: object) -> None: ...

    assert not takes_incoming(lambda value: None)
    assert takes_incoming(lambda value, incoming: None)
    assert takes_incoming(lambda *args: None)
    assert not takes_incoming(lambda value, *, incoming=None: None)
    assert not takes_incoming(Bot().on_value)
    assert takes_incoming(Bot().on_both)
