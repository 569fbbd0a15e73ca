"""Groups' recent messages, kept so that a reconnecting wsproxy.v1 member gets what it
missed (DESIGN.md §7, docs/protocol.md).

Each message a history-enabled group carries gets the next offset of its group's
history, in the same synchronous step that queues it for the members there: a member
that joins gets each message either live or in its replay, never both and never
neither. A history is bounded by count, age and payload bytes. A message too large to
keep (a streamed one, or one over the byte bound) still takes its offset, as a gap that
no recovery can cross. The epoch is new whenever a history is (new) made: a position of
another epoch cannot be recovered from.

A group's history outlives its members for ``history_ttl``: a group whose only member
reconnects finds its history still there.

The relay's histories together are bounded too (:class:`Histories`): by the memory they
hold, counted as memory (each kept message's overhead, each history's own), and by
their number, histories of groups that emptied included. Over a bound, the histories of
groups that emptied go first, the group that emptied longest ago first; then the oldest
messages of the relay's histories. A history dropped this way is as one that expired: a
member naming a position in it is told its epoch changed. A new group that finds no room
even so (the histories of groups with members fill a bound) keeps none while it lives.
Recovery stays all-or-nothing throughout: a member that missed a dropped message is told
so (``position_too_old``), never given a gap.
"""

from __future__ import annotations

import collections
import heapq
import secrets
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, NamedTuple, Protocol

import trio

from ..protocol import v1

if TYPE_CHECKING:
    from ..protocol.message import Message
    from .config import RelayConfig


# What keeping things costs in memory, beyond the payload's own bytes: measured with
# tracemalloc on CPython 3.11, 64-bit (tests/test_history_bounds.py holds the sum of
# these to what tracemalloc sees, within a quarter either way). Rounded up: the allocator
# rounds each object up (pymalloc to 16 bytes; a payload over 512 bytes is malloc's, with
# its chunk header).

#: A kept message: its entry's tuple, offset and time, the Message, the payload's bytes
#: object header and the deque's slot (226 bytes measured). The addressee of a message to
#: one member adds its string.
ENTRY_OVERHEAD = 240
#: A gap (a message too large to keep, or streamed): its entry alone (121 measured).
GAP_OVERHEAD = 128
#: A history with nothing kept: the History, its deque's first block, its epoch, its
#: slot in the relay's dict of histories (about 970 bytes measured); its group's name,
#: which it keeps alive, adds that string.
HISTORY_OVERHEAD = 1024


def entry_cost(message: Message | None) -> int:
    """The memory keeping ``message`` (None: a gap) costs, in bytes."""
    if message is None:
        return GAP_OVERHEAD
    if message.to is None:
        return ENTRY_OVERHEAD + len(message.payload)
    return ENTRY_OVERHEAD + len(message.payload) + sys.getsizeof(message.to)


def history_cost(group_name: str) -> int:
    """The memory a history of ``group_name`` costs with nothing kept, in bytes."""
    return HISTORY_OVERHEAD + sys.getsizeof(group_name)


