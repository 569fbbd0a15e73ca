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
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple, Protocol

import trio

from ..protocol import v1

if TYPE_CHECKING:
    from ..protocol.message import Message
    from .config import RelayConfig


class History:
    """One group's recent messages: (offset, when, message or None when too large).

    On a single relay it gives the offsets (:meth:`record`). On a cluster's node it is
    that node's copy of the tail of the group's history in Redis, from the offsets Redis
    gave (:meth:`put`, :meth:`skip`): ``epoch`` and ``last`` are then Redis's, and
    offsets up to ``first - 1`` are to be read from Redis."""

    __slots__ = ("_bytes", "_entries", "_limits", "epoch", "first", "last", "touched")

    def __init__(self, limits: HistoryLimits, epoch: str | None = None, last: int = 0) -> None:
        self._limits = limits
        #: New for every history made: positions of another epoch cannot be recovered.
        self.epoch = secrets.token_hex(8) if epoch is None else epoch
        #: The last offset given out (0: none yet), and the first one still kept.
        self.last = last
        self.first = last + 1
        self._entries: collections.deque[tuple[int, float, Message | None]] = collections.deque()
        self._bytes = 0
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
        for message in messages:
            if offset > self.last:
                if message is not None:
                    if len(message.payload) > most:
                        message = None
                    else:
                        self._bytes += len(message.payload)
                entries.append((offset, now, message))
                self.last = offset
            offset += 1
        self._trim(now)

    def skip(self, offset: int) -> None:
        """Nothing is at ``offset`` (a stream's claim that was declined), the last now."""
        self.last = offset
        if not self._entries:
            self.first = offset + 1

    def _trim(self, now: float) -> None:
        limits, entries = self._limits, self._entries
        oldest = now - limits.ttl
        while entries and (
            len(entries) > limits.size or self._bytes > limits.max_bytes or entries[0][1] < oldest
        ):
            _, _, message = entries.popleft()
            if message is not None:
                self._bytes -= len(message.payload)
        self.first = entries[0][0] if entries else self.last + 1

    def since(self, position: v1.Position, member_id: str) -> list[Message] | str:
        """The messages after ``position`` that ``member_id`` is to get (those to the
        group but its own, and those to it alone), in order; or why they cannot all be
        had (a :class:`~trio_wsproxy.protocol.v1.Recovery` reason)."""
        self._trim(trio.current_time())
        if position.epoch != self.epoch or position.offset > self.last:
            return v1.EPOCH_CHANGED
        if position.offset < self.first - 1:
            return v1.POSITION_TOO_OLD
        return missed_by(
            ((offset, message) for offset, _, message in self._entries), position.offset, member_id
        )

    def covers(self, position: v1.Position) -> bool:
        """Whether every message after ``position`` up to the last is here."""
        self._trim(trio.current_time())
        return position.epoch == self.epoch and self.first - 1 <= position.offset <= self.last

    def read(self, after: int, limit: int) -> list[tuple[int, Message | None]]:
        """Up to ``limit`` kept entries with offsets after ``after``, in order: (offset,
        message, or None for one too large to keep). For back ends (the HTTP API)."""
        self._trim(trio.current_time())
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
        """The bounds ``config`` sets (None: history is off)."""
        if config.history_size is None:
            return None
        return cls(config.history_size, config.history_ttl, config.history_bytes)

    def __init__(self, size: int, ttl: float, max_bytes: int) -> None:
        self.size = size
        self.ttl = ttl
        #: Payload bytes kept per group; a message larger than this is noted, not kept
        #: (nor is a streamed one, over FRAGMENT_SIZE: memory stays flat).
        self.max_bytes = max_bytes


class Histories:
    """The histories of one relay's groups, by group name, kept for ``ttl`` after their
    last message once their group has no members."""

    def __init__(self, limits: HistoryLimits) -> None:
        self.limits = limits
        self._by_group: dict[str, History] = {}

    def __len__(self) -> int:
        return len(self._by_group)

    def attach(self, group: Kept) -> None:
        """Give ``group`` (new on this node, or held) its history, made if it has none:
        the group object goes when it empties, its history stays for the ttl."""
        if group.history is None:
            group.history = self.of(group.name)

    def of(self, group_name: str) -> History:
        """The group's history, made (with a new epoch) if it has none."""
        history = self._by_group.get(group_name)
        if history is None:
            history = self._by_group[group_name] = History(self.limits)
        return history

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
        whose last message is older than the ttl."""
        oldest = now - self.limits.ttl
        for name, history in list(self._by_group.items()):
            if history.touched < oldest and not has_members(name):
                del self._by_group[name]
