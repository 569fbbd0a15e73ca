"""Redis Sentinel (``--backplane redis+sentinel://...``) against real Redis servers and
sentinels started by the test: discovery (a sentinel that is down skipped, the master's
role checked), a failover under traffic with every message accounted for (delivered, or
its member closed and told on reconnect that recovery is impossible: never a gap), a
stale master that comes back as a replica and is not followed, the sentinels all down,
and the URL's errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from loglines import LogLines
from sentinelset import SentinelSet, sentinel_set
from test_backplane import backplane, caught_up, cluster, join
from test_v1 import next_message, v1_member
from trio_wsproxy import CloseCode, RelayConfig
from trio_wsproxy.protocol import v1
from trio_wsproxy.protocol.sentinel_url import SentinelAddress
from wsraw import OP_TEXT, RawClient

HISTORY: dict[str, Any] = {"history_size": 10_000, "node_ttl": 2.0}


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    servers = sentinel_set(tmp_path)
    try:
        yield servers
    finally:
        servers.stop()


# -- the URL ------------------------------------------------------------------------------


def test_the_url_names_sentinels_a_service_and_the_masters_credentials() -> None:
    address = SentinelAddress.from_url("redis+sentinel://u:p%40ss@s1:1,s2,[::1]:3/main/2")
    assert address.sentinels == (("s1", 1), ("s2", 26379), ("::1", 3))
    assert (address.service, address.db, address.username, address.password) == (
        "main", 2, "u", "p@ss",
    )  # fmt: skip
    master = address.master("10.0.0.1", 6380)
    assert (master.host, master.port, master.db, master.password) == ("10.0.0.1", 6380, 2, "p@ss")
    assert "p@ss" not in repr(address)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://s1:26379", "names no service"),
        ("redis+sentinel://s1:26379/", "names no service"),
        ("redis+sentinel://s1:26379/main/x", "/SERVICE or /SERVICE/DB"),
        ("redis+sentinel://s1:26379/main/1/2", "/SERVICE or /SERVICE/DB"),
        ("redis+sentinel://s1:0/main", "bad sentinel port"),
        ("redis+sentinel://s1:http/main", "bad sentinel port"),
        ("redis+sentinel://s1,,s2/main", "empty sentinel address"),
        ("redis+sentinel://:26379/main", "without a host"),
        ("redis+sentinel://s1/main?x=1", "no query"),
    ],
)
def test_a_bad_sentinel_url_is_refused_saying_why(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        SentinelAddress.from_url(url)
    with pytest.raises(ValueError, match=says):
        RelayConfig(backplane=url)


# -- discovery ------------------------------------------------------------------------------


async def test_the_master_is_found_through_the_sentinels_skipping_one_that_is_down(
    sentinels: SentinelSet, prefix: str
) -> None:
    url = sentinels.url(dead_first=True)
    async with cluster(url, prefix, **HISTORY) as (a, b):
        with trio.fail_after(20):
            master = sentinels.redis[0].port
            assert backplane(a).up and backplane(a)._link.address.port == master
            alice, _ = await v1_member(a, "alice")
            bob, _ = await v1_member(b, "bob")
            await caught_up([a.port, b.port])
            await alice.send_frame(OP_TEXT, b"\nhello")
            _, header, payload = await next_message(bob)
            assert (header.sender, header.offset, payload) == ("alice", 1, b"hello")
        await alice.aclose()
        await bob.aclose()
