"""One message streams to a group at a time: the group's floor.

WebSocket forbids interleaving the fragments of two messages on one connection, and a
message too large to assemble goes out fragment by fragment as it arrives. So while one
member's message streams to a group, the group's other messages wait for the floor —
whether the streaming sender is on this node or (with a backplane) on another.
"""

from __future__ import annotations

from collections.abc import Callable

import trio


class Floor:
    """Who streams a message to one group now; everyone else waits for :meth:`wait`."""

    __slots__ = ("_changed", "_settled", "holder", "in_flight")

    def __init__(self) -> None:
        #: The sender streaming now (a session, or a backplane's record of a remote
        #: sender), or None when no message streams.
        self.holder: object | None = None
        self._changed = trio.Event()
        #: Whole messages that passed the floor and are still being queued for their
        #: recipients (a sender waiting for room in a full mailbox): a stream's first
        #: piece waits for them, or it could reach a recipient they have yet to reach.
        self.in_flight = 0
        self._settled = trio.Event()

    async def wait(self, who: object, before_waiting: Callable[[], None] | None = None) -> None:
        """Return once the floor is free or held by ``who``; ``before_waiting`` runs
        before each wait (a producer writes out what it holds before yielding)."""
        while self.holder is not None and self.holder is not who:
            if before_waiting is not None:
                before_waiting()
            await self._changed.wait()

    def passing(self) -> None:
        """A whole message passed the floor (call :meth:`passed` once it is queued)."""
        self.in_flight += 1

    def passed(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self._settled.set()
            self._settled = trio.Event()

    async def settled(self) -> None:
        """Wait until no whole message that passed the floor is still being queued."""
        while self.in_flight:
            await self._settled.wait()

    def take(self, who: object) -> None:
        """``who`` streams now. Taking a held floor is for the backplane alone, whose
        channel order has decided between senders already; waiters re-check."""
        if self.holder is not who:
            self.holder = who
            self._wake()

    def release(self, who: object) -> bool:
        """``who``'s message ended: the floor is free (False if ``who`` did not hold it)."""
        if self.holder is not who:
            return False
        self.holder = None
        self._wake()
        return True

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
