"""The ``wsproxy.v1`` subprotocol's wire format (DESIGN.md §6; docs/protocol.md).

v1 puts metadata *around* unchanged payloads. Every data message, in both directions, is
one WebSocket message made of a **header line** and the **payload**:

    HEADER LF PAYLOAD

``HEADER`` is empty or one JSON object (UTF-8, no raw line feed: JSON escapes them), LF
is the byte 0x0A, and ``PAYLOAD`` is the application's bytes, untouched. The message's
opcode is the payload's: text stays text (the header is text too), binary stays raw bytes
after the header (no base64, no wrapping). A streamed message carries its header in its
first fragment, so the relay forwards it with flat memory like any other.

From a member to the relay:

- ``LF PAYLOAD`` (an empty header): to every other member of the group.
- ``{"to":"ID"} LF PAYLOAD``: to one member of the group, on any node.

From the relay to a member:

- ``{"from":"ID"} LF PAYLOAD``: a message from member ID to the group.
- ``{"from":"ID","direct":true} LF PAYLOAD``: a message from member ID to this member only.
- ``{"from":null} LF PAYLOAD`` (and with ``"direct":true``): a message no member sent,
  posted by the application's back end through the relay's HTTP API.
- With history on (DESIGN.md §7), each header also carries the message's ``"offset"`` in
  its group's history, and the welcome the group's ``"position"``.
- ``{"event":...} LF``, no payload, a text message: something the relay says itself
  (:class:`Welcome`, :class:`Presence`, :class:`Members`, :class:`Error`).

This module is pure (no Trio, no sockets): the relay and every client share it, and the
test vectors in ``docs/protocol-vectors.json`` check it byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import attrs

from .printable import printable

#: The ``Sec-WebSocket-Protocol`` name a client offers to speak v1.
SUBPROTOCOL = "wsproxy.v1"

#: A header line ahead of a payload is at most this many bytes (its line feed included):
#: it names at most one member. A member's longer one is a protocol error (close 1002); a
#: client takes the relay's as a bad message. (Only the relay's events, a whole message
#: of one line, may be longer: see :func:`relay_header_end`.)
MAX_MEMBER_HEADER = 4096
#: The most digits a position's offset may have: offsets count messages (2**64 has 20).
MAX_OFFSET_DIGITS = 20

_LF = b"\n"


class V1Error(ValueError):
    """A v1 message that breaks the wire format; ``str()`` says how."""


# --- from a member to the relay ------------------------------------------------------


@attrs.frozen
class ToGroup:
    """A member's message to every other member of its group."""


@attrs.frozen
class ToMember:
    """A member's message to one member of its group, by id."""

    to: str


#: The one :class:`ToGroup` (it has no fields).
TO_GROUP = ToGroup()

_TO_KEYS = frozenset({"to"})


def header_end(data: bytes | bytearray, last: bool = False) -> int | None:
    """Where the payload of a v1 message starts (just past its header line's line feed),
    given the message's first bytes, ``data``; None while the line has not arrived
    (``last``: ``data`` is the whole message, and then it must have).

    The one rule for every header line ahead of a payload, a member's or the relay's:
    it ends within the first ``MAX_MEMBER_HEADER`` bytes. Raises :class:`V1Error` as
    soon as that many have arrived without a line feed, or the message ended without
    one. Pure and allocation-free: a whole message is read in this one step, and
    :class:`HeaderReader` feeds it a message that arrives in pieces.
    """
    end = data.find(_LF, 0, MAX_MEMBER_HEADER)
    if end >= 0:
        return end + 1
    if len(data) >= MAX_MEMBER_HEADER:
        raise V1Error(f"no header line within {MAX_MEMBER_HEADER} bytes")
    if last:
        raise V1Error("a message ended inside its header line")
    return None


