"""Reading one member's socket: the bytes, the frames, and the relay's hold on both.

A :class:`MemberReader` reads what one member sends — from the socket itself on plain
TCP on POSIX (its descriptor: a wait, then one ``os.read``), through the stream
otherwise (TLS) — and parses it into frames. It keeps the relay's rules about reading:

- **The buffer budget** (memory.py): what the member's unfinished message and read-ahead
  hold is counted in the relay-wide bound; over it, a member holding part of a message
  reads on only in turn (TURN_SLICE at most), and one holding nothing sips SIP bytes.
- **Read-ahead**: while the relay pauses the member's reader (a full mailbox, the
  group's floor, its rate limit), it reads ahead up to READ_AHEAD bytes, answering
  pings and keeping the data in order for later; beyond that, TCP pushes back.
- **Pacing**: the member's rate limits (messages and bytes per second).
- **The poller's hand-over** (poller.py): :meth:`MemberReader.read_now` is the one read
  the poller makes for a parked member; what its task goes on with is a :class:`Handover`.

It knows nothing of groups or delivery: the session acts on the frames.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs
import trio

from ..protocol.deflate import Inflater
from ..protocol.frames import Close, Data, Event, FrameParser, Ping, Pong, ProtocolError
from ..protocol.ratelimit import TokenBucket
from .memory import EVENT_OVERHEAD, SIP, TURN_SLICE, BufferBudget

if TYPE_CHECKING:
    from ..protocol.assembly import Assembly
    from .config import RelayConfig

T = TypeVar("T")

# Bytes asked of the socket per read: large enough that a burst of small messages is
# parsed in one go, small enough not to allocate much per read.
READ_SIZE: Final = 65536
# While the relay pauses a member's reader (its rate limit, a full mailbox, the group's
# floor, a scheduling turn), it reads ahead at most this much of the member's data, so
# that it still answers the member's pings and sees its pongs; beyond it TCP pushes back.
READ_AHEAD: Final = 2 * READ_SIZE
# os.read, bound once (a compiled build keeps it in C, not a module lookup per read).
_read: Final = os.read


@attrs.frozen
class Handover:
    """What a parked member's task goes on with when the poller hands it back: the
    frames read for it and not yet acted on (none: read for yourself); or bytes to
    parse (``data``; ``b""``: the connection is gone); or the protocol error its data
    raised (``error``), after the frames before it."""

    events: list[Event] = attrs.Factory(list)
    data: bytes | None = None
    error: ProtocolError | None = None


#: Read for yourself: the member's task reads its socket on its own.
READ_FOR_YOURSELF = Handover()


class MemberReader:
    """Reads one member's connection (``fd`` set: plain TCP, read directly)."""

    __slots__ = (
        "_ahead_bytes",
        "_assembly",
        "_buffers",
        "_byte_rate",
        "_has_turn",
        "_held",
        "_message_rate",
        "_pong",
        "_reading_ahead",
        "_stream",
        "_turn_ends",
        "ahead",
        "ahead_end",
        "fd",
        "leftover",
        "limited",
        "parser",
        "reads",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        config: RelayConfig,
        buffers: BufferBudget,
        assembly: Assembly,
        pong: Callable[[bytes], None],
        leftover: bytes = b"",
        inflate: bool = False,
    ) -> None:
        self._stream = stream
        #: The socket's descriptor on plain TCP on POSIX, else None (read the stream).
        self.fd: int | None = None
        if isinstance(stream, trio.SocketStream) and os.name == "posix":
            self.fd = stream.socket.fileno()
        #: Bytes that came with the upgrade request, parsed first.
        self.leftover = leftover
        # permessage-deflate: the member's messages may come compressed. Its inflater's
        # memory, while a compressed message arrives, counts with its unfinished bytes.
        self.parser = FrameParser(
            config.max_message_size, Inflater(config.max_message_size) if inflate else None
        )
        # The member's unfinished message, counted in the buffer budget.
        self._assembly = assembly
        # Answers a ping read ahead (the session queues the pong).
        self._pong = pong
        self._buffers = buffers
        # What this member's unfinished message and read-ahead hold, as counted in the
        # relay's buffer budget; and whether it holds the budget's turn to be read.
        self._held = 0
        self._has_turn = False
        self._turn_ends = 0.0
        self._message_rate = (
            TokenBucket(config.max_message_rate) if config.max_message_rate is not None else None
        )
        self._byte_rate = (
            TokenBucket(config.max_byte_rate) if config.max_byte_rate is not None else None
        )
        #: Whether the member has rate limits (its data frames are paced).
        self.limited = (
            self._message_rate is not None
            or self._byte_rate is not None
            or config.max_subject_message_rate is not None
        )
        #: What was read ahead while the reader was paused: frames in order, their data
        #: bytes, and how the connection ended meanwhile (False: it did not; True: it
        #: is gone; or the protocol error its data raised).
        self.ahead: collections.deque[Event] = collections.deque()
        self._ahead_bytes = 0
        self.ahead_end: ProtocolError | bool = False
        self._reading_ahead = False
        #: How many reads brought bytes (keepalive's proof of life).
        self.reads = 0

    @property
    def usual(self) -> bool:
        """Whether nothing about reading is unusual: no rate limit, nothing of the
        member's held, nothing read ahead pending, the relay within its buffer bound."""
        return (
            not self.limited
            and not self._held
            and not self._assembly.held
            and self.ahead_end is False
            and not self._buffers.over
        )

    @property
    def unusual(self) -> bool:
        """Whether the next read is :meth:`receive_unusually`'s (the member holds part
        of a message, the read-ahead ended the connection, or the relay is over its
        buffer bound)."""
        return bool(
            self._held or self._assembly.held or self.ahead_end is not False or self._buffers.over
        )

    def take_ahead(self) -> Event | None:
        """The next frame read ahead, if any."""
        if not self.ahead:
            return None
        event = self.ahead.popleft()
        if type(event) is Data:
            self._ahead_bytes -= len(event.payload) + EVENT_OVERHEAD
        return event

    def read_now(self) -> list[Event] | Handover | None:
        """The poller's one read for a parked member: the frames it brought, or what the
        member's task must go on with (the connection's end, a burst to read on, a
        protocol error), or None when nothing was there."""
        try:
            data = _read(self.fd, READ_SIZE)  # type: ignore[arg-type]
        except BlockingIOError:
            return None
        except OSError:
            return Handover(data=b"")
        if not data or len(data) == READ_SIZE:
            return Handover(data=data)  # the end, or a burst: the task reads on for itself
        self.reads += 1
        try:
            return self.parser.feed(data)
        except ProtocolError as exc:
            return Handover(exc.events, error=exc)  # (what came before it, first)

    def pop_end(self) -> ProtocolError | bool:
        """How the connection ended while the reader read ahead (False: it did not;
        True: it is gone; or the protocol error its data raised), now acted on."""
        end, self.ahead_end = self.ahead_end, False
        return end

    def needs_turn(self) -> bool:
        """Whether, over the relay's buffer bound and holding part of a message, the
        member must wait for the budget's turn (:meth:`take_turn`) before it reads on.
        (Brings the count of what it holds up to date, see :meth:`account`.)"""
        return bool(self.account() and self._buffers.over and not self._has_turn)

    async def receive_next(self) -> bytes:
        """:meth:`receive_some`, in the budget's turn if the member holds it."""
        if self._has_turn:
            return await self._receive_in_turn()
        return await self.receive_some()

    async def take_turn(self) -> None:
        """Wait for the buffer budget's turn to be read (TURN_SLICE at most)."""
        await self._buffers.take_turn()
        self._has_turn = True  # (set here: nothing can fail between the two)
        self._turn_ends = trio.current_time() + TURN_SLICE

    async def _receive_in_turn(self) -> bytes:
        """Read holding the buffer budget's turn, for TURN_SLICE at most: then the
        turn goes to the next member waiting for it (this one queues again), so that
        an idle or trickling member never holds up the others."""
        if self.fd is not None:
            with trio.move_on_at(self._turn_ends):
                return await self.receive_some()  # (cancel-safe on plain TCP)
        self._has_turn = False
        self._buffers.give_turn()
        return await self.receive_some()

    def count(self) -> int:
        """Bring the relay's count of this member's unfinished bytes up to date."""
        held = self._assembly.held + self._ahead_bytes + self.parser.inflating
        self._buffers.add(held - self._held)
        self._held = held
        return held

    def account(self) -> int:
        """:meth:`count`, and give up the budget's turn once this member holds nothing
        or the relay is under its bound again (in the session's own task: it owns it)."""
        held = self.count()
        if self._has_turn and (not held or not self._buffers.over):
            self._has_turn = False
            self._buffers.give_turn()
        return held

    def release(self) -> None:
        """The session ended: it holds nothing of the budget any more."""
        self._buffers.add(-self._held)
        self._held = 0
        if self._has_turn:
            self._has_turn = False
            self._buffers.give_turn()

    def can_read_ahead(self) -> bool:
        """Whether a pause may read ahead (plain TCP, not ended, not already)."""
        return self.fd is not None and self.ahead_end is False and not self._reading_ahead

    async def reading_ahead(self, wait: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``wait(*args)`` while reading ahead (see :meth:`can_read_ahead`)."""
        try:
            async with trio.open_nursery() as nursery:
                self._reading_ahead = True
                nursery.start_soon(self._read_ahead)
                try:
                    return await wait(*args)
                finally:
                    self._reading_ahead = False
                    nursery.cancel_scope.cancel()
        finally:
            if self._has_turn:
                # The read-ahead counted what it read (count: its task does not own the
                # turn). Holding nothing now, or under the bound, the member gives the
                # turn back here, in the session's task: else, usual again, it would
                # park in the poller with the turn, and nothing would give it back.
                self.account()

    async def _read_ahead(self) -> None:
        while self._ahead_bytes < READ_AHEAD and not self._buffers.over:
            data = await self.receive_some()
            if not data:
                self.ahead_end = True
                return
            self.reads += 1
            failure: ProtocolError | None = None
            try:
                events = self.parser.feed(data)
            except ProtocolError as exc:
                events, failure = exc.events, exc  # (what came before it, in order)
            for event in events:
                if type(event) is Ping:
                    self._pong(event.payload)
                elif type(event) is not Pong:
                    self.ahead.append(event)
                    if type(event) is Data:
                        self._ahead_bytes += len(event.payload) + EVENT_OVERHEAD
                    elif type(event) is Close:
                        return  # nothing more to read
            if failure is not None:
                self.ahead_end = failure
                return
            self.count()

    async def receive_some(self, size: int = READ_SIZE) -> bytes:
        """The next bytes from the member (``size`` at most; SIP while the relay is over
        its buffer bound and this member has no turn); b"" when its connection is gone."""
        fd = self.fd
        if fd is None:
            if self._buffers.over and not self._has_turn:
                size = SIP  # (decided before the wait here: TLS reads cannot be resized)
            try:
                received = await self._stream.receive_some(size)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return b""
            return received if isinstance(received, bytes) else bytes(received)
        # Plain TCP: wait first, then read once. Having just drained the socket, a read
        # attempt before waiting would almost always fail with EAGAIN — a wasted syscall
        # per message where messages come one per read (ping-pong, small groups).
        while True:
            try:
                await trio.lowlevel.wait_readable(fd)
            except trio.ClosedResourceError:
                return b""
            if self._buffers.over and not self._has_turn:
                # Decided now, not when the wait began: the relay went over its bound
                # meanwhile (many members' data may arrive in one scheduling turn).
                size = SIP
            try:
                return _read(fd, size)
            except BlockingIOError:
                continue
            except OSError:
                return b""

    def pace(self, event: Data) -> float:
        """Charge a data frame to the member's rate limits: how long to wait before
        forwarding it (0: at once). While the session waits, nothing more is read from
        the member, so TCP pushes back on the flood at its source."""
        now = trio.current_time()
        delay = 0.0
        if self._message_rate is not None and event.first:
            delay = self._message_rate.charge(1, now)
        if self._byte_rate is not None:
            delay = max(delay, self._byte_rate.charge(len(event.payload), now))
        return delay
