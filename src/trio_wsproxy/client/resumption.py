"""Where a client is in its group's history, kept across reconnects and relay URLs, so
that a reconnect names it and gets what was missed (DESIGN.md §7) — decided without I/O.

The connection task names the position in each reconnect's URL (``?since=EPOCH:OFFSET``),
feeds the relay's welcome and every message's offset in, and hands the handlers the
:class:`Resumed` event a welcome answering a named position gives. The position moves
only as messages are read: a connection that drops in the middle of a replay names,
next time, the last message it really got.
"""

from __future__ import annotations

import attrs

from ..protocol.v1 import Position, Welcome


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
    """A client's position in its group's history (None: it has none to name)."""

    def __init__(self) -> None:
        self.position: Position | None = None

    def since(self) -> str | None:
        """What a reconnect names: ``EPOCH:OFFSET``, or None."""
        return None if self.position is None else self.position.token()

    def welcomed(self, welcome: Welcome) -> Resumed | None:
        """Take in a relay's welcome; the event for the handlers, if it answers a named
        position. After a recovery the position stays where it was: the replayed
        messages move it on as they are read."""
        recovery = welcome.recovery
        if recovery is not None and recovery.recovered and welcome.position is not None:
            return Resumed(True, recovery.missed)
        self.position = welcome.position
        if recovery is None:
            return None
        return Resumed(False, 0, recovery.reason)

    def heard(self, offset: int) -> None:
        """A message with ``offset`` in the history was read."""
        if self.position is not None:
            self.position = Position(self.position.epoch, offset)

    def lost(self) -> None:
        """The connection cannot say where it is (a plain relay): nothing to name."""
        self.position = None
