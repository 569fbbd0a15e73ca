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
- ``{"group":"G"} LF PAYLOAD`` (and with ``"to"``): the same in the group G, one the
  member joined (DESIGN.md §8); without ``"group"``, the group its URL named.
- ``{"join":"G"} LF`` (with ``"since":"EPOCH:OFFSET"`` to recover), ``{"leave":"G"} LF``:
  join or leave a group, a message of its header line alone.

From the relay to a member:

- ``{"from":"ID"} LF PAYLOAD``: a message from member ID to the group.
- ``{"from":"ID","direct":true} LF PAYLOAD``: a message from member ID to this member only.
- ``{"from":null} LF PAYLOAD`` (and with ``"direct":true``): a message no member sent,
  posted by the application's back end through the relay's HTTP API.
- With history on (DESIGN.md §7), each header also carries the message's ``"offset"`` in
  its group's history, and the welcome the group's ``"position"``.
- ``{"event":...} LF``, no payload, a text message: something the relay says itself
  (:class:`Welcome`, :class:`Presence`, :class:`Members`, :class:`Error`,
  :class:`Left`).
- A message or event of a group other than the one the URL named carries that group's
  name (``"group"``); one of the URL's group carries none, so that a member that never
  joins another group sees exactly the bytes it always did.

This module is pure (no Trio, no sockets): the relay and every client share it, and the
test vectors in ``docs/protocol-vectors.json`` check it byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
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
    """A member's message to every other member of a group: ``group`` (None: the group
    its URL named)."""

    group: str | None = None


@attrs.frozen
class ToMember:
    """A member's message to one member of a group, by id (``group`` None: the group
    its URL named)."""

    to: str
    group: str | None = None


@attrs.frozen
class Join:
    """A member asks to join the group ``group`` too; ``since``: the last position it saw
    in it, to get what it missed (as ``?since=`` does for the URL's group)."""

    group: str
    since: Position | None = None


@attrs.frozen
class Leave:
    """A member asks to leave the group ``group`` (the URL's included)."""

    group: str


@attrs.frozen
class Refresh:
    """A member hands the relay a new access token for its connection, before the one
    it connected with expires (tokens on)."""

    token: str


#: What a member's header line may ask of the relay.
Request = ToGroup | ToMember | Join | Leave | Refresh

#: The :class:`ToGroup` of the URL's group.
TO_GROUP = ToGroup()

_TO_KEYS = frozenset({"to", "group"})
_JOIN_KEYS = frozenset({"join", "since"})


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


def parse_member_header(line: bytes) -> Request:
    """What a member's header line (without its line feed) asks of the relay."""
    if not line:
        return TO_GROUP
    header = _json_object(line)
    if "join" in header:
        _only(header, _JOIN_KEYS, "a join")
        since = header.get("since")
        if since is not None and not isinstance(since, str):
            raise V1Error('"since" must be a position, EPOCH:OFFSET')
        return Join(
            _name(header, "join", "a group name"), None if since is None else Position.parse(since)
        )
    if "leave" in header:
        _only(header, frozenset({"leave"}), "a leave")
        return Leave(_name(header, "leave", "a group name"))
    if "token" in header:
        _only(header, frozenset({"token"}), "a token refresh")
        return Refresh(_name(header, "token", "an access token"))
    unknown = header.keys() - _TO_KEYS
    if unknown:
        raise V1Error(f"unknown header field {sorted(unknown)[0]!r}")
    group = _name(header, "group", "a group name") if "group" in header else None
    if "to" not in header:
        return TO_GROUP if group is None else ToGroup(group)
    return ToMember(_name(header, "to", "a member id"), group)


def _only(header: dict[str, Any], keys: frozenset[str], what: str) -> None:
    unknown = header.keys() - keys
    if unknown:
        raise V1Error(f"{what} takes no field {sorted(unknown)[0]!r}")


