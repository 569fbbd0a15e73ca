"""Who else is in the group, as a ``wsproxy.v1`` relay tells it — decided without I/O.

:class:`MemberList` holds a client's view of its group: the other members' ids, how many
they are, and whether the relay keeps that list current. The connection task feeds it
the relay's events (:class:`~trio_wsproxy.protocol.v1.Welcome`,
:class:`~trio_wsproxy.protocol.v1.Presence`, :class:`~trio_wsproxy.protocol.v1.Members`)
as it reads them; each returns the :class:`Joined` and :class:`Left` events that say how
the list changed, for the handlers. One rule holds throughout: after the first welcome,
``members`` changes only by those events, so an application that keeps its own set from
them always ends up with the same one — across reconnects and relays too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ..protocol.v1 import Members, Presence, Welcome

__all__ = ["EVENT_TYPES", "DeliveryFailed", "Joined", "Left", "MemberList", "MembershipChange"]


@attrs.frozen
class Joined:
    """Member ``id`` joined the group (delivered to handlers and subscriptions of
    ``Joined``; only a ``wsproxy.v1`` relay tells)."""

    #: The member's id.
    id: str
    #: What the application's back end gave the member (its connect hook's ``info``),
    #: if anything.
    info: Mapping[str, Any] | None = None


@attrs.frozen
class Left:
    """Member ``id`` left the group (delivered to handlers and subscriptions of ``Left``;
    only a ``wsproxy.v1`` relay tells)."""

    #: The member's id.
    id: str


@attrs.frozen
class DeliveryFailed:
    """The relay could not deliver a message of this client's: ``error`` is the relay's
    stable code (``"no_such_member"``: no member ``to`` in the group), ``detail`` its
    sentence. Delivered to handlers and subscriptions of ``DeliveryFailed``."""

    #: The member id the message was addressed to, if it was addressed to one.
    to: str | None
    #: The relay's code for what went wrong, e.g. ``"no_such_member"``.
    error: str
    #: The relay's explanation, for people.
    detail: str


#: A change :class:`MemberList` reports.
MembershipChange = Joined | Left

#: The types the client delivers as events of its own rather than as members' messages:
#: they are never read from an envelope, and a subscription to every message does not get them.
EVENT_TYPES: frozenset[type] = frozenset({Joined, Left, DeliveryFailed})


class MemberList:
    """One client's view of the other members of its group (see the module docstring).

    ``own_id`` is the client's id, never counted among the others.
    """

    def __init__(self, own_id: str) -> None:
        self._own_id = own_id
        self._members: frozenset[str] = frozenset()
        self._count: int | None = None
        # The info the back end gave members (those it gave one), by id.
        self._info: dict[str, Mapping[str, Any]] = {}
        self._current = False
        self._welcomed = False
        # Senders heard from since the last membership event: members, even if the
        # relay's (batched) presence event naming them has not come yet.
        self._heard: set[str] = set()

    @property
    def members(self) -> frozenset[str]:
        """The other members' ids, as last known (empty if never known)."""
        return self._members

    @property
    def info(self) -> Mapping[str, Mapping[str, Any]]:
        """What the application's back end gave the other members (its connect hook's
        ``info``), by id: those it gave one, as last told."""
        return self._info

    @property
    def count(self) -> int | None:
        """How many other members the group has, as last told; None if never told."""
        return self._count

    @property
    def current(self) -> bool:
        """Whether :attr:`members` is kept current: on a v1 connection whose relay keeps
        the group's member list (not over its presence limit)."""
        return self._current

    def known_absent(self, member_id: str) -> bool:
        """Whether ``member_id`` is, for sure, not in the group as the relay last said:
        the list is current, does not hold it, and no message from it came since."""
        return self._current and member_id not in self._members and member_id not in self._heard

    def heard_from(self, sender: str) -> None:
        """A message from ``sender`` came: it is a member, whatever the list says yet."""
        if self._current and sender not in self._members:
            self._heard.add(sender)

    def connection_ended(self) -> None:
        """The connection is gone: the list is no longer kept current (it stays as it was)."""
        self._current = False
        self._heard.clear()

    def apply(self, event: Welcome | Presence | Members) -> list[MembershipChange]:
        """Take in one of the relay's membership events; returns the changes it made."""
        if isinstance(event, Welcome):
            return self.welcome(event)
        if isinstance(event, Presence):
            return self.presence(event)
        return self.members_list(event)

    def welcome(self, welcome: Welcome) -> list[MembershipChange]:
        """A connection's first message. The first welcome sets the list without events;
        a later one (a reconnection) replaces it and returns the difference."""
        self._own_id = welcome.id
        first = not self._welcomed
        self._welcomed = True
        changes = self._replace(welcome.members, welcome.count, welcome.info)
        return [] if first else changes

    def presence(self, presence: Presence) -> list[MembershipChange]:
        """A batch of joins and leaves: one :class:`Joined` per new id in order, then one
        :class:`Left` per id that was there, in order. Ids already known (or unknown, for
        a leave) change nothing, so no event is ever doubled."""
        self._set_count(presence.count)
        self._heard.clear()
        if not self._current:
            return []  # no list to apply them to; a Members event brings one
        members = set(self._members)
        changes: list[MembershipChange] = []
        info = presence.info or {}
        for member in presence.joined:
            if member != self._own_id and member not in members:
                members.add(member)
                given = info.get(member)
                if given is not None:
                    self._info[member] = given
                changes.append(Joined(member, given))
        for member in presence.left:
            if member in members:
                members.discard(member)
                self._info.pop(member, None)
                changes.append(Left(member))
        self._members = frozenset(members)
        return changes

    def members_list(self, event: Members) -> list[MembershipChange]:
        """The whole list afresh (or None: no longer kept): returns the difference."""
        return self._replace(event.members, event.count, event.info)

    def _replace(
        self,
        members: frozenset[str] | None,
        count: int,
        info: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> list[MembershipChange]:
        self._set_count(count)
        self._heard.clear()
        if members is None:
            # Over the relay's presence limit: the list stays as last known, not current.
            self._current = False
            return []
        others = members - {self._own_id}
        self._info = {member: given for member, given in (info or {}).items() if member in others}
        changes = _difference(self._members, others, self._info)
        self._members = others
        self._current = True
        return changes

    def _set_count(self, count: int) -> None:
        # The relay counts this member too.
        self._count = max(count - 1, 0)


def _difference(
    old: frozenset[str], new: frozenset[str], info: Mapping[str, Mapping[str, Any]]
) -> list[MembershipChange]:
    """The events that turn ``old`` into ``new``: joins, then leaves, each sorted by id
    (a whole list has no order of its own)."""
    joined: Iterable[MembershipChange] = (
        Joined(member, info.get(member)) for member in sorted(new - old)
    )
    left: Iterable[MembershipChange] = (Left(member) for member in sorted(old - new))
    return [*joined, *left]
