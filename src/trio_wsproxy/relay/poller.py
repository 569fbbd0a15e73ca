"""Reading idle members' sockets in one task: a wake-up per scheduling turn, not one
per message.

Trio wakes one task per readable socket, and re-arms its one-shot epoll registration
(an ``epoll_ctl``) every time that task waits again. On one-to-one traffic — ping-pong,
request and reply, a game's player-to-player messages — every message a member sends
pays for that wake-up and that re-arm: most of what relaying it costs beside the
system calls that carry it (see the performance page).

A member's receiver task that has nothing unusual going on (nothing held, not paused,
not rate-limited, nothing half-read) parks here instead of waiting for its socket. The
poller keeps the sockets of parked sessions in an epoll set of its own and waits for
that set's descriptor the way Trio waits for any socket. When it is readable, the
poller asks each ready member's session to read its socket once and forward what it
read, there and then, with the session's own code (:meth:`Session.readable`), and goes
back to waiting. A socket is in the set, level-triggered, for as long as its session
stays parked: messages that need nothing unusual cost no registration at all.

Whatever would have to wait — a full mailbox, the floor, a turn, a close, a ping, a
message in several frames, a burst — goes back to the member's receiver task, which
takes it from there and parks again once all is usual again. Its socket leaves the
set meanwhile, so that the poller never wakes for a socket it does not read.

One message in flight is the exception (a two-player game, a chat with one speaker):
there every wake-up finds one socket ready, nothing is shared, and waiting for the set
and then asking it costs an ``epoll_wait`` more per message than a task waiting for its
own socket. When every wake-up of a window (:attr:`Poller.solo_after` of them) found one
socket ready, of at most two members, the poller goes *solo*: it hands each member it
reads for back to its own task, and members read for themselves instead of parking.
After :attr:`Poller.look_again_after` such reads, relay-wide, it looks again: members
park as they next read, and a window with more than one socket ready at once (or more
than two members) keeps them there. Members parked and idle meanwhile stay parked.

Everything stays Trio's: the poller is one task in the relay's nursery, driven by
Trio's own scheduler; its epoll set is just another descriptor Trio waits on. It does
nothing without a readable socket (no busy loop), and when it stops, every parked task
goes back to reading for itself.
"""

from __future__ import annotations

import select
from typing import Final

import outcome
import trio

from .reader import READ_FOR_YOURSELF, Handover

#: The window of wake-ups: when each of them found one socket ready, of at most two
#: members, the poller goes solo (members read for themselves).
SOLO_AFTER: Final = 64
#: Members' own reads while solo, relay-wide, after which the poller looks again.
LOOK_AGAIN_AFTER: Final = 4096


class Reader:
    """What the poller reads for: the session (relay/session.py) is one. (A base class
    rather than a protocol: in a compiled build the poller calls it natively.)"""

    __slots__ = ()

    def readable(self) -> Handover | None:
        """Read the socket once and act on what it held: None when all was done (the
        session stays parked); else what its task wakes up with and goes on from (see
        :class:`~.reader.Handover`)."""
        raise NotImplementedError