class History:
    """One group's recent messages: (offset, when, message or None when too large).

    On a single relay it gives the offsets (:meth:`record`). On a cluster's node it is
    that node's copy of the tail of the group's history in Redis, from the offsets Redis
    gave (:meth:`put`, :meth:`skip`): ``epoch`` and ``last`` are then Redis's, and
    offsets up to ``first - 1`` are to be read from Redis.

    ``ledger``: the relay's :class:`Histories`, which this one tells what its entries
    cost as they come and go, and which may take its oldest ones for the relay's bound."""

    __slots__ = (
        "_bytes",
        "_entries",
        "_ledger",
        "_limits",
        "cost",
        "epoch",
        "first",
        "last",
        "touched",
    )

    def __init__(
        self,
        limits: HistoryLimits,
        epoch: str | None = None,
        last: int = 0,
        ledger: Histories | None = None,
    ) -> None:
        self._limits = limits
        self._ledger = ledger
        #: New for every history made: positions of another epoch cannot be recovered.
        self.epoch = secrets.token_hex(8) if epoch is None else epoch
        #: The last offset given out (0: none yet), and the first one still kept.
        self.last = last
        self.first = last + 1
        self._entries: collections.deque[tuple[int, float, Message | None]] = collections.deque()
        #: Payload bytes kept (the group's own byte bound), and the memory its entries
        #: cost (:func:`entry_cost`: the relay's bound).
        self._bytes = 0
        self.cost = 0
        #: When a message was last recorded (trio clock): idle histories expire.
        self.touched = trio.current_time()

    @property
    def position(self) -> v1.Position:
        """Where the group is now: its epoch and last offset."""
        return v1.Position(self.epoch, self.last)

    def record(self, message: Message) -> None:
        """Give ``message`` the next offset, and keep it if it fits the byte bound
        (otherwise it is noted, not kept: recovery across it fails)."""
        small = len(message.payload) <= self._limits.max_bytes
        message.offset = self._append(message if small else None)

    def record_unkept(self) -> int:
        """Give a message that is not kept (a streamed one) the next offset."""
        return self._append(None)

    def _append(self, kept: Message | None) -> int:
        self.put(self.last + 1, kept)
        return self.last

    def put(self, offset: int, message: Message | None) -> None:
        """Keep ``message`` at ``offset`` (after the last), if it fits the byte bound;
        None, or a message too large: a gap there."""
        self.put_all(offset, (message,))

    def put_all(self, offset: int, messages: Iterable[Message | None]) -> None:
        """:meth:`put` each of ``messages``, from ``offset`` on (those at or before the
        last are had already), with one clock reading and one trim for all."""
        now = self.touched = trio.current_time()
        entries, most = self._entries, self._limits.max_bytes
        added = 0
        for message in messages:
            if offset > self.last:
                if message is None:
                    added += GAP_OVERHEAD
                else:
                    size = len(message.payload)
                    if size > most:
                        message = None
                        added += GAP_OVERHEAD
                    else:
                        self._bytes += size
                        # (entry_cost, inlined for the common case: this is per message)
                        to = message.to
                        added += ENTRY_OVERHEAD + size if to is None else entry_cost(message)
                entries.append((offset, now, message))
                self.last = offset
            offset += 1
        added -= self._trim(now)
        self.cost += added
        ledger = self._ledger
        if ledger is not None:
            ledger.bytes += added
            if ledger.bytes > ledger.max_bytes:
                ledger.make_room()

    def skip(self, offset: int) -> None:
        """Nothing is at ``offset`` (a stream's claim that was declined), the last now."""
        self.last = offset
        if not self._entries:
            self.first = offset + 1

    def _trim(self, now: float) -> int:
        """Forget what the group's own bounds no longer allow; the memory that freed
        (for the caller to account: :meth:`_freed`)."""
        limits, entries = self._limits, self._entries
        oldest = now - limits.ttl
        freed = 0
        while entries and (
            len(entries) > limits.size or self._bytes > limits.max_bytes or entries[0][1] < oldest
        ):
            _, _, message = entries.popleft()
            if message is None:
                freed += GAP_OVERHEAD
            else:
                size = len(message.payload)
                self._bytes -= size
                freed += ENTRY_OVERHEAD + size if message.to is None else entry_cost(message)
        self.first = entries[0][0] if entries else self.last + 1
        return freed

    def _freed(self, cost: int) -> None:
        if cost:
            self.cost -= cost
            if self._ledger is not None:
                self._ledger.bytes -= cost

    def forget_oldest(self) -> float | None:
        """Drop the oldest kept entry (the relay's bound needs the room: a recovery from
        before it now fails, ``position_too_old``); when the next one was recorded, or
        None when none is left."""
        entries = self._entries
        _, _, message = entries.popleft()
        if message is not None:
            self._bytes -= len(message.payload)
        self._freed(entry_cost(message))
        if not entries:
            self.first = self.last + 1
            return None
        self.first = entries[0][0]
        return entries[0][1]

    def trim(self, now: float) -> None:
        """Forget what is older than the ttl (a quiet group's history gives its memory
        back without waiting for its next message)."""
        self._freed(self._trim(now))

    def since(self, position: v1.Position, member_id: str) -> list[Message] | str:
        """The messages after ``position`` that ``member_id`` is to get (those to the
        group but its own, and those to it alone), in order; or why they cannot all be
        had (a :class:`~trio_wsproxy.protocol.v1.Recovery` reason)."""
        self._freed(self._trim(trio.current_time()))
        if position.epoch != self.epoch or position.offset > self.last:
            return v1.EPOCH_CHANGED
        if position.offset < self.first - 1:
            return v1.POSITION_TOO_OLD
        return missed_by(
            ((offset, message) for offset, _, message in self._entries), position.offset, member_id
        )

    def covers(self, position: v1.Position) -> bool:
        """Whether every message after ``position`` up to the last is here."""
        self._freed(self._trim(trio.current_time()))
        return position.epoch == self.epoch and self.first - 1 <= position.offset <= self.last

    def read(self, after: int, limit: int) -> list[tuple[int, Message | None]]:
        """Up to ``limit`` kept entries with offsets after ``after``, in order: (offset,
        message, or None for one too large to keep). For back ends (the HTTP API)."""
        self._freed(self._trim(trio.current_time()))
        found: list[tuple[int, Message | None]] = []
        for offset, _, message in self._entries:
            if offset > after:
                found.append((offset, message))
                if len(found) == limit:
                    break
        return found


