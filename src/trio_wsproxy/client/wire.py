"""What the client puts on the wire and what it makes of what comes off it, decided
without I/O.

:func:`encode_message` is the frame for a message to send. :func:`read_frame` says what a
received frame is: a message for the handlers of its type (:class:`Deliver`), the answer
to a request this client is waiting on (:class:`Reply`, structured by
:func:`read_reply`), or a frame to ignore (:class:`~.incoming.BadMessage`). The
connection task carries the verdict out.

Over ``wsproxy.v1`` the same payloads travel behind a header line: :func:`frame_for`
puts it on (the codec, :mod:`~trio_wsproxy.protocol.v1`, writes it), and the connection
task takes the relay's off before :func:`read_frame` sees the payload, handing over what
it said (:class:`~trio_wsproxy.protocol.v1.From`) as ``origin``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Container
from typing import Any

import attrs

from ..protocol.envelope import (
    EMPTY_GUID,
    Envelope,
    EnvelopeError,
    decode_envelope,
    encode_envelope,
    is_dotnet_guid,
    message_id_to_send,
    normalize_message_id,
)
from ..protocol.typenames import (
    PayloadError,
    TypeRegistry,
    check_sendable,
    runtime_version_of,
    with_runtime_version,
)
from ..protocol.v1 import (
    MAX_MEMBER_HEADER,
    Event,
    From,
    V1Error,
    decode_relay_message,
    member_header,
    relay_header_end,
)
from .incoming import BadMessage, BadMessageKind, Incoming, Replier

__all__ = [
    "Deliver",
    "DotnetRuntime",
    "Reply",
    "check_member_id",
    "encode_message",
    "frame_for",
    "read_frame",
    "read_reply",
    "split_relay_message",
    "type_label",
]

logger = logging.getLogger("trio_wsproxy.client")


@attrs.define
class DotnetRuntime:
    """The .NET runtime version a client writes into generic type names
    (``List`1[[System.String, System.Private.CoreLib, Version=...]]``).

    A .NET member matches a ``MessageType`` ordinally, runtime version included, so a
    ``List<string>`` named for .NET 8 never reaches a .NET 7 member. ``pinned`` (from
    ``ClientConfig.dotnet_version``) is used as given; otherwise the version is learned
    from the first generic name with a runtime version that comes from the group, and
    until then the registry's names go as they are (``DOTNET_RUNTIME_VERSION``).
    """

    #: The version set by configuration; None: learn it.
    pinned: str | None = None
    #: The version learned from the group, if any.
    learned: str | None = None

    @property
    def version(self) -> str | None:
        """The version written into generic names now; None leaves them as registered."""
        return self.pinned if self.pinned is not None else self.learned

    def learn(self, message_type: str) -> None:
        """Take the runtime version of a received ``MessageType``, if it is the first."""
        if self.pinned is None and self.learned is None:
            found = runtime_version_of(message_type)
            if found:
                self.learned = found
                logger.info("the group's .NET members write generic names for runtime %s", found)

    def name(self, message_type: str) -> str:
        """``message_type`` as this client sends it."""
        version = self.version
        return message_type if version is None else with_runtime_version(message_type, version)


def encode_message(
    types: TypeRegistry,
    value: object,
    as_type: Any,
    *,
    request_id: str | None,
    reply_to: str | None,
    runtime: DotnetRuntime | None = None,
) -> str | bytes:
    """The frame that carries ``value``: ``bytes``-like values as themselves (one binary
    frame), anything else as a typed envelope named after ``as_type`` (a type, or a wire
    name as a str) or its own type, generic names for ``runtime``'s .NET version.

    Raises :exc:`ValueError` for a binary frame with an ``Id`` or ``ReplyId`` (it has no
    envelope to carry them), for an ``Id``/``ReplyId`` that is not a GUID, and for what a
    .NET member of the group could not read without dropping its connection (see
    :func:`~trio_wsproxy.protocol.typenames.check_sendable`); :exc:`TypeError` for a
    container without ``as_type`` (its element types cannot be told from the value). Logs
    a warning for what a .NET member would drop without a word (a null or ``""`` payload).
    """
    if as_type is None and isinstance(value, bytes | bytearray | memoryview):
        if request_id is not None or reply_to is not None:
            raise ValueError("binary frames carry no envelope, so no Id or ReplyId")
        return bytes(value)
    if as_type is None and isinstance(value, list | tuple | dict | set | frozenset):
        raise TypeError(
            f"say which type this {type(value).__name__} travels as, e.g. as_type=list[str]"
        )
    tp = as_type if as_type is not None else type(value)
    name = types.name_for_value(value, tp)
    if runtime is not None:
        name = runtime.name(name)
    payload = types.unstructure(value, tp)
    warning = check_sendable(name, payload)
    if warning is not None:
        logger.warning("sending %s", warning)
    envelope = Envelope(
        message_type=name,
        message=payload,
        id=None if request_id is None else message_id_to_send(request_id),
        reply_id=None if reply_to is None else message_id_to_send(reply_to),
    )
    return encode_envelope(envelope)


def frame_for(payload: str | bytes, to: str | None, group: str | None = None) -> str | bytes:
    """The ``wsproxy.v1`` message that carries ``payload`` to the group (``to`` None) or
    to the member ``to``: its header line, then the payload untouched, text as text.
    ``group``: a group the client joined (None: the one its URL named)."""
    header = member_header(to, group)
    if isinstance(payload, str):
        return header.decode() + payload
    return header + payload


def split_relay_message(frame: str | bytes) -> tuple[From | Event, str | bytes]:
    """A ``wsproxy.v1`` relay's message: what its header says, and the payload after the
    header line — text stays ``str``, binary ``bytes``. Raises
    :exc:`~trio_wsproxy.protocol.v1.V1Error` when it has no readable header (one past
    ``MAX_MEMBER_HEADER`` ahead of a payload included: see
    :func:`~trio_wsproxy.protocol.v1.relay_header_end`)."""
    # The header ends at the first line feed, in the text as in its UTF-8 bytes: read
    # just the header line (the codec bounds it), and slice the frame itself after it.
    if isinstance(frame, str):
        end = frame.find("\n")
        if end < 0:
            raise V1Error("no header line")
        return _read_header(frame[: end + 1].encode()), frame[end + 1 :]
    end = relay_header_end(frame)
    return _read_header(frame[:end]), frame[end:]


# Every message of one sender comes with the same header line: decode each distinct
# short one once (about 5 us of JSON each time otherwise, a third of a raw message's
# cost). Long lines, member lists, are rare and not worth keeping.
_CACHED_HEADER = 256
_decode_header = functools.lru_cache(maxsize=1024)(decode_relay_message)


def _read_header(line: bytes) -> From | Event:
    if len(line) <= _CACHED_HEADER:
        return _decode_header(line)[0]
    return decode_relay_message(line)[0]


def check_member_id(member_id: object) -> str:
    """``member_id`` if it can address one member, else :exc:`ValueError` (or
    :exc:`TypeError`) saying why: a non-empty string whose header fits the relay's
    limit on member headers (longer ones are a protocol error, close 1002)."""
    if not isinstance(member_id, str):
        raise TypeError(f"a member id is a str, got {type(member_id).__name__}")
    if not member_id:
        raise ValueError("a member id is not empty")
    if len(member_header(member_id)) > MAX_MEMBER_HEADER:
        raise ValueError(f"member id too long: its header would exceed {MAX_MEMBER_HEADER} bytes")
    return member_id


def type_label(value: object, as_type: Any) -> str:
    """The Python name of the type ``value`` travels as, for messages about it."""
    tp = as_type if as_type is not None else type(value)
    if isinstance(tp, str):
        return tp
    return getattr(tp, "__qualname__", repr(tp))


@attrs.frozen
class Deliver:
    """A received message for the handlers and subscriptions of ``message_type``."""

    #: The message, as handlers and subscribers get it.
    incoming: Incoming[Any]
    #: The Python type it structured into (``bytes`` for a binary frame): what handlers
    #: and subscriptions are registered under.
    message_type: Any


@attrs.frozen
class Reply:
    """A received answer to the request ``request_id``, which this client waits on.

    It goes to that request only, not to handlers."""

    #: The request's id, in canonical spelling (see ``normalize_message_id``).
    request_id: str
    #: The answer's envelope; its payload is structured by :func:`read_reply`.
    envelope: Envelope
    #: The text frame as received, for a :class:`BadMessage` if the payload does not fit.
    frame: str


def read_frame(
    frame: str | bytes,
    *,
    types: TypeRegistry,
    awaiting: Container[str],
    sender: Replier,
    origin: From | None = None,
    runtime: DotnetRuntime | None = None,
) -> Deliver | Reply | BadMessage:
    """What the received ``frame`` is.

    ``awaiting`` holds the ids of the requests waiting for an answer: an envelope whose
    ``ReplyId`` is one of them (in any GUID spelling) is a :class:`Reply`. Other envelopes
    are structured into the type registered under their ``MessageType``; binary frames
    are ``bytes``. ``sender`` is what :meth:`Incoming.reply` answers through; ``origin``
    what a v1 relay's header said (the frame is then the payload after it); ``runtime``
    learns the group's .NET version from the generic names that come by.

    An ``Id`` or ``ReplyId`` that is not a ``D``-format GUID makes the frame a
    :class:`BadMessage` (``INVALID_ENVELOPE``): it would drop a .NET member's connection,
    and an answer echoing it would drop every .NET member's. A ``ReplyId`` of
    ``Guid.Empty`` (an answer to a message without ``Id``) answers no request: the
    message goes to the handlers, as on .NET.
    """
    member, direct, offset = (
        (None, False, None) if origin is None else (origin.sender, origin.direct, origin.offset)
    )
    if isinstance(frame, bytes):
        return Deliver(Incoming(frame, None, None, None, sender, member, direct, offset), bytes)
    try:
        envelope = decode_envelope(frame)
    except EnvelopeError as error:
        kind = BadMessageKind.INVALID_JSON if error.not_json else BadMessageKind.INVALID_ENVELOPE
        return BadMessage(kind, str(error), frame)
    for key, value in (("Id", envelope.id), ("ReplyId", envelope.reply_id)):
        if value is not None and not is_dotnet_guid(value):
            reason = (
                f"{key} {value!r} is not a GUID (8-4-4-4-12 hex digits): a .NET member drops "
                "its connection on it, so it is neither read nor answered"
            )
            return BadMessage(BadMessageKind.INVALID_ENVELOPE, reason, frame, envelope)
    if runtime is not None:
        runtime.learn(envelope.message_type)
    if envelope.reply_id is not None and envelope.reply_id != EMPTY_GUID:
        request_id = normalize_message_id(envelope.reply_id)
        if request_id in awaiting:
            return Reply(request_id, envelope, frame)
    message_type = types.type_named(envelope.message_type)
    if message_type is None:
        reason = f"no type is registered as {envelope.message_type!r}"
        return BadMessage(BadMessageKind.UNKNOWN_TYPE, reason, frame, envelope)
    try:
        value = types.structure(envelope.message, message_type)
    except PayloadError as error:
        reason = f"{envelope.message_type} payload {error}"
        return BadMessage(BadMessageKind.BAD_PAYLOAD, reason, frame, envelope)
    incoming = Incoming(
        value, envelope.message_type, envelope.id, envelope.reply_id, sender, member, direct, offset
    )
    return Deliver(incoming, message_type)


def read_reply(reply: Reply, reply_type: Any, types: TypeRegistry) -> tuple[Any, BadMessage | None]:
    """``(value, None)``: the answer's payload structured into ``reply_type``; or
    ``(None, bad)`` when it does not fit, ``bad.reason`` saying why."""
    envelope = reply.envelope
    try:
        return types.structure(envelope.message, reply_type), None
    except PayloadError as error:
        reason = f"reply {envelope.reply_id} ({envelope.message_type}) {error}"
        return None, BadMessage(BadMessageKind.BAD_PAYLOAD, reason, reply.frame, envelope)
