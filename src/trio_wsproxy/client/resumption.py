"""Where a client is in its group's history, kept across reconnects and relay URLs, so
that a reconnect names it and gets what was missed (DESIGN.md §7) — decided without I/O.

The connection task names the position in each reconnect's URL (``?since=EPOCH:OFFSET``),
feeds the relay's welcome and every message's offset in, and hands the handlers the
:class:`Resumed` event a welcome answering a named position gives. The position moves
only as messages are read: a connection that drops in the middle of a replay names,
next time, the last message it really got.

A client made with a position (``open_client(..., since=...)``: one saved by a program
that ran before, or by a page before its reload) names it on its first connection too.
"""

from __future__ import annotations

import attrs

from ..protocol.v1 import Position, Welcome


def position_of(since: Position | str | None) -> Position | None:
    """``since`` as given to ``open_client``: a :class:`Position`, its ``str()``, or None."""
    if since is None or isinstance(since, Position):
        return since
    if isinstance(since, str):
        return Position.parse(since)
    raise TypeError(f"since is a Position or its str() (EPOCH:OFFSET), got {since!r}")


@attrs.frozen
class Resumed:
    """The relay's answer when this client reconnected and named its position in the
    group's history (delivered to handlers and subscriptions of ``Resumed``, before the
    replayed messages). ``recovered``: every message missed meanwhile follows, ``missed``
    of them, replayed in order and before anything live, and handlers see them as any
    message. Otherwise nothing was replayed and ``reason`` says why: the position was
    older than the history (``position_too_old``), the history was lost (a relay
    restart: ``epoch_changed``), a missed message was too large to keep
    (``message_too_large``), or the relay keeps no history (``no_history``). The
    application then resynchronises by itself.

    ``recovered`` covers every message that got an offset in the history. A message
    whose sender's connection ended before the relay took it never got one: it was never
    in the group, and only its sender's client reports it
    (:attr:`Disconnected.unconfirmed_messages`)."""

    recovered: bool
    missed: int = 0
    reason: str | None = None


class Resumption:
    """A client's position in its group's history, as read (None: it has none yet);
    ``since``, the position the client was made with, is named until a welcome comes."""

    def __init__(self, since: Position | None = None) -> None:
        self.position: Position | None = None
        self._given = since

    def named(self) -> Position | None:
        """The position a connection names (a join, for a group other than the URL's)."""
        return self.position if self.position is not None else self._given

    def since(self) -> str | None:
        """What a connection names in its URL: ``EPOCH:OFFSET``, or None."""
        named = self.named()
        return None if named is None else str(named)

    def welcomed(self, welcome: Welcome) -> Resumed | None:
        """Take in a relay's welcome; the event for the handlers, if it answers a named
        position. After a recovery the position is the one named: the replayed messages
        move it on as they are read."""
        named = self.position if self.position is not None else self._given
        self._given = None
        recovery = welcome.recovery
        if recovery is not None and recovery.recovered and welcome.position is not None:
            if named is not None:
                self.position = named
                return Resumed(True, recovery.missed)
        here = welcome.position
        self.position = None if here is None else Position(here.epoch, here.offset)
        if recovery is None:
            return None
        return Resumed(False, 0, recovery.reason)

    def heard(self, offset: int) -> None:
        """A message with ``offset`` in the history was read."""
        if self.position is not None:
            self.position = Position(self.position.epoch, offset)

    def lost(self) -> None:
        """The connection cannot say where it is (a plain relay): nothing to name."""
        self.position = self._given = None
