"""A member's mailbox: the frames waiting to be written to it, bounded in bytes."""

from __future__ import annotations

import math

import trio


class Mailbox:
    """Outgoing frames of one member, in order, on a Trio memory channel.

    Producers (the receivers of the other members) never block in :meth:`offer`: it
    queues a frame if it fits and says False otherwise, and the producer decides how
    long to wait in :meth:`wait_room`. The member's sender task takes everything queued
    at once (:meth:`take`), writes it, then reports the bytes :meth:`written`, so bytes
    being written still count against the bound.
    """

    __slots__ = ("_receive", "_room", "_send", "capacity", "closed", "full_since", "queued")

    def __init__(self, capacity: int) -> None:
        # Unbounded as a channel: the bound is in bytes, enforced by offer().
        self._send, self._receive = trio.open_memory_channel[bytes](math.inf)
        self._room: trio.Event | None = None
        self.capacity = capacity
        #: Bytes accepted and not yet written.
        self.queued = 0
        #: When a producer first found the mailbox full since the last write, or None.
        self.full_since: float | None = None
        #: Set by :meth:`close`; a closed mailbox accepts and discards everything.
        self.closed = False

    def offer(self, frame: bytes) -> bool:
        """Queue ``frame`` if it fits; a frame always fits an empty mailbox."""
        if self.closed:
            return True
        queued = self.queued
        if queued and queued + len(frame) > self.capacity:
            return False
        self.queued = queued + len(frame)
        self._send.send_nowait(frame)
        return True

    def offer_control(self, frame: bytes) -> None:
        """Queue a small control frame (ping, pong) regardless of the bound."""
        if not self.closed:
            self.queued += len(frame)
            self._send.send_nowait(frame)

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

    def written(self, size: int) -> None:
        """The sender wrote ``size`` bytes it had taken: make room and wake producers."""
        self.queued -= size
        self.full_since = None
        if self._room is not None:
            self._room.set()
            self._room = None

    def close(self) -> None:
        """Discard what is queued from now on, wake the sender and any waiting producer."""
        if self.closed:
            return
        self.closed = True
        self._send.send_nowait(b"")
        if self._room is not None:
            self._room.set()
            self._room = None
