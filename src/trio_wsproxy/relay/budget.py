"""How much work the relay does between two looks at its sockets.

Trio runs every task that is ready before it polls for I/O again. Without a bound, N
members of one group that each send a message at once make one scheduling turn do all
N × (N − 1) deliveries — seconds, for a big group — while every other group, the health
check and the metrics wait. So big pieces of work (a message to many recipients, a
member's teardown) are charged to a relay-wide budget per turn. While the budget lasts,
charging costs two additions and no task switch; once it is spent, the next big piece
waits, parked, for a later turn, and turns pass with a poll of the sockets between
them.

Every delivery is charged, small fan-outs included: 20 groups of 32 whose members each
send thousands of tiny messages per read once made one turn of 336,000 deliveries and
held every other group (and the health check) for seconds. A pair's message costs one
addition while the budget lasts, and a wait of one turn every :data:`PER_TURN`
deliveries, which the one-to-one benchmarks do not see. Small work that has to wait
goes ahead of big work at the next turn (a pair's message never queues behind a crowd's
half a million deliveries), and at least one piece of big work is granted every turn
(so a stream of small work never starves it).
"""

from __future__ import annotations

import collections
import time

import trio

#: Deliveries (mailbox offers) per scheduling turn: about 5–50 ms of fan-out on the
#: reference machine, short enough that other groups never notice, long enough that
#: a big group's throughput pays only one task switch per turn for it.
PER_TURN = 4096
#: How long a turn may go on charging once its PER_TURN deliveries are spent: as long
#: as it has taken less than this, it gets PER_TURN more. Deliveries differ in cost by
#: 40 times — a big group's each end in a write to its member's socket, a small group's
#: blast is written once per read — and a count alone would end a turn of cheap ones
#: after a millisecond, paying a task switch and a write per recipient for every few
#: messages (measured on benchmarks/small_groups.py: 0.41 M deliveries/s by count
#: alone, 1.5 M with 5 ms, 2.1 M with 10 ms, the canary's median 8, 11 and 17 ms).
TURN_TIME = 0.010
#: Work this small (a message to at most this many recipients) is granted first when
#: it has to wait for a turn.
SMALL = 32
#: What tearing down one session costs, in deliveries (leave, logs, closing its socket
#: and tasks; measured: 19,000 at once, canary gap 0.15 s at 256, 1 s at 64): a mass
#: disconnect is spread over turns like a burst.
TEARDOWN = 256
#: What a v1 member's join of one more group costs (its registration, welcome, presence,
#: and on a cluster its subscription), taken as a teardown's: a member joining 1,000
#: groups at once takes turns with everyone else's fan-out.
MEMBERSHIP = TEARDOWN


class TurnBudget:
    """The relay's fan-out budget per scheduling turn; :meth:`run` is a relay task."""

    __slots__ = ("_big", "_small", "_started", "_wanted", "per_turn", "spent")

    def __init__(self, per_turn: int = PER_TURN) -> None:
        self.per_turn = per_turn
        #: Work charged since the last turn the budget was renewed in.
        self.spent = 0
        # Work waiting for a turn, in order: small (at most SMALL) and big.
        self._small: collections.deque[tuple[int, trio.Event]] = collections.deque()
        self._big: collections.deque[tuple[int, trio.Event]] = collections.deque()
        self._wanted = trio.Event()
        # When the budget was last renewed (perf_counter): the turn's start.
        self._started = 0.0

    def charge(self, cost: int) -> bool:
        """Charge ``cost`` if this turn's budget allows it: True means go on now; False
        means :meth:`wait_turn` first (so does work of its size waiting already)."""
        if self._small or (cost > SMALL and self._big):
            return False
        if self.spent < self.per_turn:
            self.spent += cost
            return True
        if time.perf_counter() - self._started < TURN_TIME:
            # Spent, but in less than TURN_TIME: the turn goes on for PER_TURN more.
            self.spent = cost
            return True
        return False

    async def wait_turn(self, cost: int) -> None:
        """Wait until a later scheduling turn has room for ``cost`` (charged to it)."""
        granted = trio.Event()
        (self._small if cost <= SMALL else self._big).append((cost, granted))
        self._wanted.set()
        await granted.wait()

    async def spend(self, cost: int) -> None:
        """:meth:`charge`, and :meth:`wait_turn` if it says so."""
        if not self.charge(cost):
            await self.wait_turn(cost)

    async def run(self) -> None:
        """Renew the budget once per scheduling turn while work waits for it, granting
        the waiting work (small first, and at least one big); sleeps (no CPU) while
        nothing waits."""
        small, big = self._small, self._big
        try:
            while True:
                await self._wanted.wait()
                self._wanted = trio.Event()
                while small or big:
                    # Rescheduled into the next turn: the relay polls its sockets first.
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    self.spent = 0
                    self._started = time.perf_counter()
                    if big:
                        self._grant(big)
                    while small and self.spent < self.per_turn:
                        self._grant(small)
                    while big and self.spent < self.per_turn:
                        self._grant(big)
        finally:
            # The relay is stopping: its sessions (shielded) must not wait for turns
            # that will never come.
            self.per_turn = 1 << 62
            for _, granted in (*small, *big):
                granted.set()
            small.clear()
            big.clear()

    def _grant(self, waiting: collections.deque[tuple[int, trio.Event]]) -> None:
        cost, granted = waiting.popleft()
        self.spent += cost
        granted.set()
