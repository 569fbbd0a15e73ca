"""Per-subject token buckets in Redis, shared by every node (``--max-subject-message-rate``).

A node leases a batch of a subject's tokens at a time (relay/subjects.py decides how
many and when); this is the one call that asks Redis for them, through the Lua script
``scripts.SUBJECT_LEASE`` (atomic, on the clock of Redis). Keys: ``P:rate:<subject>``,
each expiring once its bucket would be full again.
"""

from __future__ import annotations

from ..protocol.resp import ConnectionLost, RedisError
from ..relay.groups import RegistryUnavailable
from . import scripts
from .link import RedisLink
from .names import Names


class SubjectBuckets:
    """The cluster's per-subject buckets, as one node reaches them."""

    def __init__(self, link: RedisLink, names: Names) -> None:
        self._link = link
        self._names = names

    async def lease(self, subject: str, rate: float, want: int) -> tuple[int, float]:
        """Up to ``want`` tokens of ``subject``'s bucket (``rate`` a second, bursts of as
        many, one at least): (tokens granted, seconds until one is there when none were). Raises
        RegistryUnavailable while Redis is away or answers what it should not."""
        key = self._names.subject_rate_key(subject)
        try:
            reply = await self._link.call(
                "EVAL", scripts.SUBJECT_LEASE, 1, key, repr(rate), repr(max(1.0, rate)), want
            )
        except (ConnectionLost, RedisError) as exc:  # (call() wraps most of these)
            raise RegistryUnavailable(f"backplane unavailable: {exc}") from exc
        if not (
            isinstance(reply, list)
            and len(reply) == 2
            and all(isinstance(each, int) for each in reply)
        ):
            raise RegistryUnavailable(f"unexpected reply to the rate script: {reply!r}")
        granted, wait_ms = reply
        return int(granted), int(wait_ms) / 1000