def missed_by(
    entries: Iterable[tuple[int, Message | None]], after: int, member_id: str
) -> list[Message] | str:
    """Of ``entries`` (offset, message or None for a gap, in order), the messages after
    offset ``after`` that ``member_id`` is to get (those to the group but its own, and
    those to it alone); or MESSAGE_TOO_LARGE when a gap is among them."""
    missed: list[Message] = []
    for offset, message in entries:
        if offset <= after:
            continue
        if message is None:
            return v1.MESSAGE_TOO_LARGE
        if message.to == member_id or (message.to is None and message.sender != member_id):
            missed.append(message)
    return missed


class CatchUp(NamedTuple):
    """What a joining member is told, and given, from its group's history."""

    #: Where the group is as the member joins (None: the group keeps no history).
    position: v1.Position | None
    #: The answer to the position the member named (None: it named none).
    recovery: v1.Recovery | None
    #: What it missed, in order, to be queued ahead of anything live.
    missed: list[Message]


def catch_up(history: History | None, since: v1.Position | None, member_id: str) -> CatchUp:
    """A member ``member_id`` joins a group whose history is ``history`` (None: off),
    naming ``since`` (None: nothing to recover)."""
    if history is None:
        recovery = None if since is None else v1.Recovery(False, 0, v1.NO_HISTORY)
        return CatchUp(None, recovery, [])
    if since is None:
        return CatchUp(history.position, None, [])
    found = history.since(since, member_id)
    if isinstance(found, str):
        return CatchUp(history.position, v1.Recovery(False, 0, found), [])
    return CatchUp(history.position, v1.Recovery(True, len(found)), found)


class HistoryPage(NamedTuple):
    """A read of a group's history for back ends (the HTTP API)."""

    #: The history's epoch (None: the group has none yet).
    epoch: str | None
    #: The first offset still kept, and the last one given out.
    first: int
    last: int
    #: (offset, message, or None for one too large to keep), in order.
    entries: list[tuple[int, Message | None]]


class Kept(Protocol):
    """What keeps a history: a group (named so, not imported: groups.py imports this)."""

    @property
    def name(self) -> str: ...

    history: History | None


