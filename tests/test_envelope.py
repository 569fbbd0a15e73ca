"""The envelope codec, without sockets: the exact JSON text a .NET EasyWebSocketProxy
client writes and reads."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_wsproxy.protocol.envelope import (
    Envelope,
    EnvelopeError,
    decode_envelope,
    encode_envelope,
    new_message_id,
    normalize_message_id,
)

# What the .NET demo's Client1 writes for SendAsync<SocketMessage>(new() { Message = ... }).
DOTNET_SOCKET_MESSAGE = (
    '{"Id":null,"MessageType":"SharedData.Models.SocketMessage",'
    '"Message":{"Message":"Hello from Client 1","ReplyRequired":false},"ReplyId":null}'
)
REQUEST_ID = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"


def test_a_typed_message_encodes_to_the_exact_dotnet_text() -> None:
    envelope = Envelope(
        message_type="SharedData.Models.SocketMessage",
        message={"Message": "Hello from Client 1", "ReplyRequired": False},
    )
    assert encode_envelope(envelope) == DOTNET_SOCKET_MESSAGE


def test_a_reply_encodes_like_dotnet_reply_to_async() -> None:
    envelope = Envelope(message_type="System.Boolean", message=True, reply_id=REQUEST_ID)
    expected = (
        f'{{"Id":null,"MessageType":"System.Boolean","Message":true,"ReplyId":"{REQUEST_ID}"}}'
    )
    assert encode_envelope(envelope) == expected


def test_a_request_carries_its_id_first() -> None:
    text = encode_envelope(Envelope("System.String", "How do you do?", id=REQUEST_ID))
    assert text.startswith(f'{{"Id":"{REQUEST_ID}","MessageType":"System.String"')
    assert list(json.loads(text)) == ["Id", "MessageType", "Message", "ReplyId"]


def test_the_dotnet_text_decodes_to_its_four_fields() -> None:
    envelope = decode_envelope(DOTNET_SOCKET_MESSAGE)
    assert envelope == Envelope(
        message_type="SharedData.Models.SocketMessage",
        message={"Message": "Hello from Client 1", "ReplyRequired": False},
        id=None,
        reply_id=None,
    )


def test_non_ascii_text_travels_as_utf8_and_comes_back() -> None:
    envelope = Envelope("System.String", "héllo → 世界 🎉")
    text = encode_envelope(envelope)
    assert "世界" in text
    assert decode_envelope(text) == envelope


def test_missing_optional_fields_read_as_null_and_unknown_keys_are_ignored() -> None:
    envelope = decode_envelope('{"MessageType":"System.Int32","Extra":[1,2]}')
    assert envelope == Envelope("System.Int32", None, None, None)


@pytest.mark.parametrize(
    ("text", "not_json", "fragment"),
    [
        ("Hello, plain text", True, "not JSON"),
        ("", True, "not JSON"),
        ('{"MessageType":"System.Double","Message":NaN}', True, "NaN"),
        ("[1, 2]", False, "an array"),
        ('"just a string"', False, "a string"),
        ('{"Message":1}', False, "MessageType must be a non-empty string, got null"),
        ('{"MessageType":"","Message":1}', False, "MessageType must be a non-empty string"),
        ('{"MessageType":42,"Message":1}', False, "got a number"),
        ('{"MessageType":"System.Int32","Message":1,"Id":7}', False, "Id must be a string"),
        ('{"MessageType":"X","ReplyId":{"a":1}}', False, "ReplyId must be a string or null"),
    ],
)
def test_bad_frames_raise_one_error_with_a_reason(text: str, not_json: bool, fragment: str) -> None:
    with pytest.raises(EnvelopeError) as caught:
        decode_envelope(text)
    assert caught.value.not_json is not_json
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


def test_deeply_nested_json_is_an_error_not_a_crash() -> None:
    with pytest.raises(EnvelopeError, match="not JSON"):
        decode_envelope("[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize("payload", [math.nan, math.inf, object()])
def test_a_payload_json_cannot_hold_is_refused_when_encoding(payload: object) -> None:
    with pytest.raises(EnvelopeError, match="not JSON-serialisable"):
        encode_envelope(Envelope("X", payload))


def test_request_ids_are_fresh_lower_case_guids() -> None:
    ids = {new_message_id() for _ in range(1000)}
    assert len(ids) == 1000
    for value in ids:
        assert str(uuid.UUID(value)) == value
        assert uuid.UUID(value).version == 4


def test_guid_ids_compare_in_canonical_form() -> None:
    assert normalize_message_id(REQUEST_ID.upper()) == REQUEST_ID
    assert normalize_message_id("{" + REQUEST_ID + "}") == REQUEST_ID
    assert normalize_message_id("not-a-guid") == "not-a-guid"


json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(
    message_type=st.text(min_size=1),
    message=json_values,
    request_id=st.none() | st.text(),
    reply_id=st.none() | st.text(),
)
def test_every_envelope_survives_a_round_trip(
    message_type: str, message: Any, request_id: str | None, reply_id: str | None
) -> None:
    envelope = Envelope(message_type, message, request_id, reply_id)
    assert decode_envelope(encode_envelope(envelope)) == envelope
