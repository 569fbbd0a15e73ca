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

    def charge(self, units: float, now: float) -> float:
        """Spend ``units`` at time ``now``; return the seconds to pause (0 when in budget)."""
        if self._stamp is not None:
            self._level = min(self.burst, self._level + (now - self._stamp) * self.rate)
        self._stamp = now
        self._level -= units
        return 0.0 if self._level >= 0 else -self._level / self.rate
