"""What a sender knows of its own messages when its connection is lost (docs/client.md,
"What a sender knows"), over real sockets against a real relay.

The relay never confirms a message to its sender. So when a connection ends other than
by the client's own close, the client reports every message it wrote on it
(``Disconnected.unconfirmed``) and the newest of them (``unconfirmed_messages``): among
them, always, the messages the relay never took — which the other members never get,
even when they recover with ``Resumed(recovered=True)``.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio

from redisserver import RedisServer
from test_backplane import cluster
from trio_wsproxy import CloseCode, Relay, Resumed
from trio_wsproxy.client.client import (
    Client,
    ClientConfig,
    Disconnected,
    Incoming,
    SentMessage,
    open_client,
)
from trio_wsproxy.client.sent import SentLog
from trio_wsproxy.testing import wait_for_member

# Reconnect fast, so that the tests stay quick.
FAST = ClientConfig(
    connect_timeout=2, reconnect_min_delay=0.02, reconnect_max_delay=0.1, send_timeout=5
)


@asynccontextmanager
async def losses(
    relay_url: str | list[str], member_id: str, config: ClientConfig = FAST
) -> AsyncIterator[tuple[Client, trio.MemoryReceiveChannel[Disconnected]]]:
    """A client of group g, with a channel of the Disconnected events it reports."""
    send, receive = trio.open_memory_channel[Disconnected](16)
    async with open_client(
        relay_url, group="g", id=member_id, config=config, on_disconnect=send.send
    ) as client:
        yield client, receive


def close(relay: Relay, *ids: str, code: int = CloseCode.BACKPLANE_UNAVAILABLE) -> None:
    """Close the sessions of ``ids`` from the relay's side, as its backplane does when it
    cannot guarantee delivery (4004), or with another code."""
    for session in list(relay.sessions):
        if session.id in ids:
            session.close(code, "closed by the test")


def values(report: Disconnected) -> list[object]:
    return [sent.value for sent in report.unconfirmed_messages]


async def texts_until(heard: trio.MemoryReceiveChannel[Incoming[str]], last: str) -> list[str]:
    """What arrives on ``heard`` up to and including ``last``."""
    got: list[str] = []
    while not got or got[-1] != last:
        got.append((await heard.receive()).value)
    return got


# The relay reads each member no faster than 2 messages a second (after a burst of 2),
# so that the test closes the sender while the relay has taken only the first ones.
@pytest.mark.wsproxy_relay(history_size=1000, max_message_rate=2)
async def test_a_sender_closed_with_4004_is_told_which_messages_may_not_have_been_taken(
    relay: Relay,
) -> None:
    """The finding, on one relay: the group's members are closed (4004) while the
    sender's last messages wait to be read. The receiver recovers (recovered=True,
    offsets without a gap) without them: they never entered the group. The sender's
    client reports every message written on the lost connection, those among them."""
    sent = [f"m{n}" for n in range(10)]
    with trio.fail_after(20):
        async with (
            open_client(relay.url, group="g", id="bob", config=FAST) as bob,
            bob.subscribe(str) as heard,
            bob.subscribe(Resumed) as resumes,
            losses(relay.url, "alice") as (alice, reports),
        ):
            await wait_for_member(alice, "bob")
            for text in sent:
                await alice.send(text)  # written in full, all ten
            first = [(await heard.receive()).value for _ in range(2)]
            assert first == ["m0", "m1"]
            close(relay, "alice", "bob")  # as a backplane outage closes them all
            report = await reports.receive()
            assert (report.code, report.reconnecting) == (4004, True)
            # Resumed: bob got back every message that reached the group.
            assert (await resumes.receive()).value.recovered is True
            await alice.send("after")  # on alice's next connection
            received = first + await texts_until(heard, "after")
    # The relay took m0, m1 (perhaps m2, read just before the close took effect); the
    # rest never got an offset, so no recovery brings them to bob...
    taken = received[:-1]
    assert taken in (sent[:2], sent[:3])
    # ...and the sender's client reported all ten, in order: it cannot tell which the
    # relay took, so none is confirmed. Every message bob never got is among them.
    assert report.unconfirmed == 10 and values(report) == sent
    assert set(sent) - set(taken) <= set(values(report))
    assert alice.stats.unconfirmed == 10
    # Each with when it was handed to the socket, in order.
    times = [message.sent_at for message in report.unconfirmed_messages]
    assert times == sorted(times)


async def test_each_loss_reports_what_was_written_on_that_connection_with_its_kind(
    relay: Relay,
) -> None:
    """A report covers the connection that was lost only, and says of each message what
    the application needs to send it again: its value and type, its recipient, a
    request's id, the request a reply answered."""
    config = attrs.evolve(FAST, unconfirmed_limit=5, unconfirmed_bytes=1000)
    with trio.fail_after(20):
        async with losses(relay.url, "bob") as (bob, bob_reports):

            @bob.on(str)
            async def answer(question: str, incoming: Incoming[str]) -> None:
                if incoming.wants_reply:
                    await incoming.reply(question.upper())

            async with losses(relay.url, "alice", config) as (alice, reports):
                await wait_for_member(alice, "bob")
                await alice.send("first")  # one more than the report keeps
                await alice.send(b"\x00" * 5000)  # over unconfirmed_bytes: counted only
                await alice.send_to("bob", "just for bob")
                assert await alice.request("question", str, to="bob") == "QUESTION"
                await alice.send(b"bytes")
                await alice.send(["a", "b"], as_type=list[str])
                await alice.send("last")
                close(relay, "alice", "bob", code=CloseCode.INTERNAL_ERROR)  # 1011
                report = await reports.receive()
                bob_report = await bob_reports.receive()
                # The next connection's report has that connection's messages only.
                await alice.send("on the next connection")
                close(relay, "alice", code=CloseCode.GOING_AWAY)  # 1001
                next_report = await reports.receive()

    assert (report.code, report.unconfirmed) == (1011, 7)
    kept = report.unconfirmed_messages
    assert [message.value for message in kept] == [
        "just for bob", "question", b"bytes", ["a", "b"], "last"
    ]  # fmt: skip
    direct, request, binary, typed, _ = kept
    assert direct.to == "bob" and request.to == "bob" and binary.to is None
    assert request.request_id is not None and direct.request_id is None
    assert typed.as_type == list[str] and binary.size == 5
    assert not any(message.streamed for message in kept)
    # bob's answer went to alice only (v1), and says which request it answered.
    assert bob_report.unconfirmed == 1
    (reply,) = bob_report.unconfirmed_messages
    assert (reply.value, reply.to, reply.reply_to) == ("QUESTION", "alice", request.request_id)
    assert (next_report.code, next_report.unconfirmed) == (1001, 1)
    assert values(next_report) == ["on the next connection"]
    assert alice.stats.unconfirmed == 8