def _name(header: dict[str, Any], key: str, what: str) -> str:
    """The non-empty string ``header[key]`` names (a member id, a group name)."""
    value = header[key]
    if not isinstance(value, str) or not value:
        raise V1Error(f'"{key}" must be a non-empty string ({what})')
    if not _is_unicode(value):
        # JSON's \uXXXX escapes can spell half a surrogate pair, which no id or name is
        # (they come from UTF-8 URLs) and which nothing can encode to send back.
        raise V1Error(f'"{key}" is not valid Unicode (a lone surrogate)')
    return value


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


def member_header(to: str | None = None, group: str | None = None) -> bytes:
    """The header line (with its line feed) a member puts before its payload: to the
    group, or to the member ``to``; in ``group`` (None: the URL's group)."""
    if to is None and group is None:
        return _LF
    body: dict[str, Any] = {}
    if group is not None:
        body["group"] = group
    if to is not None:
        body["to"] = to
    return _json(body)


def join_header(group: str, since: Position | None = None) -> bytes:
    """The whole message (a header line alone) by which a member joins ``group``,
    naming the last position it saw in it (``since``) to recover what it missed."""
    body: dict[str, Any] = {"join": group}
    if since is not None:
        body["since"] = str(since)
    return _json(body)


def leave_header(group: str) -> bytes:
    """The whole message (a header line alone) by which a member leaves ``group``."""
    return _json({"leave": group})


def refresh_header(token: str) -> bytes:
    """The whole message (a header line alone) that hands the relay a new token."""
    return _json({"token": token})


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
    #: The group it was sent to: None for the group the member's URL named.
    group: str | None = None


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
    #: What the application's back end (its connect hook) gave members, by id: only
    #: those it gave something (None: none).
    info: Mapping[str, Any] | None = None


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
    #: The group (None: the URL's; likewise for every event below).
    group: str | None = None
    #: The info of members that joined, by id (see :attr:`Welcome.info`).
    info: Mapping[str, Any] | None = None


@attrs.frozen
class Members:
    """The group's whole member list afresh, replacing the one held: sent when the group
    shrinks back under the relay's presence limit. ``members`` None: the group grew past
    the limit, and only ``count`` is kept (no :class:`Presence` events) until it shrinks."""

    members: frozenset[str] | None
    count: int
    group: str | None = None
    #: The info of members, by id (see :attr:`Welcome.info`).
    info: Mapping[str, Any] | None = None


@attrs.frozen
class Error:
    """Something the relay could not do for this member, as an event: ``error`` is a
    stable code (the constants below), ``detail`` a human sentence, ``to`` the member
    id the message was addressed to, where one was, and ``group`` the group it was
    about (None: the URL's)."""

    error: str
    detail: str
    to: str | None = None
    group: str | None = None
    #: ``refused``: the status the application's back end refused with (its hook's).
    status: int | None = None


@attrs.frozen
class TokenExpiring:
    """The connection's access token expires at ``exp`` (seconds since the epoch): send
    a new one (:class:`Refresh`) before then, or the relay closes with 4006."""

    exp: int


@attrs.frozen
class TokenRefreshed:
    """The relay took the new token: the connection is authorised until ``exp``."""

    exp: int


@attrs.frozen
class Left:
    """The member is no longer in ``group``: it asked to leave (``reason`` None), or
    the application's back end removed it (``reason`` says so). Nothing of the group
    follows it."""

    group: str
    reason: str | None = None


Event = Welcome | Presence | Members | Error | Left | TokenExpiring | TokenRefreshed

#: Error codes the relay sends: a message it dropped...
NO_SUCH_MEMBER = "no_such_member"
NOT_IN_GROUP = "not_in_group"
#: (A token refresh the relay could not take: the old token goes on until it expires.)
TOKEN_INVALID = "token_invalid"
#: (A group whose namespace takes messages from the application's back end only.)
READ_ONLY = "read_only"
#: (A message the application's back end refused — its publish hook — or could not be
#: asked about: the hook's status and reason are the event's ``status`` and ``detail``.)
MESSAGE_REFUSED = "message_refused"
#: (A join the application's back end refused — its join hook —, with its status.)
REFUSED = "refused"
#: ...and a join it refused (the connection stays, in the groups it was in).
NOT_ALLOWED = "not_allowed"
BANNED = "banned"
ALREADY_JOINED = "already_joined"
BAD_GROUP_NAME = "bad_group_name"
GROUP_LIMIT = "group_limit"
GROUP_FULL = "group_full"
RELAY_FULL = "relay_full"
UNAVAILABLE = "unavailable"
#: Every code that answers a join (with the group it names).
JOIN_REFUSALS = frozenset(
    {
        REFUSED,
        NOT_ALLOWED,
        BANNED,
        ALREADY_JOINED,
        BAD_GROUP_NAME,
        GROUP_LIMIT,
        GROUP_FULL,
        RELAY_FULL,
        UNAVAILABLE,
    }
)


