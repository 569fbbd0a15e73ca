"""The errors the client raises: :exc:`ClientError` and its subclasses."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from .policy import close_meaning

__all__ = [
    "ClientClosed",
    "ClientError",
    "ClosedByRelay",
    "ConnectError",
    "HandshakeRefused",
    "JoinRefused",
    "MemberNotFound",
    "NotConnected",
    "NotInGroup",
    "ReplyError",
    "RequestTimeout",
    "UnsupportedByRelay",
    "could_not_connect",
    "gave_up_reconnecting",
]


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
        text = f"the relay closed the connection with code {code} ({close_meaning(code)})"
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


class MemberNotFound(ClientError, LookupError):
    """A message addressed to one member (:meth:`Client.send_to`, ``request(..., to=)``)
    cannot reach it: the relay's member list, current as the client last heard it, does
    not hold ``member_id`` (raised before sending anything), or the relay answered a
    waiting request with ``no_such_member``."""

    def __init__(self, message: str, *, member_id: str) -> None:
        super().__init__(message)
        #: The id the message was addressed to.
        self.member_id = member_id


class UnsupportedByRelay(ClientError):
    """The relay the client is connected to does not speak ``wsproxy.v1`` (it did not
    select the subprotocol: the .NET middleware, an older relay), so it cannot do what
    was asked — address a message to one member. Nothing was sent."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        #: The relay URL of the connection that could not do it.
        self.url = url


class JoinRefused(ClientError):
    """The relay refused to let the client join ``group`` (:meth:`Client.join`):
    ``code`` is the relay's stable code (``"not_allowed"``, ``"banned"``,
    ``"group_limit"``, ...: see docs/protocol.md), ``detail`` its sentence. The client
    goes on in the groups it was in."""

    def __init__(self, group: str, code: str, detail: str) -> None:
        super().__init__(f"the relay refused to let the client join {group!r}: {code} ({detail})")
        #: The group the join named.
        self.group = group
        #: The relay's code for why, e.g. ``"not_allowed"``.
        self.code = code
        #: The relay's explanation, for people.
        self.detail = detail


class NotInGroup(ClientError):
    """The client is not in the group any more (it left it, or the relay removed it), so
    nothing can be sent to it, nor asked of it; nothing was sent."""

    def __init__(self, message: str, *, group: str) -> None:
        super().__init__(message)
        #: The group the client is not in.
        self.group = group


def could_not_connect(errors: Sequence[ConnectError]) -> ConnectError:
    """The error of a first connect in which every relay URL failed, each with ``errors``:
    the one error itself when there was one URL, else one naming them all."""
    if len(errors) == 1:
        return errors[0]
    return ConnectError(
        f"could not connect to any of the {len(errors)} relay URLs: "
        + "; ".join(str(error) for error in errors),
        url=errors[-1].url,
        failures=errors,
    )


def gave_up_reconnecting(errors: Sequence[ConnectError], attempts: int) -> ConnectError:
    """The error that ends a client after ``attempts`` failed rounds, ``errors`` being
    those of the last round (one per relay URL)."""
    if len(errors) == 1:
        return ConnectError(
            f"gave up reconnecting to {errors[0].url} after {attempts} attempts "
            f"(the last: {errors[0]})",
            url=errors[0].url,
        )
    return ConnectError(
        f"gave up reconnecting after {attempts} attempts at each of the "
        f"{len(errors)} relay URLs (the last: " + "; ".join(str(error) for error in errors) + ")",
        url=errors[-1].url,
        failures=errors,
    )
