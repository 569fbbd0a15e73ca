"""A v1 member joining a group in a cluster is unreachable until it is caught up, with or
without history: its join awaits Redis, and nothing live — a presence change, a message —
reaches it before its welcome, which is the first thing it gets and lists the group as it
is when it is given (no Redis, no sockets)."""

from __future__ import annotations

from typing import cast

import trio
import trio.testing

from trio_wsproxy.backplane.group import Carrier, SharedGroup
from trio_wsproxy.protocol import v1
from trio_wsproxy.protocol.encoding import PLAIN, V1, Encoding
from trio_wsproxy.relay.counters import Counters
from trio_wsproxy.relay.mailbox import Mailbox
from trio_wsproxy.relay.presence import PresenceTracker


class FakeMembership:
    """A membership as the group and presence see it."""

    def __init__(self, member_id: str, encoding: Encoding = V1) -> None:
        self.id = member_id
        self.group_name = "g"
        self.mailbox = Mailbox(1 << 16)
        self.encoding = encoding
        self.joined_at = 0.0
        self.connection_key = member_id

    def close(self, code: int, reason: str) -> None:
        raise AssertionError(f"closed {code}: {reason}")


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


def reached(group: SharedGroup) -> set[str]:
    """The ids of the members that live messages and presence go to now."""
    return {member.id for _, members in group.audiences for member in members}


async def test_a_member_still_joining_gets_nothing_live_and_its_welcome_comes_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    presence = PresenceTracker(limit=100, counters=Counters())
    # A group without history (not sequenced): the join's only await is Redis's.
    group = SharedGroup("g", cast(Carrier, object()), b"node-a", 1 << 20)
    assert not group.sequenced
    here, plain = FakeMembership("here"), FakeMembership("plain", PLAIN)
    for member in (here, plain):
        group.add(member)
        await group.catch_up(member, None)
    joining = FakeMembership("joining")
    group.add(joining)  # (its join now awaits Redis: registration, subscription)
    group.listed = True
    assert reached(group) == {"here", "plain"}
    # Someone joins elsewhere meanwhile: only "here" hears (plain members hear nothing).
    presence.changed(group, "far", joined=True)
    presence.announce()
    [told] = await events(here)
    assert isinstance(told, v1.Presence) and told.joined == ("far",)
    assert await events(joining) == []
    # Caught up (nothing to catch up with), then welcomed: the first thing it gets, with
    # the group as it is now; from here on it is reached.
    catch = await group.catch_up(joining, None)
    assert (catch.position, catch.recovery, catch.missed) == (None, None, [])
    assert reached(group) == {"here", "plain", "joining"}
    presence.welcome(joining, group)
    await trio.sleep(1)  # (the group's next announcement is due)
    presence.changed(group, "farther", joined=True)
    presence.announce()
    welcome, later = await events(joining)
    assert isinstance(welcome, v1.Welcome)
    assert welcome.members == frozenset({"here", "plain", "joining"})
    assert isinstance(later, v1.Presence) and later.joined == ("farther",)


async def test_a_plain_member_is_reached_as_soon_as_it_is_in_the_group() -> None:
    # No welcome to wait for: what is live goes to it from its join on, as before.
    group = SharedGroup("g", cast(Carrier, object()), b"node-a", 1 << 20)
    plain = FakeMembership("plain", PLAIN)
    group.add(plain)
    assert reached(group) == {"plain"}