async def test_a_streamed_message_is_reported_without_its_bytes(relay: Relay) -> None:
    with trio.fail_after(20):
        async with losses(relay.url, "alice") as (alice, reports):
            assert await alice.send_stream([b"x" * 1000] * 3, announce="file.bin") == 3000
            close(relay, "alice")
            report = await reports.receive()
    announcement, stream = report.unconfirmed_messages
    assert (announcement.value, announcement.streamed) == ("file.bin", False)
    assert (stream.value, stream.streamed, stream.size) == (None, True, 3000)


async def test_closing_the_client_reports_nothing(relay: Relay) -> None:
    """The client's own close is no loss: the relay reads what came before the close
    frame before it answers it. (on_disconnect is for connections lost.)"""
    reports: list[Disconnected] = []
    with trio.fail_after(10):
        async with open_client(
            relay.url, group="g", config=FAST, on_disconnect=reports.append
        ) as c:
            await c.send("bye")
    assert reports == [] and c.stats.unconfirmed == 0


def test_the_log_keeps_the_newest_messages_within_its_bounds() -> None:
    log = SentLog(3, 100)
    for n in range(5):
        log.add(f"m{n}", size=10)
    assert log.count == 5 and [m.value for m in log.messages()] == ["m2", "m3", "m4"]
    log.add(b"big", size=101)  # larger than the bound: counted, never kept
    log.add(b"fills it", size=90)  # the oldest go until the bytes fit
    assert log.count == 7 and [m.value for m in log.messages()] == ["m4", b"fills it"]
    log.add(None, size=10_000, streamed=True)  # a stream holds no bytes here
    assert [m.value for m in log.messages()] == ["m4", b"fills it", None]
    nothing = SentLog(0, 100)
    nothing.add("m", size=1)
    assert nothing.count == 1 and nothing.messages() == ()
    # A connection lost before it could be reported on (no welcome) joins the report.
    later = SentLog(3, 100)
    later.add("n0", size=10)
    log.extend(later)
    assert log.count == 9 and [m.value for m in log.messages()] == [b"fills it", None, "n0"]
    assert all(isinstance(m, SentMessage) for m in log.messages())


# -- the finding itself, on a cluster: Redis stops answering -----------------------------


async def test_on_a_cluster_the_sender_reports_what_a_redis_outage_kept_from_the_history(
    private_redis: RedisServer, prefix: str
) -> None:
    """Redis stops answering (paused) while alice sends to a history-keeping group: the
    nodes close the members (4004). bob recovers on his return (recovered=True), and
    whatever alice wrote that never entered the history is missing at bob: every such
    message is in the report of alice's lost connection."""
    process = private_redis.process
    assert process is not None
    total = 300
    config = attrs.evolve(FAST, unconfirmed_limit=total, send_timeout=30)
    try:
        async with cluster(private_redis.url, prefix, history_size=10_000, node_ttl=1.0) as (
            a,
            b,
        ):
            with trio.fail_after(60):
                async with (
                    open_client(b.url, group="g", id="bob", config=FAST) as bob,
                    bob.subscribe(str) as heard,
                    bob.subscribe(Resumed) as resumes,
                    losses(a.url, "alice", config) as (alice, reports),
                ):
                    await wait_for_member(alice, "bob")
                    for n in range(50):
                        await alice.send(str(n))
                    before = [(await heard.receive()).value for _ in range(50)]
                    assert before == [str(n) for n in range(50)]
                    process.send_signal(signal.SIGSTOP)
                    # Written on alice's connection (or, once the node gave up on Redis,
                    # on her next one): her node hands them to a Redis that does not answer.
                    for n in range(50, total):
                        await alice.send(str(n))
                    report = await reports.receive()
                    process.send_signal(signal.SIGCONT)
                    resumed = (await resumes.receive()).value
                    await alice.send("after")
                    received = before + (await texts_until(heard, "after"))[:-1]
    finally:
        process.send_signal(signal.SIGCONT)
    assert report.code == CloseCode.BACKPLANE_UNAVAILABLE
    assert resumed.recovered is True
    # bob got alice's messages in order, each once: the ones that entered the history.
    numbers = [int(text) for text in received]
    assert numbers == sorted(set(numbers))
    # The report is every message alice wrote on the lost connection, from her first
    # on; the ones bob never got are all among them.
    written = [int(str(value)) for value in values(report)]
    assert written == list(range(report.unconfirmed))
    missing = set(range(total)) - set(numbers)
    assert missing <= set(written), sorted(missing - set(written))
