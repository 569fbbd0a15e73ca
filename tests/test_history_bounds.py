"""The relay-wide bounds on history (``max_history_bytes``, ``max_history_groups``):
histories of groups that emptied count, memory counted is memory, and a member whose
history went for room is told so — never given a gap. Over real sockets where it is about
what members see; on the history objects where it is about accounting."""

from __future__ import annotations

import gc
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from test_hostile import scrape as scrape_port
from test_v1 import next_message, v1_member
from trio_wsproxy import Relay, RelayConfig, open_relay
from trio_wsproxy._cli import build_parser, config_from_args
from trio_wsproxy.protocol import v1
from trio_wsproxy.protocol.message import Message
from trio_wsproxy.relay.counters import Counters
from trio_wsproxy.relay.groups import LocalRegistry
from trio_wsproxy.relay.history import (
    EVICTIONS,
    Histories,
    History,
    HistoryLimits,
    HistoryUsage,
    history_cost,
)
from trio_wsproxy.relay.metrics import Figures, WorkerFigures, render_metrics, render_whole_relay
from wsraw import OP_BINARY, RawClient

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(relay: Relay) -> Samples:
    """The relay's /metrics, by (sample name, labels)."""
    return await scrape_port(relay.port)


def evicted(samples: Samples, what: str) -> float:
    return samples[("trio_wsproxy_history_evictions_total", (("what", what),))]


async def visit(relay: Relay, group: str, payload: bytes = b"", member: str = "m") -> None:
    """A member joins ``group`` (plain), sends ``payload`` there if any, and leaves;
    returns once the relay knows it left (a group it was alone in is then gone, its
    history kept)."""
    before = relay.group_size(group)
    client = await RawClient.open(relay.port, f"/ws?id={member}&groupName={group}")
    if payload:
        await client.send_frame(OP_BINARY, payload)
    await client.aclose()
    with trio.fail_after(10):
        await relay.wait_members(before, group)


async def gone(relay: Relay, client: RawClient, group: str) -> None:
    """Drop ``client``'s connection (no close frame) and wait until the relay knows."""
    before = relay.group_size(group)
    await client.aclose()
    with trio.fail_after(10):
        await relay.wait_members(before - 1, group)


def bounded(history_size: int = 100, **bounds: int | None) -> RelayConfig:
    return RelayConfig(host="127.0.0.1", port=0, history_size=history_size, **bounds)  # type: ignore[arg-type]


# -- what members and operators see, over real sockets -------------------------------------


@pytest.mark.parametrize(
    ("bounds", "payload"),
    [
        ({"max_history_groups": 5}, 2048),  # the count bounds it
        ({"max_history_groups": None, "max_history_bytes": 64 * 1024}, 8192),  # the memory
    ],
    ids=["groups", "bytes"],
)
async def test_joining_and_leaving_fresh_groups_keeps_the_histories_within_the_bounds(
    bounds: dict[str, int | None], payload: int
) -> None:
    """The finding: under --max-groups 2, one client opening and leaving 60 fresh groups
    (each leaves a history behind) never takes the histories past either bound."""
    config = bounded(max_groups=2, **{"max_history_bytes": 64 * 1024, **bounds})
    async with open_relay(config) as relay:
        with trio.fail_after(30):
            for n in range(60):
                await visit(relay, f"fresh-{n}", bytes(payload))
            samples = await scrape(relay)
    assert samples[("trio_wsproxy_groups", ())] == 0
    histories = samples[("trio_wsproxy_history_groups", ())]
    held = samples[("trio_wsproxy_history_bytes", ())]
    assert 1 <= histories <= (bounds.get("max_history_groups") or 60)
    assert held <= 64 * 1024
    assert evicted(samples, "emptied_group") == 60 - histories
    assert evicted(samples, "message") == 0  # (emptied groups' histories went first)
    assert relay.registry.history_usage[:2] == (histories, held)  # /metrics says what is held


