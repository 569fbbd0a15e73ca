"""Per-member rate limits as token buckets: sans-I/O, the session sleeps what they say."""

from __future__ import annotations


class TokenBucket:
    """``rate`` units per second with bursts of up to ``burst`` units.

    :meth:`charge` takes units that were already spent (a message already read) and
    answers how long the spender must pause so that its average stays at ``rate``.
    """

    __slots__ = ("_level", "_stamp", "burst", "rate")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate!r}")
        self.rate = rate
        self.burst = burst if burst is not None else rate
        self._level = self.burst
        self._stamp: float | None = None

    def take(self, units: float, now: float) -> float:
        """Spend ``units`` at time ``now`` if the bucket holds them (0 returned); else
        spend nothing and return the seconds until it will."""
        self._refill(now)
        if self._level >= units:
            self._level -= units
            return 0.0
        return (units - self._level) / self.rate

    def full_at(self, now: float) -> bool:
        """Whether the bucket is full at ``now`` (it then remembers nothing)."""
        self._refill(now)
        return self._level >= self.burst

    def _refill(self, now: float) -> None:
        if self._stamp is not None:
            self._level = min(self.burst, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    def charge(self, units: float, now: float) -> float:
        """Spend ``units`` at time ``now``; return the seconds to pause (0 when in budget)."""
        if self._stamp is not None:
            self._level = min(self.burst, self._level + (now - self._stamp) * self.rate)
        self._stamp = now
        self._level -= units
        return 0.0 if self._level >= 0 else -self._level / self.rate
