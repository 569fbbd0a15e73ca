"""Backoff between attempts, for everything in the package that retries: the client's
reconnects, the backplane's reconnects to Redis, the supervisor's worker restarts.

Pure: it says how long to wait; the caller sleeps.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs


def backoff_delay(
    attempt: int,
    *,
    first: float,
    longest: float,
    jitter: float = 0.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before attempt ``attempt`` (0 for the first retry).

    Exponential: ``first * 2**attempt`` capped at ``longest``, shortened by a random
    fraction of up to ``jitter`` (0 = none, 1 = full) so that many parties that failed at
    once do not come back at once.
    """
    ceiling = min(longest, first * 2.0 ** min(attempt, 64))
    return ceiling * (1.0 - jitter * rand())


@attrs.define
class Backoff:
    """A backoff that remembers its attempts: :meth:`next_delay` after each failure,
    :meth:`reset` after a success."""

    first: float
    longest: float
    jitter: float = 0.0
    rand: Callable[[], float] = random.random
    attempt: int = 0

    def next_delay(self) -> float:
        """The wait before the next attempt; each call counts one more failure."""
        delay = backoff_delay(
            self.attempt, first=self.first, longest=self.longest, jitter=self.jitter,
            rand=self.rand,
        )  # fmt: skip
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """It worked: the next failure waits ``first`` again."""
        self.attempt = 0