class HistoryLimits:
    """The bounds of every group's history (``RelayConfig.history_*``)."""

    __slots__ = ("max_bytes", "size", "ttl")

    @classmethod
    def of(cls, config: RelayConfig) -> HistoryLimits | None:
        """The bounds ``config`` sets for groups outside every namespace, or for none
        of them (size 0) when only namespaces keep history (None: no group keeps any)."""
        if config.history_size is None and not any(
            namespace.history_size for namespace in config.namespaces
        ):
            return None
        return cls(config.history_size or 0, config.history_ttl, config.history_bytes)

    def size_of(self, config: RelayConfig, group_name: str) -> HistoryLimits | None:
        """The bounds of the group ``group_name``'s history: its namespace's size, if it
        sets one (0: none), else the relay's (None: the group keeps no history)."""
        namespace = config.namespace(group_name) if config.namespaces else None
        size = (
            self.size
            if namespace is None or namespace.history_size is None
            else (namespace.history_size)
        )
        if not size:
            return None
        return self if size == self.size else HistoryLimits(size, self.ttl, self.max_bytes)

    def __init__(self, size: int, ttl: float, max_bytes: int) -> None:
        self.size = size
        self.ttl = ttl
        #: Payload bytes kept per group; a message larger than this is noted, not kept
        #: (nor is a streamed one, over FRAGMENT_SIZE: memory stays flat).
        self.max_bytes = max_bytes


class HistoryUsage(NamedTuple):
    """What a registry's histories hold now, for ``/metrics``."""

    #: Groups with a history in this process: with members, or kept after they emptied.
    groups: int = 0
    #: The memory those histories hold, in bytes (see :func:`entry_cost`).
    bytes: int = 0
    #: What the relay-wide bounds took or withheld, by kind (:data:`EVICTIONS`).
    evictions: Mapping[str, int] = {}


#: The kinds of :attr:`HistoryUsage.evictions`: the history of a group that emptied,
#: dropped before its ttl; a kept message, dropped before its group's own bounds would
#: have; a new group that got no history (the histories of groups with members filled a
#: bound).
EVICTIONS = ("emptied_group", "message", "new_group")

#: How far below ``max_bytes`` dropping the oldest messages relay-wide goes, as a
#: fraction of it: finding them looks at every history, so it is done once per 1/8 of
#: the bound recorded, not once per message (measured: recording then costs about
#: twice what it does below the bound, with 2,000 groups' histories over it).
SHED_FRACTION = 8


