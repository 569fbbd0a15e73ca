"""The relay-wide bound on unfinished messages.

Each member's unfinished message is gathered up to ``FRAGMENT_SIZE`` before it goes out,
and a paused member's reader reads ahead a little: per member that is bounded, but
nothing bounded the sum (1,000 members each holding an unfinished 1 MiB message cost
1.1 GB). Mailboxes are bounded per member by ``mailbox_bytes`` and share each framed
message among all its recipients, so they are not counted here.

Over ``max_buffered_bytes``, the relay stops reading from the members that hold part of a
message: they wait, in order, and one at a time goes on reading until what it holds goes
out — which is what brings the sum down again, so the relay never deadlocks on its own
bound — or for ``TURN_SLICE`` at most, after which it queues again behind the others.
Members holding nothing (between messages) are read ``SIP`` bytes at a time, so the sum
passes the bound by at most that much per member.
"""

from __future__ import annotations

from typing import Final

import trio

#: What a member's read-ahead counts for each data frame it holds besides its payload:
#: the parsed frame's object and its slot in the queue, rounded up (measured with
#: tracemalloc: a frame with a one-byte payload costs 114 bytes held, 0.89 bytes per
#: counted byte). Without it, a paused member sending one-byte frames held 114 bytes per
#: counted byte.
EVENT_OVERHEAD: Final = 128
#: How much a member holding nothing may read at once while the relay is over its
#: bound (then, holding something, it waits its turn): however many members read, the
#: bound is passed by at most this much each.
SIP: Final = 4096
#: How long one member holds the turn at most, if what it holds has not gone out by
#: then: long enough for a member sending at any useful speed to finish a fragment (and
#: so bring the sum down), short enough that an idle or trickling one holds up nobody.
TURN_SLICE: Final = 0.5


class BufferBudget:
    """Bytes of unfinished messages the relay holds for all its members together."""

    __slots__ = ("_limit", "_turn", "held", "over")

    def __init__(self, limit: int | None) -> None:
        self._limit = limit if limit is not None else 1 << 62
        #: What all members hold now, and whether that is over the bound (an attribute:
        #: every read looks at it).
        self.held = 0
        self.over = False
        # Fair (FIFO): the members that wait go on in the order they came.
        self._turn = trio.Lock()

    def add(self, delta: int) -> None:
        """A member now holds ``delta`` bytes more (or fewer, if negative)."""
        self.held += delta
        self.over = self.held > self._limit

    async def take_turn(self) -> None:
        """Wait to be the one big holder that is read while the relay is over budget."""
        await self._turn.acquire()

    def give_turn(self) -> None:
        self._turn.release()
