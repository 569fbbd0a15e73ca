"""Webhooks (the relay tells the back end): joins, leaves, groups occupied and vacated,
batched, signed, retried with the same ids, bounded — against a real HTTP back end."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from loglines import log_lines
from trio_wsproxy import Relay, RelayConfig, open_client, serve_relay
from trio_wsproxy.protocol.webhooks import (
    SignatureFormatError,
    SignatureMismatch,
    SignatureTooOld,
    WebhookBodyError,
    WebhookEvent,
    decode_body,
    encode_body,
    sign,
    verify,
)
from trio_wsproxy.relay.webhooks import endpoint_label
from webhookserver import SECRET, WebhookBackEnd
from wsraw import OP_CLOSE, OP_TEXT, RawClient

# -- the body and the signature (pure) ----------------------------------------------------


def event(**fields: Any) -> WebhookEvent:
    values: dict[str, Any] = {
        "id": "n-1", "type": "join", "group": "g", "member": "alice", "time": 1.5,
    }  # fmt: skip
    values.update(fields)
    return WebhookEvent(**values)


def test_a_body_reads_back_as_it_was_written() -> None:
    events = [
        event(),
        event(id="n-2", type="leave", code=1001),
        event(id="n-3", type="occupied", member=None),
        event(id="n-4", type="vacated", member=None, group="é"),
    ]
    body = encode_body(events)
    assert json.loads(body)["events"][1] == {
        "id": "n-2", "type": "leave", "group": "g", "member": "alice", "code": 1001, "time": 1.5,
    }  # fmt: skip
    assert decode_body(body).events == tuple(events)


@pytest.mark.parametrize(
    ("document", "says"),
    [
        (b"not json", "not JSON"),
        ({"events": [{"id": "x", "type": "join", "group": "g", "member": "a"}]}, "time"),
        ({"events": [{"id": "x", "type": "jump", "group": "g", "member": "a", "time": 1}]}, "type"),
        ({"events": [{"id": "x", "type": "join", "group": 7, "member": "a", "time": 1}]}, "group"),
        ({"events": [{"id": "x", "type": "occupied", "group": "g", "member": "a", "time": 1}]},
         "no member"),
        ({"events": [{"id": "x", "type": "join", "group": "g", "member": "a", "code": 1000,
                      "time": 1}]}, "close code"),
    ],
)  # fmt: skip
def test_a_body_that_is_not_a_webhooks_is_refused_with_what_is_wrong(
    document: Any, says: str
) -> None:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    with pytest.raises(WebhookBodyError, match=says):
        decode_body(body)


_text = st.text(max_size=40)
_events = st.one_of(
    st.builds(
        WebhookEvent, id=st.text(min_size=1, max_size=20), type=st.sampled_from(["join"]),
        group=_text, member=_text, time=st.floats(0, 2e9),
    ),
    st.builds(
        WebhookEvent, id=st.text(min_size=1, max_size=20), type=st.sampled_from(["leave"]),
        group=_text, member=_text, code=st.none() | st.integers(1000, 4999),
        time=st.floats(0, 2e9),
    ),
    st.builds(
        WebhookEvent, id=st.text(min_size=1, max_size=20),
        type=st.sampled_from(["occupied", "vacated"]), group=_text, time=st.floats(0, 2e9),
    ),
)  # fmt: skip


@given(st.lists(_events, max_size=5), st.text(min_size=16, max_size=40), st.integers(0, 2**33))
def test_any_body_reads_back_and_its_signature_verifies(
    events: list[WebhookEvent], secret: str, t: int
) -> None:
    body = encode_body(events)
    assert decode_body(body).events == tuple(events)
    assert verify(secret, body, sign(secret, body, t), now=t) == t


def test_a_good_signature_verifies_and_gives_its_time() -> None:
    body = encode_body([event()])
    header = sign(SECRET, body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify(SECRET, body, header, now=1_700_000_100) == 1_700_000_000


def test_a_tampered_body_or_another_secret_does_not_verify() -> None:
    body = encode_body([event()])
    header = sign(SECRET, body, 1_700_000_000)
    tampered = body.replace(b"alice", b"mallory")
    with pytest.raises(SignatureMismatch):
        verify(SECRET, tampered, header, now=1_700_000_000)
    with pytest.raises(SignatureMismatch):
        verify("another-secret-of-enough-length", body, header, now=1_700_000_000)
    # The time is signed too: moving it forward breaks the signature.
    moved = header.replace("t=1700000000", "t=1700000300")
    with pytest.raises(SignatureMismatch):
        verify(SECRET, body, moved, now=1_700_000_300)


def test_a_stale_signature_is_refused_even_though_it_is_good() -> None:
    body = encode_body([event()])
    header = sign(SECRET, body, 1_700_000_000)
    with pytest.raises(SignatureTooOld, match="301s old"):
        verify(SECRET, body, header, now=1_700_000_301)
    with pytest.raises(SignatureTooOld):
        verify(SECRET, body, header, now=1_699_999_000)  # from the future
    assert verify(SECRET, body, header, tolerance=400, now=1_700_000_301) == 1_700_000_000


@pytest.mark.parametrize("header", [None, "", "v1=abc", "t=12", "t=now,v1=abc", "garbage"])
def test_a_malformed_signature_header_is_refused_as_such(header: str | None) -> None:
    with pytest.raises(SignatureFormatError):
        verify(SECRET, b"{}", header)


def test_the_signature_is_the_hmac_of_time_dot_body() -> None:
    import hashlib
    import hmac

    body = b'{"events":[]}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, body, 1_700_000_000) == f"t=1700000000,v1={expected}"


def test_the_metrics_endpoint_label_keeps_no_credentials_or_query() -> None:
    assert endpoint_label("https://u:p@example.com:8443/hooks?token=x") == (
        "https://example.com:8443/hooks"
    )


# -- one relay ---------------------------------------------------------------------------


@asynccontextmanager
async def back_end_and_relay(
    **fields: Any,
) -> AsyncIterator[tuple[WebhookBackEnd, Relay, trio.Nursery]]:
    async with WebhookBackEnd().running() as back_end:
        fields.setdefault("webhook_interval", 0.05)
        fields.setdefault("close_timeout", 0.5)
        config = RelayConfig(port=0, webhook_url=back_end.url, webhook_secret=SECRET, **fields)
        # (The relay stops first, the back end after: its last leaves are heard.)
        async with trio.open_nursery() as nursery:
            relay = await nursery.start(serve_relay, config)
            yield back_end, relay, nursery
            nursery.cancel_scope.cancel()
        back_end.release()


async def eventually(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Return once ``condition()`` holds: for what the relay does after the back end
    answered (counting it), which the back end cannot await — done once every task
    here waits for something."""
    with trio.fail_after(within):
        while not condition():
            await trio.testing.wait_all_tasks_blocked(0.01)


