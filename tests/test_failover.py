"""Client failover: one member, several relay URLs, over real sockets and real relays.

A member given several relay URLs joins through the first that answers and, when its
connection drops, moves on to the next one — round robin, with the backoff between whole
rounds only — keeping one id on every relay.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs
import pytest
import trio

from relaynode import RestartableRelay as Node
from trio_wsproxy import RelayConfig, open_relay
from trio_wsproxy.client.client import (
    Client,
    ClientConfig,
    ClosedByRelay,
    ConnectError,
    HandshakeRefused,
    connection_urls,
    open_client,
)

GROUP = "group_1"
# Reconnect at once and give up fast, so that each test takes well under a second.
FAST = ClientConfig(
    connect_timeout=1, reconnect_min_delay=0.01, reconnect_max_delay=0.05, send_timeout=1
)
CLIENT_LOGGER = "trio_wsproxy.client"


async def started_nodes(nursery: trio.Nursery, count: int) -> list[Node]:
    nodes = [Node(nursery) for _ in range(count)]
    for node in nodes:
        await node.start()
    return nodes


async def dead_url() -> str:
    """The URL of a port that was free a moment ago and where nothing listens now."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    return f"ws://127.0.0.1:{port}/ws"


def arrivals() -> tuple[Callable[[Client], None], trio.MemoryReceiveChannel[str]]:
    """An ``on_connect`` hook and the channel where it puts the URL of each connection.

    The relay counts a member before the member has read the relay's handshake answer,
    so ``wait_members`` alone does not say that the client knows where it is yet."""
    send, receive = trio.open_memory_channel[str](100)
    return (lambda client: send.send_nowait(client.url)), receive


def failover_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == CLIENT_LOGGER and record.getMessage().startswith("failed over")
    ]


# -- one id and one group for every URL, without sockets ------------------------------------


def test_every_url_gets_the_same_id_and_group() -> None:
    urls, member_id, group = connection_urls(
        ["ws://a:1/ws", "wss://b:2/ws?token=t", "ws://c:3/ws?id=me"], group="g"
    )
    assert (member_id, group) == ("me", "g")  # the id in one URL applies to all
    assert urls == (
        "ws://a:1/ws?id=me&groupName=g",
        "wss://b:2/ws?id=me&groupName=g&token=t",
        "ws://c:3/ws?id=me&groupName=g",
    )
    urls, member_id, _ = connection_urls(("ws://a:1/ws", "ws://b:2/ws"), group="g")
    assert all(f"id={member_id}&" in url for url in urls)  # one fresh id, not one per URL


