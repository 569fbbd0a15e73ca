"""The relay's message assembly: a member's data frames in, what the relay forwards out.

A message that ends within ``FRAGMENT_SIZE`` bytes is forwarded whole (one
:class:`~trio_wsproxy.protocol.message.Message`, however many frames it came in). A
longer one is not assembled: it streams on as :class:`Piece` s of about
``FRAGMENT_SIZE`` as its data arrives, so the relay's memory stays flat whatever the
message's size.
"""

from __future__ import annotations

from .frames import Data
from .message import Message, StreamHead

# A message that has not ended after this many bytes is forwarded in fragments of about
# this size as its data arrives, instead of being assembled; below it, a message goes out
# as one frame. Large enough that clients which cap fragments per message (Node's ws
# accepts 16,384) take messages of many GiB; small enough to bound each sender's buffer.
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

    __slots__ = ("_parts", "_streaming", "_text", "head", "held", "sender")

    def __init__(self, sender: str) -> None:
        self.sender = sender
        #: The head of the message streaming now (from its first piece to its last).
        self.head = StreamHead(sender, False)
        self._parts: list[bytes] = []
        #: Bytes gathered for the next message or piece and not yet handed on.
        self.held = 0
        self._text = False
        self._streaming = False

    def feed(self, event: Data) -> Message | Piece | None:
        """Take one data frame: a whole message to forward, the next piece of a
        streaming one, or None while a message is still being gathered."""
        payload = event.payload
        if event.first:
            self._text = event.text
            if event.last:
                return Message(self.sender, event.text, payload)
            self._parts, self.held, self._streaming = [], 0, False
        self._parts.append(payload)
        self.held += len(payload)
        if not event.last and self.held < FRAGMENT_SIZE:
            return None
        data = b"".join(self._parts)
        self._parts, self.held = [], 0
        if self._streaming:
            if event.last:
                self._streaming = False
            return Piece(data, False, event.last)
        if event.last:
            return Message(self.sender, self._text, data)
        self._streaming = True
        self.head = StreamHead(self.sender, self._text)
        return Piece(data, True, False)
