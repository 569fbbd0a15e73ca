"""Whether, when and where the client reconnects — decided without I/O.

Given a close code, the rounds of attempts that failed so far and the
:class:`~.config.ClientConfig`, this module says what to do; the connection task
(:mod:`.connection_task`) carries it out: it sleeps, connects and logs. A *round* tries
each relay URL once (:func:`~.urls.round_order`), with no wait between the URLs of one
round — the next may well be up — and the backoff before each round after the first.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable

import attrs

from ..protocol.backoff import backoff_delay
from ..protocol.close_codes import CloseCode
from .config import ABNORMAL_CLOSURE, SERVICE_RESTART, TRY_AGAIN_LATER, ClientConfig
from .urls import round_order

__all__ = [
    "ReconnectPolicy",
    "Round",
    "RoundFailed",
    "close_meaning",
    "reconnect_delay",
    "reconnects_after",
    "refusal_is_final",
]

# What each close code means, for log lines and exception messages.
_CLOSE_MEANINGS: dict[int, str] = {
    CloseCode.NORMAL: "the relay ended the session",
    CloseCode.GOING_AWAY: "the relay is going away",
    CloseCode.PROTOCOL_ERROR: "protocol error",
    ABNORMAL_CLOSURE: "the connection dropped without a close frame",
    CloseCode.INVALID_PAYLOAD: "invalid UTF-8 in a text message",
    CloseCode.POLICY_VIOLATION: "policy violation",
    CloseCode.MESSAGE_TOO_BIG: "a message was too big for the relay",
    CloseCode.INTERNAL_ERROR: "internal error in the relay",
    SERVICE_RESTART: "the relay is restarting",
    TRY_AGAIN_LATER: "try again later",
    CloseCode.REPLACED: "replaced by a newer connection with the same id in the group",
    CloseCode.SLOW_CONSUMER: "too slow: this client's mailbox on the relay stayed full",
    CloseCode.MESSAGE_TRUNCATED: "a message was cut off because its sender left mid-message",
    CloseCode.KEEPALIVE_TIMEOUT: "keepalive timeout",
    CloseCode.BACKPLANE_UNAVAILABLE: (
        "the relay's backplane could not guarantee delivery: messages may be missing"
    ),
    CloseCode.REMOVED: "removed from the group by the application's back end",
    CloseCode.TOKEN_EXPIRED: "the access token expired: the client gets a new one "
    "(access_token) and reconnects",
    CloseCode.REVOKED: "the access token was revoked: do not reconnect with it",
}


def close_meaning(code: int) -> str:
    """What close code ``code`` means, in a few words (``"no meaning known"`` if unknown)."""
    return _CLOSE_MEANINGS.get(code, "no meaning known")


def reconnect_delay(
    attempt: int,
    *,
    min_delay: float,
    max_delay: float,
    jitter: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0 for the first).

    Exponential backoff, ``min_delay * 2**attempt`` capped at ``max_delay``, shortened by a
    random fraction of up to ``jitter`` so that many clients dropped at once do not come
    back at once (the package's one backoff, :func:`~trio_wsproxy.protocol.backoff.backoff_delay`).
    """
    return backoff_delay(attempt, first=min_delay, longest=max_delay, jitter=jitter, rand=rand)


def reconnects_after(code: int, config: ClientConfig) -> bool:
    """Whether a connection that ended with close code ``code`` is followed by a reconnect."""
    return config.reconnect and code in config.reconnect_codes


def refusal_is_final(status_code: int) -> bool:
    """Whether a relay that refused the WebSocket upgrade with HTTP ``status_code`` would
    refuse every retry too: a 4xx (bad id, wrong path, ...) is about the request, so it
    ends the client; a 5xx is the relay's trouble, so the next URL or round may do."""
    return status_code < 500


@attrs.frozen
class Round:
    """One round of connect attempts: what to try, after how long."""

    #: Indexes of the relay URLs, in the order to try them, each once.
    order: tuple[int, ...]
    #: Seconds to wait before the round; None for the first connection, tried at once.
    delay: float | None


class RoundFailed(enum.Enum):
    """What to do when every URL of a round failed to connect."""

    #: The client never connected: :func:`~.client.open_client` raises the failure.
    NEVER_CONNECTED = "never_connected"
    #: ``max_reconnect_attempts`` rounds failed in a row: the client ends with the failure.
    GIVE_UP = "give_up"
    #: Try another round, after :meth:`ReconnectPolicy.next_round`'s delay.
    RETRY = "retry"


@attrs.define
class ReconnectPolicy:
    """The reconnect decisions of one client, as a small state machine: which round comes
    next (:meth:`next_round`) and what a failed round means (:meth:`round_failed`),
    given what happened so far (:meth:`connected`)."""

    #: The client's settings: the delays and the attempts allowed.
    config: ClientConfig
    #: How many relay URLs the client has.
    url_count: int
    #: Whether a connection was ever made (the first connect failing is an error of its own).
    connected_once: bool = False
    #: Rounds in a row in which every relay URL failed; a connection resets it.
    failed_rounds: int = 0

    def next_round(self, current: int) -> Round:
        """The next round, ``current`` being the index of the URL connected to last."""
        if not self.connected_once:
            return Round(round_order(self.url_count, None), None)
        delay = reconnect_delay(
            self.failed_rounds,
            min_delay=self.config.reconnect_min_delay,
            max_delay=self.config.reconnect_max_delay,
            jitter=self.config.reconnect_jitter,
        )
        return Round(round_order(self.url_count, current), delay)

    def connected(self) -> None:
        """A round connected (and that connection has ended): backoff starts over."""
        self.connected_once = True
        self.failed_rounds = 0

    def round_failed(self) -> RoundFailed:
        """Every URL of the round just tried failed: what now (counts one failed round)."""
        if not self.connected_once:
            return RoundFailed.NEVER_CONNECTED
        self.failed_rounds += 1
        limit = self.config.max_reconnect_attempts
        if limit is not None and self.failed_rounds >= limit:
            return RoundFailed.GIVE_UP
        return RoundFailed.RETRY