class HeaderReader:
    """The header line of one v1 message that arrives in pieces (WebSocket fragments,
    reads), bounded as :func:`header_end` says: :meth:`feed` it the message's pieces
    in order, from the first, until it returns the message's bytes so far and where
    the payload starts in them (the header line, without its line feed, is what comes
    before that, less one byte).

    It holds at most ``MAX_MEMBER_HEADER`` bytes of a line still arriving, and refuses
    (:class:`V1Error`) a longer one at the piece that reaches the bound, however the
    message was cut into pieces. Once it has answered it holds nothing; once it has
    refused, it holds what it refused (:attr:`held`, for a log line), and the message
    is read no further.
    """

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = b""

    @property
    def held(self) -> bytes:
        """The message's bytes the reader holds: a header line still arriving, or
        refused."""
        return self._held

    def feed(self, piece: bytes, last: bool) -> tuple[bytes, int] | None:
        """Take the message's next piece (``last``: the message ends with it): None
        while its header line is still arriving, else ``(data, end)``: the message's
        bytes so far, and where its payload starts in them. Raises :class:`V1Error`
        for a header line past the bound, or a message that ended inside it."""
        held = self._held
        data = held + piece if held else piece
        self._held = data
        end = header_end(data, last)
        if end is None:
            return None
        self._held = b""
        return data, end


def parse_member_header(line: bytes) -> ToGroup | ToMember:
    """What a member's header line (without its line feed) asks of the relay."""
    if not line:
        return TO_GROUP
    header = _json_object(line)
    unknown = header.keys() - _TO_KEYS
    if unknown:
        raise V1Error(f"unknown header field {sorted(unknown)[0]!r}")
    if "to" not in header:
        return TO_GROUP
    to = header["to"]
    if not isinstance(to, str) or not to:
        raise V1Error('"to" must be a non-empty string (a member id)')
    if not _is_unicode(to):
        # JSON's \uXXXX escapes can spell half a surrogate pair, which no member id is
        # (ids come from UTF-8 URLs) and which nothing can encode to send back.
        raise V1Error('"to" is not valid Unicode (a lone surrogate)')
    return ToMember(to)


def _json_object(line: bytes) -> dict[str, Any]:
    """A header line's JSON object; V1Error for anything else, including JSON nested
    too deeply for the parser (json raises RecursionError within the header's bound)."""
    try:
        # Decoded first: json.loads would take UTF-16 and UTF-32 bytes too.
        header = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise V1Error("the header is not a JSON object") from None
    if not isinstance(header, dict):
        raise V1Error("the header is not a JSON object")
    return header


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def member_header(to: str | None = None) -> bytes:
    """The header line (with its line feed) a member puts before its payload: to the
    group, or to the member ``to``."""
    if to is None:
        return _LF
    return _json({"to": to})


# --- from the relay to a member ------------------------------------------------------


@attrs.frozen
class From:
    """The header of a message the relay forwards: who sent it (None: no member, the
    application's back end through the HTTP API), whether to this member only
    (``direct``) or to the group, and its ``offset`` in the group's history (None: the
    relay keeps no history)."""

    sender: str | None
    direct: bool = False
    offset: int | None = None


@attrs.frozen
class Position:
    """Where a member is in its group's history: the history's ``epoch`` (it changes
    whenever the history was lost) and the offset of the last message seen (0: none).

    ``str(position)`` is ``EPOCH:OFFSET``, what a reconnecting client names
    (``?since=``) and what a program saves to start where it left off
    (``open_client(..., since=...)`` takes either); :meth:`parse` reads it back. It names
    a position in one group."""

    epoch: str
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.offset}"

    def token(self) -> str:
        """``str(self)``: the position as a reconnecting client names it."""
        return str(self)

    @classmethod
    def parse(cls, token: str) -> Position:
        """The position ``EPOCH:OFFSET`` names; :exc:`V1Error` (a ValueError) if it is
        not one."""
        epoch, sep, offset = token.rpartition(":")
        if not sep or not epoch or not offset.isdigit() or not offset.isascii():
            raise V1Error(
                f"{printable(token)!r} is not a position: EPOCH:OFFSET, the offset a decimal number"
            )
        if len(offset) > MAX_OFFSET_DIGITS:
            # (int() refuses more than 4,300 digits with an error of its own)
            raise V1Error(
                f"{printable(token[:40])!r}... is not a position: an offset has at most "
                f"{MAX_OFFSET_DIGITS} digits"
            )
        return cls(epoch, int(offset))