@pytest.mark.parametrize(
    ("urls", "keywords", "message"),
    [
        (["ws://a/ws?id=x&groupName=g", "ws://b/ws?id=y&groupName=g"], {}, "different ids"),
        (["ws://a/ws?groupName=g", "ws://b/ws?groupName=h"], {}, "different groupNames"),
        (["ws://a/ws", "ws://b/ws?id=y"], {"group": "g", "id": "x"}, "'ws://b/ws\\?id=y'.*contra"),
        (["ws://a/ws", "http://b/ws"], {"group": "g"}, "'http://b/ws'.*ws:// or wss://"),
        ([], {"group": "g"}, "no relay URL"),
    ],
)
def test_urls_that_do_not_name_one_member_are_refused(
    urls: list[str], keywords: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        connection_urls(urls, **keywords)


async def test_open_client_refuses_urls_with_contradicting_ids_before_connecting() -> None:
    with trio.fail_after(2):
        async with open_relay(RelayConfig(port=0)) as relay:
            urls = [f"{relay.url}?id=alice&groupName={GROUP}", f"{relay.url}?id=bob"]
            with pytest.raises(ValueError, match="different ids") as caught:
                async with open_client(urls):
                    pytest.fail("connected with two ids")
            assert "'alice'" in str(caught.value) and "'bob'" in str(caught.value)
            assert relay.stats.members == 0


# -- connecting ---------------------------------------------------------------------------


async def test_the_first_reachable_url_wins_when_the_first_is_dead(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=CLIENT_LOGGER)
    with trio.fail_after(2):
        async with open_relay(RelayConfig(port=0)) as relay:
            dead = await dead_url()
            async with open_client([dead, relay.url], group=GROUP, config=FAST) as client:
                await relay.wait_members(1, GROUP)
                assert client.url == client.urls[1]
                assert client.urls == (
                    f"{dead}?id={client.id}&groupName={GROUP}",
                    f"{relay.url}?id={client.id}&groupName={GROUP}",
                )
                assert client.stats.connects == 1
    assert failover_lines(caplog) == []  # joining is not failing over


async def test_when_every_url_is_dead_the_error_names_each_one_and_why() -> None:
    dead = [await dead_url(), await dead_url()]
    with trio.fail_after(2):
        with pytest.raises(ConnectError) as caught:
            async with open_client(dead, group=GROUP, config=FAST):
                pytest.fail("connected to closed ports")
    message = str(caught.value)
    assert message.startswith("could not connect to any of the 2 relay URLs: ")
    for url in dead:
        assert f"could not connect to {url}?id=" in message
    assert [failure.url.split("?")[0] for failure in caught.value.failures] == dead
    assert all("refused" in str(failure).lower() for failure in caught.value.failures)


async def test_a_single_str_url_works_as_before() -> None:
    with trio.fail_after(2):
        async with open_relay(RelayConfig(port=0)) as relay:
            async with (
                open_client(relay.url, group=GROUP, id="solo", config=FAST) as client,
                open_client([relay.url], group=GROUP, config=FAST) as peer,
            ):
                assert client.urls == (client.url,) == (f"{relay.url}?id=solo&groupName={GROUP}",)
                await relay.wait_members(2, GROUP)
                async with peer.subscribe(str) as inbox:
                    await client.send("one URL is enough")
                    assert (await inbox.receive()).value == "one URL is enough"
        dead = await dead_url()
        with pytest.raises(ConnectError) as caught:
            async with open_client(dead, group=GROUP, config=FAST):
                pytest.fail("connected to a closed port")
        assert str(caught.value).startswith(f"could not connect to {dead}?id=")
        assert caught.value.failures == ()


async def test_a_relay_that_refuses_the_member_for_good_is_not_skipped() -> None:
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            picky, fine = Node(nursery), Node(nursery)
            await picky.start(max_id_length=4)
            await fine.start()
            with pytest.raises(HandshakeRefused) as caught:
                async with open_client([picky.url, fine.url], group=GROUP, id="too-long"):
                    pytest.fail("joined under an id one node of the cluster refuses")
            assert caught.value.status_code == 400
            assert caught.value.url.startswith(picky.url)
            assert fine.relay is not None and fine.relay.stats.members == 0
            nursery.cancel_scope.cancel()


# -- failing over ---------------------------------------------------------------------------


async def test_after_its_relay_stops_the_client_fails_over_and_messages_reach_a_peer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=CLIENT_LOGGER)
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            a, b = await started_nodes(nursery, 2)
            assert b.relay is not None
            hook, connected_to = arrivals()
            async with (
                open_client(
                    [a.url, b.url], group=GROUP, id="mover", config=FAST, on_connect=hook
                ) as mover,
                open_client(b.url, group=GROUP, config=FAST) as peer,
            ):
                assert await connected_to.receive() == mover.urls[0]
                await a.stop()
                assert await connected_to.receive() == f"{b.url}?id=mover&groupName={GROUP}"
                assert mover.url == mover.urls[1]
                await b.relay.wait_members(2, GROUP)
                assert mover.id == "mover" and mover.stats.connects == 2
                async with peer.subscribe(str) as at_peer, mover.subscribe(str) as at_mover:
                    await mover.send("sent after failing over")
                    incoming = await at_peer.receive()
                    assert incoming.value == "sent after failing over"
                    await peer.send("and back")
                    assert (await at_mover.receive()).value == "and back"
            nursery.cancel_scope.cancel()
    assert failover_lines(caplog) == [f"failed over from {mover.urls[0]} to {mover.urls[1]}"]


