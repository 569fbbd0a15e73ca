"""How a node orders a group's channel (backplane/order.py): the decisions every node
takes the same way from the same sequence, without Redis."""

from __future__ import annotations

from trio_wsproxy.backplane.order import (
    ChannelOrder,
    Decline,
    DeliverHere,
    DeliverPiece,
    EndOwn,
    EndRemote,
    FloorHolder,
    Grant,
    Overflow,
    StartRemote,
)
from trio_wsproxy.protocol.message import Message, StreamHead
from trio_wsproxy.protocol.nodes import (
    MemberJoined,
    Messages,
    StreamAbort,
    StreamPiece,
    StreamStart,
)

HERE = b"h" * 16
THERE = b"t" * 16
ELSEWHERE = b"e" * 16
HEAD = StreamHead("sender", text=False)


def batch(*payloads: bytes) -> tuple[Message, ...]:
    return tuple(Message("m", False, payload) for payload in payloads)


def order(limit: int = 1000) -> ChannelOrder:
    return ChannelOrder(HERE, limit)


def test_whole_messages_from_another_node_go_out_at_once() -> None:
    channel = order()
    assert channel.receive(Messages(THERE, batch(b"a", b"b")), FloorHolder.FREE) == [
        DeliverHere(batch(b"a", b"b"))
    ]


def test_this_nodes_own_messages_are_not_delivered_twice() -> None:
    assert order().receive(Messages(HERE, batch(b"a")), FloorHolder.FREE) == []


def test_sequenced_own_messages_are_delivered_here_in_channel_order() -> None:
    """With history on a cluster, a node's own messages come back from Redis with their
    offsets, and only then go to its members: in channel order, behind a stream too."""
    channel = order()
    assert channel.receive(Messages(HERE, batch(b"a")), FloorHolder.FREE, sequenced=True) == [
        DeliverHere(batch(b"a"))
    ]
    assert channel.receive(StreamStart(THERE, 1, HEAD), FloorHolder.FREE, sequenced=True) == [
        StartRemote(THERE, 1, HEAD, conflict=False)
    ]
    assert channel.receive(Messages(HERE, batch(b"b")), FloorHolder.REMOTE, sequenced=True) == []
    end = StreamPiece(THERE, 1, 1, b"x", last=True)
    assert channel.receive(end, FloorHolder.REMOTE) == [
        DeliverPiece(b"x", first=True, last=True, number=1),
        DeliverHere(batch(b"b")),
    ]


def test_the_first_start_owns_the_floor_and_a_later_one_is_declined() -> None:
    channel = order()
    assert channel.receive(StreamStart(THERE, 1, HEAD), FloorHolder.FREE) == [
        StartRemote(THERE, 1, HEAD, conflict=False)
    ]
    assert channel.receive(StreamStart(HERE, 7, HEAD), FloorHolder.REMOTE) == [Decline(7)]
    assert channel.owner == (THERE, 1)


def test_this_nodes_start_on_a_free_channel_is_granted() -> None:
    channel = order()
    assert channel.receive(StreamStart(HERE, 3, HEAD), FloorHolder.LOCAL) == [Grant(3)]
    # Its own pieces went out as they were sent; the last one frees the channel.
    assert channel.receive(StreamPiece(HERE, 3, 1, b"x", last=False), FloorHolder.LOCAL) == []
    assert channel.receive(StreamPiece(HERE, 3, 2, b"y", last=True), FloorHolder.LOCAL) == [
        EndOwn()
    ]
    assert channel.owner is None


def test_messages_wait_for_a_streaming_message_and_follow_its_end_in_order() -> None:
    channel = order()
    channel.receive(StreamStart(THERE, 1, HEAD), FloorHolder.FREE)
    assert channel.receive(Messages(ELSEWHERE, batch(b"1")), FloorHolder.REMOTE) == []
    assert channel.receive(Messages(ELSEWHERE, batch(b"2")), FloorHolder.REMOTE) == []
    assert channel.receive(StreamPiece(THERE, 1, 1, b"p1", last=False), FloorHolder.REMOTE) == [
        DeliverPiece(b"p1", first=True, last=False, number=1)
    ]
    assert channel.receive(StreamPiece(THERE, 1, 2, b"p2", last=True), FloorHolder.REMOTE) == [
        DeliverPiece(b"p2", first=False, last=True, number=2),
        DeliverHere(batch(b"1")),
        DeliverHere(batch(b"2")),
    ]


def test_messages_wait_while_the_last_piece_is_still_queued_here() -> None:
    channel = order()
    # The stream ended in channel order, but its last piece waits in the group's inbox.
    assert channel.receive(Messages(THERE, batch(b"late")), FloorHolder.REMOTE) == []
    assert channel.floor_freed() == [DeliverHere(batch(b"late"))]


def test_a_local_stream_holds_messages_from_other_nodes_too() -> None:
    channel = order()
    assert channel.receive(Messages(THERE, batch(b"a")), FloorHolder.LOCAL) == []
    # The next channel message after the floor is free delivers what waited, first.
    assert channel.receive(Messages(THERE, batch(b"b")), FloorHolder.FREE) == [
        DeliverHere(batch(b"a")),
        DeliverHere(batch(b"b")),
    ]


def test_pieces_of_a_stream_that_does_not_own_the_floor_are_ignored() -> None:
    channel = order()
    channel.receive(StreamStart(THERE, 1, HEAD), FloorHolder.FREE)
    assert channel.receive(StreamPiece(ELSEWHERE, 9, 1, b"x", last=False), FloorHolder.REMOTE) == []
    assert channel.receive(StreamAbort(ELSEWHERE, 9), FloorHolder.REMOTE) == []
    assert channel.owner == (THERE, 1)


def test_an_abort_cuts_the_stream_off_and_releases_what_waited() -> None:
    channel = order()
    channel.receive(StreamStart(THERE, 1, HEAD), FloorHolder.FREE)
    channel.receive(Messages(ELSEWHERE, batch(b"w")), FloorHolder.REMOTE)
    assert channel.receive(StreamAbort(THERE, 1), FloorHolder.REMOTE) == [
        EndRemote(truncated=True),
        DeliverHere(batch(b"w")),
    ]


def test_a_remote_start_during_a_local_stream_is_a_conflict() -> None:
    channel = order()
    assert channel.receive(StreamStart(THERE, 1, HEAD), FloorHolder.LOCAL) == [
        StartRemote(THERE, 1, HEAD, conflict=True)
    ]


def test_too_much_waiting_overflows_and_drops_nothing_silently() -> None:
    channel = order(limit=10)
    channel.receive(StreamStart(THERE, 1, HEAD), FloorHolder.FREE)
    assert channel.receive(Messages(ELSEWHERE, batch(b"123456")), FloorHolder.REMOTE) == []
    assert channel.receive(Messages(ELSEWHERE, batch(b"123456")), FloorHolder.REMOTE) == [
        Overflow()
    ]
    assert not channel.pending and channel.pending_bytes == 0


def test_announcements_need_no_ordering() -> None:
    assert order().receive(MemberJoined(THERE, "id", "owner"), FloorHolder.FREE) == []


def test_a_reset_forgets_the_owner_and_what_waited() -> None:
    channel = order()
    channel.receive(StreamStart(THERE, 1, HEAD), FloorHolder.FREE)
    channel.receive(Messages(ELSEWHERE, batch(b"w")), FloorHolder.REMOTE)
    channel.reset()
    assert channel.owner is None and not channel.pending and channel.pending_bytes == 0
