"""The webhooks this relay process sends the application's back end (``--webhook-url``):
members' joins and leaves, groups occupied and vacated, batched, signed and retried.

What happens is told synchronously and never waits: a session (or the registry) calls
:meth:`Webhooks.joined` and the like, which append an event to a bounded queue and
return. One task (:meth:`Webhooks.run`, in the relay's nursery, with the relay's one
pooled ``httpx.AsyncClient``) takes what is queued and POSTs it as one body, at most
once per ``webhook_interval``:

- a 2xx answer: the events are sent;
- a 5xx, 408 or 429 answer, a timeout (``webhook_timeout``) or a connection error: the
  same body (the same event ids, a fresh signature) is sent again after a backoff that
  starts at the interval and doubles up to :data:`LONGEST_RETRY_WAIT`, until it is
  taken — events keep queueing meanwhile, up to the bound;
- any other answer (a 4xx: the back end refuses them, or a 3xx, which is not followed):
  the batch is dropped, counted and logged; retrying would only be refused again.

Beyond ``webhook_queue`` events queued, new events are dropped, counted and logged: a
WARNING when the queue fills, and one with the count once there is room again (so at
most two per interval, whatever the churn). At shutdown,
once every session has closed (their leaves told), what is held is sent within
``close_timeout``; what is left then is counted as dropped and logged.

On a cluster, each event is told by one node: a member's join and leave by its own node,
a dead node's members' leaves by the node that reaps it, occupied and vacated by the
node whose Redis script saw the group's membership change from or to empty (see
docs/backend.md and backplane/registry.py).
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import trio

from ..protocol.backoff import Backoff
from ..protocol.printable import printable
from ..protocol.webhooks import (
    JOIN,
    LEAVE,
    OCCUPIED,
    SIGNATURE_HEADER,
    VACATED,
    WebhookEvent,
    encode_body,
    sign,
)

if TYPE_CHECKING:
    from .config import RelayConfig
    from .counters import Counters

logger = logging.getLogger("trio_wsproxy.webhooks")

#: The most events in one request's body (a churn of thousands goes in a few requests).
MAX_EVENTS_PER_REQUEST = 1000
#: The longest wait between two attempts of one batch (seconds).
LONGEST_RETRY_WAIT = 30.0
#: The longest a 429's Retry-After is heeded (seconds).
LONGEST_RETRY_AFTER = 60.0
#: The close code a leave is told with when the connection ended without a close frame
#: (dropped, or its node died: then the node that reaps it tells the leave): 1006,
#: WebSocket's "closed abnormally", which is never sent on the wire.
ABNORMAL_CLOSURE = 1006


class Told(Protocol):
    """A membership, as a webhook tells of it: its member's id and its group."""

    @property
    def id(self) -> str: ...

    @property
    def group_name(self) -> str: ...