#: Why a recovery could not be made (:attr:`Recovery.reason`).
POSITION_TOO_OLD = "position_too_old"
EPOCH_CHANGED = "epoch_changed"
MESSAGE_TOO_LARGE = "message_too_large"
NO_HISTORY = "no_history"


@attrs.frozen
class Recovery:
    """The answer to a reconnecting member that named its position: ``recovered`` with
    the ``missed`` messages that follow the welcome (replayed, in order, before any live
    message), or not, and why (``reason``: one of the constants above)."""

    recovered: bool
    missed: int = 0
    reason: str | None = None


@attrs.frozen
class Welcome:
    """The relay's first message to a v1 member: its id, its group, and who is there
    (this member included). ``members`` is None when the group is larger than the
    relay's presence limit:
    then only ``count`` (all members, this one included) is kept, and no
    :class:`Presence` events follow while it stays that large."""

    id: str
    group: str
    members: frozenset[str] | None
    count: int
    #: The group's position now (history on): replayed messages, then live ones, follow.
    position: Position | None = None
    #: The answer to a member that named its position when it joined.
    recovery: Recovery | None = None


@attrs.frozen
class Presence:
    """A batch of changes to the group's membership since the last event: the members
    that ``joined`` and the members that ``left``: for each id that changed, its last
    change, so an id is in at most one of them (one that joined and left again within
    the batch is in ``left``). Apply it as "add" and "remove", ignoring what is already
    so. ``count`` is the group's size after them, this member included."""

    joined: tuple[str, ...]
    left: tuple[str, ...]
    count: int


@attrs.frozen
class Members:
    """The group's whole member list afresh, replacing the one held: sent when the group
    shrinks back under the relay's presence limit. ``members`` None: the group grew past
    the limit, and only ``count`` is kept (no :class:`Presence` events) until it shrinks."""

    members: frozenset[str] | None
    count: int


@attrs.frozen
class Error:
    """Something the relay could not do for this member, as an event: ``error`` is a
    stable code (``no_such_member``), ``detail`` a human sentence, ``to`` the member id
    the message was addressed to, where one was."""

    error: str
    detail: str
    to: str | None = None


Event = Welcome | Presence | Members | Error

#: Error codes the relay sends.
NO_SUCH_MEMBER = "no_such_member"


def from_header(sender: str | None, direct: bool = False, offset: int | None = None) -> bytes:
    """The header line (with its line feed) of a message the relay forwards (``sender``
    None: one the back end posted; ``offset``: its place in the group's history)."""
    body: dict[str, Any] = {"from": sender}
    if direct:
        body["direct"] = True
    if offset is not None:
        body["offset"] = offset
    return _json(body)


def encode_event(event: Event) -> bytes:
    """An event, as the payload of the text message that carries it."""
    body: dict[str, Any]
    if type(event) is Welcome:
        body = {"event": "welcome", "id": event.id, "group": event.group}
        body["members"] = None if event.members is None else sorted(event.members)
        body["count"] = event.count
        if event.position is not None:
            body["position"] = {"epoch": event.position.epoch, "offset": event.position.offset}
        if event.recovery is not None:
            recovery = event.recovery
            body["recovery"] = (
                {"recovered": True, "missed": recovery.missed}
                if recovery.recovered
                else {"recovered": False, "reason": recovery.reason}
            )
    elif type(event) is Presence:
        body = {"event": "presence", "joined": list(event.joined), "left": list(event.left)}
        body["count"] = event.count
    elif type(event) is Members:
        body = {"event": "members"}
        body["members"] = None if event.members is None else sorted(event.members)
        body["count"] = event.count
    elif type(event) is Error:
        body = {"event": "error", "error": event.error, "detail": event.detail}
        if event.to is not None:
            body["to"] = event.to
    else:
        raise TypeError(f"not a v1 event: {event!r}")
    return _json(body)


