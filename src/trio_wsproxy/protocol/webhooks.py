"""The webhooks the relay sends the application's back end (``--webhook-url``): their
body, typed, and their signature, for the relay and for back ends written in Python.

A webhook tells; it asks nothing (the hooks ask). Each request is a POST whose JSON body
holds a batch of events::

    {"events": [{"id": "3f2a9c0d1b7e4a55-17", "type": "leave", "group": "room-1",
                 "member": "alice", "code": 1001, "time": 1765000000.25}, ...]}

- ``type``: ``join`` (a member entered a group), ``leave`` (it left), ``occupied`` (a
  group got its first member, on any node of a cluster) and ``vacated`` (its last member
  left, on every node);
- ``member``: the member's id (``null`` for occupied and vacated);
- ``code``: a leave's close code (the connection's: 1000, 1001, 4000 replaced by a newer
  connection with the same id, 1006 its node died...), ``null`` for a leave the member
  asked for itself over wsproxy.v1 (the connection stays) and for every other type;
- ``time``: when it happened, in Unix seconds (a float, to the millisecond);
- ``id``: unique per event, and the same in every retry of it: a back end de-duplicates
  with it (webhooks are delivered at least once).

The header ``X-Wsproxy-Signature: t=UNIX_SECONDS,v1=HEX`` signs each body: HEX is the
HMAC-SHA256 of ``"{t}.{body}"`` keyed with the secret's UTF-8 bytes. :func:`verify`
checks one (and that it is recent, against replays); :func:`decode_body` reads a body
into :class:`WebhookBody`, validated.

Pure: no trio, no sockets (DESIGN.md §5).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time as _time
from collections.abc import Iterable
from typing import Any, Final

import attrs
import cattrs
from cattrs.v import format_exception

#: The header that carries a webhook's signature.
SIGNATURE_HEADER: Final = "X-Wsproxy-Signature"
#: The version of the signature scheme (the ``v1=`` part of the header).
SIGNATURE_VERSION: Final = "v1"
#: How old (seconds) a signature :func:`verify` accepts by default: a replayed request
#: older than this is refused even though its signature is good.
DEFAULT_TOLERANCE: Final = 300.0

#: The event types, as the body names them.
JOIN: Final = "join"
LEAVE: Final = "leave"
OCCUPIED: Final = "occupied"
VACATED: Final = "vacated"
EVENT_TYPES: Final = (JOIN, LEAVE, OCCUPIED, VACATED)


def _member_matches_type(event: WebhookEvent, attribute: attrs.Attribute[Any], value: Any) -> None:
    if event.type in (JOIN, LEAVE) and value is None:
        raise ValueError(f"a {event.type} event names its member")
    if event.type in (OCCUPIED, VACATED) and value is not None:
        raise ValueError(f"an {event.type} event names no member")


def _code_matches_type(event: WebhookEvent, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and event.type != LEAVE:
        raise ValueError(f"only a leave has a close code, not a {event.type}")
    if value is not None and not 1000 <= value <= 4999:
        raise ValueError(f"a close code is from 1000 to 4999, got {value}")


@attrs.frozen(kw_only=True)
class WebhookEvent:
    """One thing that happened to a group (see the module's docstring)."""

    #: Unique per event, the same in every retry: de-duplicate with it.
    id: str = attrs.field(validator=attrs.validators.min_len(1))
    #: ``join``, ``leave``, ``occupied`` or ``vacated``.
    type: str = attrs.field(validator=attrs.validators.in_(EVENT_TYPES))
    #: The group's name.
    group: str
    #: The member's id (join, leave); None for occupied and vacated.
    member: str | None = attrs.field(default=None, validator=_member_matches_type)
    #: A leave's close code; None for a leave the member asked for, and other types.
    code: int | None = attrs.field(default=None, validator=_code_matches_type)
    #: When it happened, in Unix seconds.
    time: float


def _events(events: Iterable[WebhookEvent]) -> tuple[WebhookEvent, ...]:
    return tuple(events)


@attrs.frozen
class WebhookBody:
    """A webhook request's body: a batch of events, oldest first (as one node saw them;
    events from different nodes of a cluster come in separate requests, in no order
    between them)."""

    events: tuple[WebhookEvent, ...] = attrs.field(converter=_events)


class WebhookBodyError(ValueError):
    """A body that is not a webhook's (not JSON, a field missing or of the wrong type)."""


class SignatureError(ValueError):
    """A webhook's signature that does not hold: see the subclasses."""


class SignatureFormatError(SignatureError):
    """The header is missing or is not ``t=UNIX_SECONDS,v1=HEX``."""


class SignatureMismatch(SignatureError):
    """The signature is not the body's with this secret (a forgery, a tampered body, or
    the wrong secret)."""


class SignatureTooOld(SignatureError):
    """The signature is good but older than the tolerance (a replay?) — or from the
    future beyond it (a clock far off)."""


def _converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=False)  # (newer relays may add fields)

    def structure_float(value: Any, _: type) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"expected a number, got {value!r}")
        return float(value)

    def structure_int(value: Any, _: type) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected a whole number, got {value!r}")
        return value

    def structure_str(value: Any, _: type) -> str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        return value

    converter.register_structure_hook(float, structure_float)
    converter.register_structure_hook(int, structure_int)
    converter.register_structure_hook(str, structure_str)
    return converter


