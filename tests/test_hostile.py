"""What a hostile client sends never forges a log line nor grows the relay's metrics
(real sockets; the relay as a process where its logs are what is checked)."""

from __future__ import annotations

import struct

import trio
from prometheus_client.parser import text_string_to_metric_families

from relayproc import Output, start_relay
from trio_wsproxy import RelayConfig, open_relay
from wsraw import OP_CLOSE, RawClient

FORGED = "bye\n2026-12-01 00:00:00,000 ERROR trio_wsproxy.relay: Traceback (most recent call"


async def close_with(client: RawClient, code: int, reason: str = "") -> None:
    await client.send_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode())
    await client.expect_close()


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    await client.send(b"GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n")
    status, _headers, body = await client.read_response()
    await client.aclose()
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


async def test_a_close_reason_cannot_forge_a_log_line() -> None:
    process, _url, port = await start_relay("--log-level", "debug")
    assert process.stderr is not None
    log = Output()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.pump, process.stderr)
            client = await RawClient.open(port, "/ws?id=mallory&groupName=g")
            with trio.fail_after(10):
                await close_with(client, 4001, FORGED)
                await log.wait_for(r"closed by the member with 4001")
            process.terminate()
    finally:
        process.kill()
    lines = log.text.splitlines()
    assert not any(line.startswith("2026-12-01 00:00:00,000 ERROR") for line in lines), log.text
    assert any("bye\\n2026-12-01 00:00:00,000 ERROR" in line for line in lines)


async def test_codes_clients_choose_are_counted_apart_in_a_bounded_label_set() -> None:
    async with open_relay(RelayConfig(port=0, close_timeout=1)) as relay:
        with trio.fail_after(30):
            for code in [*range(4000, 4300), *range(3000, 3100), 1000, 1001, 4001]:
                client = await RawClient.open(relay.port, f"/ws?id=c{code}&groupName=g")
                await close_with(client, code)
                await client.aclose()
            await relay.wait_members(0)
        samples = await scrape(relay.port)
    client_closes = {
        dict(labels)["code"]: value
        for (name, labels), value in samples.items()
        if name == "trio_wsproxy_client_closes_total"
    }
    assert client_closes == {"4000-4999": 301, "3000-3999": 100, "1000": 1, "1001": 1}
    # A client closing with 4001 is not the relay closing a slow consumer.
    relay_closes = {
        dict(labels)["code"]
        for (name, labels), value in samples.items()
        if name == "trio_wsproxy_closes_total"
    }
    assert "4001" not in relay_closes
