"""A shared group keeps its own account of the cluster: what it hears of members on other
nodes, and what losing Redis does to it (no Redis, no sockets)."""

from __future__ import annotations

from typing import cast

from trio_wsproxy.backplane.group import Carrier, SharedGroup
from trio_wsproxy.backplane.streams import RemoteStream
from trio_wsproxy.protocol.close_codes import CloseCode
from trio_wsproxy.protocol.encoding import PLAIN
from trio_wsproxy.protocol.message import StreamHead
from trio_wsproxy.relay.groups import Group
from trio_wsproxy.relay.mailbox import Mailbox


class FakeMember:
    """A member here, as a group sees it, and the closes it was given."""

    def __init__(self, member_id: str) -> None:
        self.id = member_id
        self.group_name = "g"
        self.mailbox = Mailbox(1 << 16)
        self.encoding = PLAIN
        self.joined_at = 0.0
        self.closes: list[tuple[int, str]] = []

    def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))


class Presence:
    """The relay's presence, as the backplane tells it: what it heard, and the group's
    size when it heard it."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, bool, int]] = []

    def __call__(self, group: Group, member_id: str, joined: bool) -> None:
        self.heard.append((member_id, joined, group.size))


def shared_group(*members: FakeMember) -> SharedGroup:
    # (Nothing here goes through the backplane.)
    group = SharedGroup("g", cast(Carrier, object()), b"node-a", 1 << 20)
    for member in members:
        group.add(member)
    return group


def test_presence_hears_of_a_join_elsewhere_before_the_group_counts_it_and_only_once() -> None:
    here = FakeMember("here")
    group = shared_group(here)
    presence = Presence()
    assert group.joined_elsewhere("b:1", "far", presence) is True
    assert group.joined_elsewhere("b:1", "far", presence) is False  # (heard again: known)
    assert presence.heard == [("far", True, 1)]
    assert group.size == 2 and group.elsewhere("far") and group.spans_nodes


def test_presence_hears_of_a_leave_elsewhere_after_the_group_forgot_it() -> None:
    group = shared_group(FakeMember("here"))
    presence = Presence()
    group.joined_elsewhere("b:1", "far", presence)
    group.left_elsewhere("b:1", "far", presence)
    group.left_elsewhere("b:1", "far", presence)  # (an unknown connection: nothing)
    assert presence.heard == [("far", True, 1), ("far", False, 1)]
    assert not group.spans_nodes


def test_losing_redis_closes_the_members_of_a_group_that_spans_nodes() -> None:
    here, also = FakeMember("here"), FakeMember("also")
    group = shared_group(here, also)
    presence = Presence()
    group.joined_elsewhere("b:1", "far", presence)
    group.joined_elsewhere("c:1", "farther", presence)
    presence.heard.clear()
    assert group.lose_redis("backplane lost (gone)", presence) is True
    for member in (here, also):
        assert member.closes == [(CloseCode.BACKPLANE_UNAVAILABLE, "backplane lost (gone)")]
    # Every member elsewhere leaves, as far as this node's presence knows...
    assert sorted(member_id for member_id, joined, _ in presence.heard if not joined) == [
        "far",
        "farther",
    ]
    # ...and the group forgets the rest of the cluster, and wakes who waited on Redis.
    assert group.remote == {} and not group.spans_nodes
    assert group.subscribed.is_set()
    assert group.inbox is None and group.inbox_bytes == 0 and group.inbox_drained.is_set()


def test_losing_redis_lets_a_group_of_this_node_only_go_on() -> None:
    here = FakeMember("here")
    group = shared_group(here)
    presence = Presence()
    assert group.lose_redis("backplane lost (gone)", presence) is False
    assert here.closes == [] and presence.heard == []
    assert group.subscribed.is_set()


def test_losing_redis_ends_a_stream_from_another_node_and_its_waiting_deliveries() -> None:
    here = FakeMember("here")
    group = shared_group(here)
    stream = RemoteStream(b"node-b", 1, StreamHead("far", False), ((PLAIN, (here,)),))
    group.floor.take(stream)
    group.open_inbox()
    assert group.inbox is not None and not group.inbox_drained.is_set()
    assert group.lose_redis("backplane lost (gone)", Presence()) is True
    assert here.closes == [(CloseCode.BACKPLANE_UNAVAILABLE, "backplane lost (gone)")]
    assert group.floor.holder is None
    assert group.inbox is None and group.inbox_drained.is_set()
