"""History and recovery on one relay (DESIGN.md §7), over real sockets: a reconnecting
wsproxy.v1 member names its position and gets every message it missed, in order,
exactly once, before anything live — or is told why it cannot; plain members are
unaffected; the Python client does it by itself."""

from __future__ import annotations

import pytest
import trio

import trio_wsproxy
from loglines import LogLines
from recorder import Recorder, as_u32, stall_into_4001
from test_v1 import V1_OFFER, next_event, next_message, v1_member
from trio_wsproxy import Relay, RelayConfig, open_relay
from trio_wsproxy.protocol import v1
from trio_wsproxy.relay.history import Histories, History, HistoryLimits
from wsraw import OP_BINARY, OP_TEXT, RawClient

with_history = pytest.mark.wsproxy_relay(history_size=100)


async def gone(relay: Relay, client: RawClient, group: str = "g") -> None:
    """Drop ``client``'s connection (no close frame) and wait until the relay knows."""
    before = relay.group_size(group)
    await client.stream.aclose()
    with trio.fail_after(10):
        await relay.wait_members(before - 1, group)


@with_history
async def test_a_member_that_drops_gets_what_it_missed_in_order_before_anything_live(
    relay: Relay,
) -> None:
    with trio.fail_after(20):
        alice, welcome = await v1_member(relay, "alice")
        assert welcome.position is not None and welcome.position.offset == 0
        epoch = welcome.position.epoch
        plain = await RawClient.open(relay.port, "/ws?id=plain&groupName=g")
        carol, _ = await v1_member(relay, "carol")
        await plain.send_frame(OP_TEXT, b"m1")
        assert await next_message(alice) == (OP_TEXT, v1.From("plain", offset=1), b"m1")
        await gone(relay, alice)
        # While alice is away: two messages to the group, one to somebody else only.
        await plain.send_frame(OP_BINARY, b"\x00m2")
        await carol.send_frame(OP_TEXT, b"\nm3")
        await carol.send_frame(OP_TEXT, b'{"to":"plain"}\nfor plain')
        assert await plain.recv_message() == (OP_TEXT, b"m3")
        assert await plain.recv_message() == (OP_TEXT, b"for plain")
        alice, welcome = await v1_member(relay, "alice", since=f"{epoch}:1")
        assert welcome.recovery == v1.Recovery(True, 2)
        assert welcome.position == v1.Position(epoch, 4)
        await plain.send_frame(OP_TEXT, b"live")
        got = [await next_message(alice) for _ in range(3)]
        assert got == [
            (OP_BINARY, v1.From("plain", offset=2), b"\x00m2"),
            (OP_TEXT, v1.From("carol", offset=3), b"m3"),
            (OP_TEXT, v1.From("plain", offset=5), b"live"),
        ]
    for client in (alice, plain, carol):
        await client.aclose()


@with_history
async def test_a_quiet_member_recovers_and_its_own_and_others_direct_messages_are_not_replayed(
    relay: Relay,
) -> None:
    with trio.fail_after(20):
        quiet, welcome = await v1_member(relay, "quiet")  # it never gets a message
        assert welcome.position is not None
        since = welcome.position.token()
        bob, _ = await v1_member(relay, "bob")
        await quiet.send_frame(OP_TEXT, b"\nmine")  # its own: never replayed to it
        assert await next_message(bob) == (OP_TEXT, v1.From("quiet", offset=1), b"mine")
        await gone(relay, quiet)
        await bob.send_frame(OP_TEXT, b"\nfor all")
        quiet, welcome = await v1_member(relay, "quiet", since=since)
        assert welcome.recovery == v1.Recovery(True, 1)
        assert await next_message(quiet) == (OP_TEXT, v1.From("bob", offset=2), b"for all")
        # A message to it alone while it was away (it was in the group, then not)...
        await gone(relay, quiet)
        # ...cannot be sent: the sender hears so at once, and nothing is kept for it.
        await bob.send_frame(OP_TEXT, b'{"to":"quiet"}\nyou there?')
        error = await next_event(bob)
        assert isinstance(error, v1.Error) and error.to == "quiet"
        quiet, welcome = await v1_member(relay, "quiet", since=f"{welcome.position.epoch}:2")
        assert welcome.recovery == v1.Recovery(True, 0)
    for client in (quiet, bob):
        await client.aclose()


