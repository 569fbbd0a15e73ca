"""One message a back end posts to a group through the HTTP API, delivered like a
member's: framed once per encoding, queued in the recipients' mailboxes with the same
backpressure, carried to the group's other nodes by the group, and streamed in pieces
with flat memory when it is large (taking the group's floor as a member's would).

The poster is no member: it is in no group's member list, gets nothing, and its sender
id is :data:`~trio_wsproxy.protocol.message.BACK_END` (v1 members see ``"from":null``).
It is held to a streaming member's pace, though (:attr:`Poster.piece_due`): a body
cannot hold its group's floor, nor its request the relay, by trickling in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ..protocol.assembly import Assembly
from ..protocol.encoding import PLAIN
from ..protocol.frames import Data
from ..protocol.message import BACK_END, Message
from .fanout import Courier
from .groups import Audience, Group
from .mailbox import Mailbox
from .sender import Sender

if TYPE_CHECKING:
    from .host import RelayCore


class Poster:
    """Posts one message, fed in chunks as its body arrives, to ``group`` (to the member
    ``to`` alone, if given). It takes the place of a member where the group needs one
    (its streaming floor); it has the :class:`~.groups.Member` attributes for that."""

    encoding = PLAIN
    #: (The Member interface: a poster is no connection.)
    connection_key = ""

    def __init__(self, relay: RelayCore, group: Group, text: bool, to: str | None) -> None:
        counters = relay.counters
        self.id = BACK_END
        self.group_name = group.name
        self.mailbox = Mailbox(0)  # (never a recipient: it is in no member list)
        self.joined_at = trio.current_time()
        self._text = text
        self._first = True
        self._counters = counters
        self._assembly = Assembly(BACK_END)
        self._assembly.to = to
        self._sender = Sender(
            self,
            group,
            Courier(relay.config.slow_member_timeout, counters),
            counters,
            relay.budget,
            in_group=False,
            unknown=_through_other_nodes,
            cut_off_reason="a message was cut off: the back end's post ended early",
        )
        self._stream_timeout = relay.config.stream_timeout
        #: When the body's next piece (FRAGMENT_SIZE bytes, or its end) is due at the
        #: latest, on Trio's clock: the pace a member's streaming message is held to
        #: (Session.piece_due), from the body's start, so that a slow body holds nothing
        #: for long before it streams either. The feeder gives up then (the HTTP API
        #: answers 408) and calls :meth:`end`. Time the relay keeps the poster waiting
        #: (for the floor, a full mailbox, the fan-out budget) is not counted: it is
        #: due anew once a piece has gone out.
        self.piece_due = trio.current_time() + self._stream_timeout

    @property
    def found_here(self) -> bool:
        """Whether the member the message is for (if one) was found on this node."""
        return self._sender.found_here

    def join_also(self, group_name: str) -> None:
        """(The Member interface; a poster is in no group.)"""

    def close(self, code: int, reason: str) -> None:
        """(The Member interface; nothing closes a poster: its request ends it.)"""

    async def feed(self, chunk: bytes, last: bool) -> None:
        """The next chunk of the body; ``last``: the body ends with it."""
        first, self._first = self._first, False
        self._counters.bytes += len(chunk)
        forward = self._assembly.feed(Data(chunk, self._text, first, last))
        if forward is None:
            return
        sender = self._sender
        if isinstance(forward, Message):
            await sender.send(forward)
            sender.courier.flush()  # (what mailboxes hold for a direct write, and the outbox)
            return
        for piece in forward:
            if piece.first:
                await sender.start(self._assembly.head)
            await sender.forward(piece)
        self.piece_due = trio.current_time() + self._stream_timeout

    def end(self, truncated: bool) -> None:
        """End the streaming message, if one is streaming; ``truncated``: its body did
        not arrive whole, and the members that got its start are closed with 4002."""
        self._sender.end(truncated)


def _through_other_nodes(to: str, itself: bool) -> tuple[Audience, ...]:
    """A post to a member this node does not know of goes on to the group's other nodes:
    the API found it in the group before the body came (and answers 404 afterwards if
    it has left meanwhile), and this node may not have heard of its join yet."""
    return ()
