"""How relayed messages are put on the wire for one kind of member.

A member speaks the plain protocol of the wire contract (DESIGN.md §1) unless its
handshake selected a subprotocol; each has an :class:`Encoding`. Fan-out frames a message
once per encoding among its recipients (``Group.audiences``), never once per recipient,
and every piece of a streamed message likewise. The plain encoding is the contract
byte for byte: the payload in one text or binary frame, a streamed message as its
fragments, nothing else.
"""

from __future__ import annotations

from functools import lru_cache

import attrs
from mypy_extensions import mypyc_attr

from . import v1
from .frames import (
    FINAL_SHORT_HEADERS,
    OP_BINARY,
    OP_CONTINUATION,
    OP_TEXT,
    frame,
    frame_header,
)
from .message import BACK_END, Message, StreamHead


# (Compiled in a compiled build, where permessage-deflate's Deflated and the tests'
# encodings subclass these in Python.)
@mypyc_attr(allow_interpreted_subclasses=True)
class Encoding:
    """The plain protocol; a subprotocol's encoding overrides what it frames differently."""

    __slots__ = ("presence", "subprotocol")

    def __init__(self, subprotocol: str | None = None, presence: bool = False) -> None:
        #: The ``Sec-WebSocket-Protocol`` name that selects this encoding; None for plain.
        self.subprotocol = subprotocol
        #: Whether members of this encoding hear of joins and leaves (and their own id).
        self.presence = presence

    def message(self, message: Message) -> bytes:
        """``message`` framed whole, for a member of this encoding."""
        payload = message.payload
        length = len(payload)
        if length < 126:  # (frame_header's first case, inline: once per message)
            return FINAL_SHORT_HEADERS[OP_TEXT if message.text else OP_BINARY][length] + payload
        return frame_header(OP_TEXT if message.text else OP_BINARY, length) + payload

    def piece(self, head: StreamHead, payload: bytes, first: bool, last: bool) -> bytes:
        """One piece of a streamed message, framed as a fragment of it: what goes ahead
        of the first piece (nothing, in plain) is part of that piece's bytes."""
        if first:
            opcode = OP_TEXT if head.text else OP_BINARY
        else:
            opcode = OP_CONTINUATION
        return frame(opcode, payload, last)

    def event(self, event: v1.Event) -> bytes:
        """A v1 event framed for a member of this encoding (only those that hear of
        joins and leaves get events)."""
        raise TypeError(f"{self!r} has no events")

    def for_group(self, group: str) -> Encoding:
        """This encoding for a member in ``group`` that its URL did not name (v1 says
        which group each message is of); plain has one group only."""
        return self

    def __repr__(self) -> str:
        return f"<Encoding {self.subprotocol or 'plain'}>"


@mypyc_attr(allow_interpreted_subclasses=True)
class V1Encoding(Encoding):
    """``wsproxy.v1`` (protocol/v1.py): each message's payload behind a header line that
    names its sender, and whether it was addressed to this member alone.

    ``group``: the group its messages and events name, for a membership in a group other
    than the one the member's URL named (None: they name none). Encodings are equal by
    value, so that fan-out frames a message once for all the members of a group that
    joined it by name, and once for all those whose URL named it."""

    __slots__ = ("_hash", "group")

    def __init__(self, group: str | None = None) -> None:
        super().__init__(v1.SUBPROTOCOL, presence=True)
        self.group = group
        self._hash = hash((type(self), group))

    def __eq__(self, other: object) -> bool:
        return other is self or (type(other) is type(self) and other.group == self.group)

    def __hash__(self) -> int:
        return self._hash

    def message(self, message: Message) -> bytes:
        offset, direct, group = message.offset, message.to is not None, self.group
        # (No offset, the hot case: the cached header, without a call more.)
        header = (
            _cached_header(message.sender, direct, group)
            if offset is None
            else _header(message.sender, direct, offset, group)
        )
        opcode = OP_TEXT if message.text else OP_BINARY
        return frame_header(opcode, len(header) + len(message.payload)) + header + message.payload

    def piece(self, head: StreamHead, payload: bytes, first: bool, last: bool) -> bytes:
        if first:
            payload = _header(head.sender, head.to is not None, head.offset, self.group) + payload
        return super().piece(head, payload, first, last)

    def event(self, event: v1.Event) -> bytes:
        if self.group is not None and isinstance(event, v1.Presence | v1.Members | v1.Error):
            event = attrs.evolve(event, group=self.group)
        return frame(OP_TEXT, v1.encode_event(event))

    def for_group(self, group: str) -> Encoding:
        return _tagged(group)

    def __repr__(self) -> str:
        if self.group is None:
            return super().__repr__()
        return f"<Encoding {self.subprotocol} group={self.group!r}>"


@lru_cache(maxsize=4096)
def _tagged(group: str) -> V1Encoding:
    # One object per group of the last 4,096 named: fan-out's audiences and presence
    # group members by encoding, and a dict finds one by identity before it compares.
    # (Equal encodings are one audience whether or not they are one object.)
    return V1Encoding(group)


def _header(sender: str, direct: bool, offset: int | None, group: str | None) -> bytes:
    """The header line of a message from ``sender`` (BACK_END: the HTTP API's), with its
    ``offset`` in the group's history if it has one (then each header is its own)."""
    if offset is None:
        return _cached_header(sender, direct, group)
    return v1.from_header(sender if sender != BACK_END else None, direct, offset, group)


@lru_cache(maxsize=4096)
def _cached_header(sender: str, direct: bool, group: str | None) -> bytes:
    # Members send many messages each: their headers are made once, not once per message.
    return v1.from_header(sender if sender != BACK_END else None, direct, None, group)


#: The plain protocol of the wire contract.
PLAIN = Encoding()

#: The ``wsproxy.v1`` subprotocol.
V1 = V1Encoding()

#: The relay's encodings by subprotocol name: what its handshake may select. Plain is
#: what every other client gets.
SUBPROTOCOLS: dict[str, Encoding] = {v1.SUBPROTOCOL: V1}


def encoding_for(subprotocol: str | None) -> Encoding:
    """The encoding of a member whose handshake selected ``subprotocol`` (None: plain)."""
    if subprotocol is None:
        return PLAIN
    return SUBPROTOCOLS[subprotocol]