@pytest.mark.wsproxy_relay(history_size=3)
async def test_a_position_older_than_the_history_is_reported(relay: Relay) -> None:
    with trio.fail_after(20):
        alice, welcome = await v1_member(relay, "alice")
        assert welcome.position is not None
        plain = await RawClient.open(relay.port, "/ws?id=plain&groupName=g")
        await gone(relay, alice)
        for n in range(5):
            await plain.send_frame(OP_TEXT, f"m{n}".encode())
        alice, again = await v1_member(relay, "alice", since=welcome.position.token())
        assert again.recovery == v1.Recovery(False, 0, v1.POSITION_TOO_OLD)
        assert again.position == v1.Position(welcome.position.epoch, 5)
        # Nothing is replayed: the next message is live.
        await plain.send_frame(OP_TEXT, b"live")
        assert await next_message(alice) == (OP_TEXT, v1.From("plain", offset=6), b"live")
    for client in (alice, plain):
        await client.aclose()


@with_history
async def test_a_position_of_another_epoch_or_beyond_the_history_is_reported(
    relay: Relay,
) -> None:
    with trio.fail_after(10):
        alice, welcome = await v1_member(relay, "alice", since="feedfacefeedface:3")
        assert welcome.recovery == v1.Recovery(False, 0, v1.EPOCH_CHANGED)
        assert welcome.position is not None
        await gone(relay, alice)
        alice, welcome = await v1_member(relay, "alice", since=f"{welcome.position.epoch}:99")
        assert welcome.recovery == v1.Recovery(False, 0, v1.EPOCH_CHANGED)
    await alice.aclose()


async def test_a_relay_restart_changes_the_epoch() -> None:
    config = RelayConfig(host="127.0.0.1", port=0, history_size=10)
    async with open_relay(config) as relay:
        alice, welcome = await v1_member(relay, "alice")
        port = relay.port
        await alice.aclose()
    assert welcome.position is not None
    async with open_relay(RelayConfig(host="127.0.0.1", port=port, history_size=10)) as relay:
        alice, again = await v1_member(relay, "alice", since=welcome.position.token())
        assert again.recovery == v1.Recovery(False, 0, v1.EPOCH_CHANGED)
        await alice.aclose()


@pytest.mark.wsproxy_relay(history_size=100, history_bytes=1000)
async def test_a_missed_message_too_large_to_keep_is_reported(relay: Relay) -> None:
    with trio.fail_after(20):
        alice, welcome = await v1_member(relay, "alice")
        assert welcome.position is not None
        plain = await RawClient.open(relay.port, "/ws?id=plain&groupName=g")
        await gone(relay, alice)
        await plain.send_frame(OP_BINARY, bytes(2000))  # over history_bytes: not kept
        await plain.send_frame(OP_TEXT, b"small")
        alice, again = await v1_member(relay, "alice", since=welcome.position.token())
        assert again.recovery == v1.Recovery(False, 0, v1.MESSAGE_TOO_LARGE)
        # A position after it recovers what followed.
        await gone(relay, alice)
        alice, again = await v1_member(relay, "alice", since=f"{welcome.position.epoch}:1")
        assert again.recovery == v1.Recovery(True, 1)
        assert await next_message(alice) == (OP_TEXT, v1.From("plain", offset=2), b"small")
    for client in (alice, plain):
        await client.aclose()


@with_history
async def test_a_streamed_message_takes_an_offset_and_is_never_kept(relay: Relay) -> None:
    big = bytes(3 * 1024 * 1024)
    with trio.fail_after(30):
        alice, welcome = await v1_member(relay, "alice")
        assert welcome.position is not None
        bob, _ = await v1_member(relay, "bob")
        # Carol stays: once she has a message, it has taken its offset.
        carol, _ = await v1_member(relay, "carol")
        await bob.send_frame(OP_BINARY, b"\n" + big)
        assert await next_message(alice) == (OP_BINARY, v1.From("bob", offset=1), big)
        assert await next_message(carol) == (OP_BINARY, v1.From("bob", offset=1), big)
        await gone(relay, alice)
        await bob.send_frame(OP_BINARY, b"\n" + big)
        assert await next_message(carol) == (OP_BINARY, v1.From("bob", offset=2), big)
        alice, again = await v1_member(relay, "alice", since=f"{welcome.position.epoch}:1")
        assert again.recovery == v1.Recovery(False, 0, v1.MESSAGE_TOO_LARGE)
    for client in (alice, bob, carol):
        await client.aclose()


async def test_without_history_a_named_position_is_answered_no_history(relay: Relay) -> None:
    with trio.fail_after(10):
        alice, welcome = await v1_member(relay, "alice", since="feedfacefeedface:3")
    assert (welcome.position, welcome.recovery) == (None, v1.Recovery(False, 0, v1.NO_HISTORY))
    await alice.aclose()


