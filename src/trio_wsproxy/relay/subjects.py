"""Per-subject message rates (``--max-subject-message-rate``): one allowance per subject
over all its connections, on this node and, with a backplane, on every node.

The subject is the member id. With tokens on, the relay admits a member only when its
id is the token's id claim (``--token-id-claim``, ``sub`` by default), so the subject
is the user the identity provider vouches for; without tokens a client picks its id,
and the limit holds per id (a client can spread itself over made-up ids: turn tokens
on for a limit that means "per user").

- **One node**: a token bucket per subject (``rate`` messages a second, bursts of as
  many, one at least), shared by its sessions here and dropped when the last one ends.
- **A cluster**: the bucket lives in Redis (the registry's :meth:`lease`, a Lua script
  with the clock of Redis, so nodes' clocks do not matter), and a node **leases** tokens
  a batch at a time (:data:`LEASE_SHARE` of the rate): the sessions of a subject on the
  node spend the batch without asking Redis, and the next message after it waits for the
  next lease. A lease unspent after :data:`LEASE_LIFE` is dropped (not returned), so
  over any window a subject sends at most ``burst + rate × window`` plus one lease per
  node: that is the tolerance. When Redis says the bucket is empty it says how long
  until a token is there, and the session waits that long: paced, never dropped.
- **Redis away**: the node falls back to its own bucket for the subject (the limit then
  holds per node), logs a warning once per outage, and asks Redis again (at most once
  a second) whenever a subject runs out of the node's bucket: once a lease succeeds,
  the limit holds across nodes again.

A session waits for its subject's token in a pause (``Session._paused``): it reads ahead,
answers pings and keeps the member's messages in order; beyond the read-ahead TCP pushes
back at the source. Without the flag nothing here exists and the hot path is unchanged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import trio

from ..protocol.ratelimit import TokenBucket
from .groups import RegistryUnavailable

logger = logging.getLogger("trio_wsproxy.relay")

#: The share of a second's rate a node leases at a time: about ten Redis calls a second
#: per subject sending at its limit on a node, and at most this much of the rate is
#: held by one node unspent (the tolerance across nodes).
LEASE_SHARE = 0.1
#: Seconds a lease may be spent: tokens leased and left over longer are dropped, so an
#: idle node cannot save up leases and add them to a full bucket later.
LEASE_LIFE = 1.0

#: While Redis is away: seconds between a node's attempts to lease again (made when a
#: subject runs out of the node's own bucket).
RETRY_INTERVAL = 1.0

#: What asks the cluster for tokens: ``(subject, rate, want)`` -> (tokens granted, seconds
#: until one is there when none were); raises RegistryUnavailable while it cannot.
Lease = Callable[[str, float, int], Awaitable[tuple[int, float]]]


class SubjectRate:
    """One subject's allowance on this node, shared by its sessions here."""

    __slots__ = (
        "_bucket",
        "_lease_ends",
        "_lock",
        "_rates",
        "allowance",
        "sessions",
        "subject",
    )

    def __init__(self, rates: SubjectRates, subject: str) -> None:
        self._rates = rates
        self.subject = subject
        #: Sessions of the subject on this node.
        self.sessions = 0
        # The node's own bucket: the limit on one node, and on a cluster while Redis
        # is away.
        self._bucket = TokenBucket(rates.rate, rates.burst)
        #: Tokens leased from the cluster's bucket, left to spend until _lease_ends.
        self.allowance = 0
        self._lease_ends = 0.0
        # One waiter at a time asks for tokens (trio's lock is fair: first come, first
        # served among the subject's sessions).
        self._lock = trio.Lock()

    def take(self) -> bool:
        """Spend one token now if there is one at hand (no waiting, no Redis) and no
        other session of the subject is waiting for one (first come, first served)."""
        return not self._lock.locked() and self._spend()

    def _spend(self) -> bool:
        now = trio.current_time()
        if self._rates.lease is None or self._rates.away:
            return self._bucket.take(1, now) == 0.0
        if self.allowance > 0 and now < self._lease_ends:
            self.allowance -= 1
            return True
        return False

    async def wait(self) -> None:
        """Wait until one token is the subject's, and spend it."""
        rates = self._rates
        async with self._lock:
            while not self._spend():
                lease = rates.lease
                now = trio.current_time()
                if lease is not None and (not rates.away or now >= rates.retry_at):
                    delay = await self._lease(lease)
                    if rates.away:  # (refused: the node's own bucket, at once)
                        continue
                else:
                    delay = self._bucket.take(1, now)
                    if delay == 0.0:
                        return
                if delay > 0:
                    await trio.sleep(delay)

    async def _lease(self, lease: Lease) -> float:
        """Lease tokens from the cluster: 0 when some came, else the seconds to wait."""
        rates = self._rates
        try:
            granted, delay = await lease(self.subject, rates.rate, rates.lease_size)
        except RegistryUnavailable as exc:
            rates.lost(exc)
            return 0.0
        if rates.away:
            rates.back()
        if granted > 0:
            self.allowance = granted
            self._lease_ends = trio.current_time() + LEASE_LIFE
            return 0.0
        return max(delay, 0.001)


class SubjectRates:
    """The subjects with sessions on this node, and their allowances."""

    def __init__(self, rate: float, lease: Lease | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate!r}")
        self.rate = rate
        #: The most a subject may send at once (one at least: a rate of 0.5 is one
        #: message every 2 s, not none).
        self.burst = max(1.0, rate)
        #: Asks the cluster for tokens (None: this node is the whole relay).
        self.lease = lease
        #: Tokens asked for at a time from the cluster.
        self.lease_size = max(1, math.ceil(rate * LEASE_SHARE))
        #: Whether Redis refused the last lease (the node's own buckets hold meanwhile).
        self.away = False
        #: While away: when a subject that runs out of its node's tokens asks Redis again.
        self.retry_at = 0.0
        self._by: dict[str, SubjectRate] = {}

    def __len__(self) -> int:
        return len(self._by)

    def enter(self, subject: str) -> SubjectRate:
        """The allowance of ``subject`` for one more of its sessions here."""
        rate = self._by.get(subject)
        if rate is None:
            rate = self._by[subject] = SubjectRate(self, subject)
        rate.sessions += 1
        return rate

    def leave(self, rate: SubjectRate) -> None:
        """One session of the subject ended: its allowance goes with the last one."""
        rate.sessions -= 1
        if rate.sessions <= 0 and self._by.get(rate.subject) is rate:
            del self._by[rate.subject]

    def lost(self, exc: RegistryUnavailable) -> None:
        """Redis refused a lease: the node's own buckets hold until it is back."""
        self.retry_at = trio.current_time() + RETRY_INTERVAL
        if not self.away:
            self.away = True
            logger.warning(
                "subject rate limits hold per node until Redis is back (%s)",
                exc,
                extra={"reason": str(exc)},
            )

    def back(self) -> None:
        self.away = False
        logger.info("subject rate limits hold across nodes again (Redis is back)")
