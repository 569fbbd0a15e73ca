"""A connection's membership in a group is the member the group holds: frames for any of
its groups land in the connection's one mailbox, and what a group ends is the
connection's to decide (relay sessions: tests/test_v1_groups.py)."""

from __future__ import annotations

from trio_wsproxy.protocol.encoding import PLAIN, V1, Encoding, V1Encoding
from trio_wsproxy.protocol.message import Message
from trio_wsproxy.relay.counters import Counters
from trio_wsproxy.relay.fanout import Courier
from trio_wsproxy.relay.groups import Group
from trio_wsproxy.relay.mailbox import Mailbox
from trio_wsproxy.relay.membership import Membership


class Connection:
    def __init__(self, member_id: str) -> None:
        self.id = member_id
        self.key = member_id
        self.mailbox = Mailbox(1 << 20)
        self.encoding: Encoding = PLAIN
        self.closed: list[tuple[Membership, int, str]] = []

    def membership_closed(self, membership: Membership, code: int, reason: str) -> None:
        self.closed.append((membership, code, reason))


async def test_a_connection_in_two_groups_is_one_member_of_each_with_one_mailbox() -> None:
    alice = Connection("alice")
    lobby, match = Group("lobby"), Group("match")
    in_lobby = Membership(alice, "lobby", None, 0.0)
    in_match = Membership(alice, "match", None, 0.0)
    lobby.add(in_lobby)
    match.add(in_match)
    assert lobby.locate("alice") is in_lobby and match.locate("alice") is in_match
    assert (in_lobby.id, in_lobby.mailbox, in_lobby.encoding) == ("alice", alice.mailbox, PLAIN)
    courier = Courier(1.0, Counters())
    for group, text in ((lobby, b"to the lobby"), (match, b"to the match")):
        ((encoding, members),) = group.audiences
        assert courier.offer(encoding.message(Message("bob", True, text)), members) is None
    courier.flush()
    frames, _ = await alice.mailbox.take(1 << 20)
    assert [frame[2:] for frame in frames] == [b"to the lobby", b"to the match"]


def test_what_a_group_ends_is_told_to_the_connection() -> None:
    alice = Connection("alice")
    membership = Membership(alice, "lobby", None, 0.0)
    membership.close(4001, "mailbox full")
    assert alice.closed == [(membership, 4001, "mailbox full")]


def test_a_membership_in_a_group_its_url_did_not_name_frames_for_that_group() -> None:
    alice = Connection("alice")
    alice.encoding = V1
    tagged = Membership(alice, "room-2", None, 0.0, V1.for_group("room-2"))
    assert tagged.encoding == V1Encoding("room-2") != V1
    # One object per group: fan-out groups its members by encoding, by identity first.
    assert V1.for_group("room-2") is tagged.encoding
    frame = tagged.encoding.message(Message("bob", True, b"hi"))
    assert frame[2:] == b'{"from":"bob","group":"room-2"}' + b"\nhi"


def test_a_membership_keeps_the_position_it_named_and_says_what_it_is() -> None:
    membership = Membership(Connection("alice"), "lobby", None, 12.5)
    assert membership.group is None and membership.sender is None
    assert membership.joined_at == 12.5 and membership.since is None
    assert repr(membership) == "<Membership id='alice' group='lobby'>"
