"""What the relay's parts need of the relay they run in, as a protocol: they are given
the relay itself, and see only this of it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .budget import TurnBudget
    from .config import RelayConfig
    from .counters import Counters
    from .groups import GroupRegistry
    from .revocations import Revocation


class RelayCore(Protocol):
    """The settings, counters, registry and fan-out budget of a relay: what anything
    that delivers messages to its groups needs (sessions, the HTTP API's posts)."""

    @property
    def config(self) -> RelayConfig: ...

    @property
    def counters(self) -> Counters: ...

    @property
    def registry(self) -> GroupRegistry: ...

    def revoke_here(self, revocation: Revocation) -> int:
        """Hold ``revocation`` and close the connections here that it covers (how many);
        nothing when the relay checks no tokens."""

    @property
    def checks_tokens(self) -> bool:
        """Whether connections present access tokens."""

    @property
    def budget(self) -> TurnBudget:
        """The relay's fan-out budget per scheduling turn."""
