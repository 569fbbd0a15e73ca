"""What the relay has carried, counted where it happens and read by ``/metrics`` and
:attr:`Relay.stats`. Plain integers: the hot path only adds to them."""

from __future__ import annotations

import collections


class Counters:
    """The relay's running totals since it started."""

    __slots__ = (
        "accept_failures",
        "api_requests",
        "bytes",
        "client_closes",
        "closes",
        "deliveries",
        "direct_failures",
        "internal_errors",
        "join_refusals",
        "jwks_fetches",
        "mailbox_full",
        "messages",
        "presence_events",
        "refusals",
        "revocations",
        "webhook_events",
        "webhook_requests",
    )

    def __init__(self) -> None:
        #: Messages received from members and relayed, and their payload bytes.
        self.messages = 0
        self.bytes = 0
        #: Copies queued for recipients (a message to a group of 10 counts 9).
        self.deliveries = 0
        #: wsproxy.v1: welcome and presence events queued for members; direct messages
        #: refused because their recipient was not in the group.
        self.presence_events = 0
        self.direct_failures = 0
        #: Times a sender found a recipient's mailbox full.
        self.mailbox_full = 0
        #: Sessions the relay closed, by the code it sent; sessions their member closed
        #: first, by a bounded label of the member's code (see client_close_label);
        #: refusals by (kind, status).
        self.closes: collections.Counter[int] = collections.Counter()
        self.client_closes: collections.Counter[str] = collections.Counter()
        self.refusals: collections.Counter[tuple[str, int]] = collections.Counter()
        #: Calls of the HTTP API, by the status of their answer.
        self.api_requests: collections.Counter[int] = collections.Counter()
        #: Accepts that failed for want of a resource (file descriptors, kernel memory)
        #: and were retried: ten a second while the relay is short, whether connections
        #: are waiting or not (accept(2) claims a descriptor before it looks for one).
        self.accept_failures = 0
        #: Failures of the relay's own code (a bug) contained to one member's session
        #: (closed with 1011) or one HTTP request (answered 500), by where they happened:
        #: "session" (the member's task or the poller reading for it) or "api".
        self.internal_errors: collections.Counter[str] = collections.Counter()
        #: wsproxy.v1 joins of one more group refused, by the error event's code.
        self.join_refusals: collections.Counter[str] = collections.Counter()
        #: Revocations of tokens held (made here or on another node), by kind.
        self.revocations: collections.Counter[str] = collections.Counter()
        #: Fetches of an identity provider's published keys, by outcome (ok, failed).
        self.jwks_fetches: collections.Counter[str] = collections.Counter()
        #: Webhook events by (endpoint, outcome: sent, retried, and why dropped:
        #: queue_full, refused, unsent_at_exit), and requests by (endpoint, outcome:
        #: sent, retried, refused). See relay/webhooks.py.
        self.webhook_events: collections.Counter[tuple[str, str]] = collections.Counter()
        self.webhook_requests: collections.Counter[tuple[str, str]] = collections.Counter()