@with_history
async def test_plain_members_are_unaffected(relay: Relay) -> None:
    with trio.fail_after(10):
        # A plain member's since is ignored; it gets bare payloads as ever.
        a = await RawClient.open(relay.port, "/ws?id=a&groupName=g&since=feedfacefeedface:1")
        b = await RawClient.open(relay.port, "/ws?id=b&groupName=g")
        await relay.wait_members(2, "g")
        await a.send_frame(OP_TEXT, b"exactly this")
        assert await b.recv_message() == (OP_TEXT, b"exactly this")
    for client in (a, b):
        await client.aclose()


@with_history
async def test_a_malformed_position_is_refused_with_400(relay: Relay) -> None:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
    status, _, body = await client.handshake("/ws?id=a&groupName=g&since=nonsense", V1_OFFER)
    assert status == 400 and b"since" in body
    await client.aclose()


@with_history
async def test_recovery_racing_live_traffic_has_no_gap_and_no_duplicate(relay: Relay) -> None:
    """A sender keeps sending while a member drops and reconnects, again and again:
    across its connections the member gets every message exactly once, in order."""
    total = 600
    received: list[int] = []
    sending_done = trio.Event()
    with trio.fail_after(60):
        sender = await RawClient.open(relay.port, "/ws?id=sender&groupName=g")
        member, welcome = await v1_member(relay, "member")
        assert welcome.position is not None
        position = welcome.position

        async def send() -> None:
            for n in range(total):
                await sender.send_frame(OP_TEXT, str(n).encode())
                if n % 50 == 0:
                    await trio.lowlevel.checkpoint()
            sending_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            while len(received) < total:
                # Read a stretch, then drop and come back naming the last one read.
                for _ in range(37):
                    if len(received) == total:
                        break
                    _, header, payload = await next_message(member)
                    assert header.offset is not None
                    position = v1.Position(position.epoch, header.offset)
                    received.append(int(payload))
                if len(received) == total:
                    break
                await gone(relay, member)
                member, again = await v1_member(relay, "member", since=position.token())
                assert again.recovery is not None and again.recovery.recovered
    assert received == list(range(total))
    for client in (sender, member):
        await client.aclose()


@pytest.mark.wsproxy_relay(history_size=10_000, history_bytes=64 * 1024 * 1024,
                           mailbox_bytes=64 * 1024, slow_member_timeout=0.5)  # fmt: skip
async def test_the_client_recovers_after_4001_and_its_handler_sees_every_message_once(
    relay: Relay, relay_log: LogLines
) -> None:
    """A client whose handler stalls is closed with 4001 (its mailbox on the relay
    full); it reconnects by itself, names its position, and every message reaches the
    handler exactly once, in order, with a Resumed event saying how many were replayed."""
    count = 3000  # 24 MiB in all
    recorder = Recorder(as_u32, stall_at=10)
    async with trio_wsproxy.open_client(
        relay.url, group="g", id="slow", on_disconnect=recorder.on_disconnect
    ) as client:
        recorder.attach(client)
        sender = await RawClient.open(relay.port, "/ws?id=sender&groupName=g")
        with trio.fail_after(60):
            await relay.wait_members(2, "g")
            await stall_into_4001(recorder, sender, count, relay, relay_log)
            # The client sees the close and reconnects.
            await recorder.closed_slow.wait()
            await recorder.saw(count)
    recorder.check(count)
    await sender.aclose()


# -- the history itself, on a mock clock -------------------------------------------------


async def test_a_history_forgets_by_count_bytes_and_age(mock_clock: trio.testing.MockClock) -> None:
    from trio_wsproxy.protocol.message import Message

    history = History(HistoryLimits(size=3, ttl=10.0, max_bytes=100))
    start = history.position
    for _ in range(3):
        history.record(Message("a", True, b"x" * 10))
    assert history.since(start, "b") != v1.POSITION_TOO_OLD
    history.record(Message("a", True, b"x" * 10))  # a fourth: the first is forgotten
    assert history.since(start, "b") == v1.POSITION_TOO_OLD
    assert len(history.since(v1.Position(start.epoch, 1), "b")) == 3  # type: ignore[arg-type]
    history.record(Message("a", True, b"x" * 90))  # 120 bytes: the oldest go, to 100
    assert history.first == 4
    mock_clock.jump(11)  # past the ttl: all of it
    assert history.since(v1.Position(start.epoch, 4), "b") == v1.POSITION_TOO_OLD
    histories = Histories(HistoryLimits(size=3, ttl=10.0, max_bytes=100))
    histories.of("idle").record(Message("a", True, b""))
    histories.of("busy")
    mock_clock.jump(11)
    histories.expire(trio.current_time(), lambda name: name == "busy")
    assert len(histories) == 1


