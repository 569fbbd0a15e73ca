"""A faithful stand-in of the .NET ``WsProxyClient`` (EasyWebSocketProxy) for tests.

It behaves as the .NET client does, quirks included, over a real socket: it sends the
bytes System.Text.Json would send, reads envelopes as .NET reads them, drops its
connection where .NET's receive loop would throw, and reconnects once, at once, as
``TryConnectAsync`` from the end of the receive loop does. Tests use it to check that
Python clients and the relay get along with a .NET member without a .NET runtime.

Using it::

    from dotnet_peer import SOCKET_MESSAGE, STRING, BOOLEAN, dotnet_url, open_dotnet_client

    async with open_dotnet_client(dotnet_url(relay.url, "group_1")) as peer:
        hellos = peer.collect(SOCKET_MESSAGE)         # On<SocketMessage>, into a channel
        await peer.send({"Message": "Hi"}, SOCKET_MESSAGE)   # SendAsync<SocketMessage>
        incoming = await hellos.receive()             # {"Message": ..., "ReplyRequired": ...}
        answer = await peer.request("Shall we?", STRING, BOOLEAN, timeout=5)  # or None
        await peer.reply_to(incoming, {"Message": "ok"}, SOCKET_MESSAGE)  # ReplyToAsync
        await peer.send(b"raw bytes")                 # SendAsync(byte[]): a binary frame

API (all of it is the .NET client's, under Python names, plus what a test needs to see):

- ``open_dotnet_client(url, *, connect=True, runtime="7.0.0.0", keepalive=None,
  culture=INVARIANT)``: an ``async with`` that runs a :class:`DotNetClient` in its own
  nursery; with ``connect`` it calls :meth:`DotNetClient.try_connect` and raises
  ``ConnectionError`` when that returns False. Leaving the block drops every socket
  (current and abandoned) without a close frame, as a process that exits does; call
  :meth:`DotNetClient.disconnect` first for ``TryDisconnectAsync``.
- ``dotnet_url(base, group, id=None)``: ``{base}?id={GUID}&groupName={group}``, the
  URL the .NET samples build (a fresh lowercase GUID unless ``id`` is given).
- Types are :class:`DotNetType` objects named by their .NET ``FullName``: ``STRING``,
  ``BOOLEAN``, ``INT16/INT32/INT64``, ``UINT16/UINT32/UINT64``, ``BYTE``, ``CHAR``,
  ``DOUBLE``, ``SINGLE``, ``DECIMAL``, ``GUID``, ``BYTE_ARRAY``, ``SOCKET_MESSAGE``
  (``SharedData.Models.SocketMessage``), ``list_of(STRING, runtime)``
  (``List<string>`` of a runtime version), and ``DotNetClass(name, ((prop, type), ...))``
  for any class. Wherever a type is taken, its full name (a ``str``) also works for the
  types the client knows (the built-ins, ``List<string>`` of its own runtime, and
  whatever :meth:`DotNetClient.register` added).
- Values: ``str``, ``bool``, ``int``, ``float``, ``uuid.UUID``, ``bytes``, ``None``; a
  class instance is a ``dict`` of its .NET property names (missing ones are written as
  their defaults: null, false, 0); a ``List<T>`` is a ``list``.
- ``try_connect() -> bool`` (``TryConnectAsync``), ``disconnect()``
  (``TryDisconnectAsync``: close 1000, no reconnect), ``connected`` (``IsConnected``).
- ``send(value, type=None)`` (``SendAsync<T>``; ``bytes`` without a type is
  ``SendAsync(byte[])``); ``request(value, type, answer_type, timeout) -> answer | None``
  (``SendAndWaitForAnswerAsync``); ``reply_to(received, answer, type)``
  (``ReplyToAsync``). Sends while not connected do nothing, as in .NET
  (``sends_skipped`` counts them).
- ``on(type, handler) -> bool`` (``On<T>``; the first handler per type name wins; False
  when it was ignored). A handler is called in the receive loop with the converted
  value; if it raises, the connection is dropped and reconnected, as in .NET. An async
  handler is started and not awaited (``async void``): its exception ends the test, as
  it would end a .NET process. ``collect(type)`` registers a handler that puts each
  value into the returned ``trio.MemoryReceiveChannel``.
- What a test can see: ``connects`` (successful connects), ``attempts`` (connect
  attempts), ``drops`` (why each receive loop ended, as exceptions), ``gave_up`` (a
  connect failed and nothing will try again: .NET's silent dead end), ``sent`` (every
  data frame sent: ``(opcode, payload)``), ``closes_received`` (close frames the server
  sent, as ``(code, reason)``), ``ignored`` (messages dropped silently, with why);
  ``await wait_connects(n)``, ``wait_drops(n)``, ``wait_gave_up()``,
  ``wait_until(predicate)``.
- Module functions for checking bytes without a socket: ``envelope(value, type, id=None,
  reply_id=None) -> str`` (the exact text .NET sends), ``json_string(s)`` (a string as
  System.Text.Json escapes it), ``json_double(x)``.

What it reproduces, and where each behaviour comes from. Sources: ``Client`` is
EasyWebSocketProxy/WsProxyClient.cs, ``Wrapper`` its Models/MessageWrapper.cs; ``STJ`` is
System.Text.Json with default options and ``CWS`` .NET 7/8's ClientWebSocket, which the
client relies on.

| behaviour | source |
| --- | --- |
| envelope ``Id, MessageType, Message, ReplyId`` in order, nulls written, compact | Wrapper; STJ |
| escaped: non-ASCII, controls, ``"\\<>&'+`` and backtick, as ``\\uXXXX`` (upper-case) | STJ |
| doubles in .NET's shortest form (``3``, ``1E+20``, ``1E-05``, ``-0``) | STJ |
| ``MessageType`` = ``typeof(T).FullName`` of the static ``T``; generics name the runtime | Client |
| envelope read with exact names, unknown keys ignored, depth 64, no NaN | Client; STJ |
| ``Id``/``ReplyId`` only as D-format GUIDs; anything else throws | Wrapper; STJ |
| ``Message`` null, absent or ``""`` dropped silently (replies too); so is a ``null`` | Client |
| ``Message`` passed on as ``JsonElement.ToString()``: ``True``, raw numbers, objects | Client |
| primitives by ``Convert.ToXxx``: per culture, ``"42"`` is an Int32, overflow throws | Client |
| other types: ``JsonSerializer.Deserialize`` of it (a top-level Guid never parses) | Client |
| handlers by exact ``FullName``; first ``On<T>`` per type wins; unknown types ignored | Client |
| a reply matched by ``ReplyId`` alone (any ``MessageType``), else handled as a message | Client |
| request ``Id`` a fresh lowercase GUID; the answer converted to the hint type, or null | Client |
| ``ReplyToAsync`` finds the Id by the object (primitives by value), else ``Guid.Empty`` | Client |
| any exception in the loop ends it; the socket is abandoned, neither closed nor disposed | Client |
| a server's close ends the loop too (read as an empty text), never answered | Client; CWS |
| then ``TryConnectAsync`` once, at once; if that fails, never again | Client |
| sends while not open return silently | Client |
| a broken server frame or close code: a close 1002 (bad UTF-8: 1007), then it throws | CWS |
| pings answered; keepalive as unsolicited empty pongs (.NET: every 30 s; here if asked) | CWS |
| a binary frame goes to the ``byte[]`` handler, raw; a text ``System.Byte[]`` throws | Client |

Not reproduced: .NET refuses a second concurrent ``SendAsync`` on one socket (here sends
are serialised); the race in ``SendAndWaitForAnswerAsync`` where an answer arriving
before its waiting task starts throws ``TaskCanceledException``; a second ``On<T>`` for
two distinct .NET types of one name.
"""

