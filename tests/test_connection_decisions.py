"""The connection task's decisions, with a stand-in relay instead of a network: when the
client counts a connection as up and as down, which close codes bring it back and which
end it, how long it waits between rounds of attempts, which relay URL comes next, the
position a reconnect names to resume from, what it makes of a relay that answers
wrongly, and when a silent connection counts as dropped.

The end-to-end tests (test_client.py, test_client_v1.py) check this behaviour against a
real relay; these drive :class:`ConnectionTask` through its ``connect`` seam with a
:class:`StandInRelay` and :class:`ScriptedWebSocket`, on Trio's autojump clock, so that
every wait is named to the millisecond and none takes real time. The pure parts
(:mod:`trio_wsproxy.client.policy`) are specified in test_client_policy.py.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import pytest
import trio
import trio.testing

from trio_wsproxy.client.config import DEFAULT_RECONNECT_CODES, ClientConfig
from trio_wsproxy.client.connection import Closed, ConnectionEnded, Received
from trio_wsproxy.client.connection_task import ConnectionTask
from trio_wsproxy.client.dispatch import Dispatcher
from trio_wsproxy.client.errors import (
    ClientError,
    ClosedByRelay,
    ConnectError,
    HandshakeRefused,
)
from trio_wsproxy.client.incoming import BadMessage, BadMessageKind, Disconnected
from trio_wsproxy.client.link import Link
from trio_wsproxy.client.membership import MemberList
from trio_wsproxy.client.requests import PendingRequests
from trio_wsproxy.client.resumption import Resumed
from trio_wsproxy.client.stats import ClientStats
from trio_wsproxy.client.wire import DotnetRuntime
from trio_wsproxy.protocol.exceptions import raise_sole_error
from trio_wsproxy.protocol.typenames import TypeRegistry
from trio_wsproxy.protocol.v1 import (
    SUBPROTOCOL,
    Position,
    Recovery,
    Welcome,
    encode_event,
    from_header,
)

URL = "ws://relay-a.test/ws?id=me&groupName=lobby"
URLS = (
    URL,
    "ws://relay-b.test/ws?id=me&groupName=lobby",
    "ws://relay-c.test/ws?id=me&groupName=lobby",
)
# No jitter, so that every wait can be named exactly.
STEADY = ClientConfig(reconnect_min_delay=0.5, reconnect_max_delay=4.0, reconnect_jitter=0.0)
# The codes a client reconnects after unless configured otherwise: the transient ones.
TRANSIENT = sorted(DEFAULT_RECONNECT_CODES)
# Codes that end the client: the relay meant it (1000, 4005), the client broke a rule
# (1002, 1007, 1008, 1009), a newer connection replaced it (4000), or no meaning known.
FINAL = [1000, 1002, 1007, 1008, 1009, 4000, 4005, 4999]
# Virtual seconds after which a stand-in client that has not stopped fails its test.
_A_DAY = 24 * 3600.0


# -- the stand-ins ------------------------------------------------------------------------


@attrs.frozen
class Close:
    """In a :class:`ScriptedWebSocket`'s script: the relay closes with ``code``."""

    code: int
    reason: str | None = None


class ScriptedWebSocket:
    """Stands in for :class:`~trio_wsproxy.client.connection.WebSocket`: what the relay
    says comes from a script (given, then :meth:`say` and :meth:`close`); what the
    client writes, pings and closes is recorded."""

    def __init__(
        self, *script: Received | Close, protocol: str | None = None, answers_pings: bool = True
    ) -> None:
        self.subprotocol = protocol
        self.answers_pings = answers_pings
        self.closed: Closed | None = None
        self.ended = trio.Event()
        self.message_lock = trio.StrictFIFOLock()
        self.written: list[str | bytes] = []
        self.pings = 0
        self._script_in, self._script = trio.open_memory_channel[Received | Close](math.inf)
        for item in script:
            self.say(item)

    def say(self, item: Received | Close) -> None:
        self._script_in.send_nowait(item)

    def close(self, code: int, reason: str | None = None) -> None:
        self.say(Close(code, reason))

    async def receive(self) -> Received:
        while self.closed is None:
            item = await self._script.receive()
            if not isinstance(item, Close):
                return item
            self._end(item.code, item.reason)
        raise ConnectionEnded(*self.closed)

    async def send_message(self, payload: str | bytes) -> None:
        await trio.lowlevel.checkpoint()
        if self.closed is not None:
            raise ConnectionEnded(*self.closed)
        self.written.append(payload)

    async def ping(self) -> None:
        self.pings += 1
        if self.answers_pings:
            await trio.lowlevel.checkpoint()
        else:
            await self.ended.wait()

    async def too_big(self) -> None:
        await trio.lowlevel.checkpoint()
        self._end(1009, "message too big")

    def _end(self, code: int, reason: str | None) -> None:
        if self.closed is None:
            self.closed = (code, reason)
            self.ended.set()