async def test_a_nodes_copy_of_a_cluster_history_takes_redis_offsets_and_gaps(
    mock_clock: trio.testing.MockClock,
) -> None:
    """A node's mirror starts where Redis said the history was; offsets come from Redis
    (a declined stream claim is an offset with no message); it covers a position only
    from its start on, the rest is Redis's to answer."""
    from trio_wsproxy.protocol.message import Message

    mirror = History(HistoryLimits(size=3, ttl=10.0, max_bytes=100), "feedfacefeedface", 40)
    assert mirror.position == v1.Position("feedfacefeedface", 40)
    assert mirror.covers(v1.Position("feedfacefeedface", 40))
    assert not mirror.covers(v1.Position("feedfacefeedface", 39))  # before it: Redis
    assert not mirror.covers(v1.Position("other", 40))
    mirror.put(41, Message("a", True, b"x"))
    mirror.skip(42)  # a declined claim: nothing there
    mirror.put(43, Message("b", True, b"y"))
    mirror.put(44, Message("a", True, bytes(200)))  # over max_bytes: a gap
    assert mirror.last == 44
    found = mirror.since(v1.Position("feedfacefeedface", 40), "b")
    assert found == v1.MESSAGE_TOO_LARGE
    found = mirror.since(v1.Position("feedfacefeedface", 40), "c")
    assert found == v1.MESSAGE_TOO_LARGE
    mirror.put(45, Message("b", True, b"z"))
    missed = mirror.since(v1.Position("feedfacefeedface", 44), "a")
    assert [m.payload for m in missed] == [b"z"]  # type: ignore[union-attr]
    # Three entries kept (41 and its hole went): 40 is no longer covered.
    assert mirror.first == 43 and not mirror.covers(v1.Position("feedfacefeedface", 41))
    mock_clock.jump(11)
    assert not mirror.covers(v1.Position("feedfacefeedface", 44))
    assert mirror.covers(v1.Position("feedfacefeedface", 45))


def test_the_clients_position_moves_only_as_messages_are_read() -> None:
    from trio_wsproxy.client.resumption import Resumed, Resumption

    E = "feedfacefeedface"
    resumption = Resumption()
    assert resumption.since() is None  # the first connection names nothing
    assert resumption.welcomed(v1.Welcome("a", "g", None, 1, v1.Position(E, 7))) is None
    assert resumption.since() == f"{E}:7"
    resumption.heard(9)
    # A recovery keeps the position: the replayed messages move it as they are read...
    recovered = v1.Welcome("a", "g", None, 1, v1.Position(E, 12), v1.Recovery(True, 3))
    assert resumption.welcomed(recovered) == Resumed(True, 3)
    assert resumption.since() == f"{E}:9"
    resumption.heard(10)  # ...so a drop mid-replay names the last one really read
    assert resumption.since() == f"{E}:10"
    # A failed one starts from the group's position now.
    failed = v1.Welcome("a", "g", None, 1, v1.Position("other", 3), v1.Recovery(False, 0, "x"))
    assert resumption.welcomed(failed) == Resumed(False, 0, "x")
    assert resumption.since() == "other:3"
    resumption.lost()  # a plain relay: nothing to name
    assert resumption.since() is None


@pytest.mark.wsproxy_relay(history_size=100, history_bytes=1000, api_key="test-api-key-0123456789")
async def test_back_ends_read_a_groups_history_through_the_api(relay: Relay) -> None:
    from httpapi import call

    with trio.fail_after(10):
        answer = await call(relay.port, "GET", "/api/groups/g/history")
        assert answer.json == {"epoch": None, "first": 1, "last": 0, "messages": []}
        alice, welcome = await v1_member(relay, "alice")
        assert welcome.position is not None
        bob, _ = await v1_member(relay, "bob")
        await alice.send_frame(OP_TEXT, "\nhé".encode())
        await alice.send_frame(OP_BINARY, b'{"to":"bob"}\n\x00\xff')
        await alice.send_frame(OP_BINARY, b"\n" + bytes(2000))  # noted, not kept
        for _ in range(3):
            await next_message(bob)
        answer = await call(relay.port, "GET", "/api/groups/g/history")
        assert answer.json == {
            "epoch": welcome.position.epoch,
            "first": 1,
            "last": 3,
            "messages": [
                {"offset": 1, "kept": True, "from": "alice", "to": None, "text": "hé"},
                {"offset": 2, "kept": True, "from": "alice", "to": "bob", "binary": "AP8="},
                {"offset": 3, "kept": False},
            ],
        }
        answer = await call(relay.port, "GET", "/api/groups/g/history?since=1&limit=1")
        assert [m["offset"] for m in answer.json["messages"]] == [2]
        for bad in ("limit=0", "limit=1001", "since=-1", "since=x", "other=1", "since=1&since=2"):
            answer = await call(relay.port, "GET", f"/api/groups/g/history?{bad}")
            assert answer.status == 400, bad
    for client in (alice, bob):
        await client.aclose()