class Poller:
    """One task that reads for every parked session; :meth:`run` is a relay task."""

    __slots__ = (
        "_epoll",
        "_first",
        "_own_reads",
        "_parked",
        "_second",
        "_several",
        "_wakes",
        "handovers",
        "look_again_after",
        "reads",
        "running",
        "solo",
        "solo_after",
        "solo_spells",
    )

    def __init__(self) -> None:
        self._epoll = select.epoll()
        #: Parked sessions by descriptor, and their tasks.
        self._parked: dict[int, tuple[Reader, trio.lowlevel.Task]] = {}
        #: True while :meth:`run` runs: only then may sessions park.
        self.running = False
        #: How often the poller read for a parked session, and how often it handed one
        #: back to its own task.
        self.reads = 0
        self.handovers = 0
        #: True while solo: members read for themselves (see the module's docstring).
        self.solo = False
        #: How many times the poller went solo.
        self.solo_spells = 0
        #: The window of wake-ups that decides going solo, and the members' own reads
        #: after which the poller looks again (settable: tests use short ones).
        self.solo_after = SOLO_AFTER
        self.look_again_after = LOOK_AGAIN_AFTER
        # The window: its wake-ups so far, the (at most two) sockets found ready, and
        # whether a wake-up found more than one (or a third member's).
        self._wakes = 0
        self._first = -1
        self._second = -1
        self._several = False
        self._own_reads = 0

    @property
    def parked(self) -> int:
        """How many sessions are parked here now."""
        return len(self._parked)

    @staticmethod
    def available() -> bool:
        """Whether this platform has what the poller needs (Linux's epoll)."""
        return hasattr(select, "epoll")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        epoll, parked = self._epoll, self._parked
        wait_readable, fileno, poll = trio.lowlevel.wait_readable, epoll.fileno(), epoll.poll
        self.running = True
        task_status.started()
        try:
            while True:
                await wait_readable(fileno)
                ready = poll(0)
                if not self.solo:
                    self._watch(ready)
                for fd, _ in ready:
                    entry = parked.get(fd)
                    if entry is None:  # (handed back meanwhile: a cancellation's abort)
                        continue
                    reader, task = entry
                    self.reads += 1
                    try:
                        handover = reader.readable()
                    except Exception as exc:  # (a bug: raised in that session's own task)
                        self._hand_back(fd, task, outcome.Error(exc))
                        continue
                    if handover is None and self.solo:
                        handover = READ_FOR_YOURSELF
                    if handover is not None:
                        self._hand_back(fd, task, outcome.Value(handover))
        finally:
            self.running = False
            for _, task in parked.values():
                trio.lowlevel.reschedule(task, outcome.Value(READ_FOR_YOURSELF))
            parked.clear()
            epoll.close()

    def _watch(self, ready: list[tuple[int, int]]) -> None:
        """Count a wake-up into the window; at its end, go solo if every one of its
        wake-ups found one socket ready, of at most two members."""
        if not self._several:
            if len(ready) != 1:
                self._several = True
            else:
                fd = ready[0][0]
                if fd != self._first and fd != self._second:
                    if self._first < 0:
                        self._first = fd
                    elif self._second < 0:
                        self._second = fd
                    else:
                        self._several = True
        self._wakes += 1
        if self._wakes >= self.solo_after:
            if not self._several:
                self.solo = True
                self.solo_spells += 1
                self._own_reads = 0
            self._wakes, self._first, self._second, self._several = 0, -1, -1, False

    def admits(self) -> bool:
        """Whether a member with nothing unusual going on parks now: False while solo (it
        waits for its own socket and reads it), each call counted as one such read,
        until :attr:`look_again_after` of them."""
        if not self.solo:
            return True
        self._own_reads += 1
        if self._own_reads < self.look_again_after:
            return False
        self.solo = False  # (look again: members park, a fresh window decides)
        return True

    def _hand_back(
        self, fd: int, task: trio.lowlevel.Task, result: outcome.Outcome[object]
    ) -> None:
        self.handovers += 1
        del self._parked[fd]
        self._epoll.unregister(fd)
        trio.lowlevel.reschedule(task, result)

    async def park(self, reader: Reader, fd: int) -> Handover:
        """Wait, parked, until the poller hands the session back (only while
        :attr:`running`)."""
        parked, epoll = self._parked, self._epoll
        # Level-triggered, and only while parked: what is already waiting is reported at
        # once, and a socket its own task reads (handed back) never wakes the poller.
        epoll.register(fd, select.EPOLLIN)
        parked[fd] = (reader, trio.lowlevel.current_task())

        def abort(_: object) -> trio.lowlevel.Abort:
            del parked[fd]
            epoll.unregister(fd)
            return trio.lowlevel.Abort.SUCCEEDED

        handover: Handover = await trio.lowlevel.wait_task_rescheduled(abort)
        return handover