async def test_a_member_whose_emptied_groups_history_went_for_room_is_told_epoch_changed() -> None:
    """Histories of groups that emptied go longest-emptied first: the group that emptied
    first lost its history (its member is told plainly), the one that emptied later
    still recovers."""
    async with open_relay(bounded(max_history_groups=3)) as relay:
        with trio.fail_after(20):
            alice, welcome = await v1_member(relay, "alice", "lobby")
            assert welcome.position is not None
            lobby_epoch = welcome.position.epoch
            await visit(relay, "lobby", b"while alice is here", member="sender")
            assert (await next_message(alice))[1].offset == 1
            await gone(relay, alice, "lobby")  # the lobby emptied first
            bob, welcome = await v1_member(relay, "bob", "kitchen")
            assert welcome.position is not None
            kitchen = welcome.position.token()
            await gone(relay, bob, "kitchen")
            await visit(relay, "kitchen", b"while bob is away", member="sender")
            # Two fresh groups: three histories are allowed, so the lobby's goes.
            await visit(relay, "fresh-1")
            await visit(relay, "fresh-2")
            bob, again = await v1_member(relay, "bob", "kitchen", since=kitchen)
            assert again.recovery == v1.Recovery(True, 1)
            assert await next_message(bob) == (
                OP_BINARY,
                v1.From("sender", offset=1),
                b"while bob is away",
            )
            alice, again = await v1_member(relay, "alice", "lobby", since=f"{lobby_epoch}:1")
            assert again.recovery == v1.Recovery(False, 0, v1.EPOCH_CHANGED)
            assert again.position is not None and again.position.epoch != lobby_epoch
            assert again.position.offset == 0
            samples = await scrape(relay)
            # (Closed here, so that the relay's shutdown need not wait out close_timeout.)
            for client in (alice, bob):
                await client.aclose()
    assert evicted(samples, "emptied_group") >= 1


async def test_a_new_group_finding_every_history_taken_by_live_groups_keeps_none() -> None:
    """When groups with members hold every history --max-history-groups allows, a new
    group is not refused: it keeps no history (its members are welcomed without a
    position; one naming a position is told no_history). Once a group empties, its
    history is the one that makes room."""
    async with open_relay(bounded(max_history_groups=2)) as relay:
        with trio.fail_after(20):
            one, _ = await v1_member(relay, "a", "one")
            two, _ = await v1_member(relay, "b", "two")
            three, welcome = await v1_member(relay, "c", "three")
            assert welcome.position is None and welcome.recovery is None
            await gone(relay, three, "three")
            three, welcome = await v1_member(relay, "c", "three", since="feedfacefeedface:4")
            assert welcome.recovery == v1.Recovery(False, 0, v1.NO_HISTORY)
            samples = await scrape(relay)
            assert evicted(samples, "new_group") == 2
            assert samples[("trio_wsproxy_history_groups", ())] == 2
            await gone(relay, one, "one")
            four, welcome = await v1_member(relay, "d", "four")
            assert welcome.position is not None  # the emptied "one" made room
            samples = await scrape(relay)
            # (Closed here, so that the relay's shutdown need not wait out close_timeout.)
            for client in (two, three, four):
                await client.aclose()
    assert evicted(samples, "emptied_group") == 1


async def test_live_histories_over_the_memory_bound_lose_their_oldest_messages_first() -> None:
    """Groups with members whose histories together pass --max-history-bytes lose the
    oldest messages relay-wide (here the first group's), never the newest: a member
    that missed one is told position_too_old; one that missed only newer ones, in either
    group, recovers them all."""
    config = bounded(history_size=1000, max_history_bytes=64 * 1024)
    payload = bytes(4096)
    async with open_relay(config) as relay:
        with trio.fail_after(20):
            alice, welcome_a = await v1_member(relay, "alice", "a")
            bob, welcome_b = await v1_member(relay, "bob", "b")
            assert welcome_a.position is not None and welcome_b.position is not None
            readers = {}
            for group in ("a", "b"):
                readers[group] = await RawClient.open(relay.port, f"/ws?id=r&groupName={group}")
            senders = {}
            for group in ("a", "b"):
                senders[group] = await RawClient.open(relay.port, f"/ws?id=s&groupName={group}")
            await gone(relay, alice, "a")
            await gone(relay, bob, "b")
            for group in ("a", "b"):  # the first group's messages are the older
                for _ in range(8):
                    await senders[group].send_frame(OP_BINARY, payload)
                for _ in range(8):
                    assert await readers[group].recv_message() == (OP_BINARY, payload)
            assert relay.registry.history_usage.bytes <= 64 * 1024
            assert relay.registry.histories is not None
            kept_a = relay.registry.histories.get("a")
            kept_b = relay.registry.histories.get("b")
            assert kept_a is not None and kept_b is not None
            assert kept_a.first > 1 and kept_b.first == 1  # the oldest went, all of them a's
            alice, again = await v1_member(relay, "alice", "a", since=welcome_a.position.token())
            assert again.recovery == v1.Recovery(False, 0, v1.POSITION_TOO_OLD)
            await gone(relay, alice, "a")
            still = f"{welcome_a.position.epoch}:{kept_a.first - 1}"
            alice, again = await v1_member(relay, "alice", "a", since=still)
            assert again.recovery == v1.Recovery(True, 8 - (kept_a.first - 1))
            bob, again = await v1_member(relay, "bob", "b", since=welcome_b.position.token())
            assert again.recovery == v1.Recovery(True, 8)
            samples = await scrape(relay)
            # (Closed here, so that the relay's shutdown need not wait out close_timeout.)
            for client in (alice, bob, *readers.values(), *senders.values()):
                await client.aclose()
    assert evicted(samples, "message") == kept_a.first - 1


