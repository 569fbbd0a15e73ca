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
    Probe,
    Refusal,
    accept_token,
    decide,
    head_complete,
    probe_response,
)

LIMITS = Limits()
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def request(
    target: str | bytes,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    version: str = "HTTP/1.1",
) -> bytes:
    """A request head; a ``bytes`` target goes on the wire exactly as given."""
    base = {
        "Host": "relay",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    if headers is not None:
        base.update(headers)
    raw = target if isinstance(target, bytes) else target.encode()
    lines = [f"{method} TARGET {version}", *(f"{k}: {v}" for k, v in base.items() if v)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode().replace(b"TARGET", raw, 1)


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


def sized_request(size: int) -> bytes:
    """A valid upgrade request head of exactly ``size`` bytes, blank line included."""
    head = request("/ws?id=a&groupName=g", {"X-Pad": "x"})
    return head.replace(b"X-Pad: x", b"X-Pad: " + b"x" * (size - len(head) + 1))


def test_the_head_size_limit_is_exact_and_counts_the_blank_line() -> None:
    assert LIMITS.max_head_size == 16384
    largest = sized_request(16384)
    assert len(largest) == 16384
    assert head_complete(largest, LIMITS) is True
    assert isinstance(decide(largest, LIMITS), Join)
    # What follows the head (frames sent before the 101) does not count against it.
    assert head_complete(largest + b"\x81\x80" + b"x" * 100, LIMITS) is True
    for size in (16385, 16386, 16388, 16389):
        over = head_complete(sized_request(size), LIMITS)
        assert isinstance(over, Refusal) and over.status == 431, size
        assert over.reason == "request head longer than 16384 bytes"
    # Without its end, a head is incomplete up to one byte short of the limit; at the
    # limit it can no longer end in time.
    assert head_complete(largest[:16383], LIMITS) is False
    at_limit = head_complete(sized_request(16385)[:16384], LIMITS)
    assert isinstance(at_limit, Refusal) and at_limit.status == 431


@pytest.mark.parametrize(
    "target",
    [
        "/ws?id=a\tb&groupName=g",
        "/ws?id=a&groupName=g\t",
        "/ws?id=a\nb&groupName=g",
        "/ws?id=a\rb&groupName=g",
        "/ws?id=a\x00&groupName=g",
        "/ws?id=a\x7f&groupName=g",
        "/w\ts?id=a&groupName=g",
        "\x01/ws?id=a&groupName=g",
    ],
)
def test_a_raw_control_character_in_the_target_is_refused_not_dropped(target: str) -> None:
    decision = decide(request(target), LIMITS)
    assert isinstance(decision, Refusal), decision
    assert (decision.status, decision.reason) == (400, "control character in the request target")


@pytest.mark.parametrize(
    "target",
    [
        b"/ws?id=%FE&groupName=g",
        b"/ws?id=%FF&groupName=g",
        b"/ws?id=a&groupName=%C3",  # a lead byte and no continuation
        b"/ws?id=%C0%AF&groupName=g",  # overlong "/"
        b"/ws?id=%ED%A0%80&groupName=g",  # a surrogate
        b"/ws?id=\xfe&groupName=g",  # raw
        b"/ws?id=caf\xe9&groupName=g",  # raw latin-1, not UTF-8
        b"/ws?id=a&groupName=g&note=%FF",  # any parameter of the query
    ],
)
def test_a_query_that_is_not_utf8_is_refused(target: bytes) -> None:
    decision = decide(request(target), LIMITS)
    assert isinstance(decision, Refusal), decision
    assert (decision.status, decision.reason) == (400, "query is not UTF-8")


def test_two_different_invalid_bytes_never_name_one_id() -> None:
    # Decoded leniently, %FE and %FF are both U+FFFD: one would replace the other.
    for target in ("/ws?id=%FE&groupName=g", "/ws?id=%FF&groupName=g"):
        assert isinstance(decide(request(target), LIMITS), Refusal)


def test_raw_utf8_and_its_percent_encoding_name_the_same_id() -> None:
    raw = decide(request("/ws?id=café&groupName=grüße".encode()), LIMITS)
    encoded = decide(request("/ws?id=caf%C3%A9&groupName=gr%C3%BC%C3%9Fe"), LIMITS)
    assert isinstance(raw, Join) and isinstance(encoded, Join)
    assert (raw.id, raw.group) == (encoded.id, encoded.group) == ("café", "grüße")


@pytest.mark.parametrize(
    "version",
    ["HTTP/1.0", "HTTP/1.9", "HTTP/2.0", "HTTP/1.1junk", "HTTP/11", "http/1.1", "HTTP/1.1 "],
)
def test_an_upgrade_needs_exactly_http_1_1(version: str) -> None:
    decision = decide(request("/ws?id=a&groupName=g", version=version), LIMITS)
    assert isinstance(decision, Refusal), decision
    assert decision.status == 400
    assert decision.response.startswith(b"HTTP/1.1 400 ")
    assert isinstance(decide(request("/ws?id=a&groupName=g"), LIMITS), Join)


PROBES = Limits(probes=frozenset({"/healthz", "/metrics"}))


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_probes_answer_get_and_head_in_http_1_1_and_1_0(version: str) -> None:
    get = decide(request("/healthz", method="GET", version=version), PROBES)
    head = decide(request("/metrics", method="HEAD", version=version), PROBES)
    assert get == Probe("/healthz", head_only=False)
    assert head == Probe("/metrics", head_only=True)


@pytest.mark.parametrize("version", ["HTTP/1.9", "HTTP/2.0", "HTTP/1.1junk"])
def test_probes_refuse_other_versions(version: str) -> None:
    decision = decide(request("/healthz", version=version), PROBES)
    assert isinstance(decision, Refusal) and decision.status == 400


def test_a_head_probe_gets_the_headers_of_a_get_and_no_body() -> None:
    body = b"ok\n"
    get = probe_response(Probe("/healthz"), 200, body, "text/plain")
    head = probe_response(Probe("/healthz", head_only=True), 200, body, "text/plain")
    get_head, _, get_body = get.partition(b"\r\n\r\n")
    head_head, _, head_body = head.partition(b"\r\n\r\n")
    assert get_body == body
    assert head_body == b""
    assert head_head == get_head
    assert b"\r\nContent-Length: 3\r\n" in head_head + b"\r\n"
    assert head_head.startswith(b"HTTP/1.1 200 OK\r\n")
    unavailable = probe_response(Probe("/healthz", head_only=True), 503, b"down\n", "text/plain")
    assert unavailable.startswith(b"HTTP/1.1 503 ") and unavailable.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(("target", "status"), [("/other", 404), ("/ws?id=a&groupName=g", 405)])
def test_a_refused_head_request_gets_no_body_either(target: str, status: int) -> None:
    decision = decide(request(target, method="HEAD"), PROBES)
    assert isinstance(decision, Refusal) and decision.status == status
    assert decision.reason
    head, _, body = decision.response.partition(b"\r\n\r\n")
    assert body == b""
    assert f"\r\nContent-Length: {len(decision.reason) + 1}\r\n".encode() in head + b"\r\n"


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


def raw_spelling(text: str) -> bytes:
    """``text`` for a query value: ASCII percent-encoded where it must be, the rest as
    raw UTF-8 bytes."""
    return b"".join(
        char.encode() if ord(char) >= 0x80 else quote(char, safe="").encode() for char in text
    )


@given(member_id=names, group=names)
def test_raw_and_percent_encoded_spellings_always_agree(member_id: str, group: str) -> None:
    raw = b"/ws?id=" + raw_spelling(member_id) + b"&groupName=" + raw_spelling(group)
    decision = decide(request(raw), LIMITS)
    assert isinstance(decision, Join)
    assert (decision.id, decision.group) == (member_id, group)