def relay_header_end(data: bytes | bytearray) -> int:
    """Where the payload of a whole message from the relay (or its header line, its
    line feed included) starts: as :func:`header_end` says, but for the relay's events,
    one line that is the whole message, which may be longer than the bound (a member
    list: the message's size bounds it, and it has no payload to stream). Raises
    :class:`V1Error` for a message with no such line."""
    end = data.find(_LF, 0, MAX_MEMBER_HEADER)
    if end < 0:
        end = data.find(_LF)
        if not data or end != len(data) - 1:
            raise V1Error("no header line")
    return end + 1


def decode_relay_message(data: bytes | bytearray) -> tuple[From | Event, int]:
    """A relay's whole v1 message (or its header line): what its header says, and where
    its payload starts. Raises :class:`V1Error` for anything else, a header line ahead
    of a payload (or a line that is not an event) past ``MAX_MEMBER_HEADER`` included."""
    end = relay_header_end(data)
    what = _relay_header(_json_object(bytes(data[: end - 1])))
    if end > MAX_MEMBER_HEADER and type(what) is From:
        raise V1Error(f"no header line within {MAX_MEMBER_HEADER} bytes")
    return what, end


def _relay_header(header: dict[str, Any]) -> From | Event:
    if "from" in header:
        sender = header["from"]
        if sender is not None and not isinstance(sender, str):
            raise V1Error('"from" must be a string or null')
        offset = header.get("offset")
        return From(sender, header.get("direct") is True, None if offset is None else _int(offset))
    kind = header.get("event")
    try:
        if kind == "welcome":
            return Welcome(
                _str(header["id"]),
                _str(header["group"]),
                _ids(header["members"]),
                _int(header["count"]),
                _position(header.get("position")),
                _recovery(header.get("recovery")),
            )
        if kind == "presence":
            return Presence(
                tuple(_strs(header["joined"])),
                tuple(_strs(header["left"])),
                _int(header["count"]),
            )
        if kind == "members":
            return Members(_ids(header["members"]), _int(header["count"]))
        if kind == "error":
            to = header.get("to")
            return Error(
                _str(header["error"]), _str(header["detail"]), None if to is None else _str(to)
            )
    except KeyError as missing:
        raise V1Error(f"a {kind} event needs {missing}") from None
    raise V1Error(f"unknown event {kind!r}")


def _json(body: dict[str, Any]) -> bytes:
    # Compact, UTF-8: ids are any Unicode; JSON escapes control characters, so the one
    # line feed is the header's end.
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + _LF


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise V1Error(f"expected a string, got {value!r}")
    return value


def _strs(value: object) -> Iterable[str]:
    if not isinstance(value, list):
        raise V1Error(f"expected a list of strings, got {value!r}")
    return [_str(item) for item in value]


def _ids(value: object) -> frozenset[str] | None:
    return None if value is None else frozenset(_strs(value))


def _position(value: object) -> Position | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise V1Error(f"a position is an object, not {value!r}")
    try:
        return Position(_str(value["epoch"]), _int(value["offset"]))
    except KeyError as missing:
        raise V1Error(f"a position needs {missing}") from None


def _recovery(value: object) -> Recovery | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("recovered"), bool):
        raise V1Error(f"a recovery is an object with a boolean recovered, not {value!r}")
    if value["recovered"]:
        return Recovery(True, _int(value.get("missed", 0)))
    return Recovery(False, 0, _str(value.get("reason")))


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise V1Error(f"expected a count, got {value!r}")
    return value
