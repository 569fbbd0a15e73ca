"""The typed Trio client: join a group on a relay, send and receive typed messages.

One client is one nursery (opened by :func:`open_client`) holding two tasks:

- the *connection task* connects, reads frames, answers pending requests, and reconnects
  with backoff when the connection drops — to the next of several relay URLs, if given;
- the *dispatcher* runs user code — handlers, subscriptions, hooks — one message at a
  time, in arrival order.

Between them sits a bounded channel (``ClientConfig.read_ahead`` messages): when handlers
fall behind, the connection task stops reading the socket, so nothing is dropped and
memory stays bounded (the relay then sees a slow member; see the close-code table in
the README).
"""

from __future__ import annotations

import enum
import functools
import inspect
import logging
import math
import random
import ssl
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Generic, NoReturn, TypeVar, overload
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
import trio
import trio_websocket

from ..protocol.envelope import (
    Envelope,
    EnvelopeError,
    decode_envelope,
    encode_envelope,
    new_message_id,
    normalize_message_id,
)
from ..protocol.typenames import PayloadError, TypeRegistry

__all__ = [
    "DEFAULT_RECONNECT_CODES",
    "BadMessage",
    "BadMessageKind",
    "Client",
    "ClientClosed",
    "ClientConfig",
    "ClientError",
    "ClientStats",
    "ClosedByRelay",
    "ConnectError",
    "Disconnected",
    "HandshakeRefused",
    "Incoming",
    "NotConnected",
    "ReplyError",
    "RequestTimeout",
    "connection_url",
    "connection_urls",
    "open_client",
    "reconnect_delay",
]

logger = logging.getLogger("trio_wsproxy.client")

T = TypeVar("T")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., object])

#: Close codes after which the client reconnects (when ``ClientConfig.reconnect`` is on):
#: the relay going away or failing, the connection dropping without a close frame (1006),
#: and the relay's own transient codes — 4001 slow consumer, 4002 message cut off,
#: 4003 keepalive timeout, 4004 backplane unavailable (with several URLs, the client
#: moves to the next node). Not in the set, so final: 1000 (the relay ended the session on
#: purpose), 1002/1007/1008/1009 (this client broke a rule; reconnecting would repeat it)
#: and 4000 (a newer connection with the same id replaced this one: reconnecting would
#: fight it).
DEFAULT_RECONNECT_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 1014, 4001, 4002, 4003, 4004})

# What each close code means, for log lines and exception messages.
_CLOSE_MEANINGS = {
    1000: "the relay ended the session",
    1001: "the relay is going away",
    1002: "protocol error",
    1006: "the connection dropped without a close frame",
    1007: "invalid UTF-8 in a text message",
    1008: "policy violation",
    1009: "a message was too big for the relay",
    1011: "internal error in the relay",
    1012: "the relay is restarting",
    1013: "try again later",
    4000: "replaced by a newer connection with the same id in the group",
    4001: "too slow: this client's mailbox on the relay stayed full",
    4002: "a message was cut off because its sender left mid-message",
    4003: "keepalive timeout",
    4004: "the relay's backplane could not guarantee delivery: messages may be missing",
}

# trio-websocket wants an int; "no limit" is the largest one.
_NO_LIMIT = sys.maxsize

# How much of a bad frame goes into its log line.
_LOG_PREVIEW = 200


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _positive_or_none(
    instance: object, attribute: attrs.Attribute[Any], value: float | None
) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be positive or None, got {value!r}")


