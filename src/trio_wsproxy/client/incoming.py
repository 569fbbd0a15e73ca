"""What the client hands to user code: received messages (:class:`Incoming`), frames it
had to ignore (:class:`BadMessage`), lost connections (:class:`Disconnected`), and the
signatures of the hooks that receive them."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import attrs

from ..protocol.envelope import EMPTY_GUID, Envelope
from .sent import SentMessage

__all__ = [
    "BadMessage",
    "BadMessageHook",
    "BadMessageKind",
    "DisconnectHook",
    "Disconnected",
    "HandlerErrorHook",
    "Incoming",
    "Replier",
]

T = TypeVar("T")


class Replier(Protocol):
    """What :meth:`Incoming.reply` answers through: the client that received the message."""

    async def send(
        self, value: object, *, as_type: Any = None, reply_to: str | None = None
    ) -> None:
        """Send ``value`` to the group (see :meth:`Client.send`)."""


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
    #: A ``wsproxy.v1`` message whose header line the client could not read (a relay bug).
    INVALID_HEADER = "invalid_header"
    #: A typed message announcing a stream (``Client.on_stream``) that no binary message
    #: followed: its sender sent something else next, left, or the connection ended.
    MISSING_STREAM = "missing_stream"


@attrs.frozen
class BadMessage:
    """A frame from the group the client could not use, as given to ``on_bad_message``."""

    #: What was wrong.
    kind: BadMessageKind
    #: Why, in one line.
    reason: str
    #: The text frame as received (for a binary frame with a bad v1 header, its first
    #: bytes decoded with replacement characters).
    text: str
    #: The envelope, when the frame was one.
    envelope: Envelope | None = None


@attrs.frozen
class Disconnected:
    """A lost connection, as given to ``on_disconnect``, with what the client sent on
    it that the relay may not have taken.

    The relay never confirms a message to its sender, and a close — 4004, 1001, 1011,
    4001, a dropped TCP connection — does not say which messages it took: any message
    written on the lost connection may be missing from the group (and from its history:
    the other members' ``Resumed(recovered=True)`` covers only messages that reached
    it). ``unconfirmed`` counts them; ``unconfirmed_messages`` holds the newest of them.
    """

    #: The close code (1006 when the connection dropped without a close frame).
    code: int
    #: The reason in the close frame, if any.
    reason: str | None
    #: Whether the client is about to reconnect.
    reconnecting: bool
    #: How many messages the client wrote in full on the lost connection: every one of
    #: them, since the relay confirms none. (A message whose write the drop cut short is
    #: not counted: it is sent again on the next connection.)
    unconfirmed: int = 0
    #: The newest of them, oldest first: at most ``ClientConfig.unconfirmed_limit``
    #: messages holding at most ``unconfirmed_bytes``; the older ones are only counted.
    unconfirmed_messages: tuple[SentMessage, ...] = ()


@attrs.frozen
class Incoming(Generic[T]):
    """One received message with its envelope fields, and the means to answer it.

    Handlers that take a second parameter get one; :meth:`Client.subscribe` yields them.
    The client's own events (``Joined``, ``Left``, ``DeliveryFailed``) come as one too,
    with no envelope fields and no sender.
    """

    #: The payload, structured into the registered type (``bytes`` for binary frames).
    value: T
    #: The MessageType it came under; None for binary frames.
    message_type: str | None
    #: The sender's request id when it waits for an answer, else None.
    id: str | None
    #: The id of the request this message answers, else None.
    reply_id: str | None
    _client: Replier = attrs.field(repr=False, eq=False)
    #: The id of the member that sent it, where the relay says (``wsproxy.v1``); None
    #: from a plain relay.
    sender: str | None = None
    #: Whether it was sent to this member only (``send_to``), not to the group.
    direct: bool = False
    #: Its offset in the group's history, where the relay keeps one (``wsproxy.v1`` with
    #: history on); None otherwise, and for the client's own events. With the epoch of
    #: :attr:`Client.position`, where a program that handled it can start again
    #: (``open_client(..., since=...)``).
    offset: int | None = None

    @property
    def wants_reply(self) -> bool:
        """Whether the sender asked for an answer (sent it with ``request``)."""
        return self.id is not None

    async def reply(self, value: object, *, as_type: Any = None) -> None:
        """Answer this message: send ``value`` with ``ReplyId`` set to its id.

        The .NET ``ReplyToAsync`` equivalent. Over ``wsproxy.v1`` (:attr:`sender` known)
        the answer goes to the requester only; otherwise, or when the client has since
        reconnected to a relay that does not speak v1, to the group, which is how .NET
        and plain relays answer. A message that asked for no answer (no ``Id``: see
        :attr:`wants_reply`) is answered as .NET answers it, with ``ReplyId``
        ``Guid.Empty`` (``00000000-0000-0000-0000-000000000000``), which every receiver
        takes for an ordinary message. Raises :exc:`ValueError` for a binary message,
        which has no envelope to answer.
        """
        if self.message_type is None:
            raise ValueError(
                "a binary message (or the client's own event) has no envelope, so there is "
                "nothing to reply to"
            )
        reply_to = self.id if self.id is not None else EMPTY_GUID
        await self._client.send(value, as_type=as_type, reply_to=reply_to)


#: Hook called when a connection is lost other than by closing the client.
DisconnectHook = Callable[[Disconnected], object]
#: Hook called with each frame from the group that the client had to ignore.
BadMessageHook = Callable[[BadMessage], object]
#: Hook called with each exception a handler raises; without it, the exception ends the client.
HandlerErrorHook = Callable[[Exception, "Incoming[Any]"], object]
