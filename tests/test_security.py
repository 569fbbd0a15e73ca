"""Who may join, limits, health and metrics: every refusal over real sockets."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
import trio_websocket as tw
from prometheus_client.parser import text_string_to_metric_families

from relayproc import start_relay
from trio_wsproxy import CloseCode, Relay, RelayConfig, open_relay
from trio_wsproxy.protocol.tokens import mint_token
from wsraw import OP_TEXT, RawClient

SECRET = "relay-secret-of-at-least-thirty-two-bytes"


async def http_get(port: int, target: str, headers: str = "") -> tuple[int, dict[str, str], bytes]:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    await client.send(f"GET {target} HTTP/1.1\r\nHost: relay\r\n{headers}\r\n".encode())
    try:
        return await client.read_response()
    finally:
        await client.aclose()


async def upgrade(port: int, target: str, extra: str = "") -> tuple[int, bytes, RawClient]:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    status, _headers, body = await client.handshake(target, extra)
    return status, body, client


# -- tokens --------------------------------------------------------------------------------


@pytest.mark.wsproxy_relay(token_secret=SECRET)
async def test_with_a_secret_every_connection_needs_a_valid_token(relay: Relay) -> None:
    good = mint_token(SECRET, "alice", ["lobby"], ttl=60)
    expired = mint_token(SECRET, "alice", ["lobby"], ttl=10, now=time.time() - 60)
    cases = [
        ("/ws?id=alice&groupName=lobby", "", 401, b"access token required"),
        ("/ws?id=alice&groupName=lobby&access_token=junk", "", 401, b"invalid access token"),
        (f"/ws?id=alice&groupName=lobby&access_token={expired}", "", 401, b"expired"),
        (f"/ws?id=bob&groupName=lobby&access_token={good}", "", 403, b"another id"),
        (f"/ws?id=alice&groupName=kitchen&access_token={good}", "", 403, b"this group"),
    ]
    for target, extra, status, words in cases:
        got, body, client = await upgrade(relay.port, target, extra)
        await client.aclose()
        assert (got, words in body) == (status, True), (target, got, body)
    got, _body, in_query = await upgrade(
        relay.port, f"/ws?id=alice&groupName=lobby&access_token={good}"
    )
    assert got == 101
    got, _body, _in_header = await upgrade(
        relay.port, "/ws?id=alice&groupName=lobby", f"Authorization: Bearer {good}\r\n"
    )
    assert got == 101
    # The header connection took the id over: the query one is replaced.
    assert (await in_query.expect_close())[0] == CloseCode.REPLACED


@pytest.mark.wsproxy_relay(token_secret=SECRET)
async def test_only_a_token_holder_can_take_an_id_over(relay: Relay) -> None:
    token = mint_token(SECRET, "alice", ["lobby"], ttl=60)
    status, _, alice = await upgrade(
        relay.port, f"/ws?id=alice&groupName=lobby&access_token={token}"
    )
    assert status == 101
    mallory = mint_token(SECRET, "mallory", ["lobby"], ttl=60)
    status, _, _ = await upgrade(relay.port, f"/ws?id=alice&groupName=lobby&access_token={mallory}")
    assert status == 403
    with trio.fail_after(5):
        await relay.wait_members(1, "lobby")
    await alice.send_frame(OP_TEXT, b"still mine")


async def test_tokens_and_secrets_never_reach_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    caplog.set_level(logging.DEBUG, logger="trio_wsproxy")
    token = mint_token(SECRET, "alice", ["lobby"], ttl=60)
    async with open_relay(RelayConfig(port=0, token_secret_file=str(secret_file))) as relay:
        assert SECRET not in repr(relay.config)
        for target in (
            f"/ws?id=alice&groupName=lobby&access_token={token}",
            f"/ws?id=bob&groupName=lobby&access_token={token}",
            f"/ws?id=alice&groupName=lobby&access_token={token[:-3]}abc",
        ):
            _status, _body, client = await upgrade(relay.port, target)
            await client.aclose()
    text = caplog.text + repr([r.__dict__ for r in caplog.records])
    assert "refused" in text
    assert token not in text and token[:-3] not in text and SECRET not in text


def test_the_token_command_mints_what_the_relay_accepts(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    result = subprocess.run(
        [sys.executable, "-m", "trio_wsproxy", "token", "--secret-file", str(secret_file),
         "--id", "alice", "--group", "game-*", "--ttl", "1h"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    from trio_wsproxy.protocol.tokens import check_token

    token = result.stdout.strip()
    assert check_token(token, SECRET, "alice", "game-3") is None
    assert check_token(token, SECRET, "alice", "lobby") is not None


# -- origins -------------------------------------------------------------------------------


@pytest.mark.wsproxy_relay(allowed_origins=("https://chat.example",))
async def test_browsers_from_other_origins_are_refused(relay: Relay) -> None:
    target = "/ws?id=a&groupName=g"
    status, body, _ = await upgrade(relay.port, target, "Origin: https://evil.example\r\n")
    assert (status, body) == (403, b"origin not allowed\n")
    allowed = await upgrade(relay.port, target, "Origin: https://chat.example\r\n")
    assert allowed[0] == 101
    not_a_browser = await upgrade(relay.port, "/ws?id=b&groupName=g")
    assert not_a_browser[0] == 101


# -- limits --------------------------------------------------------------------------------


@pytest.mark.wsproxy_relay(max_members=2)
async def test_a_full_relay_refuses_with_503_but_lets_an_id_reconnect(relay: Relay) -> None:
    members = [
        await upgrade(relay.port, f"/ws?id={m}&groupName={g}")
        for m, g in (("a", "g1"), ("b", "g2"))
    ]
    assert [status for status, _, _ in members] == [101, 101]
    with trio.fail_after(5):
        await relay.wait_members(2, None)
    status, body, _ = await upgrade(relay.port, "/ws?id=c&groupName=g1")
    assert (status, body) == (503, b"relay full: 2 members\n")
    replacement = await upgrade(relay.port, "/ws?id=a&groupName=g1")
    assert replacement[0] == 101  # a member reconnecting under its own id adds nobody


@pytest.mark.wsproxy_relay(max_group_members=2, max_groups=2)
async def test_group_size_and_group_count_limits(relay: Relay) -> None:
    members = [
        await upgrade(relay.port, target)
        for target in ("/ws?id=a&groupName=g1", "/ws?id=b&groupName=g1", "/ws?id=c&groupName=g2")
    ]
    assert [status for status, _, _ in members] == [101, 101, 101]
    with trio.fail_after(5):
        await relay.wait_members(3, None)
    status, body, _ = await upgrade(relay.port, "/ws?id=d&groupName=g1")
    assert (status, body) == (503, b"group full: 2 members\n")
    status, body, _ = await upgrade(relay.port, "/ws?id=d&groupName=g3")
    assert (status, body) == (503, b"relay full: 2 groups\n")
    late = await upgrade(relay.port, "/ws?id=d&groupName=g2")
    assert late[0] == 101


@pytest.mark.wsproxy_relay(max_message_rate=50)
async def test_a_flooding_member_is_read_no_faster_than_its_rate(relay: Relay) -> None:
    async with (
        tw.open_websocket_url(f"{relay.url}?id=flood&groupName=g") as flood,
        tw.open_websocket_url(f"{relay.url}?id=calm&groupName=g") as calm,
        tw.open_websocket_url(f"{relay.url}?id=sink&groupName=g") as sink,
    ):
        with trio.fail_after(5):
            await relay.wait_members(3, "g")
        start = trio.current_time()
        for n in range(150):
            await flood.send_message(f"flood {n}")
        await calm.send_message("calm")
        got = []
        with trio.fail_after(10):
            while len(got) < 151:
                got.append(await sink.get_message())
        elapsed = trio.current_time() - start
        # 150 messages at 50/s with a one-second burst: at least about two seconds.
        assert elapsed > 1.8
        assert [m for m in got if m.startswith("flood")] == [f"flood {n}" for n in range(150)]
        # The calm member was not held up behind the paced flood: its message, sent after
        # all 150, overtook most of them.
        assert got.index("calm") < 120


# -- health and metrics --------------------------------------------------------------------


async def test_healthz_answers_ok(relay: Relay) -> None:
    status, _headers, body = await http_get(relay.port, "/healthz")
    assert (status, body) == (200, b"ok\n")


async def test_metrics_parse_as_prometheus_text_and_count_what_happened(relay: Relay) -> None:
    async with (
        tw.open_websocket_url(f"{relay.url}?id=a&groupName=g") as a,
        tw.open_websocket_url(f"{relay.url}?id=b&groupName=g") as b,
    ):
        with trio.fail_after(5):
            await relay.wait_members(2, "g")
        await a.send_message("12345")
        assert await b.get_message() == "12345"
        await http_get(relay.port, "/ws?groupName=g", "Upgrade: websocket\r\n")  # a refusal
        status, headers, body = await http_get(relay.port, "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    assert samples[("trio_wsproxy_members", ())] == 2
    assert samples[("trio_wsproxy_groups", ())] == 1
    assert samples[("trio_wsproxy_messages_total", ())] == 1
    assert samples[("trio_wsproxy_bytes_total", ())] == 5
    assert samples[("trio_wsproxy_deliveries_total", ())] == 1
    assert any(
        name == "trio_wsproxy_refusals_total" and value >= 1 for (name, _), value in samples.items()
    )
    assert ("trio_wsproxy_backplane_up", (("kind", "LocalRegistry"),)) in samples


@pytest.mark.wsproxy_relay(metrics_path=None, healthz_path=None)
async def test_probes_can_be_turned_off(relay: Relay) -> None:
    assert (await http_get(relay.port, "/metrics"))[0] == 404
    assert (await http_get(relay.port, "/healthz"))[0] == 404


async def test_json_logs_carry_member_group_remote_and_reason() -> None:
    process, _url, port = await start_relay("--log-level", "info", "--log-format", "json")
    assert process.stderr is not None
    async with tw.open_websocket_url(f"ws://127.0.0.1:{port}/ws?id=alice&groupName=lobby"):
        pass
    await upgrade(port, "/ws?id=&groupName=lobby")
    process.terminate()
    err = b""
    with trio.fail_after(10):
        while chunk := await process.stderr.receive_some(65536):
            err += chunk
        await process.wait()
    records = [json.loads(text) for text in err.decode().splitlines()]
    joined = [r for r in records if r["message"].endswith("joined")]
    assert joined and joined[0]["member"] == "alice" and joined[0]["group"] == "lobby"
    assert joined[0]["remote"].startswith("127.0.0.1:")
    refused = [r for r in records if r["message"].startswith("refused")]
    assert refused and refused[0]["status"] == 400 and "'id'" in refused[0]["reason"]


@pytest.mark.wsproxy_relay(max_members=1)
async def test_simultaneous_joins_never_exceed_the_limit(relay: Relay) -> None:
    # Both requests arrive together: a member joins before its 101 is sent, so exactly
    # one is upgraded and the other is refused with 503.
    for _ in range(3):
        first = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
        second = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
        results: dict[str, tuple[int, dict[str, str], bytes]] = {}

        async def knock(name: str, client: RawClient, results: dict = results) -> None:
            results[name] = await client.handshake(f"/ws?id={name}&groupName=g")

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(knock, "one", first)
                nursery.start_soon(knock, "two", second)
            admitted = [
                (n, c) for n, c in (("one", first), ("two", second)) if results[n][0] == 101
            ]
            assert len(admitted) == 1, results
            refused = [results[n][0] for n in results if results[n][0] != 101]
            assert refused == [503]
            assert relay.stats.members == 1
        await first.aclose()
        await second.aclose()
        await relay.wait_members(0, None)


@pytest.mark.wsproxy_relay(max_connections_per_address_rate=0.1)
async def test_a_connection_flood_from_one_address_is_refused_429_while_others_connect(
    relay: Relay,
) -> None:
    async def upgrade(source: str, n: int) -> tuple[int, dict[str, str], bytes]:
        stream = await trio.open_tcp_stream("127.0.0.1", relay.port, local_address=source)
        client = RawClient(stream)
        answer = await client.handshake(f"/ws?id=m{source}-{n}&groupName=g")
        opened.append(client)
        return answer

    opened: list[RawClient] = []
    with trio.fail_after(10):
        # One every 10 s: the first fits, the next is refused, with when to retry.
        assert (await upgrade("127.0.0.1", 0))[0] == 101
        status, headers, body = await upgrade("127.0.0.1", 1)
        assert status == 429 and 1 <= int(headers["retry-after"]) <= 10
        assert body.strip() == b"too many new connections from this address: retry later"
        # Another address is not held up by it.
        assert (await upgrade("127.0.0.2", 0))[0] == 101
        assert relay.counters.refusals["address_rate", 429] == 1
    for client in opened:
        await client.aclose()


def test_the_addresses_remembered_are_only_those_that_could_be_refused() -> None:
    from trio_wsproxy.relay.addresses import AddressLimiter

    limiter = AddressLimiter(rate=10)
    for n in range(5000):
        assert limiter.admit(f"a{n}", now=0.0) == 0
    assert len(limiter) == 5000
    # A second later their buckets are full again (they would be refused nothing): the
    # sweep that comes as the table doubles forgets them, and keeps the new ones.
    for n in range(4000):
        assert limiter.admit(f"b{n}", now=1.0) == 0
    assert len(limiter) == 4000