@attrs.frozen
class Attempt:
    """One connect attempt the task made: to which URL, and when."""

    url: str
    at: float

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def since(self) -> str | None:
        return parse_qs(urlsplit(self.url).query).get("since", [None])[-1]


class StandInRelay:
    """Stands in for :func:`~trio_wsproxy.client.connection.connect_and_serve`: each
    attempt takes the next outcome given, a :class:`ScriptedWebSocket` to serve or a
    :exc:`ConnectError` to raise; once none is left, every attempt fails — up to
    ``MAX_ATTEMPTS``, beyond which a client that should have stopped fails its test."""

    MAX_ATTEMPTS = 2000

    def __init__(self, *outcomes: ScriptedWebSocket | ConnectError) -> None:
        self.outcomes = collections.deque(outcomes)
        self.attempts: list[Attempt] = []

    def waits(self) -> list[float]:
        """The seconds between one attempt and the next."""
        times = [attempt.at for attempt in self.attempts]
        return [later - earlier for earlier, later in itertools.pairwise(times)]

    async def connect(
        self,
        url: str,
        *,
        config: ClientConfig,
        ssl_context: ssl.SSLContext | None,
        serve: Callable[[Any], Awaitable[Closed]],
    ) -> Closed:
        self.attempts.append(Attempt(url, trio.current_time()))
        if len(self.attempts) > self.MAX_ATTEMPTS:
            raise AssertionError(f"still reconnecting after {self.MAX_ATTEMPTS} attempts")
        await trio.lowlevel.checkpoint()
        if not self.outcomes:
            raise ConnectError(f"nothing listens at {url}", url=url)
        outcome = self.outcomes.popleft()
        if isinstance(outcome, ConnectError):
            raise outcome
        return await serve(outcome)


@attrs.frozen
class Up:
    """``on_connect`` was called: the client counted a connection as up."""

    url: str
    at: float
    members: frozenset[str]


class StandInClient:
    """A :class:`ConnectionTask` with the parts a client gives it, hooks that record what
    they are told, and a dispatcher running beside it as :class:`Client` runs one."""

    def __init__(
        self,
        relay: StandInRelay,
        *,
        urls: tuple[str, ...] = (URL,),
        config: ClientConfig = STEADY,
        since: Position | None = None,
    ) -> None:
        self.relay = relay
        self.stats = ClientStats()
        self.link = Link(config, self.stats)
        self.membership = MemberList("me")
        self.dispatcher = Dispatcher(
            types=TypeRegistry(), stats=self.stats, read_ahead=64, on_handler_error=None
        )
        #: What on_connect and on_disconnect were told, in order.
        self.reports: list[Up | Disconnected] = []
        self.bad: list[BadMessage] = []
        #: What handlers got: messages and events, in order.
        self.handled: list[object] = []
        self.ended_with: ClientError | None = None
        self.task = ConnectionTask(
            urls=urls,
            client_id="me",
            group="lobby",
            config=config,
            types=TypeRegistry(),
            ssl_context=None,
            stats=self.stats,
            link=self.link,
            dispatcher=self.dispatcher,
            requests=PendingRequests(),
            membership=self.membership,
            sender=_Unused(),
            runtime=DotnetRuntime(),
            reply_via=lambda member: _Unused(),
            on_connect=self._connected,
            on_disconnect=self.reports.append,
            on_bad_message=self.bad.append,
            since=since,
            connect=relay.connect,
        )

    def handle(self, *message_types: Any) -> None:
        for message_type in message_types:
            self.dispatcher.add_handler(message_type, self._handled)

    def _handled(self, value: object) -> None:
        self.handled.append(value)

    def _connected(self) -> None:
        self.reports.append(Up(self.task.url, trio.current_time(), self.membership.members))

    @property
    def disconnects(self) -> list[Disconnected]:
        return [report for report in self.reports if isinstance(report, Disconnected)]

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """What ``Client._run`` and ``open_client`` do: the task, with the dispatcher
        beside it; what ends it is raised on its own, not in an exception group. A task
        still running after a (virtual) day fails the test rather than hang it."""

        async def on_failure() -> None:
            pass

        try:
            with trio.fail_after(_A_DAY):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.dispatcher.run, on_failure)
                    try:
                        self.ended_with = await self.task.run(task_status)
                    finally:
                        self.dispatcher.stop_taking()
        except BaseExceptionGroup as group:
            raise_sole_error(group, ignore=(trio.Cancelled,))