def endpoint_label(url: str) -> str:
    """The metrics' name for the endpoint at ``url``: scheme, host, port and path, never
    its query or credentials (which may hold a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class Webhooks:
    """The webhooks of one relay process to one endpoint: the queue, and the task that
    sends it (:meth:`run`)."""

    def __init__(
        self,
        url: str,
        secret: str,
        counters: Counters,
        *,
        interval: float = 0.5,
        queue_limit: int = 10_000,
        timeout: float = 5.0,
    ) -> None:
        self.url = url
        #: The ``endpoint`` label of the metrics.
        self.endpoint = endpoint_label(url)
        self._secret = secret
        self._counters = counters
        self._interval = interval
        self._limit = queue_limit
        self._timeout = timeout
        self._queue: collections.deque[WebhookEvent] = collections.deque()
        self._wake = trio.Event()
        # Event ids: this process's random prefix and a serial, unique across a cluster
        # and across restarts.
        self._prefix = uuid.uuid4().hex[:16]
        self._serial = itertools.count(1)
        # The memberships whose join was told: only those are told leaving.
        self._told: set[Told] = set()
        # Events dropped for want of room since the last one queued (see _tell).
        self._dropping = 0
        self._next_request = -math.inf
        # Shutdown: set by finish(); the task then sends what it holds and returns.
        self._finishing = False
        self._scope = trio.CancelScope(shield=True)
        self._batch: list[WebhookEvent] = []

    @classmethod
    def of(cls, config: RelayConfig, secret: str | None, counters: Counters) -> Webhooks | None:
        """The webhooks ``config`` asks for (None: off); ``secret``: the one read from
        its ``webhook_secret_file`` (else its ``webhook_secret``)."""
        if config.webhook_url is None:
            return None
        secret = secret or config.webhook_secret
        if secret is None:
            raise ValueError("webhook_url needs a secret (webhook_secret_file)")
        return cls(
            config.webhook_url,
            secret,
            counters,
            interval=config.webhook_interval,
            queue_limit=config.webhook_queue,
            timeout=config.webhook_timeout,
        )

    # -- what happened (synchronous: never waits) ----------------------------------------

    def joined(self, membership: Told) -> None:
        """``membership``'s member entered its group."""
        self._told.add(membership)
        self._tell(JOIN, membership.group_name, membership.id, None)

    def left(self, membership: Told, code: int | None) -> None:
        """``membership``'s member left its group (``code``: its connection's close code;
        None: it asked to leave that group only). Told only after its join was."""
        if membership in self._told:
            self._told.discard(membership)
            self._tell(LEAVE, membership.group_name, membership.id, code)

    def occupied(self, group_name: str) -> None:
        """The group got its first member (on any node)."""
        self._tell(OCCUPIED, group_name, None, None)

    def vacated(self, group_name: str) -> None:
        """The group's last member left (on every node)."""
        self._tell(VACATED, group_name, None, None)

    def reaped(self, group_name: str, member_id: str) -> None:
        """A member of a node that died (this node reaped it) is gone."""
        self._tell(LEAVE, group_name, member_id, ABNORMAL_CLOSURE)

    def _tell(self, kind: str, group: str, member: str | None, code: int | None) -> None:
        if len(self._queue) >= self._limit:
            self._counters.webhook_events[self.endpoint, "queue_full"] += 1
            if not self._dropping:
                logger.warning(
                    "webhooks to %s: %d events queued, the most held (webhook_queue): "
                    "dropping new events until there is room", self.endpoint, self._limit,
                )  # fmt: skip
            self._dropping += 1
            return
        self._log_drops()
        event = WebhookEvent(
            id=f"{self._prefix}-{next(self._serial)}",
            type=kind,
            group=group,
            member=member,
            code=code,
            time=round(time.time(), 3),
        )
        self._queue.append(event)
        self._wake.set()

    @property
    def held(self) -> int:
        """Events queued or in the request under way."""
        return len(self._queue) + len(self._batch)

    def _log_drops(self) -> None:
        """A run of events dropped for want of room is over (there is room, or the
        relay stops): say how many."""
        if self._dropping:
            logger.warning(
                "webhooks to %s: %d events dropped while the queue was full (see "
                "trio_wsproxy_webhook_events_total)", self.endpoint, self._dropping,
            )  # fmt: skip
            self._dropping = 0

    def _drop(self, count: int, reason: str) -> None:
        """``count`` events will never be sent: counted and logged."""
        self._counters.webhook_events[self.endpoint, reason] += count
        logger.warning(
            "webhooks to %s: %d events dropped (%s; see trio_wsproxy_webhook_events_total)",
            self.endpoint, count, reason.replace("_", " "),
        )  # fmt: skip

    # -- sending -------------------------------------------------------------------------

    def finish(self, grace: float) -> None:
        """The relay stops (its sessions are closed, their leaves told): send what is
        held within ``grace`` seconds, then end :meth:`run`."""
        self._finishing = True
        self._scope.deadline = min(self._scope.deadline, trio.current_time() + grace)
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send the events as they come until :meth:`finish` (``nursery.start``). Runs
        shielded: the relay's cancellation does not stop it before the sessions' last
        leaves are told; :meth:`finish` gives it its deadline."""
        import httpx

        try:
            with self._scope:
                async with httpx.AsyncClient(timeout=self._timeout) as client:
                    task_status.started()
                    await self._serve(client)
        finally:
            self._log_drops()
            left = self.held
            if left:
                self._batch.clear()
                self._queue.clear()
                self._drop(left, "unsent_at_exit")

    async def _serve(self, client: Any) -> None:
        while True:
            while not self._queue:
                if self._finishing:
                    return
                await self._wake.wait()
                self._wake = trio.Event()
            await trio.sleep_until(self._next_request)
            count = min(len(self._queue), MAX_EVENTS_PER_REQUEST)
            self._batch = [self._queue.popleft() for _ in range(count)]
            await self._deliver(client, self._batch)
            self._batch = []

    async def _deliver(self, client: Any, batch: list[WebhookEvent]) -> None:
        """POST ``batch`` until it is taken or refused (see the module's docstring)."""
        import httpx

        body = encode_body(batch)
        backoff = Backoff(self._interval, max(self._interval, LONGEST_RETRY_WAIT))
        counters, endpoint = self._counters, self.endpoint
        failing = False
        while True:
            await trio.sleep_until(self._next_request)
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(self._secret, body),
            }
            status: int | None = None
            retry_after: float | None = None
            with trio.move_on_after(self._timeout) as deadline:
                try:
                    response = await client.post(self.url, content=body, headers=headers)
                    status = response.status_code
                    retry_after = _retry_after(response.headers.get("Retry-After"))
                    failure = f"answered {status}"
                except httpx.TimeoutException:
                    failure = f"no answer within {self._timeout:g}s"
                except httpx.HTTPError as exc:
                    failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if deadline.cancelled_caught:
                failure = f"no answer within {self._timeout:g}s"
            self._next_request = trio.current_time() + self._interval
            if status is not None and 200 <= status < 300:
                counters.webhook_requests[endpoint, "sent"] += 1
                counters.webhook_events[endpoint, "sent"] += len(batch)
                if failing:
                    logger.info("webhooks to %s: delivered again", endpoint)
                return
            if status is not None and status not in (408, 429) and status < 500:
                counters.webhook_requests[endpoint, "refused"] += 1
                logger.warning(
                    "webhooks to %s: the back end %s to %d events: dropped, not retried",
                    endpoint, failure, len(batch),
                )  # fmt: skip
                self._drop(len(batch), "refused")
                return
            counters.webhook_requests[endpoint, "retried"] += 1
            counters.webhook_events[endpoint, "retried"] += len(batch)
            delay = backoff.next_delay()
            if retry_after is not None:
                delay = max(delay, min(retry_after, LONGEST_RETRY_AFTER))
            self._next_request = trio.current_time() + delay
            level = logging.DEBUG if failing else logging.WARNING
            logger.log(
                level, "webhooks to %s: %s; retrying %d events in %.1fs (same ids)",
                endpoint, printable(failure), len(batch), delay,
            )  # fmt: skip
            failing = True


def _retry_after(value: str | None) -> float | None:
    """A Retry-After header's seconds (its date form is not heeded)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def tell_leaves(webhooks: Webhooks | None, memberships: Iterable[Told], code: int | None) -> None:
    """Tell each of ``memberships`` leaving with ``code`` (nothing when webhooks are off)."""
    if webhooks is not None:
        for membership in memberships:
            webhooks.left(membership, code)