def kinds(events: list[WebhookEvent]) -> list[tuple[str, str, str | None, int | None]]:
    return [(e.type, e.group, e.member, e.code) for e in events]


async def close_with(client: RawClient, code: int) -> None:
    await client.send_frame(OP_CLOSE, code.to_bytes(2, "big"))
    await client.expect_close()
    await client.aclose()


async def test_a_group_s_life_is_told_occupied_join_leave_vacated_signed() -> None:
    async with back_end_and_relay() as (back_end, relay, _):
        alice = await RawClient.open(relay.port, "/ws?id=alice&groupName=room")
        bob = await RawClient.open(relay.port, "/ws?id=bob&groupName=room")
        await close_with(alice, 1000)
        await bob.aclose()  # (dropped without a close frame: 1006)
        await back_end.wait_until(lambda: len(back_end.delivered) == 6)
        assert kinds(back_end.delivered) == [
            ("occupied", "room", None, None),
            ("join", "room", "alice", None),
            ("join", "room", "bob", None),
            ("leave", "room", "alice", 1000),
            ("leave", "room", "bob", 1006),
            ("vacated", "room", None, None),
        ]
        assert all(r.bad_signature is None for r in back_end.requests)
        assert {r.headers["content-type"] for r in back_end.requests} == {"application/json"}
        now = time.time()
        assert all(now - 30 < e.time <= now for e in back_end.delivered)
        assert len({e.id for e in back_end.delivered}) == 6


async def test_a_v1_member_s_later_groups_are_told_and_its_own_leave_has_no_code() -> None:
    async with back_end_and_relay() as (back_end, relay, _):
        async with open_client(relay.url, group="lobby", id="carol") as carol:
            room = await carol.join("room-2")
            await room.leave()
            await back_end.wait_until(lambda: len(back_end.delivered) >= 6)
        await back_end.wait_until(lambda: len(back_end.delivered) == 8)
        told = kinds(back_end.delivered)
        assert told[:6] == [
            ("occupied", "lobby", None, None),
            ("join", "lobby", "carol", None),
            ("occupied", "room-2", None, None),
            ("join", "room-2", "carol", None),
            ("leave", "room-2", "carol", None),
            ("vacated", "room-2", None, None),
        ]
        assert told[6:] == [("leave", "lobby", "carol", 1000), ("vacated", "lobby", None, None)]


