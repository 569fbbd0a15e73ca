"""A v1 member still joining (in a cluster, while its history is caught up with) hears
of no joins and leaves: its welcome is the first thing it gets, and it lists the group
as it is when it is given."""

from __future__ import annotations

from trio_wsproxy.protocol import v1
from trio_wsproxy.protocol.encoding import V1
from trio_wsproxy.relay.counters import Counters
from trio_wsproxy.relay.groups import Group
from trio_wsproxy.relay.mailbox import Mailbox
from trio_wsproxy.relay.presence import PresenceTracker


class FakeMembership:
    """A v1 membership as the group and presence see it, welcomed or still joining."""

    def __init__(self, member_id: str, welcomed: bool) -> None:
        self.id = member_id
        self.group_name = "g"
        self.mailbox = Mailbox(1 << 16)
        self.encoding = V1
        self.joined_at = 0.0
        self.connection_key = member_id
        self.welcomed = welcomed

    def close(self, code: int, reason: str) -> None:
        raise AssertionError(f"closed {code}: {reason}")

    def join_also(self, group_name: str) -> None:
        pass


async def events(member: FakeMembership) -> list[v1.From | v1.Event]:
    """What the member's mailbox holds, decoded (server frames: short, unmasked)."""
    if not member.mailbox.queued and not member.mailbox.catch_up:
        return []
    frames, _ = await member.mailbox.take(1 << 20)
    decoded = []
    for frame in frames:
        length = frame[1] & 0x7F
        payload = frame[4:] if length == 126 else frame[2:]
        decoded.append(v1.decode_relay_message(payload)[0])
    return decoded


async def test_a_member_still_joining_hears_of_no_change_and_its_welcome_comes_first() -> None:
    presence = PresenceTracker(limit=100, counters=Counters())
    group = Group("g")
    here = FakeMembership("here", welcomed=True)
    joining = FakeMembership("joining", welcomed=False)
    for member in (here, joining):
        group.add(member)
    group.listed = True
    # Someone joins while "joining" is still being caught up with: only "here" hears.
    presence.changed(group, "far", joined=True)
    presence.announce()
    [told] = await events(here)
    assert isinstance(told, v1.Presence) and told.joined == ("far",)
    assert await events(joining) == []
    # Then its welcome: the first thing it gets, with the group as it is now.
    presence.welcome(joining, group)
    joining.welcomed = True
    [welcome] = await events(joining)
    assert isinstance(welcome, v1.Welcome)
    assert welcome.members == frozenset({"here", "joining"})
