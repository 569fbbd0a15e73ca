"""What the relay has carried, counted where it happens and read by ``/metrics`` and
:attr:`Relay.stats`. Plain integers: the hot path only adds to them."""

from __future__ import annotations

import bisect
import collections

#: The upper bounds (seconds) of the hooks' latency histogram's buckets.
HOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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
        "hook_calls",
        "hook_seconds",
        "internal_errors",
        "join_refusals",
        "jwks_fetches",
        "mailbox_full",
        "messages",
        "presence_events",
        "publish_refusals",
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
        #: Calls of the back end's hooks, by (hook, outcome): allowed, refused, replaced,
        #: timeout, failed; and their latencies, by hook: a count per bucket of
        #: HOOK_BUCKETS (the last: above them all) and their sum.
        #: Members' messages refused (by the publish hook, its failure policy, or its
        #: bound on a message's size): they went nowhere, their sender told (v1).
        self.publish_refusals = 0
        self.hook_calls: collections.Counter[tuple[str, str]] = collections.Counter()
        self.hook_seconds: dict[str, tuple[list[int], list[float]]] = {}
        #: Webhook events by (endpoint, outcome: sent, retried, and why dropped:
        #: queue_full, refused, unsent_at_exit), and requests by (endpoint, outcome:
        #: sent, retried, refused). See relay/webhooks.py.
        self.webhook_events: collections.Counter[tuple[str, str]] = collections.Counter()
        self.webhook_requests: collections.Counter[tuple[str, str]] = collections.Counter()

    def hook_latency(self, hook: str, seconds: float) -> None:
        """Count one call of ``hook`` that took ``seconds``."""
        figures = self.hook_seconds.get(hook)
        if figures is None:
            figures = self.hook_seconds[hook] = ([0] * (len(HOOK_BUCKETS) + 1), [0.0])
        counts, total = figures
        counts[bisect.bisect_left(HOOK_BUCKETS, seconds)] += 1
        total[0] += seconds