@attrs.frozen(kw_only=True)
class ClientConfig:
    """Everything about a client's behaviour except where it connects and its hooks."""

    #: Seconds to open the TCP connection and complete the WebSocket handshake.
    connect_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: Seconds to wait for the relay to acknowledge our close frame.
    close_timeout: float = attrs.field(default=5.0, validator=_positive)
    #: Seconds :meth:`Client.send` waits for a connection (while reconnecting) before
    #: raising :exc:`NotConnected`. Writing the message itself is not limited.
    send_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: Default timeout of :meth:`Client.request`, in seconds.
    request_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: Largest message accepted from the relay, in bytes; None means no limit.
    max_message_size: int | None = attrs.field(default=None, validator=_positive_or_none)
    #: Whether to reconnect when the connection drops with a code in ``reconnect_codes``.
    reconnect: bool = True
    #: The close codes after which the client reconnects.
    reconnect_codes: frozenset[int] = attrs.field(
        default=DEFAULT_RECONNECT_CODES, converter=frozenset
    )
    #: First reconnect delay in seconds; it doubles per failed attempt ...
    reconnect_min_delay: float = attrs.field(default=0.5, validator=_positive)
    #: ... up to this many seconds.
    reconnect_max_delay: float = attrs.field(default=30.0, validator=_positive)
    #: Each delay is shortened by a random fraction up to this (0 = no jitter, 1 = full).
    reconnect_jitter: float = attrs.field(
        default=0.5, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    #: Consecutive failed reconnect attempts before giving up; None retries forever. With
    #: several relay URLs, one attempt tries each of them once.
    max_reconnect_attempts: int | None = attrs.field(default=None, validator=_positive_or_none)
    #: Seconds between client pings, or None for none (the relay pings on its own). A
    #: ping unanswered for ``ping_timeout`` counts as a dropped connection (code 1006).
    #: Handlers that block reading for longer than ``ping_timeout`` trip it too.
    ping_interval: float | None = attrs.field(default=None, validator=_positive_or_none)
    #: Seconds a ping may go unanswered.
    ping_timeout: float = attrs.field(default=20.0, validator=_positive)
    #: Messages read from the socket ahead of the handlers; beyond it, reading pauses.
    read_ahead: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    #: Bytes asked of the socket per read; bigger is faster for large messages.
    receive_buffer_size: int = attrs.field(default=256 * 1024, validator=_positive)


# -- errors --------------------------------------------------------------------------------


class ClientError(Exception):
    """Base class of every error the client raises."""


class ConnectError(ClientError):
    """The client could not connect: relay unreachable, handshake timed out or refused.

    When the client tried several relay URLs, ``failures`` holds the error of each, in
    the order tried, and the message names them all.
    """

    def __init__(self, message: str, *, url: str, failures: Sequence[ConnectError] = ()) -> None:
        super().__init__(message)
        #: The URL the client tried (the last one, when it tried several).
        self.url = url
        #: Why each relay URL failed, in the order tried; empty when only ``url`` was tried.
        self.failures: tuple[ConnectError, ...] = tuple(failures)


class HandshakeRefused(ConnectError):
    """The relay answered the WebSocket upgrade with an HTTP error status.

    ``status_code`` is the status (400 bad or missing id/groupName, 404 unknown path, ...),
    ``reason`` the one-line text the relay sent with it.
    """

    def __init__(self, *, url: str, status_code: int, reason: str) -> None:
        super().__init__(
            f"the relay refused the connection to {url}: HTTP {status_code}"
            + (f": {reason}" if reason else ""),
            url=url,
        )
        #: HTTP status of the refusal.
        self.status_code = status_code
        #: The relay's one-line reason (the response body), or "".
        self.reason = reason


class ClosedByRelay(ClientError):
    """The relay closed the connection with a code the client does not reconnect on
    (or reconnecting is off). ``code`` and ``reason`` are the relay's close frame."""

    def __init__(self, code: int, reason: str | None) -> None:
        meaning = _CLOSE_MEANINGS.get(code, "no meaning known")
        text = f"the relay closed the connection with code {code} ({meaning})"
        if reason:
            text += f": {reason}"
        super().__init__(text)
        #: The WebSocket close code (4000: replaced by a newer connection, ...).
        self.code = code
        #: The reason the relay gave, if any.
        self.reason = reason


class NotConnected(ClientError):
    """A send waited ``send_timeout`` seconds for a connection that did not come back.
    The message was not sent."""


class ClientClosed(ClientError):
    """The client is closed (or closing): nothing can be sent or received any more."""


class RequestTimeout(ClientError, trio.TooSlowError):
    """No reply to a :meth:`Client.request` arrived in time (a :exc:`trio.TooSlowError`)."""

    def __init__(self, message: str, *, request_id: str) -> None:
        super().__init__(message)
        #: The ``Id`` the request went out with; a late answer carries it as ``ReplyId``.
        self.request_id = request_id


class ReplyError(ClientError):
    """The reply to a :meth:`Client.request` arrived but did not fit the reply type."""


# -- records handed to user code ------------------------------------------------------------


class BadMessageKind(enum.Enum):
    """Why a frame from the group was ignored."""

    #: A text frame that is not JSON.
    INVALID_JSON = "invalid_json"
    #: JSON, but not an envelope (no MessageType, Id not a string, ...).
    INVALID_ENVELOPE = "invalid_envelope"
    #: An envelope whose MessageType no type is registered under.
    UNKNOWN_TYPE = "unknown_type"
    #: An envelope whose Message does not structure into the registered type.
    BAD_PAYLOAD = "bad_payload"


@attrs.frozen
class BadMessage:
    """A frame from the group the client could not use, as given to ``on_bad_message``."""

    #: What was wrong.
    kind: BadMessageKind
    #: Why, in one line.
    reason: str
    #: The text frame as received.
    text: str
    #: The envelope, when the frame was one.
    envelope: Envelope | None = None


@attrs.frozen
class Disconnected:
    """A lost connection, as given to ``on_disconnect``."""

    #: The close code (1006 when the connection dropped without a close frame).
    code: int
    #: The reason in the close frame, if any.
    reason: str | None
    #: Whether the client is about to reconnect.
    reconnecting: bool


@attrs.define
class ClientStats:
    """Counters of what a client has done; read them from :attr:`Client.stats`."""

    #: Messages (typed and binary) written to the relay.
    messages_sent: int = 0
    #: Frames received from the relay.
    messages_received: int = 0
    #: Received frames that nothing handled: no handler or subscription for their type.
    unhandled: int = 0
    #: Received frames ignored as bad (the sum of the four kinds below).
    bad_messages: int = 0
    #: ... text frames that were not JSON.
    invalid_json: int = 0
    #: ... JSON that was not an envelope.
    invalid_envelope: int = 0
    #: ... envelopes with a MessageType no type is registered under.
    unknown_type: int = 0
    #: ... envelopes (or replies) whose payload did not fit the type.
    bad_payload: int = 0
    #: Exceptions raised by handlers.
    handler_errors: int = 0
    #: Connections made (the first one included).
    connects: int = 0
    #: Connections lost other than by closing the client.
    disconnects: int = 0


@attrs.frozen
class Incoming(Generic[T]):
    """One received message with its envelope fields, and the means to answer it.

    Handlers that take a second parameter get one; :meth:`Client.subscribe` yields them.
    """

    #: The payload, structured into the registered type (``bytes`` for binary frames).
    value: T
    #: The MessageType it came under; None for binary frames.
    message_type: str | None
    #: The sender's request id when it waits for an answer, else None.
    id: str | None
    #: The id of the request this message answers, else None.
    reply_id: str | None
    _client: Client = attrs.field(repr=False, eq=False)

    @property
    def wants_reply(self) -> bool:
        """Whether the sender asked for an answer (sent it with ``request``)."""
        return self.id is not None

    async def reply(self, value: object, *, as_type: Any = None) -> None:
        """Answer this message: send ``value`` to the group with ``ReplyId`` set to its id.

        The .NET ``ReplyToAsync`` equivalent. Raises :exc:`ValueError` if the sender did
        not ask for an answer (check :attr:`wants_reply`).
        """
        if self.id is None:
            raise ValueError(
                f"this {self.message_type or 'binary'} message has no Id: its sender did not "
                "send it with request(), so there is nothing to reply to"
            )
        await self._client.send(value, as_type=as_type, reply_to=self.id)


#: Hook called after each connection (the first one included), with the client.
ConnectHook = Callable[["Client"], object]
#: Hook called when a connection is lost other than by closing the client.
DisconnectHook = Callable[[Disconnected], object]
#: Hook called with each frame from the group that the client had to ignore.
BadMessageHook = Callable[[BadMessage], object]
#: Hook called with each exception a handler raises; without it, the exception ends the client.
HandlerErrorHook = Callable[[Exception, "Incoming[Any]"], object]


# -- pure helpers ---------------------------------------------------------------------------


def connection_url(
    url: str, *, group: str | None = None, id: str | None = None
) -> tuple[str, str, str]:
    """Return ``(full_url, id, group)`` for joining a group.

    ``url`` is either the .NET style, with ``id`` and ``groupName`` already in its query,
    or a base URL (``ws://127.0.0.1:8765/ws``) completed by ``group`` and ``id``; a missing
    id becomes a fresh UUID4. Giving a group or id both ways, differently, is an error.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"the relay URL must start with ws:// or wss://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"the relay URL has no host: {url!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    in_url = {key: value for key, value in query if key in ("id", "groupName") and value}
    for keyword, key, given in (("group", "groupName", group), ("id", "id", id)):
        if given is not None and key in in_url and in_url[key] != given:
            raise ValueError(
                f"{keyword}={given!r} contradicts {key}={in_url[key]!r} in the URL; give it once"
            )
    final_group = group or in_url.get("groupName")
    if not final_group:
        raise ValueError("no group to join: pass group=... or put groupName=... in the URL")
    final_id = id or in_url.get("id") or str(uuid.uuid4())
    rest = [(key, value) for key, value in query if key not in ("id", "groupName")]
    full_query = urlencode([("id", final_id), ("groupName", final_group), *rest])
    return urlunsplit(parts._replace(query=full_query)), final_id, final_group


def connection_urls(
    urls: str | Sequence[str], *, group: str | None = None, id: str | None = None
) -> tuple[tuple[str, ...], str, str]:
    """Return ``(full_urls, id, group)`` for joining one group through any of several relays.

    Each URL is completed as by :func:`connection_url`, all with the same id and group: a
    member keeps one id on every relay, so that a relay cluster's "newest connection with
    the same id wins" rule retires its stale connection on a node it left. An id or
    groupName in one URL's query applies to all of them; two URLs that name different ones
    are an error. A single ``str`` is one URL.
    """
    given = (urls,) if isinstance(urls, str) else tuple(urls)
    if not given:
        raise ValueError("no relay URL given")
    agreed = {"id": id, "groupName": group}
    for key in agreed:
        named: dict[str, str] = {}  # value -> the first URL naming it
        for url in given:
            value = _query_value(url, key)
            if value:
                named.setdefault(value, url)
        if len(named) > 1:
            each = "; ".join(f"{key}={value!r} in {url!r}" for value, url in named.items())
            raise ValueError(
                f"the relay URLs name different {key}s ({each}): "
                f"a member has one {key} on every relay"
            )
        if agreed[key] is None and named:
            agreed[key] = next(iter(named))
    # One id for all, drawn here: connection_url would draw a fresh one per URL.
    member_id = agreed["id"] or str(uuid.uuid4())
    completed = []
    for url in given:
        try:
            completed.append(connection_url(url, group=agreed["groupName"], id=member_id))
        except ValueError as error:
            if len(given) == 1:
                raise
            raise ValueError(f"relay URL {url!r}: {error}") from None
    return tuple(full for full, _, _ in completed), member_id, completed[0][2]


def _query_value(url: str, key: str) -> str | None:
    """The value ``url``'s query gives ``key`` (the last one, as :func:`connection_url` reads)."""
    values = [value for name, value in parse_qsl(urlsplit(url).query) if name == key]
    return values[-1] if values else None


def reconnect_delay(
    attempt: int,
    *,
    min_delay: float,
    max_delay: float,
    jitter: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0 for the first).

    Exponential backoff, ``min_delay * 2**attempt`` capped at ``max_delay``, shortened by a
    random fraction of up to ``jitter`` so that many clients dropped at once do not come
    back at once.
    """
    ceiling = min(max_delay, min_delay * 2.0 ** min(attempt, 64))
    return ceiling * (1.0 - jitter * rand())


def _takes_incoming(handler: Callable[..., object]) -> bool:
    """Whether a handler takes a second positional parameter (the :class:`Incoming`)."""
    try:
        parameters = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature: give them the value
        return False
    positional = 0
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return True
        if parameter.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            positional += 1
    return positional >= 2


async def _call(function: Callable[..., object], *args: object) -> None:
    """Call a user function that may be sync or async."""
    result = function(*args)
    if inspect.isawaitable(result):
        await result


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


def _raise_sole_error(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Re-raise the one real error in ``group`` on its own, so that ``async with
    open_client(...)`` raises what went wrong rather than an ExceptionGroup around it.
    Several real errors stay grouped."""
    real = [error for error in _leaves(group) if not isinstance(error, trio.Cancelled)]
    if len(real) != 1:
        raise group
    error = real[0]
    context = error.__context__
    try:
        raise error
    finally:
        # Keep the error's own context rather than the group we are handling.
        error.__context__ = context
        del error, context


# -- internals ------------------------------------------------------------------------------


@attrs.frozen
class _Handler:
    function: Callable[..., object]
    with_incoming: bool

    async def __call__(self, incoming: Incoming[Any]) -> None:
        if self.with_incoming:
            await _call(self.function, incoming.value, incoming)
        else:
            await _call(self.function, incoming.value)


@attrs.frozen(eq=False)
class _Subscription:
    message_type: Any  # None: every message
    channel: trio.MemorySendChannel[Incoming[Any]]

    def wants(self, message_type: Any) -> bool:
        return self.message_type is None or self.message_type == message_type


@attrs.define(eq=False)
class _PendingReply:
    reply_type: Any
    done: trio.Event = attrs.Factory(trio.Event)
    value: Any = None
    error: ClientError | None = None

    def resolve(self, value: Any = None, error: ClientError | None = None) -> None:
        self.value, self.error = value, error
        self.done.set()

    async def wait(self) -> Any:
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


@attrs.define(eq=False)
class _Connection:
    ws: trio_websocket.WebSocketConnection
    ended: trio.Event = attrs.Factory(trio.Event)


# A unit of work for the dispatcher: a handler run, a hook call, ...
_Job = Callable[[], Awaitable[None]]


class Client:
    """A member of one group on a relay (or on any of several, see :attr:`urls`). Get one
    from :func:`open_client`.

    Typed messages go through :attr:`types` (a :class:`TypeRegistry`); receive them with
    handlers (:meth:`on`), a subscription (:meth:`subscribe`) or :meth:`receive`; ask
    and answer with :meth:`request` and :meth:`Incoming.reply`.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        group: str | None = None,
        id: str | None = None,
        config: ClientConfig | None = None,
        types: TypeRegistry | None = None,
        ssl_context: ssl.SSLContext | None = None,
        on_connect: ConnectHook | None = None,
        on_disconnect: DisconnectHook | None = None,
        on_bad_message: BadMessageHook | None = None,
        on_handler_error: HandlerErrorHook | None = None,
    ) -> None:
        full_urls, client_id, group_name = connection_urls(url, group=group, id=id)
        plain = [full for full in full_urls if not full.startswith("wss:")]
        if ssl_context is not None and plain:
            raise ValueError(f"an ssl_context needs a wss:// URL, got {', '.join(plain)}")
        #: Every relay URL the client may connect to, in the order given, ``id`` and
        #: ``groupName`` included.
        self.urls: tuple[str, ...] = full_urls
        # Index in self.urls of the relay connected to now, or last.
        self._url_index = 0
        #: This client's id in the group (kept across reconnects and relays).
        self.id: str = client_id
        #: The group this client belongs to.
        self.group: str = group_name
        #: The client's settings.
        self.config: ClientConfig = config if config is not None else ClientConfig()
        #: Wire names and payload conversion (one cattrs converter).
        self.types: TypeRegistry = types if types is not None else TypeRegistry()
        #: Counters: messages in and out, bad messages by kind, reconnects, ...
        self.stats: ClientStats = ClientStats()
        self._ssl_context = ssl_context
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._on_bad_message = on_bad_message
        self._on_handler_error = on_handler_error
        self._handlers: dict[Any, list[_Handler]] = {}
        self._subscriptions: list[_Subscription] = []
        self._pending: dict[str, _PendingReply] = {}
        self._connection: _Connection | None = None
        self._connection_changed = trio.Event()
        self._closing = False
        self._closed = False
        self._run_scope = trio.CancelScope()
        self._jobs_in, self._jobs_out = trio.open_memory_channel[_Job](self.config.read_ahead)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "connected" if self.connected else "disconnected"
        return f"<Client id={self.id!r} group={self.group!r} {state}>"

    @property
    def url(self) -> str:
        """The relay URL the client is connected to now (or was last, while reconnecting;
        the first of :attr:`urls` before the first connection)."""
        return self.urls[self._url_index]

    @property
    def connected(self) -> bool:
        """Whether the client has a live connection right now."""
        return self._connection is not None

    @property
    def pending_requests(self) -> int:
        """How many :meth:`request` calls are waiting for their answer right now."""
        return len(self._pending)

    @property
    def closed(self) -> bool:
        """Whether the client has stopped for good (closed, or ended by an error)."""
        return self._closed

    # -- receiving --------------------------------------------------------------------------

    @overload
    def on(self, message_type: type[T]) -> Callable[[F], F]: ...
    @overload
    def on(self, message_type: type[T], handler: Callable[[T], R]) -> Callable[[T], R]: ...
    @overload
    def on(
        self, message_type: type[T], handler: Callable[[T, Incoming[T]], R]
    ) -> Callable[[T, Incoming[T]], R]: ...

    def on(self, message_type: Any, handler: Callable[..., Any] | None = None) -> Any:
        """Call ``handler`` with every message of ``message_type``; returns ``handler``.

        Also a decorator: ``@client.on(SocketMessage)``. ``bytes`` receives binary frames.
        A handler is a plain or an async function taking the value — or the value and an
        :class:`Incoming` (to read the envelope fields or :meth:`~Incoming.reply`).
        Handlers run one message at a time, in arrival order, in the client's nursery;
        several handlers for one type run in registration order. What a handler raises
        goes to ``on_handler_error`` if set, else ends the client and comes out of
        ``async with open_client(...)``.
        """
        if handler is None:

            def decorator(function: F) -> F:
                self._add_handler(message_type, function)
                return function

            return decorator
        self._add_handler(message_type, handler)
        return handler

    def off(self, message_type: Any, handler: Callable[..., object]) -> None:
        """Stop calling ``handler`` for ``message_type`` (:exc:`ValueError` if it was not on)."""
        handlers = self._handlers.get(message_type, [])
        for registered in handlers:
            if registered.function == handler:
                handlers.remove(registered)
                return
        raise ValueError(f"{handler!r} is not a handler for {message_type!r}")

    @overload
    def subscribe(
        self, *, buffer: int = ...
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Incoming[Any]]]: ...
    @overload
    def subscribe(
        self, message_type: type[T], *, buffer: int = ...
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Incoming[T]]]: ...

    def subscribe(
        self, message_type: Any = None, *, buffer: int = 16
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Incoming[Any]]]:
        """Receive messages of ``message_type`` (every message if omitted) as a channel.

        ::

            async with client.subscribe(SocketMessage) as messages:
                async for incoming in messages:
                    print(incoming.value)

        The channel holds up to ``buffer`` messages; beyond that the client waits for
        the subscriber, as for a slow handler. Only messages dispatched while the
        subscription is open arrive: subscribe *before* sending what will be answered.
        """
        return self._subscription(message_type, buffer)

    async def receive(self, message_type: type[T]) -> T:
        """Wait for the next message of ``message_type`` and return its value.

        The timeout is the caller's: ``with trio.fail_after(5): await client.receive(T)``.
        Messages that arrived before the call are not seen (use :meth:`subscribe` for a
        stream, :meth:`request` for an answer).
        """
        async with self.subscribe(message_type, buffer=1) as channel:
            try:
                incoming = await channel.receive()
            except trio.EndOfChannel:
                raise ClientClosed("the client closed while waiting for a message") from None
            return incoming.value

    # -- sending ----------------------------------------------------------------------------

    async def send(
        self, value: object, *, as_type: Any = None, reply_to: str | None = None
    ) -> None:
        """Send ``value`` to every other member of the group.

        ``bytes`` (or ``bytearray``, ``memoryview``) go as one binary frame, untouched;
        anything else as a typed envelope named after its type, or after ``as_type``
        (required for containers: ``send(["a", "b"], as_type=list[str])``). ``reply_to``
        sets ``ReplyId`` (answering by hand; :meth:`Incoming.reply` does it for you).

        While the client is reconnecting, waits up to ``config.send_timeout`` for the
        connection and then raises :exc:`NotConnected`; a connection that drops while the
        message is being written is retried on the next one. Raises
        :exc:`ClientClosed` once the client is closed. Never drops a message silently.
        """
        await self._send_frame(self._encode(value, as_type, request_id=None, reply_to=reply_to))

    async def request(
        self,
        value: object,
        reply_type: type[R],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- the .NET API's cancelAfter; see docstring
        as_type: Any = None,
    ) -> R:
        """Send ``value`` with a fresh ``Id`` and return the answer, structured as ``reply_type``.

        The answer is the first message whose ``ReplyId`` is that id (from any member,
        .NET or Python); it is not given to handlers. Raises :exc:`RequestTimeout` after
        ``timeout`` seconds (default ``config.request_timeout``; ``math.inf`` waits as
        long as the caller's cancel scope allows), :exc:`ReplyError` if the answer does not
        fit ``reply_type``. Many requests may wait at once; each gets its own answer.
        """
        if reply_type is bytes:
            raise ValueError("replies are typed messages; binary frames carry no ReplyId")
        limit = self.config.request_timeout if timeout is None else timeout
        request_id = new_message_id()
        frame = self._encode(value, as_type, request_id=request_id, reply_to=None)
        pending = _PendingReply(reply_type)
        self._pending[request_id] = pending
        try:
            with trio.move_on_after(limit):
                await self._send_frame(frame)
                result: R = await pending.wait()
                return result
            raise RequestTimeout(
                f"no reply to request {request_id} ({_type_label(value, as_type)}) "
                f"within {limit} s",
                request_id=request_id,
            )
        finally:
            self._pending.pop(request_id, None)

    async def aclose(self) -> None:
        """Close the connection (code 1000) and stop the client; no reconnecting after it.

        Idempotent. ``async with open_client(...)`` calls it on the way out; calling it
        earlier does not cancel the ``async with`` body, but later sends raise
        :exc:`ClientClosed`. Messages read but not yet handled are dropped.
        """
        self._closing = True
        await self._say_goodbye()
        self._run_scope.cancel()

    async def _say_goodbye(self) -> None:
        """Close the connection with 1000 and wait (``close_timeout``) for the relay's answer."""
        connection = self._connection
        if connection is None or trio.current_effective_deadline() == -math.inf:
            # Cancelled from outside: the reader goes too, so no answer would be read;
            # the connection is dropped without a close handshake, as trio-websocket does.
            return
        with trio.move_on_after(self.config.close_timeout):
            await connection.ws.aclose(1000)

    # -- internals: sending ----------------------------------------------------------------

    def _encode(
        self, value: object, as_type: Any, *, request_id: str | None, reply_to: str | None
    ) -> str | bytes:
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
            message_type=self.types.name_for_value(value, tp),
            message=self.types.unstructure(value, tp),
            id=request_id,
            reply_id=reply_to,
        )
        return encode_envelope(envelope)

    async def _send_frame(self, frame: str | bytes) -> None:
        deadline = trio.current_time() + self.config.send_timeout
        while True:
            connection = await self._wait_for_connection(deadline)
            try:
                await connection.ws.send_message(frame)
            except trio_websocket.ConnectionClosed:
                if self._closing or self._closed:
                    raise ClientClosed("the client closed before the message was sent") from None
                # Not (fully) written, so not delivered: wait for this connection to be
                # replaced and send it again.
                with trio.move_on_at(deadline):
                    await connection.ended.wait()
                continue
            self.stats.messages_sent += 1
            return

    async def _wait_for_connection(self, deadline: float) -> _Connection:
        with trio.move_on_at(deadline):
            while True:
                if self._closing or self._closed:
                    raise ClientClosed("the client is closed")
                if self._connection is not None:
                    return self._connection
                await self._connection_changed.wait()
        raise NotConnected(
            f"not connected to the relay for {self.config.send_timeout} s; the message was not sent"
        )

    def _set_connection(self, connection: _Connection | None) -> None:
        self._connection = connection
        self._connection_changed.set()
        self._connection_changed = trio.Event()

    # -- internals: the connection task ----------------------------------------------------

    @asynccontextmanager
    async def _subscription(
        self, message_type: Any, buffer: int
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Incoming[Any]]]:
        if message_type is not None and message_type is not bytes:
            self.types.ensure(message_type)
        send_channel, receive_channel = trio.open_memory_channel[Incoming[Any]](buffer)
        subscription = _Subscription(message_type, send_channel)
        self._subscriptions.append(subscription)
        if self._closed:
            send_channel.close()
        try:
            with receive_channel:
                yield receive_channel
        finally:
            self._subscriptions.remove(subscription)
            send_channel.close()

    def _add_handler(self, message_type: Any, function: Callable[..., object]) -> None:
        if message_type is not bytes:
            self.types.ensure(message_type)
        entry = _Handler(function, _takes_incoming(function))
        self._handlers.setdefault(message_type, []).append(entry)

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, serve, reconnect; returns when closed, raises when ended by an error."""
        failure: ClientError | None = None
        try:
            with self._run_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._dispatch_jobs)
                    try:
                        failure = await self._connect_loop(task_status)
                    finally:
                        # Nothing more comes in; the dispatcher finishes what was read.
                        self._jobs_in.close()
        finally:
            self._finish()
        if failure is not None:
            raise failure

    async def _connect_loop(self, task_status: trio.TaskStatus[None]) -> ClientError | None:
        config = self.config
        started = False
        failures = 0  # rounds in a row in which every relay URL failed
        while True:
            if started:
                # Round robin from the relay after the one just lost, so that a member
                # fails over to a live node rather than knocking at the dead one first.
                count = len(self.urls)
                order = [(self._url_index + step) % count for step in range(1, count + 1)]
                delay = reconnect_delay(
                    failures,
                    min_delay=config.reconnect_min_delay,
                    max_delay=config.reconnect_max_delay,
                    jitter=config.reconnect_jitter,
                )
                target = self.urls[order[0]]
                if count > 1:
                    target += f" (then the other {count - 1} relay URLs)"
                logger.info("reconnecting to %s in %.2f s", target, delay)
                await trio.sleep(delay)
            else:
                order = list(range(len(self.urls)))
            # No backoff between the URLs of one round: the next may well be up.
            errors: list[ConnectError] = []
            for index in order:
                try:
                    code, reason = await self._connect_and_serve(
                        index, None if started else task_status
                    )
                except ConnectError as error:
                    if isinstance(error, HandshakeRefused) and error.status_code < 500:
                        # Refused for good (bad id, wrong path...): retrying won't help.
                        if not started:
                            raise
                        return error
                    errors.append(error)
                    if started:
                        logger.warning("reconnect attempt %d failed: %s", failures + 1, error)
                    elif len(self.urls) > 1:
                        logger.warning("connect attempt failed: %s", error)
                else:
                    break  # connected, then disconnected: code and reason say how
            else:
                if not started:
                    if len(errors) == 1:
                        raise errors[0]
                    raise ConnectError(
                        f"could not connect to any of the {len(errors)} relay URLs: "
                        + "; ".join(str(error) for error in errors),
                        url=errors[-1].url,
                        failures=errors,
                    )
                failures += 1
                if (
                    config.max_reconnect_attempts is not None
                    and failures >= config.max_reconnect_attempts
                ):
                    if len(errors) == 1:
                        return ConnectError(
                            f"gave up reconnecting to {errors[0].url} after {failures} attempts "
                            f"(the last: {errors[0]})",
                            url=errors[0].url,
                        )
                    return ConnectError(
                        f"gave up reconnecting after {failures} attempts at each of the "
                        f"{len(errors)} relay URLs (the last: "
                        + "; ".join(str(error) for error in errors)
                        + ")",
                        url=errors[-1].url,
                        failures=errors,
                    )
                continue
            started = True
            failures = 0
            if self._closing:
                return None
            reconnecting = config.reconnect and code in config.reconnect_codes
            meaning = _CLOSE_MEANINGS.get(code, "no meaning known")
            logger.log(
                logging.WARNING if reconnecting else logging.ERROR,
                "disconnected from %s: code %d (%s)%s; %s",
                self.url,
                code,
                meaning,
                f": {reason}" if reason else "",
                "will reconnect" if reconnecting else "not reconnecting",
            )
            self.stats.disconnects += 1
            if self._on_disconnect is not None:
                event = Disconnected(code, reason, reconnecting)
                await self._jobs_in.send(functools.partial(_call, self._on_disconnect, event))
            if not reconnecting:
                return ClosedByRelay(code, reason)

    async def _connect_and_serve(
        self, index: int, task_status: trio.TaskStatus[None] | None
    ) -> tuple[int, str | None]:
        """One connection to ``self.urls[index]``, from handshake to close: returns the
        close code and reason."""
        url = self.urls[index]
        # trio-websocket's reader task runs in a nursery of ours rather than inside
        # open_websocket_url, whose nursery waits forever on a server that accepts the TCP
        # connection but never answers the upgrade.
        closed: tuple[int, str | None] = (1006, None)
        try:
            async with trio.open_nursery() as reader_nursery:
                stream, ws = await self._handshake(url, reader_nursery)
                try:
                    closed = await self._serve(index, ws, task_status)
                finally:
                    # The reader still has to read the relay's close frame and the TCP close;
                    # give it (and our own close, if still due) close_timeout to do so.
                    reader_nursery.cancel_scope.deadline = (
                        trio.current_time() + self.config.close_timeout
                    )
                    try:
                        await ws.aclose()
                    finally:
                        # trio-websocket leaves the socket open when the relay closed first.
                        await trio.aclose_forcefully(stream)
        except BaseExceptionGroup as group:
            real = [error for error in _leaves(group) if not isinstance(error, trio.Cancelled)]
            if len(real) != 1:
                raise
            error = real[0]
            if isinstance(error, trio_websocket.ConnectionRejected):
                body = (error.body or b"").decode("utf-8", "replace").strip()
                raise HandshakeRefused(
                    url=url,
                    status_code=error.status_code,
                    reason=body.splitlines()[0] if body else "",
                ) from None
            if isinstance(error, ConnectError):
                raise error from error.__cause__
            raise
        return closed

    async def _handshake(
        self, url: str, reader_nursery: trio.Nursery
    ) -> tuple[trio.abc.Stream, trio_websocket.WebSocketConnection]:
        config = self.config
        parts = urlsplit(url)
        assert parts.hostname is not None
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        with trio.move_on_after(config.connect_timeout):
            stream = await self._open_stream(url, parts.hostname, port, secure=secure)
            try:
                ws = await trio_websocket.wrap_client_stream(
                    reader_nursery,
                    stream,
                    parts.netloc.rpartition("@")[2],
                    resource,
                    max_message_size=config.max_message_size or _NO_LIMIT,
                    receive_buffer_size=config.receive_buffer_size,
                )
                return stream, ws
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        raise ConnectError(f"could not connect to {url} within {config.connect_timeout} s", url=url)

    async def _open_stream(
        self, url: str, host: str, port: int, *, secure: bool
    ) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
        try:
            tcp = await trio.open_tcp_stream(host, port)
        except OSError as error:
            # trio says "all attempts ... failed" and keeps the reasons in the cause.
            reasons = sorted({str(leaf) for leaf in _leaves(error.__cause__ or error)})
            raise ConnectError(
                f"could not connect to {url}: {'; '.join(reasons)}", url=url
            ) from error
        if not secure:
            return tcp
        context = self._ssl_context or ssl.create_default_context()
        stream = trio.SSLStream(tcp, context, server_hostname=host, https_compatible=True)
        try:
            # Handshake now, so that a certificate problem is reported as one.
            await stream.do_handshake()
        except trio.BrokenResourceError as error:
            await trio.aclose_forcefully(tcp)
            reason = error.__cause__ or error
            raise ConnectError(f"TLS handshake with {url} failed: {reason}", url=url) from error
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise
        return stream

    async def _serve(
        self,
        index: int,
        ws: trio_websocket.WebSocketConnection,
        task_status: trio.TaskStatus[None] | None,
    ) -> tuple[int, str | None]:
        if self.stats.connects and index != self._url_index:
            logger.info("failed over from %s to %s", self.url, self.urls[index])
        self._url_index = index
        connection = _Connection(ws)
        self._set_connection(connection)
        self.stats.connects += 1
        logger.info("connected to %s as %r in group %r", self.url, self.id, self.group)
        try:
            if self._on_connect is not None:
                await self._jobs_in.send(functools.partial(_call, self._on_connect, self))
            if task_status is not None:
                task_status.started()
            closed: tuple[int, str | None] = (1006, "no answer to a ping within ping_timeout")
            async with trio.open_nursery() as nursery:
                if self.config.ping_interval is not None:
                    nursery.start_soon(self._keep_alive, ws, nursery.cancel_scope)
                closed = await self._read(ws)
                nursery.cancel_scope.cancel()
            return closed
        finally:
            self._set_connection(None)
            connection.ended.set()

    async def _keep_alive(
        self, ws: trio_websocket.WebSocketConnection, connection_scope: trio.CancelScope
    ) -> None:
        assert self.config.ping_interval is not None
        while True:
            await trio.sleep(self.config.ping_interval)
            with trio.move_on_after(self.config.ping_timeout) as waited:
                try:
                    await ws.ping()
                except trio_websocket.ConnectionClosed:
                    return
            if waited.cancelled_caught:
                logger.warning(
                    "no pong from %s within %s s: dropping the connection",
                    self.url,
                    self.config.ping_timeout,
                )
                connection_scope.cancel()
                return

    async def _read(self, ws: trio_websocket.WebSocketConnection) -> tuple[int, str | None]:
        while True:
            try:
                frame = await ws.get_message()
            except trio_websocket.ConnectionClosed as closed:
                if closed.reason is None:
                    return (1006, None)
                return (closed.reason.code, closed.reason.reason)
            self.stats.messages_received += 1
            await self._take(frame)

    async def _take(self, frame: str | bytes) -> None:
        """Turn one frame into a dispatcher job, a resolved request, or a bad message."""
        if isinstance(frame, bytes):
            incoming: Incoming[Any] = Incoming(frame, None, None, None, self)
            await self._jobs_in.send(functools.partial(self._dispatch, incoming, bytes))
            return
        try:
            envelope = decode_envelope(frame)
        except EnvelopeError as error:
            kind = (
                BadMessageKind.INVALID_JSON if error.not_json else BadMessageKind.INVALID_ENVELOPE
            )
            await self._reject(BadMessage(kind, str(error), frame))
            return
        if envelope.reply_id is not None:
            pending = self._pending.pop(normalize_message_id(envelope.reply_id), None)
            if pending is not None:
                await self._resolve(pending, envelope, frame)
                return
        message_type = self.types.type_named(envelope.message_type)
        if message_type is None:
            reason = f"no type is registered as {envelope.message_type!r}"
            await self._reject(BadMessage(BadMessageKind.UNKNOWN_TYPE, reason, frame, envelope))
            return
        try:
            value = self.types.structure(envelope.message, message_type)
        except PayloadError as error:
            reason = f"{envelope.message_type} payload {error}"
            await self._reject(BadMessage(BadMessageKind.BAD_PAYLOAD, reason, frame, envelope))
            return
        incoming = Incoming(value, envelope.message_type, envelope.id, envelope.reply_id, self)
        await self._jobs_in.send(functools.partial(self._dispatch, incoming, message_type))

    async def _resolve(self, pending: _PendingReply, envelope: Envelope, frame: str) -> None:
        try:
            value = self.types.structure(envelope.message, pending.reply_type)
        except PayloadError as error:
            reason = f"reply {envelope.reply_id} ({envelope.message_type}) {error}"
            pending.resolve(error=ReplyError(reason))
            await self._reject(BadMessage(BadMessageKind.BAD_PAYLOAD, reason, frame, envelope))
            return
        pending.resolve(value)

    async def _reject(self, bad: BadMessage) -> None:
        self.stats.bad_messages += 1
        setattr(self.stats, bad.kind.value, getattr(self.stats, bad.kind.value) + 1)
        preview = bad.text if len(bad.text) <= _LOG_PREVIEW else bad.text[:_LOG_PREVIEW] + "..."
        # An unknown type is routine in a group shared with other applications.
        level = logging.INFO if bad.kind is BadMessageKind.UNKNOWN_TYPE else logging.WARNING
        logger.log(
            level, "ignored a message in group %r: %s; frame: %r", self.group, bad.reason, preview
        )
        if self._on_bad_message is not None:
            await self._jobs_in.send(functools.partial(_call, self._on_bad_message, bad))

    # -- internals: the dispatcher ---------------------------------------------------------

    async def _dispatch_jobs(self) -> None:
        async for job in self._jobs_out:
            try:
                await job()
            except Exception:
                # This ends the client: close properly while the connection still reads.
                await self._say_goodbye()
                raise

    async def _dispatch(self, incoming: Incoming[Any], message_type: Any) -> None:
        handlers = tuple(self._handlers.get(message_type, ()))
        subscriptions = [s for s in self._subscriptions if s.wants(message_type)]
        if not handlers and not subscriptions:
            self.stats.unhandled += 1
            logger.debug("no handler for a %s message", incoming.message_type or "binary")
            return
        for handler in handlers:
            try:
                await handler(incoming)
            except Exception as error:
                self.stats.handler_errors += 1
                if self._on_handler_error is None:
                    error.add_note(
                        f"raised by {handler.function!r}, handling a "
                        f"{incoming.message_type or 'binary'} message"
                    )
                    raise
                await _call(self._on_handler_error, error, incoming)
        for subscription in subscriptions:
            try:
                await subscription.channel.send(incoming)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the subscriber left between the snapshot and now

    def _finish(self) -> None:
        self._closed = True
        self._set_connection(None)
        for subscription in self._subscriptions:
            subscription.channel.close()
        for pending in list(self._pending.values()):
            pending.resolve(error=ClientClosed("the client closed before the reply came"))


def _type_label(value: object, as_type: Any) -> str:
    tp = as_type if as_type is not None else type(value)
    return getattr(tp, "__qualname__", repr(tp))


@asynccontextmanager
async def open_client(
    url: str | Sequence[str],
    *,
    group: str | None = None,
    id: str | None = None,
    config: ClientConfig | None = None,
    types: TypeRegistry | None = None,
    ssl_context: ssl.SSLContext | None = None,
    on_connect: ConnectHook | None = None,
    on_disconnect: DisconnectHook | None = None,
    on_bad_message: BadMessageHook | None = None,
    on_handler_error: HandlerErrorHook | None = None,
) -> AsyncIterator[Client]:
    """Connect to a relay, join a group, and yield the :class:`Client`; close it on exit.

    ::

        async with open_client("ws://127.0.0.1:8765/ws", group="group_1") as client:
            client.on(SocketMessage, show)
            await client.send(SocketMessage("Hello from Client 1"))

    ``url`` is the .NET-style URL with ``id`` and ``groupName`` in its query, or a base
    URL completed by ``group`` (and ``id``, a UUID4 when absent). Raises
    :exc:`HandshakeRefused` (status and the relay's reason) if the relay refuses,
    :exc:`ConnectError` if it cannot be reached within ``config.connect_timeout``.

    ``url`` may also be a sequence of relay URLs (nodes of one cluster), all joined with
    the same id and group. The client connects to the first one that answers, in order,
    and raises :exc:`ConnectError` naming each one and why if none does (a 4xx
    :exc:`HandshakeRefused` is raised at once). When a connection drops, it reconnects
    starting with the URL *after* the one it was using, trying each once per round; the
    backoff applies between rounds only. :attr:`Client.url` is the URL in use.

    Hooks may be plain or async functions; they run in the dispatcher, in order with the
    messages. The block ends with the error that ended the client, if any: a handler's
    exception (without ``on_handler_error``), :exc:`ClosedByRelay` (a close code not
    reconnected on, e.g. 4000), :exc:`ConnectError` (reconnect attempts exhausted).
    """
    client = Client(
        url,
        group=group,
        id=id,
        config=config,
        types=types,
        ssl_context=ssl_context,
        on_connect=on_connect,
        on_disconnect=on_disconnect,
        on_bad_message=on_bad_message,
        on_handler_error=on_handler_error,
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(client._run)
            try:
                yield client
            finally:
                await client.aclose()
    except BaseExceptionGroup as group_error:
        _raise_sole_error(group_error)
