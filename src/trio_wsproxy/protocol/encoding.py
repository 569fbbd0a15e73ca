"""How relayed messages are put on the wire for one kind of member.

A member speaks the plain protocol of the wire contract (DESIGN.md §1) unless its
handshake selected a subprotocol; each has an :class:`Encoding`. Fan-out frames a message
once per encoding among its recipients (``Group.audiences``), never once per recipient,
and every piece of a streamed message likewise. The plain encoding is the contract
byte for byte: the payload in one text or binary frame, a streamed message as its
fragments, nothing else.
"""

from __future__ import annotations

from .frames import OP_BINARY, OP_CONTINUATION, OP_TEXT, frame, frame_header
from .message import Message, StreamHead


class Encoding:
    """The plain protocol; a subprotocol's encoding overrides what it frames differently."""

    __slots__ = ()

    #: The ``Sec-WebSocket-Protocol`` name that selects this encoding; None for plain.
    subprotocol: str | None = None

    def message(self, message: Message) -> bytes:
        """``message`` framed whole, for a member of this encoding."""
        opcode = OP_TEXT if message.text else OP_BINARY
        return frame_header(opcode, len(message.payload)) + message.payload

    def piece(self, head: StreamHead, payload: bytes, first: bool, last: bool) -> bytes:
        """One piece of a streamed message, framed as a fragment of it: what goes ahead
        of the first piece (nothing, in plain) is part of that piece's bytes."""
        if first:
            opcode = OP_TEXT if head.text else OP_BINARY
        else:
            opcode = OP_CONTINUATION
        return frame(opcode, payload, last)

    def __repr__(self) -> str:
        return f"<Encoding {self.subprotocol or 'plain'}>"


#: The plain protocol of the wire contract.
PLAIN = Encoding()

#: The relay's encodings by subprotocol name: what its handshake may select. Plain is
#: what every other client gets.
SUBPROTOCOLS: dict[str, Encoding] = {}


def encoding_for(subprotocol: str | None) -> Encoding:
    """The encoding of a member whose handshake selected ``subprotocol`` (None: plain)."""
    if subprotocol is None:
        return PLAIN
    return SUBPROTOCOLS[subprotocol]
