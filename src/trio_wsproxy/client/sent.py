"""What a client can know of the messages it sent — decided without I/O (no trio: the
caller gives the time).

The relay forwards a member's message to the other members and never back to it: no
acknowledgement, no offset, nothing in its own replay after a reconnect. A close frame
does not say which messages were taken either: a session the relay is closing discards
what it reads after deciding to close, and on a cluster keeping history a message the
node read may never reach Redis (an outage closes the group's members with 4004). So a
sender knows exactly one thing: which messages it wrote, in full, on which connection.

When a connection ends other than by the client's own close, every message written on
it is *unconfirmed*: it may or may not have reached the group. :class:`SentLog` keeps
that count for one connection and the newest of those messages, within bounds, for
``on_disconnect`` (:class:`~.incoming.Disconnected`). A message whose write did not
finish is not among them: the client sends it again on the next connection.
"""

from __future__ import annotations

import collections
from typing import Any

import attrs

__all__ = ["SentLog", "SentMessage"]


@attrs.frozen(kw_only=True)
class SentMessage:
    """A message this client wrote in full on a connection that then ended other than
    by closing the client. The relay confirms nothing to a sender, so whether it took
    this message — forwarded it, gave it an offset in the group's history — is unknown:
    show it as "maybe not delivered", or send it again (a member may then get it twice).
    """

    #: What was sent: the value given to ``send``, ``send_to``, ``request`` or
    #: ``Incoming.reply`` (``bytes`` for a binary message); None for a message of
    #: ``send_stream``, whose bytes the client does not keep.
    value: object
    #: The ``as_type`` it was sent with (None: its own type).
    as_type: Any = None
    #: The member it was addressed to (``send_to``, a reply over ``wsproxy.v1``); None:
    #: to the group.
    to: str | None = None
    #: The envelope's ``Id``: the request's id for a ``request`` (its answer, had it
    #: come, would carry it), else None.
    request_id: str | None = None
    #: The envelope's ``ReplyId``: the request it answered, else None.
    reply_to: str | None = None
    #: Whether it was a ``send_stream`` message (``value`` is then None).
    streamed: bool = False
    #: Its payload's length as written, its v1 header excluded: characters of a typed
    #: message's envelope, bytes of a binary one.
    size: int = 0
    #: When its last byte was handed to the socket (:func:`trio.current_time`).
    sent_at: float = 0.0


# What SentLog keeps of a message until a report makes a SentMessage of it, in
# SentMessage's field order: a plain tuple costs a quarter of a frozen class's
# construction, on every send. [5] is ``streamed``, [6] ``size`` (held unless streamed).
_Kept = tuple[object, Any, str | None, str | None, str | None, bool, int, float]


class SentLog:
    """The messages written in full on one connection: how many (:attr:`count`), and the
    newest of them, at most ``limit`` messages holding at most ``max_bytes`` of payload.
    Past either bound the oldest are forgotten (still counted); a message larger than
    ``max_bytes`` is counted and never kept. A streamed message holds no bytes here."""

    __slots__ = ("_bytes", "_kept", "_limit", "_max_bytes", "count")

    def __init__(self, limit: int, max_bytes: int) -> None:
        self._limit = limit
        self._max_bytes = max_bytes
        self._kept: collections.deque[_Kept] = collections.deque()
        self._bytes = 0
        #: Messages written in full on the connection, kept or not.
        self.count = 0

    def add(
        self,
        value: object,
        *,
        size: int,
        as_type: Any = None,
        to: str | None = None,
        request_id: str | None = None,
        reply_to: str | None = None,
        streamed: bool = False,
        sent_at: float = 0.0,
    ) -> None:
        """Note a message whose last byte was written at ``sent_at`` (the trio clock)."""
        self.count += 1
        if self._limit == 0 or (not streamed and size > self._max_bytes):
            return
        self._keep((value, as_type, to, request_id, reply_to, streamed, size, sent_at))

    def extend(self, later: SentLog) -> None:
        """Take in the messages of ``later``, a connection that followed this one and
        was lost before it could be reported on (it ended before the relay's welcome)."""
        self.count += later.count
        for kept in later._kept:
            if self._limit and (kept[5] or kept[6] <= self._max_bytes):
                self._keep(kept)

    def _keep(self, message: _Kept) -> None:
        kept = self._kept
        kept.append(message)
        if not message[5]:
            self._bytes += message[6]
        while len(kept) > self._limit or self._bytes > self._max_bytes:
            oldest = kept.popleft()
            if not oldest[5]:
                self._bytes -= oldest[6]

    def messages(self) -> tuple[SentMessage, ...]:
        """The messages kept, oldest first."""
        return tuple(
            SentMessage(
                value=value,
                as_type=as_type,
                to=to,
                request_id=request_id,
                reply_to=reply_to,
                streamed=streamed,
                size=size,
                sent_at=sent_at,
            )
            for value, as_type, to, request_id, reply_to, streamed, size, sent_at in self._kept
        )