async def test_reconnecting_starts_after_the_url_in_use_and_wraps_around(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=CLIENT_LOGGER)
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            a, b, c = await started_nodes(nursery, 3)
            hook, connected_to = arrivals()
            urls = [a.url, b.url, c.url]
            async with open_client(urls, group=GROUP, config=FAST, on_connect=hook) as client:
                landed_on = [client.urls.index(await connected_to.receive())]
                await a.stop()
                landed_on.append(client.urls.index(await connected_to.receive()))
                await a.start()  # A is back, and first in the list; yet after B comes C
                await b.stop()
                landed_on.append(client.urls.index(await connected_to.receive()))
                await c.stop()
                landed_on.append(client.urls.index(await connected_to.receive()))
                assert landed_on == [0, 1, 2, 0]
                assert client.url == client.urls[0]
                assert client.stats.connects == 4
            nursery.cancel_scope.cancel()
    assert len(failover_lines(caplog)) == 3


async def test_one_backoff_per_round_and_each_url_once_per_round(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delay comes before each round, never between the URLs of one: failing over
    through a dead node to a live one costs no backoff."""
    delays: list[int] = []

    def no_wait(attempt: int, **policy: float) -> float:
        delays.append(attempt)
        return 0.0

    monkeypatch.setattr("trio_wsproxy.client.policy.reconnect_delay", no_wait)
    caplog.set_level(logging.WARNING, logger=CLIENT_LOGGER)
    config = attrs.evolve(FAST, max_reconnect_attempts=2)
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            a, c = await started_nodes(nursery, 2)
            dead = await dead_url()
            urls = [a.url, dead, c.url]
            hook, connected_to = arrivals()
            with pytest.raises(ConnectError) as caught:
                async with open_client(urls, group=GROUP, config=config, on_connect=hook) as client:
                    assert await connected_to.receive() == client.urls[0]
                    await a.stop()
                    assert await connected_to.receive() == client.urls[2]
                    assert delays == [0]  # one round: the dead URL, then C, no wait between
                    await c.stop()
                    await trio.sleep_forever()
            nursery.cancel_scope.cancel()
    assert delays == [0, 0, 1]  # the failover round, then two failed rounds
    tried = [
        record.getMessage().split("could not connect to ")[1].split("?")[0]
        for record in caplog.records
        if record.getMessage().startswith("reconnect attempt")
    ]
    # Each round starts after C, the URL last in use, and tries every URL once.
    assert tried == [dead, *[a.url, dead, c.url] * 2]
    assert str(caught.value).startswith("gave up reconnecting after 2 attempts at each of the 3")
    assert [failure.url for failure in caught.value.failures] == [
        client.urls[0],
        client.urls[1],
        client.urls[2],
    ]


async def test_a_member_replaced_on_its_relay_does_not_fail_over() -> None:
    """4000 means a newer connection with this id exists: moving to another node would
    fight it there, so the client stops as it does with one URL."""
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            a, b = await started_nodes(nursery, 2)
            assert a.relay is not None and b.relay is not None
            with pytest.raises(ClosedByRelay) as caught:
                async with open_client(
                    [a.url, b.url], group=GROUP, id="twin", config=FAST
                ) as older:
                    await a.relay.wait_members(1, GROUP)
                    async with open_client(a.url, group=GROUP, id="twin", config=FAST):
                        await trio.sleep_forever()
            assert caught.value.code == 4000
            assert older.stats.connects == 1
            assert b.relay.stats.members == 0
            nursery.cancel_scope.cancel()
