"""The client's settings: one frozen class, :class:`ClientConfig`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from ..protocol.close_codes import CloseCode

__all__ = ["DEFAULT_RECONNECT_CODES", "ClientConfig"]

# Standard close codes (RFC 6455 §7.4.1 and the IANA registry) that a client meets but
# the relay never sends, so that CloseCode (the codes the relay sends) has none of them.
#: Never in a close frame: the connection dropped without one (or a ping went unanswered).
ABNORMAL_CLOSURE = 1006
#: The server is restarting.
SERVICE_RESTART = 1012
#: The server is overloaded for now.
TRY_AGAIN_LATER = 1013
#: A gateway or proxy in front of the relay got no valid answer from it.
BAD_GATEWAY = 1014

#: Close codes after which the client reconnects (when ``ClientConfig.reconnect`` is on):
#: the relay going away or failing, the connection dropping without a close frame (1006),
#: and the relay's own transient codes — 4001 slow consumer, 4002 message cut off,
#: 4003 keepalive timeout, 4004 backplane unavailable (with several URLs, the client
#: moves to the next node). Not in the set, so final: 1000 (the relay ended the session on
#: purpose), 1002/1007/1008/1009 (this client broke a rule; reconnecting would repeat it)
#: and 4000 (a newer connection with the same id replaced this one: reconnecting would
#: fight it).
DEFAULT_RECONNECT_CODES = frozenset(
    int(code)
    for code in (
        CloseCode.GOING_AWAY,
        ABNORMAL_CLOSURE,
        CloseCode.INTERNAL_ERROR,
        SERVICE_RESTART,
        CloseCode.TOKEN_EXPIRED,
        TRY_AGAIN_LATER,
        BAD_GATEWAY,
        CloseCode.SLOW_CONSUMER,
        CloseCode.MESSAGE_TRUNCATED,
        CloseCode.KEEPALIVE_TIMEOUT,
        CloseCode.BACKPLANE_UNAVAILABLE,
    )
)


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _positive_or_none(
    instance: object, attribute: attrs.Attribute[Any], value: float | None
) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be positive or None, got {value!r}")


def _version_or_none(instance: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not re.fullmatch(r"\d+\.\d+\.\d+\.\d+", value):
        raise ValueError(f"{attribute.name} is a .NET version such as '8.0.0.0', got {value!r}")


_OWN_HEADERS = frozenset(
    {"host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
     "sec-websocket-protocol", "sec-websocket-extensions"}
)  # fmt: skip


def _headers(value: Any) -> tuple[tuple[str, str], ...]:
    """``headers`` as (name, value) pairs, checked: a header the upgrade sets itself, or
    one that is not a header (a line break, a control character), is a ValueError."""
    pairs = list(value.items()) if isinstance(value, Mapping) else list(value)
    checked = []
    for pair in pairs:
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise ValueError(f"headers are (name, value) pairs, got {pair!r}")
        name, text = pair
        if not (isinstance(name, str) and re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name)):
            raise ValueError(f"not a header name: {name!r}")
        if name.lower() in _OWN_HEADERS:
            raise ValueError(f"the client sets {name} itself")
        if not isinstance(text, str) or not all(c == "\t" or " " <= c != "\x7f" for c in text):
            raise ValueError(f"header {name}: not a header value: {text!r}")
        checked.append((name, text))
    return tuple(checked)


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
    #: How many of the messages written on a connection the client keeps — the newest —
    #: to report them to ``on_disconnect`` should the connection be lost
    #: (``Disconnected.unconfirmed_messages``: the relay confirms no message to its
    #: sender). Older ones are only counted; 0 keeps none.
    unconfirmed_limit: int = attrs.field(default=256, validator=attrs.validators.ge(0))
    #: ... and how many payload bytes those hold at most; a message larger than this is
    #: counted, never kept.
    unconfirmed_bytes: int = attrs.field(default=1024 * 1024, validator=attrs.validators.ge(0))
    #: Whether to offer the ``wsproxy.v1`` subprotocol (sender ids, presence, direct
    #: messages) when connecting; a relay that does not select it gets the plain protocol
    #: anyway. False connects exactly as a plain client, for a server or proxy that refuses
    #: an upgrade offering a subprotocol it does not know.
    offer_v1: bool = True
    #: Headers sent with every upgrade request, as (name, value) pairs or a mapping:
    #: a session cookie, say, for the application's back end to know the member by (its
    #: connect hook is shown those the relay's ``--hook-headers``/``--hook-cookies``
    #: name). The upgrade's own headers (Host, Upgrade, Sec-WebSocket-*) are the client's.
    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_headers)
    #: Whether to offer permessage-deflate (RFC 7692): a relay with ``--compression``
    #: then sends large messages compressed, and the client compresses every message it
    #: sends (wsproto's, per connection). Off by default: on a local network it costs
    #: CPU on both sides for bytes that are cheap (see docs/performance.md).
    compression: bool = False
    #: The .NET runtime version written into generic type names (``List`1[[System.String,
    #: System.Private.CoreLib, Version=7.0.0.0, ...]]``), which a .NET member matches
    #: exactly: ``"7.0.0.0"`` for .NET 7, ``"8.0.0.0"`` for .NET 8. None (the default)
    #: learns it from the first generic name with a version a member of the group sends,
    #: and writes the registry's (``TypeRegistry(dotnet_version=...)``, ``"8.0.0.0"``
    #: unless set) until then.
    dotnet_version: str | None = attrs.field(default=None, validator=_version_or_none)