from __future__ import annotations

import base64
import decimal
import hashlib
import inspect
import json
import math
import os
import re
import ssl
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any, NoReturn

import attrs
import trio

from wsraw import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Fragments,
    FrameFault,
    mask_frame,
    read_frame,
)

#: The public key token of System.Private.CoreLib, part of every generic's full name.
CORELIB_TOKEN = "7cec85d7bea7798e"
#: Guid.Empty, what ReplyToAsync sends as ReplyId for a message it has no Id for.
EMPTY_GUID = uuid.UUID(int=0)
#: How deep System.Text.Json reads by default (JsonSerializerOptions.MaxDepth).
MAX_DEPTH = 64
#: How long the stand-in waits for a TCP connection and the 101 (.NET waits longer; a
#: test should not).
CONNECT_TIMEOUT = 10.0


class DotNetError(Exception):
    """An exception .NET would throw inside the receive loop (and so drop the connection)."""


class JsonError(DotNetError):
    """System.Text.Json's JsonException (bad JSON, a wrong token type, a bad GUID)."""


class FormatError(DotNetError):
    """System.FormatException from a Convert.ToXxx."""


class OverflowError_(DotNetError):
    """System.OverflowException from a Convert.ToXxx."""


class ProtocolError(DotNetError):
    """ClientWebSocket's WebSocketException: a broken frame, bad UTF-8, a lost socket."""


class HandlerError(DotNetError):
    """A handler threw (TargetInvocationException from DynamicInvoke)."""


# -- System.Text.Json writing -------------------------------------------------------------

# STJ's default encoder lets through printable ASCII except these; everything else is
# escaped, as \uXXXX (upper-case hex) unless it has a two-character form.
_UNSAFE_ASCII = frozenset("\"\\'&+<>`")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", "\b": "\\b", "\f": "\\f"}