class _Unused:
    async def send(
        self, value: object, *, as_type: Any = None, reply_to: str | None = None
    ) -> None:
        raise AssertionError("nothing here replies")


def welcome(
    members: tuple[str, ...] = ("me",),
    position: Position | None = None,
    recovery: Recovery | None = None,
) -> str:
    event = Welcome("me", "lobby", frozenset(members), len(members), position, recovery)
    return encode_event(event).decode()


def from_member(sender: str, payload: bytes, offset: int | None = None) -> bytes:
    return from_header(sender, offset=offset) + payload


async def settle() -> None:
    """Let every task run until all wait (the autojump clock moves only after this)."""
    await trio.testing.wait_all_tasks_blocked()


# -- up and down --------------------------------------------------------------------------


async def test_the_task_reports_started_once_the_first_connection_is_made(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ws = ScriptedWebSocket()
    client = StandInClient(StandInRelay(ws))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        assert client.link.current is not None and client.link.current.ws is ws
        assert client.stats.connects == 1
        await settle()
        assert client.reports == [Up(URL, 0.0, frozenset())]
        ws.close(1000)
    assert isinstance(client.ended_with, ClosedByRelay)


async def test_a_v1_connection_is_up_only_once_the_relay_s_welcome_says_who_is_there(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ws = ScriptedWebSocket(protocol=SUBPROTOCOL)
    client = StandInClient(StandInRelay(ws))
    async with trio.open_nursery() as nursery:
        started = trio.Event()

        async def start() -> None:
            await nursery.start(client.run)
            started.set()

        nursery.start_soon(start)
        await trio.sleep(1)  # within connect_timeout, and no welcome yet
        assert not started.is_set() and client.reports == []
        ws.say(welcome(members=("me", "bob")))
        await started.wait()
        await settle()
        assert client.reports == [Up(URL, 1.0, frozenset({"bob"}))]
        ws.close(1000)


async def test_while_reconnecting_there_is_no_connection_to_send_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, second = ScriptedWebSocket(), ScriptedWebSocket()
    client = StandInClient(StandInRelay(first, second))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        first.close(1001)
        await settle()
        assert client.link.current is None  # waiting out the backoff
        assert trio.current_time() == 0.0
        await trio.sleep(0.5)
        await settle()
        assert client.link.current is not None and client.link.current.ws is second
        second.close(1000)


async def test_a_message_sent_while_reconnecting_goes_on_the_next_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, second = ScriptedWebSocket(Close(1001)), ScriptedWebSocket()
    client = StandInClient(StandInRelay(first, second))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await client.link.send(b"hello")
        assert trio.current_time() == 0.5
        assert (first.written, second.written) == ([], [b"hello"])
        second.close(1000)


async def test_closing_the_client_ends_the_task_with_no_disconnect_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ws = ScriptedWebSocket()
    client = StandInClient(StandInRelay(ws, ScriptedWebSocket()))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        client.link.begin_closing()
        ws.close(1000)
    assert client.ended_with is None
    assert client.disconnects == [] and client.stats.disconnects == 0
    assert len(client.relay.attempts) == 1


async def test_what_was_written_on_a_lost_connection_is_reported_unconfirmed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first = ScriptedWebSocket()
    client = StandInClient(StandInRelay(first, ScriptedWebSocket(Close(1000))))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await client.link.send(b"one", value=b"one")
        await client.link.send(b"two", value=b"two")
        first.close(1006)
    lost, last = client.disconnects
    assert (lost.code, lost.reconnecting, lost.unconfirmed) == (1006, True, 2)
    assert [message.value for message in lost.unconfirmed_messages] == [b"one", b"two"]
    assert last.unconfirmed == 0  # nothing was written on the second one
    assert (client.stats.disconnects, client.stats.unconfirmed) == (2, 2)


async def test_what_was_written_on_a_connection_without_a_welcome_is_reported_with_the_next_loss(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Sends go ahead on a connection while its welcome is awaited; if none comes, the
    # attempt failed, and what was written on it is still reported.
    config = attrs.evolve(STEADY, connect_timeout=3.0)
    first = ScriptedWebSocket(welcome(), protocol=SUBPROTOCOL)
    speechless = ScriptedWebSocket(protocol=SUBPROTOCOL)
    last = ScriptedWebSocket(welcome(), Close(1000), protocol=SUBPROTOCOL)
    client = StandInClient(StandInRelay(first, speechless, last), config=config)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        first.close(1001)
        await settle()
        await client.link.send(b"into the void", value=b"into the void")
    assert speechless.written == [b"\ninto the void"]  # v1: an empty header, to the group
    lost, ended = client.disconnects
    assert (lost.code, lost.unconfirmed) == (1001, 0)
    assert (ended.code, ended.unconfirmed) == (1000, 1)
    assert [message.value for message in ended.unconfirmed_messages] == [b"into the void"]


async def test_a_loss_reconnected_from_is_a_warning_and_a_final_one_an_error(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trio_wsproxy.client")
    client = StandInClient(
        StandInRelay(ScriptedWebSocket(Close(4001)), ScriptedWebSocket(Close(4000, "newer")))
    )
    await client.run()
    lines = [
        (r.levelno, r.getMessage()) for r in caplog.records if "disconnected" in r.getMessage()
    ]
    assert lines == [
        (
            logging.WARNING,
            f"disconnected from {URL}: code 4001 (too slow: this client's mailbox on the relay "
            "stayed full); will reconnect",
        ),
        (
            logging.ERROR,
            f"disconnected from {URL}: code 4000 (replaced by a newer connection with the same "
            "id in the group): newer; not reconnecting",
        ),
    ]
    assert f"reconnecting to {URL} in 0.50 s" in caplog.messages


# -- close codes --------------------------------------------------------------------------


@pytest.mark.parametrize("code", TRANSIENT)
async def test_after_a_transient_close_code_the_task_reports_it_and_reconnects(
    code: int, autojump_clock: trio.testing.MockClock
) -> None:
    second = ScriptedWebSocket(Close(1000))
    client = StandInClient(StandInRelay(ScriptedWebSocket(Close(code, "going")), second))
    await client.run()
    assert client.disconnects[0] == Disconnected(code, "going", True)
    assert [attempt.at for attempt in client.relay.attempts] == [0.0, 0.5]
    assert client.stats.connects == 2


@pytest.mark.parametrize("code", FINAL)
async def test_after_a_final_close_code_the_client_ends_with_closed_by_relay(
    code: int, autojump_clock: trio.testing.MockClock
) -> None:
    client = StandInClient(StandInRelay(ScriptedWebSocket(Close(code, "why")), ScriptedWebSocket()))
    await client.run()
    assert isinstance(client.ended_with, ClosedByRelay)
    assert (client.ended_with.code, client.ended_with.reason) == (code, "why")
    assert client.disconnects == [Disconnected(code, "why", False)]
    assert len(client.relay.attempts) == 1


async def test_replaced_by_a_newer_connection_the_client_does_not_fight_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 4000 on one node must not send the client to the next: the newer connection wins.
    client = StandInClient(StandInRelay(ScriptedWebSocket(Close(4000, "replaced"))), urls=URLS)
    await client.run()
    assert isinstance(client.ended_with, ClosedByRelay) and client.ended_with.code == 4000
    assert [attempt.host for attempt in client.relay.attempts] == ["relay-a.test"]


async def test_with_reconnect_off_even_a_transient_code_ends_the_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = attrs.evolve(STEADY, reconnect=False)
    client = StandInClient(StandInRelay(ScriptedWebSocket(Close(1001))), config=config)
    await client.run()
    assert isinstance(client.ended_with, ClosedByRelay) and client.ended_with.code == 1001
    assert client.disconnects == [Disconnected(1001, None, False)]


async def test_the_config_s_reconnect_codes_alone_decide(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = attrs.evolve(STEADY, reconnect_codes={4000})
    client = StandInClient(
        StandInRelay(ScriptedWebSocket(Close(4000)), ScriptedWebSocket(Close(1001))),
        config=config,
    )
    await client.run()
    assert [report.reconnecting for report in client.disconnects] == [True, False]
    assert isinstance(client.ended_with, ClosedByRelay) and client.ended_with.code == 1001


async def test_a_connection_that_ends_before_its_welcome_is_judged_by_its_close_code(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = StandInClient(
        StandInRelay(
            ScriptedWebSocket(Close(1001), protocol=SUBPROTOCOL),
            ScriptedWebSocket(Close(4000), protocol=SUBPROTOCOL),
        )
    )
    await client.run()
    assert [(report.code, report.reconnecting) for report in client.disconnects] == [
        (1001, True),
        (4000, False),
    ]
    assert isinstance(client.ended_with, ClosedByRelay) and client.ended_with.code == 4000


# -- backoff ------------------------------------------------------------------------------


async def test_each_failed_round_doubles_the_wait_up_to_the_cap_then_the_client_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = attrs.evolve(STEADY, max_reconnect_attempts=6)
    client = StandInClient(StandInRelay(ScriptedWebSocket(Close(1006))), config=config)
    await client.run()
    waits = client.relay.waits()
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert isinstance(client.ended_with, ConnectError)
    assert "gave up reconnecting" in str(client.ended_with)
    assert "after 6 attempts" in str(client.ended_with)


async def test_a_connection_made_starts_the_backoff_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    nowhere = ConnectError("refused", url=URL)
    client = StandInClient(
        StandInRelay(
            ScriptedWebSocket(Close(1006)),
            nowhere,
            nowhere,
            ScriptedWebSocket(Close(1006)),
            ScriptedWebSocket(Close(1000)),
        )
    )
    await client.run()
    waits = client.relay.waits()
    assert waits == [0.5, 1.0, 2.0, 0.5]


async def test_jitter_only_ever_shortens_the_wait(autojump_clock: trio.testing.MockClock) -> None:
    config = attrs.evolve(STEADY, reconnect_jitter=0.5, max_reconnect_attempts=4)
    client = StandInClient(StandInRelay(ScriptedWebSocket(Close(1006))), config=config)
    await client.run()
    waits = client.relay.waits()
    for wait, full in zip(waits, [0.5, 1.0, 2.0, 4.0], strict=True):
        assert full / 2 <= wait <= full


async def test_without_a_limit_the_client_keeps_trying_at_the_capped_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = StandInClient(StandInRelay(ScriptedWebSocket(Close(1006))))
    with trio.move_on_after(600):
        await client.run()
    assert client.ended_with is None
    waits = client.relay.waits()
    assert waits[:3] == [0.5, 1.0, 2.0]
    assert set(waits[3:]) == {4.0} and len(waits) == 3 + 149  # until 599.5 s


async def test_the_first_connect_is_tried_at_once_and_its_failure_raised(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = StandInClient(StandInRelay(ConnectError("nothing listens", url=URL)))
    async with trio.open_nursery() as nursery:
        with pytest.raises(ConnectError, match="nothing listens"):
            await nursery.start(client.run)
    assert client.relay.attempts == [Attempt(URL, 0.0)]
    assert client.reports == []


# -- which URL --------------------------------------------------------------------------


async def test_the_first_connect_takes_the_first_url_that_answers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    refused = HandshakeRefused(url=URLS[0], status_code=503, reason="starting")
    ws = ScriptedWebSocket(Close(1000))
    client = StandInClient(StandInRelay(refused, ws), urls=URLS)
    await client.run()
    assert [(a.host, a.at) for a in client.relay.attempts] == [
        ("relay-a.test", 0.0),
        ("relay-b.test", 0.0),
    ]
    assert client.task.url == URLS[1]
    assert client.reports[0] == Up(URLS[1], 0.0, frozenset())


async def test_a_first_connect_that_fails_everywhere_names_every_url_and_why(
    autojump_clock: trio.testing.MockClock,
) -> None:
    errors = [ConnectError(f"no {n}", url=url) for n, url in enumerate(URLS)]
    client = StandInClient(StandInRelay(*errors), urls=URLS)
    with pytest.raises(ConnectError) as raised:
        await client.run()
    assert raised.value.failures == tuple(errors)
    assert "any of the 3 relay URLs" in str(raised.value)
    assert [attempt.at for attempt in client.relay.attempts] == [0.0, 0.0, 0.0]


async def test_after_a_drop_a_round_starts_after_the_lost_url_with_no_wait_between_urls(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trio_wsproxy.client")
    down = ConnectError("down", url=URL)
    config = attrs.evolve(STEADY, max_reconnect_attempts=2)
    client = StandInClient(
        StandInRelay(
            ScriptedWebSocket(Close(4004)),  # relay-a
            down,  # relay-b
            down,  # relay-c
            down,  # relay-a
            ScriptedWebSocket(Close(1000)),  # relay-b, a round later
        ),
        urls=URLS,
        config=config,
    )
    await client.run()
    assert [(a.host, a.at) for a in client.relay.attempts] == [
        ("relay-a.test", 0.0),
        ("relay-b.test", 0.5),
        ("relay-c.test", 0.5),
        ("relay-a.test", 0.5),
        ("relay-b.test", 1.5),
    ]
    assert client.task.url == URLS[1]
    assert f"failed over from {URLS[0]} to {URLS[1]}" in caplog.messages


async def test_max_reconnect_attempts_counts_rounds_not_urls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = attrs.evolve(STEADY, max_reconnect_attempts=2)
    client = StandInClient(StandInRelay(ScriptedWebSocket(Close(1001))), urls=URLS, config=config)
    await client.run()
    assert len(client.relay.attempts) == 1 + 2 * 3
    assert isinstance(client.ended_with, ConnectError)
    assert len(client.ended_with.failures) == 3  # the last round's, one per URL


async def test_a_4xx_refusal_of_the_first_connect_is_raised_without_trying_other_urls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    refused = HandshakeRefused(url=URL, status_code=400, reason="bad id")
    client = StandInClient(StandInRelay(refused, ScriptedWebSocket()), urls=URLS)
    with pytest.raises(HandshakeRefused) as raised:
        await client.run()
    assert raised.value is refused
    assert len(client.relay.attempts) == 1


async def test_a_4xx_refusal_of_a_reconnect_ends_the_client_with_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    refused = HandshakeRefused(url=URLS[1], status_code=403, reason="removed")
    client = StandInClient(
        StandInRelay(ScriptedWebSocket(Close(1001)), refused, ScriptedWebSocket()), urls=URLS
    )
    await client.run()
    assert client.ended_with is refused
    assert len(client.relay.attempts) == 2


async def test_a_5xx_refusal_of_a_reconnect_moves_on_to_the_next_url(
    autojump_clock: trio.testing.MockClock,
) -> None:
    refused = HandshakeRefused(url=URLS[1], status_code=502, reason="bad gateway")
    client = StandInClient(
        StandInRelay(ScriptedWebSocket(Close(1001)), refused, ScriptedWebSocket(Close(1000))),
        urls=URLS,
    )
    await client.run()
    assert [a.host for a in client.relay.attempts] == [
        "relay-a.test",
        "relay-b.test",
        "relay-c.test",
    ]
    assert isinstance(client.ended_with, ClosedByRelay) and client.ended_with.code == 1000


# -- where to resume ----------------------------------------------------------------------


async def test_a_reconnect_names_the_position_of_the_last_message_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first = ScriptedWebSocket(
        welcome(position=Position("e1", 5)),
        from_member("bob", b"six", offset=6),
        from_member("bob", b"seven", offset=7),
        Close(1006),
        protocol=SUBPROTOCOL,
    )
    second = ScriptedWebSocket(Close(1000), protocol=SUBPROTOCOL)
    client = StandInClient(StandInRelay(first, second), urls=URLS)
    await client.run()
    assert [(a.host, a.since) for a in client.relay.attempts] == [
        ("relay-a.test", None),
        ("relay-b.test", "e1:7"),
    ]


async def test_the_first_connection_names_the_position_the_client_was_made_with(
    autojump_clock: trio.testing.MockClock,
) -> None:
    relay = StandInRelay(ScriptedWebSocket(Close(1000)))
    await StandInClient(relay, since=Position("e1", 42)).run()
    assert relay.attempts[0].since == "e1:42"


async def test_a_given_position_is_named_until_a_welcome_answers_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    relay = StandInRelay(
        ScriptedWebSocket(Close(1001), protocol=SUBPROTOCOL),  # dropped before its welcome
        ScriptedWebSocket(welcome(position=Position("e2", 0)), Close(1001), protocol=SUBPROTOCOL),
        ScriptedWebSocket(Close(1000), protocol=SUBPROTOCOL),
    )
    await StandInClient(relay, since=Position("e1", 42)).run()
    assert [attempt.since for attempt in relay.attempts] == ["e1:42", "e1:42", "e2:0"]


async def test_after_a_plain_relay_a_reconnect_names_no_position(
    autojump_clock: trio.testing.MockClock,
) -> None:
    relay = StandInRelay(
        ScriptedWebSocket(welcome(position=Position("e1", 3)), Close(1001), protocol=SUBPROTOCOL),
        ScriptedWebSocket(Close(1001)),  # plain: it cannot say where the client is
        ScriptedWebSocket(Close(1000), protocol=SUBPROTOCOL),
    )
    await StandInClient(relay, since=Position("e1", 1)).run()
    assert [attempt.since for attempt in relay.attempts] == ["e1:1", "e1:3", None]


async def test_a_recovery_is_announced_before_the_replayed_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    relay = StandInRelay(
        ScriptedWebSocket(welcome(position=Position("e1", 5)), Close(1006), protocol=SUBPROTOCOL),
        ScriptedWebSocket(
            welcome(position=Position("e1", 7), recovery=Recovery(True, 2)),
            from_member("bob", b"six", offset=6),
            from_member("bob", b"seven", offset=7),
            Close(1000),
            protocol=SUBPROTOCOL,
        ),
    )
    client = StandInClient(relay)
    client.handle(Resumed, bytes)
    await client.run()
    assert client.handled == [Resumed(True, 2), b"six", b"seven"]
    assert client.task.resumption.position == Position("e1", 7)


async def test_a_recovery_that_could_not_be_made_says_why_and_moves_to_the_new_position(
    autojump_clock: trio.testing.MockClock,
) -> None:
    relay = StandInRelay(
        ScriptedWebSocket(welcome(position=Position("e1", 5)), Close(1001), protocol=SUBPROTOCOL),
        ScriptedWebSocket(
            welcome(position=Position("e2", 0), recovery=Recovery(False, reason="epoch_changed")),
            Close(1000),
            protocol=SUBPROTOCOL,
        ),
    )
    client = StandInClient(relay)
    client.handle(Resumed)
    await client.run()
    assert client.handled == [Resumed(False, 0, "epoch_changed")]
    assert client.task.resumption.position == Position("e2", 0)


# -- a relay that answers wrongly ---------------------------------------------------------


async def test_a_v1_relay_silent_past_connect_timeout_fails_the_first_connect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = attrs.evolve(STEADY, connect_timeout=3.0)
    client = StandInClient(StandInRelay(ScriptedWebSocket(protocol=SUBPROTOCOL)), config=config)
    async with trio.open_nursery() as nursery:
        with pytest.raises(ConnectError, match=r"sent no welcome within 3\.0 s"):
            await nursery.start(client.run)
    assert trio.current_time() == 3.0
    assert client.reports == [] and client.stats.connects == 0


async def test_a_reconnect_that_gets_no_welcome_counts_as_a_failed_round(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = attrs.evolve(STEADY, connect_timeout=3.0)
    relay = StandInRelay(
        ScriptedWebSocket(welcome(), Close(1001), protocol=SUBPROTOCOL),
        ScriptedWebSocket(protocol=SUBPROTOCOL),  # says nothing
        ScriptedWebSocket(welcome(), Close(1000), protocol=SUBPROTOCOL),
    )
    client = StandInClient(relay, config=config)
    await client.run()
    # 0.5 s of backoff, 3 s for the welcome, then the doubled wait: 1 s.
    assert [attempt.at for attempt in relay.attempts] == [0.0, 0.5, 4.5]
    assert client.stats.connects == 2
    assert isinstance(client.ended_with, ClosedByRelay) and client.ended_with.code == 1000


async def test_a_first_message_that_is_not_a_welcome_is_warned_about_and_still_taken(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    ws = ScriptedWebSocket(from_member("bob", b"early"), Close(1000), protocol=SUBPROTOCOL)
    client = StandInClient(StandInRelay(ws))
    client.handle(bytes)
    await client.run()
    assert any("its first message was not a welcome" in m for m in caplog.messages)
    assert client.handled == [b"early"]


async def test_a_frame_without_a_readable_v1_header_is_a_bad_message_not_a_disconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ws = ScriptedWebSocket(welcome(), "no header line at all", protocol=SUBPROTOCOL)
    client = StandInClient(StandInRelay(ws))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await settle()
        assert [bad.kind for bad in client.bad] == [BadMessageKind.INVALID_HEADER]
        assert client.stats.invalid_header == 1
        assert client.link.current is not None and client.disconnects == []
        ws.close(1000)


async def test_a_binary_message_over_max_message_size_closes_with_1009_and_ends_the_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = attrs.evolve(STEADY, max_message_size=4)
    ws = ScriptedWebSocket(b"tiny", b"too large", b"unread")
    client = StandInClient(StandInRelay(ws, ScriptedWebSocket()), config=config)
    client.handle(bytes)
    await client.run()
    assert client.handled == [b"tiny"]
    assert isinstance(client.ended_with, ClosedByRelay) and client.ended_with.code == 1009
    assert len(client.relay.attempts) == 1


# -- keepalive ----------------------------------------------------------------------------


async def test_an_unanswered_ping_drops_the_connection_as_1006_and_the_client_reconnects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = attrs.evolve(STEADY, ping_interval=5.0, ping_timeout=2.0)
    silent = ScriptedWebSocket(answers_pings=False)
    client = StandInClient(StandInRelay(silent, ScriptedWebSocket(Close(1000))), config=config)
    await client.run()
    dropped = client.disconnects[0]
    assert (dropped.code, dropped.reconnecting) == (1006, True)
    assert dropped.reason is not None and "ping_timeout" in dropped.reason
    # Dropped 5 s + 2 s in, back 0.5 s later.
    assert [attempt.at for attempt in client.relay.attempts] == [0.0, 7.5]


async def test_answered_pings_keep_a_quiet_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = attrs.evolve(STEADY, ping_interval=5.0, ping_timeout=2.0)
    ws = ScriptedWebSocket()
    client = StandInClient(StandInRelay(ws), config=config)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await trio.sleep(61)
        assert ws.pings == 12  # one every 5 s
        assert client.disconnects == [] and len(client.relay.attempts) == 1
        ws.close(1000)


async def test_without_a_ping_interval_the_client_never_pings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ws = ScriptedWebSocket(answers_pings=False)
    client = StandInClient(StandInRelay(ws))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await trio.sleep(3600)
        assert ws.pings == 0 and client.disconnects == []
        ws.close(1000)
