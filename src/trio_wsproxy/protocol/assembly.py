"""The relay's message assembly: a member's data frames in, what the relay forwards out.

A message of at most ``FRAGMENT_SIZE`` bytes is forwarded whole (one
:class:`~trio_wsproxy.protocol.message.Message`, however many frames it came in). A
longer one is not assembled: it streams on as :class:`Piece` s of exactly
``FRAGMENT_SIZE`` (the last one shorter) as its data arrives, so the relay's memory stays
flat whatever the message's size and no frame it forwards exceeds 1 MiB.
"""

from __future__ import annotations

from .frames import Data
from .message import Message, StreamHead

# A message longer than this is forwarded in fragments of this size as its data arrives,
# instead of being assembled; up to it, a message goes out as one frame. Large enough
# that clients which cap fragments per message (Node's ws accepts 16,384) take messages
# of many GiB; small enough to bound each sender's buffer; no larger than the frames a
# websockets client takes by default (max_size 1 MiB).
FRAGMENT_SIZE = 1024 * 1024


class Piece:
    """One piece of a message too large to assemble, in order; ``first`` and ``last``
    mark its ends (the whole of what streams is described by the stream's head)."""

    __slots__ = ("first", "last", "payload")

    def __init__(self, payload: bytes, first: bool, last: bool) -> None:
        self.payload = payload
        self.first = first
        self.last = last

    def __repr__(self) -> str:
        return f"<Piece {len(self.payload)} bytes first={self.first} last={self.last}>"


class Assembly:
    """Assembles one member's messages (``sender`` is its id)."""

    __slots__ = ("_parts", "_streaming", "_text", "head", "held", "sender", "to")

    def __init__(self, sender: str) -> None:
        self.sender = sender
        #: The one member the message being assembled is addressed to (None: the group;
        #: set by the session from a v1 header line).
        self.to: str | None = None
        #: The head of the message streaming now (from its first piece to its last).
        self.head = StreamHead(sender, False)
        # One buffer, not a list of the frames' payloads: a message sent as many tiny
        # frames costs its bytes, not a Python object per frame.
        self._parts = bytearray()
        #: Bytes gathered for the next message or piece and not yet handed on.
        self.held = 0
        self._text = False
        self._streaming = False

    def feed(self, event: Data) -> Message | list[Piece] | None:
        """Take one data frame: a whole message to forward, the next pieces of a
        streaming one (each at most ``FRAGMENT_SIZE`` bytes), or None while a message is
        still being gathered."""
        payload = event.payload
        if event.first:
            self._text = event.text
            if event.last and len(payload) <= FRAGMENT_SIZE:
                return Message(self.sender, event.text, payload, self.to)
            self._parts, self.held, self._streaming = bytearray(), 0, False
        self._parts += payload
        self.held += len(payload)
        if event.last:
            if not self._streaming and self.held <= FRAGMENT_SIZE:
                data = bytes(self._parts)
                self._parts, self.held = bytearray(), 0
                return Message(self.sender, self._text, data, self.to)
        elif self.held < FRAGMENT_SIZE:
            return None
        data = bytes(self._parts)
        # Whole pieces of FRAGMENT_SIZE go out now; what is left over waits for more
        # data unless the message ends here. Clients that cap a frame at 1 MiB (the
        # ``websockets`` default) take every piece.
        cut = len(data) if event.last else len(data) - len(data) % FRAGMENT_SIZE
        pieces = [
            Piece(data[start : start + FRAGMENT_SIZE], False, False)
            for start in range(0, cut, FRAGMENT_SIZE)
        ] or [Piece(b"", False, False)]
        rest = data[cut:]
        self._parts, self.held = bytearray(rest), len(rest)
        if not self._streaming:
            self._streaming = True
            self.head = StreamHead(self.sender, self._text, self.to)
            pieces[0].first = True
        if event.last:
            self._streaming = False
            pieces[-1].last = True
        return pieces