async def test_without_history_the_history_gauges_read_zero() -> None:
    async with open_relay(RelayConfig(host="127.0.0.1", port=0)) as relay:
        with trio.fail_after(10):
            await visit(relay, "g", b"x")
            samples = await scrape(relay)
    assert samples[("trio_wsproxy_history_groups", ())] == 0
    assert samples[("trio_wsproxy_history_bytes", ())] == 0
    assert all(evicted(samples, what) == 0 for what in EVICTIONS)


# -- memory counted is memory ---------------------------------------------------------------


@contextmanager
def traced() -> Iterator[list[int]]:
    """The bytes tracemalloc sees allocated (and still held) in the block."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    grown: list[int] = []
    try:
        yield grown
        grown.append(tracemalloc.get_traced_memory()[0] - before)
    finally:
        tracemalloc.stop()


UNBOUNDED = HistoryLimits(size=1 << 30, ttl=1e9, max_bytes=1 << 40)


@pytest.mark.parametrize("size", [10, 100, 1000, 10_000])
@pytest.mark.parametrize("to", [None, "bob"])
async def test_the_memory_counted_for_kept_messages_is_what_they_hold(
    size: int, to: str | None
) -> None:
    """Per-message overhead counts, not the payload only (a 10-byte message costs about
    250 bytes): the count is within a quarter of what tracemalloc sees."""
    histories = Histories(UNBOUNDED)
    history = histories.of("g")
    before = histories.bytes
    with traced() as grown:
        for n in range(2000):
            addressee = None if to is None else f"{to}-{n % 10}"  # (a string per message)
            history.record(Message("sender", False, b"x" * size, addressee))
    counted = histories.bytes - before
    assert 0.8 <= counted / grown[0] <= 1.25, (counted, grown[0])
    assert counted > 2000 * size * 1.02  # more than the payload


async def test_the_memory_counted_for_gaps_and_empty_histories_is_what_they_hold() -> None:
    histories = Histories(UNBOUNDED)
    with traced() as grown:
        for n in range(2000):
            histories.of(f"group-{n:05d}")
    assert 0.8 <= histories.bytes / grown[0] <= 1.25, (histories.bytes, grown[0])
    history = histories.of("gaps")
    before = histories.bytes
    with traced() as grown:
        for _ in range(2000):
            history.record_unkept()
    assert 0.8 <= (histories.bytes - before) / grown[0] <= 1.25


# -- the bounds' bookkeeping ------------------------------------------------------------------


class _Group:
    """A group as Histories sees one (the registry's Group has these two)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.history: History | None = None


@st.composite
def operations(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    kinds = st.sampled_from(["join", "record", "leave", "wait", "expire"])
    return draw(
        st.lists(st.tuples(kinds, st.integers(0, 7), st.integers(0, 6000)), min_size=1, max_size=60)
    )


@settings(max_examples=60)
@given(operations(), st.sampled_from([None, 3, 5]))
def test_the_totals_always_add_up_and_stay_within_the_bounds(
    steps: list[tuple[str, int, int]], max_groups: int | None
) -> None:
    """Whatever groups join, record, leave and expire, the relay's count of memory is
    the sum of its histories' (nothing leaks into or out of it), and the bounds hold."""

    async def run() -> None:
        histories = Histories(HistoryLimits(50, 10.0, 16384), 64 * 1024, max_groups)
        live: dict[int, _Group] = {}
        for kind, which, size in steps:
            if kind == "join" and which not in live:
                live[which] = group = _Group(f"g{which}")
                histories.attach(group)
            elif kind == "record" and which in live:
                history = live[which].history
                if history is not None:
                    history.record(Message("m", True, bytes(size)))
            elif kind == "leave" and which in live:
                histories.release(live.pop(which))
            elif kind == "wait":
                clock.jump(size / 1000)
            elif kind == "expire":
                histories.expire(trio.current_time(), lambda name: int(name[1:]) in live)
            kept = histories._by_group
            assert histories.bytes == sum(h.cost + history_cost(n) for n, h in kept.items())
            assert histories.bytes <= 64 * 1024
            assert max_groups is None or len(kept) <= max_groups
            for group in live.values():  # a live group's history is never taken from it
                assert group.history is None or kept.get(group.name) is group.history
        for which in list(live):
            histories.release(live.pop(which))
        clock.jump(11)
        histories.expire(trio.current_time(), lambda name: False)
        assert len(histories) == 0 and histories.bytes == 0

    clock = trio.testing.MockClock()
    trio.run(run, clock=clock)


# -- /metrics with --workers, and the command line ----------------------------------------------


class _Reporting(LocalRegistry):
    """A registry whose histories hold the given figures."""

    def __init__(self, usage: HistoryUsage) -> None:
        super().__init__()
        self._usage = usage

    @property
    def history_usage(self) -> HistoryUsage:
        return self._usage


def test_the_whole_relays_history_figures_are_the_sum_of_its_processes() -> None:
    """Each process's histories are in its own memory: the whole relay's are the sum."""
    one = HistoryUsage(3, 3000, {"emptied_group": 2})
    two = HistoryUsage(4, 5000, {"message": 7})
    workers = [
        WorkerFigures(Figures.parse(render_metrics(Counters(), _Reporting(u)).decode()), None, True)
        for u in (one, two)
    ]
    whole = Figures.parse(render_whole_relay(workers, 2).decode()).values
    assert whole["trio_wsproxy_history_groups", "trio_wsproxy_history_groups", ()] == 7
    assert whole["trio_wsproxy_history_bytes", "trio_wsproxy_history_bytes", ()] == 8000
    family = "trio_wsproxy_history_evictions"
    sample = "trio_wsproxy_history_evictions_total"
    assert whole[family, sample, (("what", "emptied_group"),)] == 2
    assert whole[family, sample, (("what", "message"),)] == 7
    assert whole[family, sample, (("what", "new_group"),)] == 0


def test_the_flags_set_the_bounds() -> None:
    args = build_parser().parse_args(
        ["serve", "--max-history-bytes", "256MiB", "--max-history-groups", "500"]
    )
    config = config_from_args(args)
    assert (config.max_history_bytes, config.max_history_groups) == (256 << 20, 500)
    args = build_parser().parse_args(
        ["serve", "--max-history-bytes", "none", "--max-history-groups", "off"]
    )
    config = config_from_args(args)
    assert (config.max_history_bytes, config.max_history_groups) == (None, None)
    assert (RelayConfig().max_history_bytes, RelayConfig().max_history_groups) == (
        128 << 20,
        10_000,
    )


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--max-history-bytes", "1KiB"], "--max-history-bytes must be at least 65536 bytes"),
        (["--max-history-bytes", "lots"], "argument --max-history-bytes: not a size in bytes"),
        (["--max-history-groups", "-3"], "--max-history-groups must be a positive whole number"),
        (["--max-history-groups", "2.5"], "argument --max-history-groups: invalid int value"),
        (["--history-bytes", "0"], "--history-bytes must be positive"),  # (an older flag)
    ],
)
def test_nonsense_bounds_are_usage_errors_naming_the_flag(flags: list[str], said: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_wsproxy", "serve", "--port", "0", *flags],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert said in line


def test_the_bounds_are_checked_in_python_too() -> None:
    with pytest.raises(ValueError, match="max_history_bytes must be at least"):
        RelayConfig(max_history_bytes=1000)
    with pytest.raises(ValueError, match="max_history_groups must be a positive whole number"):
        RelayConfig(max_history_groups=0)