async def test_the_back_end_s_removal_and_join_are_told_like_any_other() -> None:
    from httpapi import KEY, call

    async with back_end_and_relay(api_key=KEY) as (back_end, relay, _):
        async with open_client(relay.url, group="lobby", id="ivy") as ivy:
            await ivy.join("vip")
            # The back end removes it from that group (and it stays in the other).
            answer = await call(relay.port, "DELETE", "/api/groups/vip/members/ivy")
            assert answer.status == 204, answer
            await back_end.wait_until(lambda: len(back_end.delivered) == 6)
            assert kinds(back_end.delivered) == [
                ("occupied", "lobby", None, None),
                ("join", "lobby", "ivy", None),
                ("occupied", "vip", None, None),
                ("join", "vip", "ivy", None),
                ("leave", "vip", "ivy", 4005),  # (removed from that group only)
                ("vacated", "vip", None, None),
            ]


async def test_a_member_replaced_by_its_id_leaves_with_4000_and_the_group_stays_occupied() -> None:
    async with back_end_and_relay() as (back_end, relay, _):
        first = await RawClient.open(relay.port, "/ws?id=dave&groupName=g")
        second = await RawClient.open(relay.port, "/ws?id=dave&groupName=g")
        await back_end.wait_until(lambda: len(back_end.delivered) == 4)
        assert kinds(back_end.delivered) == [
            ("occupied", "g", None, None),
            ("join", "g", "dave", None),
            ("leave", "g", "dave", 4000),
            ("join", "g", "dave", None),
        ]
        await first.aclose()
        await second.aclose()


async def test_a_churn_of_1000_members_goes_in_few_requests_each_event_once() -> None:
    members = 1000
    async with back_end_and_relay(webhook_interval=0.2) as (back_end, relay, _):
        started = trio.current_time()
        clients = [
            await RawClient.open(relay.port, f"/ws?id=m{n}&groupName=churn") for n in range(members)
        ]
        for client in clients:
            await client.aclose()
        total = 2 * members + 2
        await back_end.wait_until(lambda: len(back_end.delivered) >= total, within=30)
        took = trio.current_time() - started
        delivered = back_end.delivered
        assert len(delivered) == total
        assert len({e.id for e in delivered}) == total  # every event exactly once
        per_type = Counter(e.type for e in delivered)
        assert per_type == {"join": members, "leave": members, "occupied": 1, "vacated": 1}
        assert {e.member for e in delivered if e.type == "join"} == {
            f"m{n}" for n in range(members)
        }
        # At most one request per interval (and bodies of up to 1000 events).
        assert len(back_end.requests) <= took / 0.2 + 2, (len(back_end.requests), took)
        assert len(back_end.requests) >= 3  # (2002 events > 2 bodies of 1000)
        print(f"churn: {total} events in {len(back_end.requests)} requests, {took:.2f}s")


async def test_a_500_is_retried_with_the_same_event_ids() -> None:
    async with back_end_and_relay() as (back_end, relay, _):
        back_end.answers = [500, 503]
        client = await RawClient.open(relay.port, "/ws?id=erin&groupName=g")
        await back_end.wait_until(lambda: len(back_end.delivered) == 2)
        assert [r.status for r in back_end.requests] == [500, 503, 200]
        bodies = [decode_body(r.body) for r in back_end.requests]
        ids = [[e.id for e in body.events] for body in bodies]
        assert ids[0] == ids[1] == ids[2]
        # Each attempt is signed afresh; all are good.
        assert all(r.bad_signature is None for r in back_end.requests)
        figures = relay.counters
        endpoint = endpoint_label(back_end.url)
        await eventually(lambda: figures.webhook_requests[endpoint, "sent"] == 1)
        assert figures.webhook_requests[endpoint, "retried"] == 2
        assert figures.webhook_requests[endpoint, "sent"] == 1
        assert figures.webhook_events[endpoint, "sent"] == 2
        assert figures.webhook_events[endpoint, "retried"] == 4
        await client.aclose()


async def test_a_back_end_that_does_not_answer_is_retried_and_never_holds_members_up() -> None:
    async with back_end_and_relay(webhook_timeout=0.2) as (back_end, relay, _):
        back_end.hold = True  # (answers nothing until released)
        alice = await RawClient.open(relay.port, "/ws?id=alice&groupName=g")
        await back_end.wait_until(lambda: back_end.arrived == 1)
        bob = await RawClient.open(relay.port, "/ws?id=bob&groupName=g")
        # The back end hangs; the members do not wait for it.
        await alice.send_frame(OP_TEXT, b"hello")
        with trio.fail_after(1):
            assert await bob.recv_message() == (OP_TEXT, b"hello")
        # No answer within webhook_timeout: the same batch again.
        await back_end.wait_until(lambda: back_end.arrived == 2, within=5)
        back_end.release()
        await back_end.wait_until(lambda: {e.member for e in back_end.delivered} >= {"bob"})
        bodies = [decode_body(r.body).events for r in back_end.requests]
        first_ids = [e.id for e in bodies[0]]
        assert [e.id for e in bodies[1]] == first_ids
        # At least once: the back end may hold a batch twice, and de-duplicates by id.
        unique = {e.id: e for e in back_end.delivered}
        assert kinds(list(unique.values())) == [
            ("occupied", "g", None, None),
            ("join", "g", "alice", None),
            ("join", "g", "bob", None),
        ]
        endpoint = endpoint_label(back_end.url)
        assert relay.counters.webhook_requests[endpoint, "retried"] >= 1
        await alice.aclose()
        await bob.aclose()


