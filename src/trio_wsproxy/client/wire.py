"""What the client puts on the wire and what it makes of what comes off it, decided
without I/O.

:func:`encode_message` is the frame for a message to send. :func:`read_frame` says what a
received frame is: a message for the handlers of its type (:class:`Deliver`), the answer
to a request this client is waiting on (:class:`Reply`, structured by
:func:`read_reply`), or a frame to ignore (:class:`~.incoming.BadMessage`). The
connection task carries the verdict out.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

import attrs

from ..protocol.envelope import (
    Envelope,
    EnvelopeError,
    decode_envelope,
    encode_envelope,
    normalize_message_id,
)
from ..protocol.typenames import PayloadError, TypeRegistry
from .incoming import BadMessage, BadMessageKind, Incoming, Sender

__all__ = ["Deliver", "Reply", "encode_message", "read_frame", "read_reply", "type_label"]


def encode_message(
    types: TypeRegistry,
    value: object,
    as_type: Any,
    *,
    request_id: str | None,
    reply_to: str | None,
) -> str | bytes:
    """The frame that carries ``value``: ``bytes``-like values as themselves (one binary
    frame), anything else as a typed envelope named after ``as_type`` or its own type.

    Raises :exc:`ValueError` for a binary frame with an ``Id`` or ``ReplyId`` (it has no
    envelope to carry them) and :exc:`TypeError` for a container without ``as_type``
    (its element types cannot be told from the value).
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
    envelope = Envelope(
        message_type=types.name_for_value(value, tp),
        message=types.unstructure(value, tp),
        id=request_id,
        reply_id=reply_to,
    )
    return encode_envelope(envelope)


def type_label(value: object, as_type: Any) -> str:
    """The Python name of the type ``value`` travels as, for messages about it."""
    tp = as_type if as_type is not None else type(value)
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
    frame: str | bytes, *, types: TypeRegistry, awaiting: Container[str], sender: Sender
) -> Deliver | Reply | BadMessage:
    """What the received ``frame`` is.

    ``awaiting`` holds the ids of the requests waiting for an answer: an envelope whose
    ``ReplyId`` is one of them (in any GUID spelling) is a :class:`Reply`. Other envelopes
    are structured into the type registered under their ``MessageType``; binary frames
    are ``bytes``. ``sender`` is what :meth:`Incoming.reply` answers through.
    """
    if isinstance(frame, bytes):
        return Deliver(Incoming(frame, None, None, None, sender), bytes)
    try:
        envelope = decode_envelope(frame)
    except EnvelopeError as error:
        kind = BadMessageKind.INVALID_JSON if error.not_json else BadMessageKind.INVALID_ENVELOPE
        return BadMessage(kind, str(error), frame)
    if envelope.reply_id is not None:
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
    incoming = Incoming(value, envelope.message_type, envelope.id, envelope.reply_id, sender)
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
