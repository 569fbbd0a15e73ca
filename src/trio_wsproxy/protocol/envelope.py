"""The typed envelope: the .NET EasyWebSocketProxy JSON shape, encoded and decoded without I/O.

A typed message travels as one text frame holding exactly this object, keys in this order::

    {"Id":null,"MessageType":"SharedData.Models.SocketMessage",
     "Message":{"Message":"Hello from Client 1","ReplyRequired":false},"ReplyId":null}

``Id`` and ``ReplyId`` are GUID strings or null: a request carries a fresh GUID in ``Id``,
its answer carries that GUID in ``ReplyId``. The .NET client parses both as ``Guid?``
and System.Text.Json reads only the ``D`` format (``8-4-4-4-12`` hex digits): anything
else there throws in a .NET member's receive loop and drops its connection. So every id
this package sends is a lower-case ``D`` GUID (:func:`message_id_to_send`), and an answer
to a message without an ``Id`` carries :data:`EMPTY_GUID` as .NET's ``ReplyToAsync`` does.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, NoReturn

import attrs

__all__ = [
    "EMPTY_GUID",
    "Envelope",
    "EnvelopeError",
    "decode_envelope",
    "encode_envelope",
    "encode_envelope_around",
    "is_dotnet_guid",
    "message_id_to_send",
    "new_message_id",
    "normalize_message_id",
]

# System.Text.Json writes compact JSON; matching it keeps our frames byte-identical to a
# .NET client's for the same message (for ASCII payloads).
_SEPARATORS = (",", ":")

#: ``Guid.Empty``: the ``ReplyId`` .NET's ``ReplyToAsync`` writes when the message answered
#: had no ``Id``. Receivers (.NET's and ours) dispatch such a message as an ordinary one.
EMPTY_GUID = "00000000-0000-0000-0000-000000000000"

# The one GUID spelling System.Text.Json reads ("D"; hex digits of either case).
_D_FORMAT = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


class EnvelopeError(ValueError):
    """A text frame that is not a valid envelope. ``str(error)`` says why, in one line."""

    #: True when the text was not JSON at all (as opposed to JSON of the wrong shape).
    not_json: bool

    def __init__(self, reason: str, *, not_json: bool = False) -> None:
        super().__init__(reason)
        self.not_json = not_json


@attrs.frozen
class Envelope:
    """One typed message as it travels: the four fields of the .NET ``MessageWrapper``.

    The attribute names are Python's; the JSON keys are the .NET ones (``Id``,
    ``MessageType``, ``Message``, ``ReplyId``).
    """

    #: The full name of the payload's type, e.g. ``"System.String"``; receivers dispatch on it.
    message_type: str
    #: The payload, already unstructured to JSON-compatible values (dict, list, str, ...).
    message: Any = None
    #: A GUID string when the sender waits for an answer, else None.
    id: str | None = None
    #: The ``id`` of the request this message answers, else None.
    reply_id: str | None = None


def new_message_id() -> str:
    """Return a fresh request id: a GUID, lower-case as .NET writes it (``Guid.ToString()``)."""
    return str(uuid.uuid4())


def is_dotnet_guid(value: str) -> bool:
    """Whether a .NET member can read ``value`` as the ``Id`` or ``ReplyId`` of an envelope:
    a GUID in the ``D`` format, ``8-4-4-4-12`` hex digits (no braces, no ``urn:``)."""
    return _D_FORMAT.fullmatch(value) is not None


def message_id_to_send(value: str) -> str:
    """``value`` as an ``Id``/``ReplyId`` to send: a GUID in the lower-case ``D`` format
    (``Guid.ToString()``'s), whatever GUID spelling it came in.

    Raises :exc:`ValueError` for anything but a GUID: a .NET member of the group would
    drop its connection reading it.
    """
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise ValueError(
            f"an Id or ReplyId is a GUID, got {value!r}: a .NET member drops its connection "
            "on anything else"
        ) from None


def normalize_message_id(value: str) -> str:
    """Return the canonical (lower-case, hyphenated) spelling of a GUID id; other ids unchanged.

    .NET parses ``Id`` as a ``Guid``, so it may echo it back in any GUID spelling; comparing
    canonical forms keeps a reply matched to its request whatever the replier wrote.
    """
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return value


def encode_envelope(envelope: Envelope) -> str:
    """Return the text frame for ``envelope``: compact JSON, keys in the .NET order.

    Raises :exc:`EnvelopeError` if the payload is not JSON-serialisable (NaN, infinity, or
    an object the converter did not unstructure).
    """
    document = {
        "Id": envelope.id,
        "MessageType": envelope.message_type,
        "Message": envelope.message,
        "ReplyId": envelope.reply_id,
    }
    try:
        return json.dumps(document, separators=_SEPARATORS, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise EnvelopeError(f"payload is not JSON-serialisable: {exc}") from exc


def encode_envelope_around(
    message_type: str, *, id: str | None = None, reply_id: str | None = None
) -> tuple[str, str]:
    """Return the text of an envelope before and after its payload, for a payload that is
    JSON text already: ``before + payload + after`` is the frame :func:`encode_envelope`
    writes for that payload once parsed, when the payload is compact JSON.

    For a payload that must go as it is, not parsed and written anew (a back end's posted
    body: its numbers keep their digits). The caller vouches that it is one JSON value.
    """
    before = encode_envelope(Envelope(message_type, None, id, reply_id))
    # (The one "Message":null is the payload's place: keys go in the .NET order, the
    # payload's after the type's.)
    cut = before.index(',"Message":null,"ReplyId":') + len(',"Message":')
    return before[:cut], before[cut + len("null") :]


def _reject_constant(name: str) -> NoReturn:
    # Python's json accepts NaN and Infinity; JSON (and System.Text.Json) does not.
    raise ValueError(f"{name} is not valid JSON")


def decode_envelope(text: str) -> Envelope:
    """Parse a text frame into an :class:`Envelope`.

    Strict where a .NET peer is strict (the text must be a JSON object, ``MessageType`` a
    non-empty string, ``Id``/``ReplyId`` strings or null) and lenient where it is lenient
    (a missing ``Message``, ``Id`` or ``ReplyId`` reads as null; unknown keys are ignored).
    Raises :exc:`EnvelopeError` with a one-line reason otherwise.
    """
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise EnvelopeError(f"not JSON: {exc}", not_json=True) from None
    except RecursionError:
        raise EnvelopeError("not JSON: nested too deeply", not_json=True) from None
    if not isinstance(document, dict):
        raise EnvelopeError(f"not an envelope: expected a JSON object, got {_kind(document)}")
    message_type = document.get("MessageType")
    if not isinstance(message_type, str) or not message_type:
        raise EnvelopeError(
            f"not an envelope: MessageType must be a non-empty string, got {_kind(message_type)}"
        )
    ids: dict[str, str | None] = {}
    for key in ("Id", "ReplyId"):
        value = document.get(key)
        if value is not None and not isinstance(value, str):
            raise EnvelopeError(
                f"not an envelope: {key} must be a string or null, got {_kind(value)}"
            )
        ids[key] = value
    return Envelope(
        message_type=message_type,
        message=document.get("Message"),
        id=ids["Id"],
        reply_id=ids["ReplyId"],
    )


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)
