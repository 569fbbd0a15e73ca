"""The wsproxy.v1 test vectors (docs/protocol-vectors.json), which every client's tests
load: the Python codec reads each vector as it says and writes each relay vector's
bytes exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trio_wsproxy.protocol import v1

VECTORS = json.loads(
    (Path(__file__).parent.parent / "docs" / "protocol-vectors.json").read_text("utf-8")
)["vectors"]


def by_direction(direction: str) -> list[Any]:
    return [pytest.param(v, id=v["name"]) for v in VECTORS if v["direction"] == direction]


def test_the_vectors_are_consistent() -> None:
    for vector in VECTORS:
        data = bytes.fromhex(vector["hex"])
        if vector["opcode"] == "text":
            assert data.decode() == vector["text"], vector["name"]
        else:
            assert vector["opcode"] == "binary" and "text" not in vector


@pytest.mark.parametrize("vector", by_direction("member-to-relay"))
def test_what_a_member_sends(vector: dict[str, Any]) -> None:
    data, meaning = bytes.fromhex(vector["hex"]), vector["meaning"]
    if "error" in meaning:
        with pytest.raises(v1.V1Error, match=meaning["error"]):
            end = v1.header_end(data)
            if end is None:
                raise v1.V1Error("a message ended inside its header line")
            v1.parse_member_header(data[: end - 1])
        return
    end = v1.header_end(data)
    assert end is not None
    target = v1.parse_member_header(data[: end - 1])
    if "join" in meaning:
        since = meaning["since"]
        assert target == v1.Join(
            meaning["join"], None if since is None else v1.Position.parse(since)
        )
        assert data[end:] == b""
        assert v1.join_header(target.group, target.since) == data
        return
    if "leave" in meaning:
        assert target == v1.Leave(meaning["leave"])
        assert data[end:] == b"" and v1.leave_header(target.group) == data
        return
    if "token" in meaning:
        assert target == v1.Refresh(meaning["token"])
        assert data[end:] == b"" and v1.refresh_header(target.token) == data
        return
    assert isinstance(target, v1.ToGroup | v1.ToMember)
    assert (target.to if isinstance(target, v1.ToMember) else None) == meaning["to"]
    assert target.group == meaning.get("group")
    payload = bytes.fromhex(meaning["payload_hex"])
    assert data[end:] == payload
    if data[: end - 1] != b"{}":
        # And a member's header is written exactly so.
        assert v1.member_header(meaning["to"], meaning.get("group")) + payload == data


def relay_value(meaning: dict[str, Any]) -> v1.From | v1.Event:
    event = meaning.get("event")
    members = meaning.get("members")
    listed = None if members is None else frozenset(members)
    group = meaning.get("group")
    if event is None:
        return v1.From(meaning["from"], meaning["direct"], meaning.get("offset"), group)
    if event == "welcome":
        position = meaning.get("position")
        recovery = meaning.get("recovery")
        return v1.Welcome(
            meaning["id"],
            meaning["group"],
            listed,
            meaning["count"],
            None if position is None else v1.Position(position["epoch"], position["offset"]),
            None
            if recovery is None
            else v1.Recovery(
                recovery["recovered"], recovery.get("missed", 0), recovery.get("reason")
            ),
        )
    if event == "presence":
        return v1.Presence(
            tuple(meaning["joined"]), tuple(meaning["left"]), meaning["count"], group
        )
    if event == "members":
        return v1.Members(listed, meaning["count"], group)
    if event == "left":
        return v1.Left(meaning["group"], meaning.get("reason"))
    if event == "token_expiring":
        return v1.TokenExpiring(meaning["exp"])
    if event == "token_refreshed":
        return v1.TokenRefreshed(meaning["exp"])
    assert event == "error"
    return v1.Error(meaning["error"], meaning["detail"], meaning.get("to"), group)


@pytest.mark.parametrize("vector", by_direction("relay-to-member"))
def test_what_the_relay_sends(vector: dict[str, Any]) -> None:
    data, meaning = bytes.fromhex(vector["hex"]), vector["meaning"]
    expected = relay_value(meaning)
    what, start = v1.decode_relay_message(data)
    assert what == expected
    payload = data[start:]
    if isinstance(expected, v1.From):
        assert payload == bytes.fromhex(meaning["payload_hex"])
        assert (
            v1.from_header(expected.sender, expected.direct, expected.offset, expected.group)
            + payload
            == data
        )
    else:
        assert payload == b"" and vector["opcode"] == "text"
        assert v1.encode_event(expected) == data


def test_relay_messages_that_break_the_format_are_refused() -> None:
    for data in (b"no line", b"[]\n", b'{"event":"nope"}\n', b'{"event":"welcome"}\n'):
        with pytest.raises(v1.V1Error):
            v1.decode_relay_message(data)
