"""The handshake decides before any upgrade: who joins which group, or why not."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_wsproxy.protocol.handshake import (
    Join,
    Limits,
    Refusal,
    accept_token,
    decide,
    head_complete,
)

LIMITS = Limits()
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def request(target: str, headers: dict[str, str] | None = None, method: str = "GET") -> bytes:
    base = {
        "Host": "relay",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    if headers is not None:
        base.update(headers)
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in base.items() if v)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_accept_token_matches_rfc_6455_example() -> None:
    assert accept_token(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_dotnet_style_url_joins_its_group() -> None:
    guid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    decision = decide(request(f"/ws?id={guid}&groupName=group_1"), LIMITS)
    assert isinstance(decision, Join)
    assert (decision.id, decision.group) == (guid, "group_1")
    assert decision.response.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in decision.response


def test_percent_encoded_names_are_decoded() -> None:
    decision = decide(request("/ws?id=a%20b&groupName=caf%C3%A9"), LIMITS)
    assert isinstance(decision, Join)
    assert (decision.id, decision.group) == ("a b", "café")


@pytest.mark.parametrize(
    ("target", "status", "words"),
    [
        ("/ws?groupName=g", 400, "'id'"),
        ("/ws?id=&groupName=g", 400, "'id'"),
        ("/ws?id=a", 400, "'groupName'"),
        ("/ws?id=a&groupName=", 400, "'groupName'"),
        ("/ws?id=a&id=b&groupName=g", 400, "more than once"),
        (f"/ws?id={'x' * 257}&groupName=g", 400, "longer than 256"),
        (f"/ws?id=a&groupName={'x' * 257}", 400, "longer than 256"),
        ("/ws?id=a%00&groupName=g", 400, "control characters"),
        ("/other?id=a&groupName=g", 404, "no such path"),
        ("/?id=a&groupName=g", 404, "no such path"),
    ],
)
def test_bad_urls_are_refused_with_a_reason(target: str, status: int, words: str) -> None:
    decision = decide(request(target), LIMITS)
    assert isinstance(decision, Refusal)
    assert decision.status == status
    assert words in decision.reason
    head, _, body = decision.response.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"Content-Type: text/plain" in head
    assert body == decision.reason.encode() + b"\n"


def test_plain_http_gets_426_with_upgrade_header() -> None:
    decision = decide(request("/ws?id=a&groupName=g", {"Upgrade": "", "Connection": ""}), LIMITS)
    assert isinstance(decision, Refusal)
    assert decision.status == 426
    assert b"\r\nUpgrade: websocket\r\n" in decision.response


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Sec-WebSocket-Version": "8"}, 426),
        ({"Sec-WebSocket-Key": ""}, 400),
        ({"Sec-WebSocket-Key": "not base64!"}, 400),
        ({"Sec-WebSocket-Key": base64.b64encode(b"short").decode()}, 400),
    ],
)
def test_broken_websocket_headers_are_refused(headers: dict[str, str], status: int) -> None:
    decision = decide(request("/ws?id=a&groupName=g", headers), LIMITS)
    assert isinstance(decision, Refusal)
    assert decision.status == status


def test_only_get_upgrades() -> None:
    decision = decide(request("/ws?id=a&groupName=g", method="POST"), LIMITS)
    assert isinstance(decision, Refusal) and decision.status == 405


def test_header_tokens_are_case_insensitive_and_listed() -> None:
    headers = {"Upgrade": "WebSocket", "Connection": "keep-alive, Upgrade"}
    assert isinstance(decide(request("/ws?id=a&groupName=g", headers), LIMITS), Join)


def test_configured_path_and_limits_apply() -> None:
    limits = Limits(path="/relay", max_id_length=3, max_group_length=3)
    assert isinstance(decide(request("/relay?id=abc&groupName=xyz"), limits), Join)
    too_long = decide(request("/relay?id=abcd&groupName=xyz"), limits)
    assert isinstance(too_long, Refusal) and too_long.status == 400
    wrong_path = decide(request("/ws?id=a&groupName=g"), limits)
    assert isinstance(wrong_path, Refusal) and wrong_path.status == 404


def test_head_completion_and_size_limit() -> None:
    limits = Limits(max_head_size=100)
    assert head_complete(b"GET / HTTP/1.1\r\n", limits) is False
    assert head_complete(b"GET / HTTP/1.1\r\n\r\n", limits) is True
    over = head_complete(b"x" * 101, limits)
    assert isinstance(over, Refusal) and over.status == 431


@given(st.binary(max_size=300))
def test_any_bytes_get_a_decision_never_an_exception(data: bytes) -> None:
    decision = decide(data + b"\r\n\r\n", LIMITS)
    assert isinstance(decision, Join | Refusal)
    if isinstance(decision, Refusal):
        assert 400 <= decision.status < 500


names = st.text(min_size=1, max_size=256).filter(str.isprintable)


@given(member_id=names, group=names)
def test_any_printable_id_and_group_round_trip(member_id: str, group: str) -> None:
    target = f"/ws?id={quote(member_id, safe='')}&groupName={quote(group, safe='')}"
    decision = decide(request(target), LIMITS)
    assert isinstance(decision, Join)
    assert (decision.id, decision.group) == (member_id, group)


@given(member_id=st.text(max_size=300), group=st.text(max_size=300))
def test_validation_is_exactly_the_documented_rule(member_id: str, group: str) -> None:
    target = f"/ws?id={quote(member_id, safe='')}&groupName={quote(group, safe='')}"
    decision = decide(request(target), LIMITS)

    def ok(value: str) -> bool:
        return 0 < len(value) <= 256 and value.isprintable()

    assert isinstance(decision, Join) == (ok(member_id) and ok(group))


SPEAKS = Limits(subprotocols=frozenset({"wsproxy.test", "other.test"}))


def test_without_an_offer_the_101_names_no_subprotocol() -> None:
    decision = decide(request("/ws?id=a&groupName=g"), SPEAKS)
    assert isinstance(decision, Join)
    assert decision.subprotocol is None
    assert b"sec-websocket-protocol" not in decision.response.lower()


def test_the_first_offered_subprotocol_the_relay_speaks_is_selected() -> None:
    offer = {"Sec-WebSocket-Protocol": "chat.v9, other.test , wsproxy.test"}
    decision = decide(request("/ws?id=a&groupName=g", offer), SPEAKS)
    assert isinstance(decision, Join)
    assert decision.subprotocol == "other.test"
    assert decision.response.endswith(b"\r\nSec-WebSocket-Protocol: other.test\r\n\r\n")


def test_an_offer_of_unknown_subprotocols_is_declined_with_no_header() -> None:
    decision = decide(request("/ws?id=a&groupName=g", {"Sec-WebSocket-Protocol": "x, y"}), SPEAKS)
    assert isinstance(decision, Join)
    assert decision.subprotocol is None
    assert b"Sec-WebSocket-Protocol" not in decision.response


def test_a_relay_that_speaks_no_subprotocol_declines_every_offer() -> None:
    offer = {"Sec-WebSocket-Protocol": "wsproxy.test"}
    decision = decide(request("/ws?id=a&groupName=g", offer), LIMITS)
    assert isinstance(decision, Join) and decision.subprotocol is None


@given(st.lists(st.sampled_from(["a", "b", "wsproxy.test", "other.test", " ", ""]), max_size=6))
def test_a_selected_subprotocol_was_offered_and_is_spoken(offer: list[str]) -> None:
    headers = {"Sec-WebSocket-Protocol": ",".join(offer)} if offer else None
    decision = decide(request("/ws?id=a&groupName=g", headers), SPEAKS)
    assert isinstance(decision, Join)
    offered = [token.strip() for token in ",".join(offer).split(",")]
    if decision.subprotocol is None:
        assert not set(offered) & SPEAKS.subprotocols
    else:
        assert decision.subprotocol in offered and decision.subprotocol in SPEAKS.subprotocols