def json_string(text: str) -> str:
    """``text`` as a JSON string, escaped exactly as System.Text.Json's default encoder does."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if 0x20 <= code < 0x7F and ch not in _UNSAFE_ASCII:
            out.append(ch)
        elif ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif 0xD800 <= code < 0xE000:
            # .NET strings are UTF-16; a lone surrogate makes the writer throw.
            raise ValueError(f"a lone surrogate (U+{code:04X}) cannot be written as JSON")
        elif code > 0xFFFF:
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04X}\\u{0xDC00 + (code & 0x3FF):04X}")
        else:
            out.append(f"\\u{code:04X}")
    out.append('"')
    return "".join(out)


def json_double(value: float) -> str:
    """A double as System.Text.Json writes it: .NET's shortest round-trip "G" format.

    Fixed notation while the decimal exponent is within [-5, max(15, digits)), else
    ``d.dddE+XX`` (at least two exponent digits); ``-0.0`` is ``-0``. NaN and the
    infinities are refused, as .NET refuses them by default."""
    if not math.isfinite(value):
        raise ValueError(".NET's JSON writer refuses NaN and infinities by default")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    exact = decimal.Decimal(repr(abs(value))).normalize()
    digit_tuple, exponent = exact.as_tuple()[1], int(exact.as_tuple()[2])
    digits = "".join(map(str, digit_tuple))
    scale = len(digits) + exponent  # value = 0.DIGITS x 10**scale
    if scale > max(len(digits), 15) or scale < -3:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        power = scale - 1
        return f"{sign}{mantissa}E{'+' if power >= 0 else '-'}{abs(power):02d}"
    if scale <= 0:
        return f"{sign}0.{'0' * -scale}{digits}"
    if scale >= len(digits):
        return sign + digits + "0" * (scale - len(digits))
    return f"{sign}{digits[:scale]}.{digits[scale:]}"


def guid_text(value: uuid.UUID | None) -> str:
    """A ``Guid?`` as STJ writes it: lowercase D format in quotes, or null."""
    return "null" if value is None else f'"{value}"'


# -- System.Text.Json reading -------------------------------------------------------------


@attrs.frozen
class RawNumber:
    """A JSON number as it was written (STJ's converters read the text, not a float)."""

    text: str


def _refuse_constant(name: str) -> object:
    raise JsonError(f"'{name}' is not valid JSON")


_DECODER = json.JSONDecoder(
    parse_float=RawNumber, parse_int=RawNumber, parse_constant=_refuse_constant
)
_JSON_SPACE = " \t\n\r"
_GUID_D = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _JSON_SPACE:
        i += 1
    return i


def _check_depth(text: str) -> None:
    depth = 0
    for bracket in re.findall(r"[\[\]{}]", _STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_DEPTH:
            raise JsonError(f"the JSON is nested deeper than {MAX_DEPTH}")


def _check_utf16(value: str) -> str:
    if re.search("[\ud800-\udfff]", value):
        raise JsonError("a lone surrogate escape cannot be read as a .NET string")
    return value


def read_json(text: str) -> object:
    """One JSON value and nothing else, as ``JsonSerializer.Deserialize`` reads text:
    numbers stay :class:`RawNumber`, NaN and deep nesting are refused."""
    _check_depth(text)
    start = _skip(text, 0)
    try:
        value, end = _DECODER.raw_decode(text, start)
    except ValueError as exc:
        raise JsonError(f"invalid JSON: {exc}") from None
    if _skip(text, end) != len(text):
        raise JsonError("invalid JSON: more after the value")
    return value


def read_guid(value: object) -> uuid.UUID | None:
    """A ``Guid?`` as STJ reads it: null, or a string of exactly a D-format GUID."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise JsonError(f"a Guid must be a JSON string, not {type(value).__name__}")
    if not _GUID_D.fullmatch(value):
        raise JsonError(f"{value!r} is not a GUID in the D format")
    return uuid.UUID(value)


@attrs.frozen
class Envelope:
    """A received ``MessageWrapper``: ``message`` is ``Message.ToString()`` (None for null)."""

    id: uuid.UUID | None
    message_type: str | None
    message: str | None


def element_text(value: object, raw: str) -> str:
    """``JsonElement.ToString()``: a string's value, ``True``/``False``, else the raw text."""
    if isinstance(value, str):
        return _check_utf16(value)
    if value is True:
        return "True"
    if value is False:
        return "False"
    return raw


def read_envelope(text: str) -> tuple[Envelope | None, uuid.UUID | None]:
    """``JsonSerializer.Deserialize<MessageWrapper>(text)``: the envelope and its ReplyId.

    Returns ``(None, None)`` for a top-level ``null`` (the loop ignores it); raises
    :class:`JsonError` wherever .NET throws."""
    _check_depth(text)
    i = _skip(text, 0)
    if text.startswith("null", i) and _skip(text, i + 4) == len(text):
        return None, None
    if i >= len(text) or text[i] != "{":
        raise JsonError("the envelope is not a JSON object")
    fields: dict[str, tuple[object, str]] = {}
    i = _skip(text, i + 1)
    try:
        if i < len(text) and text[i] == "}":
            i += 1
        else:
            while True:
                if i >= len(text) or text[i] != '"':
                    raise JsonError("expected a property name")
                key, i = scanstring(text, i + 1, True)
                i = _skip(text, i)
                if i >= len(text) or text[i] != ":":
                    raise JsonError("expected ':'")
                i = _skip(text, i + 1)
                value, end = _DECODER.raw_decode(text, i)
                fields[key] = (value, text[i:end])  # the last of a duplicate name wins
                i = _skip(text, end)
                if i < len(text) and text[i] == ",":
                    i = _skip(text, i + 1)
                    continue
                if i < len(text) and text[i] == "}":
                    i += 1
                    break
                raise JsonError("expected ',' or '}'")
    except ValueError as exc:
        raise JsonError(f"invalid JSON: {exc}") from None
    if _skip(text, i) != len(text):
        raise JsonError("invalid JSON: more after the envelope")
    message_id = read_guid(fields.get("Id", (None, ""))[0])
    message_type = fields.get("MessageType", (None, ""))[0]
    if message_type is not None and not isinstance(message_type, str):
        raise JsonError("MessageType must be a JSON string")
    message_value, message_raw = fields.get("Message", (None, "null"))
    message = None if message_value is None else element_text(message_value, message_raw)
    reply_id = read_guid(fields.get("ReplyId", (None, ""))[0])
    if isinstance(message_type, str):
        _check_utf16(message_type)
    return Envelope(message_id, message_type, message), reply_id


# -- culture-dependent Convert.ToXxx ------------------------------------------------------


@attrs.frozen
class Culture:
    """The separators of ``CultureInfo.CurrentCulture`` that ``Convert.ToXxx`` parses with."""

    decimal_separator: str = "."
    group_separator: str = ","


INVARIANT = Culture()
#: A culture with a decimal comma (de-DE): ``Convert.ToDouble("3.5")`` is 35 there.
GERMAN = Culture(",", ".")

# Number parsing trims these (Number.IsWhite) and trailing NULs.
_NUMBER_SPACE = " \t\n\v\f\r"


def _trim_number(text: str) -> str:
    return text.strip(_NUMBER_SPACE).rstrip("\0").strip(_NUMBER_SPACE)


def convert_integer(text: str, low: int, high: int) -> int:
    """``Convert.ToInt32`` and kin: ``NumberStyles.Integer`` (spaces, a leading sign, ASCII
    digits); FormatException otherwise, OverflowException out of range."""
    trimmed = _trim_number(text)
    if not re.fullmatch(r"[+-]?[0-9]+", trimmed):
        raise FormatError(f"{text!r} is not an integer")
    value = int(trimmed)
    if not low <= value <= high:
        raise OverflowError_(f"{text!r} is out of range [{low}, {high}]")
    return value


def convert_double(text: str, culture: Culture) -> float:
    """``Convert.ToDouble``: ``NumberStyles.Float | AllowThousands`` in ``culture``; too
    large a value is an infinity (.NET Core 3.0 and later), not an overflow."""
    trimmed = _trim_number(text)
    special = trimmed.lower().lstrip("+")
    for name, value in (("nan", math.nan), ("infinity", math.inf), ("\u221e", math.inf)):
        if special == name:
            return value
        if special == "-" + name:
            return -value
    dec, group = re.escape(culture.decimal_separator), re.escape(culture.group_separator)
    pattern = rf"[+-]?(?:[0-9](?:[0-9]|{group})*(?:{dec}[0-9]*)?|{dec}[0-9]+)(?:[eE][+-]?[0-9]+)?"
    if not re.fullmatch(pattern, trimmed):
        raise FormatError(f"{text!r} is not a number in this culture")
    plain = trimmed.replace(culture.group_separator, "").replace(culture.decimal_separator, ".")
    return float(plain)


def convert_boolean(text: str) -> bool:
    """``Convert.ToBoolean``: ``True``/``False`` in any case, spaces and trailing NULs trimmed."""
    trimmed = text.strip().rstrip("\0").strip().lower()
    if trimmed == "true":
        return True
    if trimmed == "false":
        return False
    raise FormatError(f"{text!r} is not a Boolean")


# -- .NET types ---------------------------------------------------------------------------


class DotNetType:
    """A .NET type: its ``FullName``, how STJ writes a value of it, and how the receive
    loop turns ``Message.ToString()`` into one."""

    full_name: str
    #: Whether ``_replyToObjects`` finds a received value by equality (primitives,
    #: strings, structs) rather than by reference (classes, lists).
    by_value: bool = True

    def write(self, value: object) -> str:
        """The JSON text STJ writes for ``value`` (as ``Message`` or inside an object)."""
        raise NotImplementedError

    def receive(self, text: str, culture: Culture) -> object:
        """``Deserialize(message, type)``: the value a handler gets, or None (dropped)."""
        return self.from_json(read_json(text))

    def from_json(self, node: object) -> object:
        """What ``JsonSerializer.Deserialize`` makes of a parsed JSON value of this type."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<.NET {self.full_name}>"


class _StringType(DotNetType):
    full_name = "System.String"

    def write(self, value: object) -> str:
        if value is None:
            return "null"
        if not isinstance(value, str):
            raise TypeError(f"a System.String, not {value!r}")
        return json_string(value)

    def receive(self, text: str, culture: Culture) -> object:
        return text  # Convert.ToString(string)

    def from_json(self, node: object) -> object:
        if node is None or isinstance(node, str):
            return node
        raise JsonError("expected a JSON string")


class _BooleanType(DotNetType):
    full_name = "System.Boolean"

    def write(self, value: object) -> str:
        if not isinstance(value, bool):
            raise TypeError(f"a System.Boolean, not {value!r}")
        return "true" if value else "false"

    def receive(self, text: str, culture: Culture) -> object:
        return convert_boolean(text)

    def from_json(self, node: object) -> object:
        if isinstance(node, bool):
            return node
        raise JsonError("expected true or false")


@attrs.frozen(repr=False)
class _IntegerType(DotNetType):
    full_name: str
    low: int
    high: int

    def write(self, value: object) -> str:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"a {self.full_name}, not {value!r}")
        if not self.low <= value <= self.high:
            raise ValueError(f"{value} is no {self.full_name}")
        return str(value)

    def receive(self, text: str, culture: Culture) -> object:
        return convert_integer(text, self.low, self.high)

    def from_json(self, node: object) -> object:
        # STJ's integer converters take a number token of digits only, in range.
        if isinstance(node, RawNumber) and re.fullmatch(r"-?[0-9]+", node.text):
            value = int(node.text)
            if self.low <= value <= self.high:
                return value
        raise JsonError(f"expected a {self.full_name} number")


@attrs.frozen(repr=False)
class _FloatType(DotNetType):
    full_name: str

    def write(self, value: object) -> str:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"a {self.full_name}, not {value!r}")
        return json_double(float(value))

    def receive(self, text: str, culture: Culture) -> object:
        return convert_double(text, culture)

    def from_json(self, node: object) -> object:
        if isinstance(node, RawNumber):
            return float(node.text)
        raise JsonError(f"expected a {self.full_name} number")


class _CharType(DotNetType):
    full_name = "System.Char"

    def write(self, value: object) -> str:
        if not isinstance(value, str) or len(value.encode("utf-16-le")) != 2:
            raise TypeError(f"a System.Char, not {value!r}")
        return json_string(value)

    def receive(self, text: str, culture: Culture) -> object:
        if len(text.encode("utf-16-le")) != 2:
            raise FormatError(f"{text!r} is not one UTF-16 character")
        return text

    def from_json(self, node: object) -> object:
        return self.receive(node, INVARIANT) if isinstance(node, str) else _json_fail(self)


class _GuidType(DotNetType):
    full_name = "System.Guid"

    def write(self, value: object) -> str:
        if not isinstance(value, uuid.UUID):
            raise TypeError(f"a System.Guid, not {value!r}")
        return guid_text(value)

    def from_json(self, node: object) -> object:
        # Reached with the unquoted text of the GUID, which is never JSON: JsonException.
        return read_guid(node) if isinstance(node, str) else _json_fail(self)


class _ByteArrayType(DotNetType):
    full_name = "System.Byte[]"
    by_value = False

    def write(self, value: object) -> str:
        if value is None:
            return "null"
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"a System.Byte[], not {value!r}")
        return json_string(base64.b64encode(bytes(value)).decode())

    def from_json(self, node: object) -> object:
        if node is None:
            return None
        if isinstance(node, str):
            try:
                return base64.b64decode(node, validate=True)
            except ValueError:
                pass
        raise JsonError("expected a base64 JSON string")


def _json_fail(kind: DotNetType) -> object:
    raise JsonError(f"cannot read that JSON as {kind.full_name}")


@attrs.frozen(repr=False)
class DotNetClass(DotNetType):
    """A .NET class: its full name and its public properties, in declaration order.

    Values are dicts keyed by property name. STJ writes every property (missing ones
    as their default) and reads names case-sensitively, ignoring unknown ones."""

    full_name: str
    properties: tuple[tuple[str, DotNetType], ...]
    by_value: bool = False

    def write(self, value: object) -> str:
        if value is None:
            return "null"
        if not isinstance(value, dict):
            raise TypeError(f"a {self.full_name} is a dict of its properties, not {value!r}")
        unknown = set(value) - {name for name, _ in self.properties}
        if unknown:
            raise ValueError(f"{self.full_name} has no properties {sorted(unknown)}")
        parts = [
            f"{json_string(name)}:{kind.write(value.get(name, default_of(kind)))}"
            for name, kind in self.properties
        ]
        return "{" + ",".join(parts) + "}"

    def from_json(self, node: object) -> object:
        if node is None:
            return None
        if not isinstance(node, dict):
            raise JsonError(f"expected a JSON object for {self.full_name}")
        result = {name: default_of(kind) for name, kind in self.properties}
        for name, kind in self.properties:
            if name in node:
                result[name] = kind.from_json(node[name])
        return result


@attrs.frozen(repr=False)
class DotNetList(DotNetType):
    """``System.Collections.Generic.List<T>`` on one runtime version (its full name
    carries the element type's assembly-qualified name)."""

    element: DotNetType
    runtime: str
    by_value: bool = False

    @property
    def full_name(self) -> str:  # type: ignore[override]
        return (
            f"System.Collections.Generic.List`1[[{self.element.full_name}, "
            f"System.Private.CoreLib, Version={self.runtime}, Culture=neutral, "
            f"PublicKeyToken={CORELIB_TOKEN}]]"
        )

    def write(self, value: object) -> str:
        if value is None:
            return "null"
        if not isinstance(value, list):
            raise TypeError(f"a List is a list, not {value!r}")
        return "[" + ",".join(self.element.write(item) for item in value) + "]"

    def from_json(self, node: object) -> object:
        if node is None:
            return None
        if not isinstance(node, list):
            raise JsonError("expected a JSON array")
        return [self.element.from_json(item) for item in node]


def default_of(kind: DotNetType) -> object:
    """``default(T)``: what STJ writes for a missing property and reads when absent."""
    if isinstance(kind, _BooleanType):
        return False
    if isinstance(kind, _IntegerType):
        return 0
    if isinstance(kind, _FloatType):
        return 0.0
    if isinstance(kind, _GuidType):
        return EMPTY_GUID
    return None


STRING: DotNetType = _StringType()
BOOLEAN: DotNetType = _BooleanType()
BYTE: DotNetType = _IntegerType("System.Byte", 0, 2**8 - 1)
INT16: DotNetType = _IntegerType("System.Int16", -(2**15), 2**15 - 1)
INT32: DotNetType = _IntegerType("System.Int32", -(2**31), 2**31 - 1)
INT64: DotNetType = _IntegerType("System.Int64", -(2**63), 2**63 - 1)
UINT16: DotNetType = _IntegerType("System.UInt16", 0, 2**16 - 1)
UINT32: DotNetType = _IntegerType("System.UInt32", 0, 2**32 - 1)
UINT64: DotNetType = _IntegerType("System.UInt64", 0, 2**64 - 1)
DOUBLE: DotNetType = _FloatType("System.Double")
SINGLE: DotNetType = _FloatType("System.Single")
DECIMAL: DotNetType = _FloatType("System.Decimal")
CHAR: DotNetType = _CharType()
GUID: DotNetType = _GuidType()
BYTE_ARRAY: DotNetType = _ByteArrayType()
#: The samples' SharedData.Models.SocketMessage {string? Message; bool ReplyRequired}.
SOCKET_MESSAGE = DotNetClass(
    "SharedData.Models.SocketMessage", (("Message", STRING), ("ReplyRequired", BOOLEAN))
)
BUILTIN_TYPES: tuple[DotNetType, ...] = (
    STRING, BOOLEAN, BYTE, INT16, INT32, INT64, UINT16, UINT32, UINT64,
    DOUBLE, SINGLE, DECIMAL, CHAR, GUID, BYTE_ARRAY, SOCKET_MESSAGE,
)  # fmt: skip


def list_of(element: DotNetType, runtime: str = "7.0.0.0") -> DotNetList:
    """``List<element>`` as a program on ``runtime`` (7.0.0.0: .NET 7; 8.0.0.0: .NET 8) names it."""
    return DotNetList(element, runtime)


def envelope(
    value: object,
    kind: DotNetType,
    *,
    id: uuid.UUID | None = None,
    reply_id: uuid.UUID | None = None,
) -> str:
    """The text of ``MessageWrapper<T>`` exactly as ``JsonSerializer.Serialize`` writes it."""
    return (
        f'{{"Id":{guid_text(id)},"MessageType":{json_string(kind.full_name)},'
        f'"Message":{kind.write(value)},"ReplyId":{guid_text(reply_id)}}}'
    )


def dotnet_url(base: str, group: str, id: str | None = None) -> str:
    """The URL the .NET samples connect to: ``{base}?id={Guid.NewGuid()}&groupName={group}``."""
    query = urllib.parse.urlencode({"id": id or str(uuid.uuid4()), "groupName": group})
    return f"{base}?{query}"


# -- the socket ---------------------------------------------------------------------------


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One masked, final client frame (CWS sends each message as one frame)."""
    return mask_frame(opcode, payload)


def _valid_close_code(code: int) -> bool:
    """The close codes ManagedWebSocket accepts from its peer (others: a protocol error)."""
    return 3000 <= code < 5000 or 1000 <= code <= 1003 or 1007 <= code <= 1014


class ConnectFailed(Exception):
    """``ConnectAsync`` threw: no TCP connection, or no valid 101."""


@attrs.define(eq=False)
class _Socket:
    """One ClientWebSocket's connection: frames in and out, pings answered."""

    stream: trio.abc.Stream
    buffer: bytearray = attrs.Factory(bytearray)
    send_lock: trio.Lock = attrs.Factory(trio.Lock)
    open: bool = True  # WebSocketState.Open: false once a close came or the loop ended

    @classmethod
    async def connect(cls, url: str, ssl_context: ssl.SSLContext | None) -> _Socket:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ConnectFailed(f"not a WebSocket URL: {url}")
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        with trio.move_on_after(CONNECT_TIMEOUT) as scope:
            try:
                stream: trio.abc.Stream
                if parts.scheme == "wss":
                    stream = await trio.open_ssl_over_tcp_stream(
                        parts.hostname, port, ssl_context=ssl_context
                    )
                else:
                    stream = await trio.open_tcp_stream(parts.hostname, port)
            except OSError as exc:
                raise ConnectFailed(f"cannot connect: {exc}") from exc
            sock = cls(stream)
            try:
                await sock._handshake(parts.netloc, target)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
            return sock
        assert scope.cancelled_caught
        raise ConnectFailed("no 101 in time")

    async def _handshake(self, host: str, target: str) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n"
            f"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {key}\r\n\r\n"
        )
        try:
            await self.stream.send_all(request.encode())
            while b"\r\n\r\n" not in self.buffer:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise ConnectFailed("connection closed before the response")
                self.buffer += data
        except (trio.BrokenResourceError, OSError) as exc:
            raise ConnectFailed(f"connection lost: {exc}") from exc
        end = self.buffer.index(b"\r\n\r\n") + 4
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[:end]
        status = lines[0].split(" ")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if len(status) < 2 or status[1] != "101":
            raise ConnectFailed(f"the server returned {lines[0]!r}, not 101")
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        ).decode()
        if headers.get("sec-websocket-accept") != accept:
            raise ConnectFailed("bad Sec-WebSocket-Accept")
        if headers.get("upgrade", "").lower() != "websocket":
            raise ConnectFailed("no Upgrade: websocket")
        if "upgrade" not in [t.strip().lower() for t in headers.get("connection", "").split(",")]:
            raise ConnectFailed("no Connection: Upgrade")
        if "sec-websocket-protocol" in headers or "sec-websocket-extensions" in headers:
            raise ConnectFailed("a subprotocol or extension that was not asked for")

    async def send(self, opcode: int, payload: bytes) -> None:
        async with self.send_lock:
            await self.stream.send_all(client_frame(opcode, payload))

    async def _need(self, n: int) -> None:
        while len(self.buffer) < n:
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise ProtocolError(f"connection lost: {exc!r}") from exc
            if not data:
                raise ProtocolError(
                    "the remote party closed the WebSocket connection without completing "
                    "the close handshake"
                )
            self.buffer += data

    async def _frame(self) -> tuple[bool, int, bytes]:
        b0, b1, payload = await read_frame(self.buffer, self._need, masked=False)
        n = len(payload)
        if b1 & 0x80 or b0 & 0x70 or (b0 & 0x0F) not in (0, 1, 2, 8, 9, 10):
            await self._fail(1002, "masked server frame, reserved bits or unknown opcode")
        if b0 & 0x08 and (n > 125 or not b0 & 0x80):
            await self._fail(1002, "a control frame fragmented or over 125 bytes")
        return bool(b0 & 0x80), b0 & 0x0F, payload

    async def _fail(self, code: int, why: str) -> NoReturn:
        """What CWS does on a protocol error: a close frame with ``code``, then it throws."""
        self.open = False
        try:
            await self.send(OP_CLOSE, code.to_bytes(2, "big"))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        raise ProtocolError(why)

    async def receive(self) -> tuple[int, bytes]:
        """``ReceiveAsync`` until a whole message: ``(OP_TEXT|OP_BINARY|OP_CLOSE, payload)``."""
        fragments = Fragments()
        while True:
            fin, op, payload = await self._frame()
            if op == OP_PING:
                await self.send(OP_PONG, payload)
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                if len(payload) == 1 or (
                    len(payload) >= 2 and not _valid_close_code(int.from_bytes(payload[:2], "big"))
                ):
                    await self._fail(1002, f"an invalid close frame {payload!r}")
                self.open = False  # CloseReceived: sends are skipped from now on
                return OP_CLOSE, payload
            try:
                whole = fragments.add(op, fin, payload)
            except FrameFault as fault:
                await self._fail(fault.code, fault.why)
            if whole is not None:
                return whole

    async def close_output(self) -> None:
        await trio.aclose_forcefully(self.stream)


# -- the client ---------------------------------------------------------------------------

Handler = Callable[[Any], object]


@attrs.define(eq=False)
class DotNetClient:
    """``WsProxyClient``: see the module docstring. Made by :func:`open_dotnet_client`."""

    url: str
    nursery: trio.Nursery
    runtime: str = "7.0.0.0"
    keepalive: float | None = None
    culture: Culture = INVARIANT
    ssl_context: ssl.SSLContext | None = None
    # What a test can see.
    connects: int = 0
    attempts: int = 0
    drops: list[BaseException] = attrs.Factory(list)
    sent: list[tuple[int, bytes]] = attrs.Factory(list)
    closes_received: list[tuple[int | None, str]] = attrs.Factory(list)
    ignored: list[str] = attrs.Factory(list)
    sends_skipped: int = 0
    gave_up: bool = False
    types: dict[str, DotNetType] = attrs.Factory(dict)
    # The .NET client's state.
    _socket: _Socket | None = None
    _abandoned: list[_Socket] = attrs.Factory(list)
    _disconnect_requested: bool = False
    _handlers: dict[str, tuple[DotNetType, Handler]] = attrs.Factory(dict)
    _reply_handlers: dict[uuid.UUID, Callable[[str], None]] = attrs.Factory(dict)
    _reply_by_value: dict[tuple[str, object], uuid.UUID] = attrs.Factory(dict)
    _reply_by_reference: list[tuple[object, uuid.UUID]] = attrs.Factory(list)
    _changed: trio.Event = attrs.Factory(trio.Event)

    def __attrs_post_init__(self) -> None:
        for kind in (*BUILTIN_TYPES, list_of(STRING, self.runtime)):
            self.types[kind.full_name] = kind

    # -- types ------------------------------------------------------------------------

    def register(self, kind: DotNetType) -> None:
        """Make ``kind`` known by its full name (for the ``str`` forms of the methods)."""
        self.types[kind.full_name] = kind

    def _type(self, kind: DotNetType | str) -> DotNetType:
        if isinstance(kind, DotNetType):
            return kind
        try:
            return self.types[kind]
        except KeyError:
            raise KeyError(f"no .NET type {kind!r} known; register a DotNetType") from None

    # -- state ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """``IsConnected()``: the current socket is open."""
        return self._socket is not None and self._socket.open

    def _note(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` is true (checked after every change of state)."""
        while not predicate():
            await self._changed.wait()

    async def wait_connects(self, n: int) -> None:
        """Return once the client has connected ``n`` times (reconnects included)."""
        await self.wait_until(lambda: self.connects >= n)

    async def wait_drops(self, n: int) -> None:
        """Return once ``n`` receive loops have ended (each drop is followed by a reconnect)."""
        await self.wait_until(lambda: len(self.drops) >= n)

    async def wait_gave_up(self) -> None:
        """Return once a connect has failed with nothing left to retry."""
        await self.wait_until(lambda: self.gave_up)

    # -- connecting -------------------------------------------------------------------

    async def try_connect(self) -> bool:
        """``TryConnectAsync``: a new socket; on success the receive loop starts."""
        self._disconnect_requested = False
        self._socket = None  # `_clientWebSocket = new()`: not open until connected
        self.attempts += 1
        try:
            sock = await _Socket.connect(self.url, self.ssl_context)
        except ConnectFailed:
            self.gave_up = True
            self._note()
            return False
        self._socket = sock
        self.connects += 1
        self.gave_up = False
        self.nursery.start_soon(self._receive_loop, sock)
        if self.keepalive is not None:
            self.nursery.start_soon(self._keep_alive, sock, self.keepalive)
        self._note()
        return True

    async def disconnect(self) -> None:
        """``TryDisconnectAsync``: no reconnect after this; a close 1000 if open."""
        self._disconnect_requested = True
        sock = self._socket
        if sock is None or not sock.open:
            return
        sock.open = False
        try:
            await sock.send(OP_CLOSE, (1000).to_bytes(2, "big"))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        self._note()

    async def _keep_alive(self, sock: _Socket, interval: float) -> None:
        while sock.open:
            await trio.sleep(interval)
            if sock.open:
                try:
                    await sock.send(OP_PONG, b"")
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return

    async def _receive_loop(self, sock: _Socket) -> None:
        # .NET catches everything here (`catch { cts.Cancel(); }`); so does the stand-in,
        # handing the exception to the test in `drops` instead of hiding it.
        try:
            while True:
                opcode, payload = await sock.receive()
                if opcode == OP_BINARY:
                    entry = self._handlers.get(BYTE_ARRAY.full_name)
                    if entry is not None:
                        self._call(entry[1], payload)
                    continue
                if opcode == OP_CLOSE:
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                    self.closes_received.append((code, payload[2:].decode("utf-8", "replace")))
                    # CWS hands back an empty close result; the loop parses "" as JSON.
                    payload = b""
                self._handle_text(payload.decode("utf-8"))
        except Exception as exc:
            self.drops.append(exc)
        sock.open = False
        # The old ClientWebSocket is neither closed nor disposed: its TCP stays open.
        self._abandoned.append(sock)
        self._note()
        if not self._disconnect_requested:
            await self.try_connect()

    def _call(self, handler: Handler, value: object) -> None:
        try:
            result = handler(value)
        except Exception as exc:
            raise HandlerError(f"a handler threw {exc!r}") from exc
        if inspect.isawaitable(result):
            # `async void`: not awaited; its exception is not the loop's to catch.
            async def run(awaitable: Awaitable[object] = result) -> None:
                await awaitable

            self.nursery.start_soon(run)

    def _handle_text(self, text: str) -> None:
        wrapper, reply_id = read_envelope(text)
        if wrapper is None:
            self.ignored.append("a top-level null")
            return
        if not wrapper.message:
            self.ignored.append(f"Message null or empty ({wrapper.message_type})")
            return
        callback = self._reply_handlers.pop(reply_id, None) if reply_id is not None else None
        if callback is not None:
            callback(wrapper.message)
            return
        entry = self._handlers.get(wrapper.message_type or "")
        if entry is None:
            self.ignored.append(f"no handler for {wrapper.message_type!r}")
            return
        kind, handler = entry
        value = kind.receive(wrapper.message, self.culture)
        if value is None:
            self.ignored.append(f"{kind.full_name} read as null")
            return
        if wrapper.id is not None:
            self._remember_id(kind, value, wrapper.id)
        self._call(handler, value)

    # -- _replyToObjects: a ConcurrentDictionary<object, Guid> ---------------------------

    def _remember_id(self, kind: DotNetType, value: object, message_id: uuid.UUID) -> None:
        if kind.by_value:
            self._reply_by_value.setdefault((kind.full_name, value), message_id)  # TryAdd
        else:
            self._reply_by_reference.append((value, message_id))

    def _take_id(self, kind: DotNetType, value: object) -> uuid.UUID:
        if kind.by_value:
            return self._reply_by_value.pop((kind.full_name, value), EMPTY_GUID)
        for i, (held, message_id) in enumerate(self._reply_by_reference):
            if held is value:
                del self._reply_by_reference[i]
                return message_id
        return EMPTY_GUID

    # -- the .NET API -----------------------------------------------------------------

    def on(self, kind: DotNetType | str, handler: Handler) -> bool:
        """``On<T>(callback)``: False (and nothing changes) if ``T`` already has one."""
        resolved = self._type(kind)
        if resolved.full_name in self._handlers:
            return False
        self._handlers[resolved.full_name] = (resolved, handler)
        return True

    def collect(self, kind: DotNetType | str) -> trio.MemoryReceiveChannel[Any]:
        """``On<T>`` with a handler that puts each value into the channel returned."""
        send, receive = trio.open_memory_channel[Any](math.inf)
        if not self.on(kind, send.send_nowait):
            raise ValueError(f"{self._type(kind).full_name} has a handler already")
        return receive

    async def _send_frame(self, opcode: int, payload: bytes) -> None:
        sock = self._socket
        if sock is None or not sock.open:
            self.sends_skipped += 1
            return
        self.sent.append((opcode, payload))
        await sock.send(opcode, payload)

    async def send(self, value: object, kind: DotNetType | str | None = None) -> None:
        """``SendAsync<T>(obj)`` (or ``SendAsync(byte[])`` for bytes without a type)."""
        if kind is None:
            if not isinstance(value, (bytes, bytearray)):
                raise TypeError("say which .NET type to send it as")
            await self._send_frame(OP_BINARY, bytes(value))
            return
        text = envelope(value, self._type(kind))
        await self._send_frame(OP_TEXT, text.encode())

    async def request(
        self,
        value: object,
        kind: DotNetType | str,
        answer_type: DotNetType | str,
        timeout: float,  # noqa: ASYNC109 -- .NET's cancelAfter
    ) -> object:
        """``SendAndWaitForAnswerAsync``: the answer converted to ``answer_type``, or None
        (not connected, no answer within ``timeout``, or an answer that was null)."""
        if not self.connected:
            return None
        resolved, answer = self._type(kind), self._type(answer_type)
        message_id = uuid.uuid4()
        answered = trio.Event()
        result: list[object] = [None]

        def callback(text: str) -> None:
            # Runs in the receive loop: a conversion error there drops the connection,
            # and then nobody sets `answered`: the request times out.
            if text:
                result[0] = answer.receive(text, self.culture)
            answered.set()

        self._reply_handlers.setdefault(message_id, callback)
        text = envelope(value, resolved, id=message_id)
        await self._send_frame(OP_TEXT, text.encode())
        with trio.move_on_after(timeout):
            await answered.wait()
        self._reply_handlers.pop(message_id, None)
        return result[0]

    async def reply_to(
        self, received: object, answer: object, kind: DotNetType | str, *, as_type: Any = None
    ) -> None:
        """``ReplyToAsync(received, answer)``: ``ReplyId`` is the Id ``received`` came with
        (found by value for primitives, by reference for objects), else ``Guid.Empty``.

        ``as_type`` is the .NET type ``received`` was received as; by default, guessed
        from the Python value (str, bool, int, float, UUID) or a reference."""
        received_type = self._type(as_type) if as_type is not None else _received_type(received)
        reply_id = self._take_id(received_type, received)
        text = envelope(answer, self._type(kind), reply_id=reply_id)
        await self._send_frame(OP_TEXT, text.encode())

    def abandoned(self) -> Sequence[_Socket]:
        """The sockets the receive loop left open when it ended (.NET never closes them)."""
        return tuple(self._abandoned)

    async def _drop_everything(self) -> None:
        for sock in (*self._abandoned, *([self._socket] if self._socket else [])):
            sock.open = False
            await sock.close_output()


def _received_type(value: object) -> DotNetType:
    if isinstance(value, str):
        return STRING
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INT32 if INT32.low <= value <= INT32.high else INT64  # type: ignore[attr-defined]
    if isinstance(value, float):
        return DOUBLE
    if isinstance(value, uuid.UUID):
        return GUID
    return SOCKET_MESSAGE  # any reference type: looked up by identity


@asynccontextmanager
async def open_dotnet_client(
    url: str,
    *,
    connect: bool = True,
    runtime: str = "7.0.0.0",
    keepalive: float | None = None,
    culture: Culture = INVARIANT,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[DotNetClient]:
    """Run a :class:`DotNetClient` for a block; see the module docstring."""
    try:
        async with _client_in_a_nursery(
            url, connect, runtime, keepalive, culture, ssl_context
        ) as client:
            yield client
    except BaseExceptionGroup as group:
        # The block's own exception, not a group of one, as open_client raises.
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], BaseExceptionGroup):
            raise group.exceptions[0] from None
        raise


@asynccontextmanager
async def _client_in_a_nursery(
    url: str,
    connect: bool,
    runtime: str,
    keepalive: float | None,
    culture: Culture,
    ssl_context: ssl.SSLContext | None,
) -> AsyncIterator[DotNetClient]:
    async with trio.open_nursery() as nursery:
        client = DotNetClient(
            url, nursery, runtime=runtime, keepalive=keepalive, culture=culture,
            ssl_context=ssl_context,
        )  # fmt: skip
        try:
            if connect and not await client.try_connect():
                raise ConnectionError(f"TryConnectAsync returned false for {url}")
            yield client
        finally:
            client._disconnect_requested = True
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await client._drop_everything()