async def test_a_back_end_that_refuses_with_a_4xx_is_not_retried_and_the_drop_is_counted() -> None:
    with log_lines("trio_wsproxy.webhooks") as logged:
        async with back_end_and_relay() as (back_end, relay, _):
            back_end.answers = [400]
            client = await RawClient.open(relay.port, "/ws?id=fay&groupName=g")
            await back_end.wait_until(lambda: len(back_end.requests) == 1)
            await client.aclose()
            await back_end.wait_until(lambda: len(back_end.delivered) == 2)
            assert [e.type for e in back_end.delivered] == ["leave", "vacated"]
            endpoint = endpoint_label(back_end.url)
            await eventually(lambda: relay.counters.webhook_events[endpoint, "refused"] == 2)
            assert relay.counters.webhook_requests[endpoint, "refused"] == 1
        await logged.wait_for("answered 400 to 2 events: dropped", within=1)


async def test_beyond_the_bound_events_are_dropped_counted_and_logged() -> None:
    with log_lines("trio_wsproxy.webhooks") as logged:
        async with back_end_and_relay(webhook_queue=5) as (back_end, relay, _):
            back_end.hold = True
            first = await RawClient.open(relay.port, "/ws?id=first&groupName=g")
            await back_end.wait_until(lambda: back_end.arrived == 1)  # (2 events in flight)
            clients = [
                await RawClient.open(relay.port, f"/ws?id=c{n}&groupName=g") for n in range(10)
            ]
            endpoint = endpoint_label(back_end.url)
            assert relay.counters.webhook_events[endpoint, "queue_full"] == 5
            assert relay.webhooks is not None and relay.webhooks.held == 2 + 5
            back_end.release()
            await back_end.wait_until(lambda: len(back_end.delivered) == 7)
            assert [e.member for e in back_end.delivered[2:]] == [f"c{n}" for n in range(5)]
            assert logged.count("dropping new events until there is room") == 1
            # (Said once the queue had room again: the next event queued.)
            await clients[0].aclose()
            await logged.wait_for("5 events dropped while the queue was full", within=1)
            for client in [first, *clients]:
                await client.aclose()


async def test_a_relay_that_stops_tells_its_members_leaves_first() -> None:
    async with WebhookBackEnd().running() as back_end:
        config = RelayConfig(
            port=0, webhook_url=back_end.url, webhook_secret=SECRET, webhook_interval=0.05,
            close_timeout=0.5,
        )  # fmt: skip
        async with trio.open_nursery() as relay_nursery:
            relay = await relay_nursery.start(serve_relay, config)
            client = await RawClient.open(relay.port, "/ws?id=gus&groupName=g")
            await back_end.wait_until(lambda: len(back_end.delivered) == 2)
            relay_nursery.cancel_scope.cancel()
        # Told before serve_relay returned:
        assert kinds(back_end.delivered)[2:] == [
            ("leave", "g", "gus", 1001),
            ("vacated", "g", None, None),
        ]
        await client.aclose()


async def test_the_metrics_show_the_webhooks_per_endpoint() -> None:
    from httpapi import ApiClient

    async with back_end_and_relay() as (back_end, relay, _):
        client = await RawClient.open(relay.port, "/ws?id=hal&groupName=g")
        await back_end.wait_until(lambda: len(back_end.delivered) == 2)
        endpoint = endpoint_label(back_end.url)
        await eventually(lambda: relay.counters.webhook_events[endpoint, "sent"] == 2)
        api = await ApiClient.open(relay.port)
        text = (await api.call("GET", "/metrics", auth=False)).body.decode()
        await api.aclose()
        endpoint = endpoint_label(back_end.url)
        assert (
            f'trio_wsproxy_webhook_events_total{{endpoint="{endpoint}",outcome="sent"}} 2.0' in text
        )
        assert (
            f'trio_wsproxy_webhook_requests_total{{endpoint="{endpoint}",outcome="sent"}}' in text
        )
        await client.aclose()
