"""What the relay has carried, counted where it happens and read by ``/metrics`` and
:attr:`Relay.stats`. Plain integers: the hot path only adds to them."""

from __future__ import annotations

import collections


class Counters:
    """The relay's running totals since it started."""

    __slots__ = ("bytes", "closes", "deliveries", "mailbox_full", "messages", "refusals")

    def __init__(self) -> None:
        #: Messages received from members and relayed, and their payload bytes.
        self.messages = 0
        self.bytes = 0
        #: Copies queued for recipients (a message to a group of 10 counts 9).
        self.deliveries = 0
        #: Times a sender found a recipient's mailbox full.
        self.mailbox_full = 0
        #: Sessions closed, by close code; refusals by (kind, status).
        self.closes: collections.Counter[int] = collections.Counter()
        self.refusals: collections.Counter[tuple[str, int]] = collections.Counter()