def from_header(
    sender: str | None, direct: bool = False, offset: int | None = None, group: str | None = None
) -> bytes:
    """The header line (with its line feed) of a message the relay forwards (``sender``
    None: one the back end posted; ``offset``: its place in the group's history;
    ``group``: the group, for one other than the member's URL's)."""
    body: dict[str, Any] = {"from": sender}
    if group is not None:
        body["group"] = group
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
        if event.info:
            body["info"] = dict(event.info)
    elif type(event) is Presence:
        body = _grouped("presence", event.group)
        body["joined"] = list(event.joined)
        body["left"] = list(event.left)
        body["count"] = event.count
        if event.info:
            body["info"] = dict(event.info)
    elif type(event) is Members:
        body = _grouped("members", event.group)
        body["members"] = None if event.members is None else sorted(event.members)
        body["count"] = event.count
        if event.info:
            body["info"] = dict(event.info)
    elif type(event) is Error:
        body = {"event": "error", "error": event.error, "detail": event.detail}
        if event.to is not None:
            body["to"] = event.to
        if event.group is not None:
            body["group"] = event.group
        if event.status is not None:
            body["status"] = event.status
    elif type(event) is Left:
        body = _grouped("left", event.group)
        if event.reason is not None:
            body["reason"] = event.reason
    elif type(event) is TokenExpiring:
        body = {"event": "token_expiring", "exp": event.exp}
    elif type(event) is TokenRefreshed:
        body = {"event": "token_refreshed", "exp": event.exp}
    else:
        raise TypeError(f"not a v1 event: {event!r}")
    return _json(body)


def _grouped(kind: str, group: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"event": kind}
    if group is not None:
        body["group"] = group
    return body


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
        return From(
            sender,
            header.get("direct") is True,
            None if offset is None else _int(offset),
            _opt_str(header.get("group")),
        )
    kind = header.get("event")
    group = _opt_str(header.get("group"))
    try:
        if kind == "welcome":
            return Welcome(
                _str(header["id"]),
                _str(header["group"]),
                _ids(header["members"]),
                _int(header["count"]),
                _position(header.get("position")),
                _recovery(header.get("recovery")),
                _info(header.get("info")),
            )
        if kind == "presence":
            return Presence(
                tuple(_strs(header["joined"])),
                tuple(_strs(header["left"])),
                _int(header["count"]),
                group,
                _info(header.get("info")),
            )
        if kind == "members":
            return Members(
                _ids(header["members"]), _int(header["count"]), group, _info(header.get("info"))
            )
        if kind == "error":
            status = header.get("status")
            return Error(
                _str(header["error"]),
                _str(header["detail"]),
                _opt_str(header.get("to")),
                group,
                None if status is None else _int(status),
            )
        if kind == "left":
            return Left(_str(header["group"]), _opt_str(header.get("reason")))
        if kind == "token_expiring":
            return TokenExpiring(_int(header["exp"]))
        if kind == "token_refreshed":
            return TokenRefreshed(_int(header["exp"]))
    except KeyError as missing:
        raise V1Error(f"a {kind} event needs {missing}") from None
    raise V1Error(f"unknown event {kind!r}")


def _json(body: dict[str, Any]) -> bytes:
    # Compact, UTF-8: ids are any Unicode; JSON escapes control characters, so the one
    # line feed is the header's end.
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + _LF


def _info(value: object) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise V1Error(f"expected members' info by id, got {value!r}")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise V1Error(f"expected a string, got {value!r}")
    return value


def _opt_str(value: object) -> str | None:
    return None if value is None else _str(value)


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
