"""Who is in a group, as its ``wsproxy.v1`` members hear it: a welcome at join, then
joins and leaves in batches.

A burst of 1,000 joins must reach each member as a handful of events, not 1,000 (join
storms melt big channels elsewhere). So a change is not announced when it happens: the
group's pending changes are kept, coalesced to the last one per member id, and sent as
one :class:`~trio_wsproxy.protocol.v1.Presence` event per group every
:data:`INTERVAL`, framed once for all its v1 members.

Why the member list a client holds is exact at the end of a burst, whenever it was
welcomed: whether an id is in the group depends only on the last join or leave of that
id. An event carries, for every id that changed since the previous event, its last
change (an id that joined and left again is in ``left``); a client applies it to the
list it holds as "add" and "remove", ignoring what is already so. Its list, wherever
inside the batch its welcome was taken, comes out equal to the group's.

An event never goes between the fragments of a message streaming to the group: while
the group's floor is held, its changes wait for the next round.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import trio

from ..protocol import v1
from ..protocol.frames import OP_TEXT, frame
from .fanout import send_control
from .mailbox import FULL, HELD
from .namespaces import Namespace, namespace_of

if TYPE_CHECKING:
    from .counters import Counters
    from .groups import Group, Member
    from .mailbox import Mailbox

#: How long changes gather before they are announced: a burst of joins within this
#: window is one event per member. Short enough that a member list trails the group by
#: a fraction of a second at most.
INTERVAL = 0.1
#: A group with more v1 members than this waits proportionally longer between events
#: (2,000: 0.4 s): each event is one write per member, so a big group's churn costs the
#: relay the same per second as a small one's.
LISTENERS_PER_INTERVAL = 500


def event_frame(event: v1.Event) -> bytes:
    """A v1 event, framed as the text message that carries it."""
    return frame(OP_TEXT, v1.encode_event(event))


def infos(group: Group, ids: Iterable[str]) -> dict[str, Any] | None:
    """The info the back end gave the members ``ids`` of ``group`` (on any node), by
    id: those it gave one (None: none)."""
    return group.member_infos(ids) or None


class PresenceTracker:
    """The relay's pending membership changes, per group, and the task announcing them."""

    def __init__(
        self, limit: int, counters: Counters, namespaces: tuple[Namespace, ...] = ()
    ) -> None:
        #: Largest group that has a member list (RelayConfig.presence_limit), but in a
        #: namespace that sets its own (or has presence off).
        self.limit = limit
        self._namespaces = namespaces
        self._counters = counters
        # Group -> member id -> joined (True) or left (False), the last change per id,
        # in the order of those last changes.
        self._pending: dict[Group, dict[str, bool]] = {}
        self._due = trio.Event()

    def welcome(
        self,
        member: Member,
        group: Group,
        position: v1.Position | None = None,
        recovery: v1.Recovery | None = None,
    ) -> None:
        """Tell a v1 member that just joined who it is and who is there (ahead of any
        message to it: this is the first thing its mailbox holds), and, with history,
        the group's position and the answer to the position it named."""
        size = group.size
        members = None if size > self.limit_of(group) else frozenset(group.member_ids())
        info = None if members is None else infos(group, members)
        event = v1.Welcome(member.id, group.name, members, size, position, recovery, info)
        # (The first frame it gets in the group.)
        member.mailbox.offer_catch_up(member.encoding.event(event))
        self._counters.presence_events += 1

    def limit_of(self, group: Group) -> int:
        """The presence limit of ``group``: its namespace's, or the relay's; 0 in a
        namespace with presence off (its members get counts only, and no events)."""
        if self._namespaces:
            namespace = namespace_of(self._namespaces, group.name)
            if namespace is not None:
                if not namespace.presence:
                    return 0
                if namespace.presence_limit is not None:
                    return namespace.presence_limit
        return self.limit

    def changed(self, group: Group, member_id: str, joined: bool) -> None:
        """``member_id`` joined (or left) ``group``; announced with the next batch."""
        if not group.listener_count:
            return  # no v1 member to tell; one that joins later gets a welcome
        if self._namespaces and not self.limit_of(group):
            return  # presence off: nobody hears of joins and leaves
        pending = self._pending.get(group)
        if pending is None:
            pending = self._pending[group] = {}
            self._due.set()
        pending.pop(member_id, None)  # (re-inserted: the order of last changes)
        pending[member_id] = joined

    async def run(self) -> None:
        """Announce pending changes every INTERVAL while there are any (until cancelled)."""
        while True:
            await self._due.wait()
            await trio.sleep(INTERVAL)
            self._due = trio.Event()
            self.announce()

    def announce(self) -> None:
        """Send every group's pending changes that are due to its v1 members now."""
        pending, self._pending = self._pending, {}
        now = trio.current_time()
        # Frames written straight to members' sockets, once all groups' events are in:
        # a member in many groups gets one write per round, not one per group.
        held: list[Mailbox] = []
        for group, changes in pending.items():
            if group.floor.holder is not None or now < group.next_announcement:
                # A message is streaming to the group, or its last event was too
                # recent: wait for the next round.
                self._pending[group] = changes
                continue
            group.next_announcement = now + INTERVAL * (
                group.listener_count / LISTENERS_PER_INTERVAL
            )
            self._announce(group, changes, held)
        for mailbox in held:
            mailbox.flush()
        if self._pending:
            self._due.set()

    def _announce(self, group: Group, changes: dict[str, bool], held: list[Mailbox]) -> None:
        # Framed once per encoding that hears of joins and leaves: members whose URL
        # named the group, and those that joined it by name (their events name it).
        audiences = [(enc, members) for enc, members in group.audiences if enc.presence]
        if not audiences:
            return
        size = group.size
        event: v1.Event
        if size > self.limit_of(group):
            if not group.listed:
                return  # counts only, and they know it
            group.listed = False
            event = v1.Members(None, size)
        elif not group.listed:
            group.listed = True
            listed = frozenset(group.member_ids())
            event = v1.Members(listed, size, None, infos(group, listed))
        else:
            joined = tuple(member_id for member_id, j in changes.items() if j)
            left = tuple(member_id for member_id, j in changes.items() if not j)
            event = v1.Presence(joined, left, size, None, infos(group, joined))
        for encoding, members in audiences:
            data = encoding.event(event)
            for member in members:
                mailbox = member.mailbox
                result = mailbox.offer(data)
                if result == HELD:
                    held.append(mailbox)  # written straight to the socket below
                elif result == FULL:
                    send_control(member, data)  # never dropped: queued, or the member closed
            self._counters.presence_events += len(members)