#: The converter of webhook bodies: strict about types (a number is not a string), lax
#: about fields it does not know (a newer relay may add some).
converter: Final = _converter()


def encode_body(events: Iterable[WebhookEvent]) -> bytes:
    """The JSON body of a webhook request carrying ``events`` (compact, UTF-8)."""
    document = converter.unstructure(WebhookBody(events))
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def decode_body(body: bytes | str) -> WebhookBody:
    """A webhook request's body, validated; WebhookBodyError says what is wrong with it.
    (Check its signature first, with :func:`verify`.)"""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebhookBodyError(f"the body is not JSON: {exc}") from None
    try:
        return converter.structure(document, WebhookBody)
    except (cattrs.BaseValidationError, ValueError, TypeError, AttributeError) as exc:
        detail = (
            "; ".join(cattrs.transform_error(exc, format_exception=_say))
            if isinstance(exc, cattrs.BaseValidationError)
            else str(exc)
        )
        raise WebhookBodyError(f"not a webhook body: {detail}") from None


def _say(exc: BaseException, type: type | None) -> str:
    """What is wrong with one value of a body: a validator's own message, which names
    the rule (cattrs' default says "invalid value")."""
    if isinstance(exc, ValueError) and exc.args and isinstance(exc.args[0], str):
        return exc.args[0]  # (attrs' validators add the attribute and more after it)
    return format_exception(exc, type)


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else data


def signature(secret: str, body: bytes | str, t: int) -> str:
    """The hex HMAC-SHA256 of ``"{t}.{body}"`` keyed with ``secret``'s UTF-8 bytes."""
    message = str(t).encode() + b"." + _as_bytes(body)
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes | str, t: int | float | None = None) -> str:
    """The ``X-Wsproxy-Signature`` header's value for ``body`` at Unix time ``t`` (now
    when None): ``t=UNIX_SECONDS,v1=HEX``."""
    seconds = int(_time.time() if t is None else t)
    return f"t={seconds},{SIGNATURE_VERSION}={signature(secret, body, seconds)}"


def parse_signature(header: str | None) -> tuple[int, list[str]]:
    """The time and the v1 signatures a header names; SignatureFormatError otherwise.
    (Several ``v1=`` may come, during a change of secret: any one may match.)"""
    if not header:
        raise SignatureFormatError(f"no {SIGNATURE_HEADER} header")
    t: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureFormatError(f"{SIGNATURE_HEADER} is not t=UNIX_SECONDS,v1=HEX")
        if key == "t":
            if not value.isascii() or not value.isdigit():
                raise SignatureFormatError(f"{SIGNATURE_HEADER}'s t is not Unix seconds")
            t = int(value)
        elif key == SIGNATURE_VERSION:
            signatures.append(value)
    if t is None or not signatures:
        raise SignatureFormatError(f"{SIGNATURE_HEADER} needs both t= and v1=")
    return t, signatures


def verify(
    secret: str,
    body: bytes | str,
    header: str | None,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> int:
    """Check that ``header`` (the ``X-Wsproxy-Signature`` value) signs ``body`` (the
    request's raw bytes, as received) with ``secret``, within ``tolerance`` seconds of
    ``now`` (the clock when None). Returns the signature's time; raises
    SignatureFormatError, SignatureMismatch or SignatureTooOld."""
    t, signatures = parse_signature(header)
    expected = signature(secret, body, t)
    if not any(hmac.compare_digest(expected, given) for given in signatures):
        raise SignatureMismatch("the signature does not match the body (wrong secret, or forged)")
    clock = _time.time() if now is None else now
    if abs(clock - t) > tolerance:
        raise SignatureTooOld(
            f"the signature is {clock - t:.0f}s old, beyond the {tolerance:g}s tolerance"
        )
    return t