class Histories:
    """The histories of one relay's groups, by group name, kept for ``ttl`` after their
    last message once their group has no members; and the relay-wide bounds on them.

    ``max_bytes``: the memory all of them may hold together (entries and the histories'
    own overhead, see :func:`entry_cost`); ``max_groups``: how many there may be (None:
    no bound). Histories of groups with members and of groups that emptied count alike.
    Over a bound, the histories of groups that emptied are dropped, the group that
    emptied longest ago first (its members, reconnecting, are told ``epoch_changed``
    once their group has a new history); if the histories of groups with members alone
    are over ``max_bytes``, their oldest messages go, relay-wide, down to 7/8 of it
    (a member that missed one is told ``position_too_old``). A new group for which
    there is no room even so (``max_groups`` histories of groups with members, or their
    own overhead alone fills ``max_bytes``) keeps no history while it lives: its
    members are welcomed without a position, and one naming a position is told
    ``no_history``. Nothing here refuses a member: history is an aid to recovery, and
    the relay's group limits are ``max_groups`` and ``max_members``."""

    def __init__(
        self,
        limits: HistoryLimits,
        max_bytes: int | None = None,
        max_groups: int | None = None,
        config: RelayConfig | None = None,
    ) -> None:
        self.limits = limits
        # Where a group's own bounds come from (its namespace's history_size).
        self._config = config
        self.max_bytes = sys.maxsize if max_bytes is None else max_bytes
        self.max_groups = sys.maxsize if max_groups is None else max_groups
        #: The memory the histories hold now, in bytes.
        self.bytes = 0
        self._by_group: dict[str, History] = {}
        # The names of the histories whose group emptied (no group object holds them),
        # the group that emptied longest ago first: the first to go over a bound.
        self._emptied: dict[str, None] = {}
        self.evictions: collections.Counter[str] = collections.Counter()

    def __len__(self) -> int:
        return len(self._by_group)

    @property
    def usage(self) -> HistoryUsage:
        """How many histories there are, and what they hold (for ``/metrics``)."""
        return HistoryUsage(len(self._by_group), self.bytes, dict(self.evictions))

    def attach(self, group: Kept) -> None:
        """Give ``group`` (new on this node, or held) its history: the one its name
        still has, or a new one if the bounds leave room for it (else it keeps none).
        The group object goes when it empties (:meth:`release`); its history stays for
        the ttl."""
        if group.history is not None:
            return
        history = self._by_group.get(group.name)
        if history is not None:
            self._emptied.pop(group.name, None)
        elif self._limits_of(group.name) is None:
            return  # (its namespace keeps no history)
        elif self._room_for(history_cost(group.name)):
            history = self.of(group.name)
        else:
            self.evictions["new_group"] += 1
            return
        group.history = history

    def release(self, group: Kept) -> None:
        """``group``'s object is gone (it emptied): its history is kept for the ttl,
        and is the first to go should the bounds need room."""
        history = group.history
        if history is not None and self._by_group.get(group.name) is history:
            self._emptied[group.name] = None

    def of(self, group_name: str) -> History:
        """The group's history, made (with a new epoch) if it has none."""
        history = self._by_group.get(group_name)
        if history is None:
            limits = self._limits_of(group_name) or self.limits
            history = self._by_group[group_name] = History(limits, ledger=self)
            self.bytes += history_cost(group_name)
        return history

    def _limits_of(self, group_name: str) -> HistoryLimits | None:
        config = self._config
        if config is None:
            return self.limits
        return self.limits.size_of(config, group_name)

    def get(self, group_name: str) -> History | None:
        """The group's history, if it has one (none is made)."""
        return self._by_group.get(group_name)

    def page(self, group_name: str, after: int, limit: int) -> HistoryPage:
        """Up to ``limit`` entries of the group's history after offset ``after``."""
        history = self._by_group.get(group_name)
        if history is None:  # (no message yet, and no member: nothing is made for a read)
            return HistoryPage(None, 1, 0, [])
        entries = history.read(after, limit)
        return HistoryPage(history.epoch, history.first, history.last, entries)

    def expire(self, now: float, has_members: Callable[[str], bool]) -> None:
        """Drop the histories of groups without members (``has_members(name)`` false)
        whose last message is older than the ttl; forget what is older than the ttl in
        the others."""
        oldest = now - self.limits.ttl
        for name, history in list(self._by_group.items()):
            if has_members(name):
                history.trim(now)
            elif history.touched < oldest:
                self._drop(name)

    def make_room(self) -> None:
        """The histories hold more than ``max_bytes``: drop those of groups that
        emptied, then the oldest messages relay-wide."""
        while self.bytes > self.max_bytes and self._emptied:
            self._drop_emptied()
        if self.bytes > self.max_bytes:
            self._forget_oldest(0)

    def _room_for(self, cost: int) -> bool:
        """Make room for a new history that costs ``cost``, if the bounds allow: whether
        there is room now."""
        while len(self._by_group) >= self.max_groups or self.bytes + cost > self.max_bytes:
            if self._emptied:
                self._drop_emptied()
            elif len(self._by_group) >= self.max_groups:
                return False
            else:
                self._forget_oldest(cost)
                return self.bytes + cost <= self.max_bytes
        return True

    def _drop_emptied(self) -> None:
        name = next(iter(self._emptied))
        self._drop(name)
        self.evictions["emptied_group"] += 1

    def _drop(self, name: str) -> None:
        history = self._by_group.pop(name)
        self._emptied.pop(name, None)
        history._ledger = None  # (gone: nothing it does now is the relay's)
        self.bytes -= history.cost + history_cost(name)

    def _forget_oldest(self, cost: int) -> None:
        """Drop the oldest kept messages of all histories, oldest first, until they hold
        ``cost`` less than 7/8 of ``max_bytes`` (or nothing is left to drop)."""
        goal = self.max_bytes - self.max_bytes // SHED_FRACTION - cost
        heap = [
            (history._entries[0][1], n, history)
            for n, history in enumerate(self._by_group.values())
            if history._entries
        ]
        heapq.heapify(heap)
        while heap and self.bytes > goal:
            _, n, history = heap[0]
            following = history.forget_oldest()
            self.evictions["message"] += 1
            if following is None:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (following, n, history))
