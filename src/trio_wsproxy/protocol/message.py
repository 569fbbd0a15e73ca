"""A message as it travels inside the relay and between relay nodes: the payload as the
sender's client sent it, and what the relay knows about it (who sent it, text or
binary). It is framed for each recipient by that recipient's encoding (plain WebSocket
frames for a plain member), once per encoding, not once per recipient.

The relay never parses a payload: text stays the UTF-8 its sender wrote (already
validated by the frame parser), binary stays raw bytes.
"""

from __future__ import annotations

from typing import Any

#: The sender id of a message the relay's HTTP API posts for a back end: no member has
#: it (a member's id is never empty); v1 members see ``"from":null``.
BACK_END = ""


class Message:
    """One whole message: its sender's member id, whether it is text, its payload, the
    one member it is addressed to (``to``; None: the whole group), and its ``offset`` in
    its group's history (None: no history)."""

    __slots__ = ("offset", "payload", "sender", "text", "to")

    def __init__(self, sender: str, text: bool, payload: bytes, to: str | None = None) -> None:
        self.sender = sender
        self.text = text
        self.payload = payload
        self.to = to
        self.offset: int | None = None

    def __repr__(self) -> str:
        kind = "text" if self.text else "binary"
        return f"<Message from {self.sender!r}: {kind}, {len(self.payload)} bytes>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (self.sender, self.text, self.payload, self.to) == (
            other.sender,
            other.text,
            other.payload,
            other.to,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-looking value: compare, never key


class StreamHead:
    """What is known of a message that streams piece by piece before its first piece:
    who sends it, whether it is text, the one member it is addressed to (``to``), and its
    ``offset`` in its group's history (None: no history). Pieces follow in order, the last
    one marked.

    ``framing``: what an encoding keeps for the stream while its pieces flow (a
    compressor, for permessage-deflate), by encoding. It goes with the head: a stream cut
    off unfinished leaves nothing behind."""

    __slots__ = ("framing", "offset", "sender", "text", "to")

    def __init__(self, sender: str, text: bool, to: str | None = None) -> None:
        self.sender = sender
        self.text = text
        self.to = to
        self.offset: int | None = None
        self.framing: dict[object, Any] = {}

    def __repr__(self) -> str:
        return f"<StreamHead from {self.sender!r}: {'text' if self.text else 'binary'}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StreamHead):
            return NotImplemented
        return (self.sender, self.text, self.to) == (other.sender, other.text, other.to)

    __hash__ = None  # type: ignore[assignment]
