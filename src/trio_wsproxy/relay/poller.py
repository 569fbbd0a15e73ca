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

Everything stays Trio's: the poller is one task in the relay's nursery, driven by
Trio's own scheduler; its epoll set is just another descriptor Trio waits on. It does
nothing without a readable socket (no busy loop), and when it stops, every parked task
goes back to reading for itself.
"""

from __future__ import annotations

import select

import outcome
import trio

from .reader import READ_FOR_YOURSELF, Handover


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

    __slots__ = ("_epoll", "_parked", "handovers", "reads", "running")

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
                for fd, _ in poll(0):
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
                    if handover is not None:
                        self._hand_back(fd, task, outcome.Value(handover))
        finally:
            self.running = False
            for _, task in parked.values():
                trio.lowlevel.reschedule(task, outcome.Value(READ_FOR_YOURSELF))
            parked.clear()
            epoll.close()

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
