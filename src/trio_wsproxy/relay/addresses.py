"""New connections per remote address (``--max-connections-per-address-rate``).

Each address has a token bucket: ``rate`` upgrades per second in bursts of as many (one
at least: a rate of 0.1 lets an address connect once every 10 s). An
upgrade over it is refused with 429 and ``Retry-After`` before the 101, so one address
opening connections in a loop (a reconnect storm of one client, a flood) cannot take
the handshakes of everyone else; other addresses are not affected.

Memory stays bounded: an address whose bucket has filled up again is forgotten (it
would be refused nothing), which a sweep does whenever the table has doubled since
the last one.
"""

from __future__ import annotations

import math

from ..protocol.ratelimit import TokenBucket


class AddressLimiter:
    """The buckets of the addresses that opened connections lately."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._buckets: dict[str, TokenBucket] = {}
        self._sweep_at = 1024

    def __len__(self) -> int:
        return len(self._buckets)

    def admit(self, address: str, now: float) -> int:
        """0 when ``address`` may open one more connection now (counted); otherwise the
        whole seconds it should wait (what Retry-After says)."""
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= self._sweep_at:
                self._sweep(now)
            bucket = self._buckets[address] = TokenBucket(self._rate, max(1.0, self._rate))
        wait = bucket.take(1, now)
        return 0 if wait == 0 else max(1, math.ceil(wait))

    def _sweep(self, now: float) -> None:
        self._buckets = {
            address: bucket for address, bucket in self._buckets.items() if not bucket.full_at(now)
        }
        self._sweep_at = max(1024, 2 * len(self._buckets))


def address_of(remote: str) -> str:
    """The address part of ``HOST:PORT`` (what a limit is per)."""
    return remote.rsplit(":", 1)[0]
