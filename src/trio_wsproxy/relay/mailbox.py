"""A member's mailbox: the frames waiting to be written to it, bounded in bytes.

The bound counts memory, not only payload: each queued frame counts its length and
:data:`FRAME_OVERHEAD`, what holding it costs besides (its bytes object's header and
its slot in the queue), so that a mailbox of one-byte messages holds no more memory
than one of large ones."""

from __future__ import annotations

import math
import os
from typing import Final

import trio

#: :meth:`Mailbox.offer` results.
FULL: Final = 0
QUEUED: Final = 1
#: Queued and held for a direct write: the caller must call :meth:`Mailbox.flush`
#: before it next yields to the scheduler.
HELD: Final = 2

#: What the mailbox counts for each frame besides its bytes: a bytes object's header
#: (33 bytes) and the queue's slot for it, rounded up (measured with tracemalloc: a
#: mailbox full of 3-byte frames holds 0.66 bytes per counted byte, of 4 KiB frames
#: 0.99; without it, a 4 MiB mailbox of 3-byte frames held 93 MB).
FRAME_OVERHEAD: Final = 64

# os.write, bound once (a compiled build keeps it in C, not a module lookup per write).
_write: Final = os.write


class Mailbox:
    """Outgoing frames of one member, in order, on a Trio memory channel.

    Producers (the receivers of the other members) never block in :meth:`offer`: it
    queues a frame if it fits and says FULL otherwise, and the producer decides how long
    to wait in :meth:`wait_room`. The member's sender task takes everything queued at
    once (:meth:`take`), writes it, then reports the bytes :meth:`written`, so bytes being
    written still count against the bound.

    The direct path: when nothing is queued, the sender task is idle, so a producer may
    write to the member's socket itself (``fd``) instead of waking the sender — the
    same bytes in the same order, one task switch fewer. Frames offered while nothing
    is queued are held (HELD) until the producer's :meth:`flush`, which writes what the
    socket takes at once and hands any rest to the sender task through the channel.
    """

    __slots__ = (
        "_held",
        "_receive",
        "_room",
        "_send",
        "capacity",
        "catch_up",
        "closed",
        "fd",
        "full_since",
        "queued",
        "tail",
    )

    def __init__(self, capacity: int) -> None:
        # Unbounded as a channel: the bound is in bytes, enforced by offer().
        self._send, self._receive = trio.open_memory_channel[bytes](math.inf)
        self._room: trio.Event | None = None
        self._held: list[bytes] | None = None
        self.capacity = capacity
        #: Bytes accepted and not yet written, what a joining member missed excepted.
        self.queued = 0
        #: Bytes of what a joining member missed (its welcome and the messages it
        #: recovers), queued ahead of everything else and not yet written: outside the
        #: bound (:meth:`offer_catch_up`), so that a recovering member is never held to be
        #: slow, nor refused an event, for what it is still reading of its recovery.
        self.catch_up = 0
        #: When a producer first found the mailbox full since the last write, or None.
        self.full_since: float | None = None
        #: Set by :meth:`close`; a closed mailbox accepts and discards everything.
        self.closed = False
        #: The member's socket, for direct writes; None where that is not possible (TLS).
        self.fd: int | None = None
        #: What a direct write left of the frames it began, queued for the sender task
        #: until written: even a closing member gets it before its close frame, or its
        #: client would read the close frame as the rest of a frame.
        self.tail: bytes | None = None

    def offer(self, frame: bytes) -> int:
        """Queue ``frame`` if it fits (a frame always fits an empty mailbox): QUEUED, or
        HELD when the caller must :meth:`flush`; FULL when it does not fit."""
        if self.closed:
            return QUEUED
        queued = self.queued
        size = len(frame) + FRAME_OVERHEAD
        if queued:
            if queued + size > self.capacity:
                return FULL
            self.queued = queued + size
            if self._held is not None:
                self._held.append(frame)
            else:
                self._send.send_nowait(frame)
            return QUEUED
        self.queued = size
        if self.catch_up:
            # Behind what a joining member missed: queued after it, never written ahead.
            self._send.send_nowait(frame)
            return QUEUED
        if self.fd is not None:
            self._held = [frame]
            return HELD
        self._send.send_nowait(frame)
        return QUEUED

    def fits(self, size: int) -> bool:
        """Whether a frame of ``size`` bytes would be queued now."""
        return not self.queued or self.queued + size + FRAME_OVERHEAD <= self.capacity

    def offer_control(self, frame: bytes) -> bool:
        """Queue a frame no producer waits to offer (an event, a pong, a ping): past the
        bound, up to twice the bound, since nobody could wait for room. False, having
        queued nothing, beyond that: the member reads too slowly even for these, and
        the caller closes it (4001)."""
        if self.closed:
            return True
        size = len(frame) + FRAME_OVERHEAD
        if self.queued + size > 2 * self.capacity:
            return False
        self._queue(frame, size)
        return True

    def offer_catch_up(self, frame: bytes) -> None:
        """Queue a message a joining member missed (or its welcome), regardless of the
        bound and counted apart (:attr:`catch_up`): what it missed is bounded by the
        group's history (and, for the joins of more groups, by the session: see
        Session._recoveries_read). After what is queued already, and ahead of anything
        offered later (no direct write passes it). :meth:`written` takes what was written
        off :attr:`catch_up` first: for a join after the first that errs on the side of
        counting the mailbox fuller than it is, until both are written."""
        if not self.closed:
            self.catch_up += len(frame) + FRAME_OVERHEAD
            self._put(frame)

    def _queue(self, frame: bytes, size: int) -> None:
        self.queued += size
        self._put(frame)

    def _put(self, frame: bytes) -> None:
        if self._held is not None:
            self._held.append(frame)
        else:
            self._send.send_nowait(frame)

    def flush(self) -> None:
        """Write held frames straight to the socket; what it does not take goes to the
        sender task. Only the producer that got HELD calls this, before it yields."""
        held, self._held = self._held, None
        fd = self.fd
        if held is None or fd is None:  # (closing the mailbox ends both)
            return
        count = len(held)
        data = held[0] if count == 1 else b"".join(held)
        try:
            written = _write(fd, data)
        except OSError:
            # Would block, or the connection is broken: the sender task's own write
            # waits for room or reports the error and ends the session.
            written = 0
        if written < len(data):
            # What is left goes on as one frame (to the writer, one piece of bytes).
            count -= 1
            rest = data[written:] if written else data
            if written:
                self.tail = rest
            self._send.send_nowait(rest)
            if not written and not count:
                return
        self.written(written, count)

    async def wait_room(self, deadline: float) -> bool:
        """Wait until a write frees room or the mailbox closes; False at ``deadline``."""
        if self._room is None:
            self._room = trio.Event()
        room = self._room
        with trio.move_on_at(deadline):
            await room.wait()
            return True
        return False

    async def take(self, limit: int) -> tuple[list[bytes], int]:
        """Wait for at least one frame, then take what is queued up to ``limit`` bytes."""
        frame = await self._receive.receive()
        batch, size = [frame], len(frame)
        receive_nowait = self._receive.receive_nowait
        while size < limit:
            try:
                frame = receive_nowait()
            except trio.WouldBlock:
                break
            batch.append(frame)
            size += len(frame)
        return batch, size

    def written(self, size: int, count: int = 1) -> None:
        """``count`` frames of ``size`` bytes in all, taken from the mailbox, were
        written: make room, wake producers.

        The mailbox is no longer full (``full_since``) once it has drained to half its
        bound: a member that reads a little now and then, but never catches up, stays
        full, and is closed as slow once the group has waited for it long enough."""
        drained = size + count * FRAME_OVERHEAD
        catch_up = self.catch_up
        if catch_up:
            # (Written first: it was queued ahead of everything else.)
            self.catch_up = max(0, catch_up - drained)
            drained -= catch_up - self.catch_up
        self.queued -= drained
        if self.queued <= self.capacity >> 1:
            self.full_since = None
        if self._room is not None:
            self._room.set()
            self._room = None

    def close(self) -> None:
        """Discard what is queued from now on, wake the sender and any waiting producer.

        Also ends direct writes, before the member's socket is closed and its number
        can be reused."""
        if self.closed:
            return
        self.closed = True
        self.fd = None
        self._held = None
        self._send.send_nowait(b"")
        if self._room is not None:
            self._room.set()
            self._room = None
