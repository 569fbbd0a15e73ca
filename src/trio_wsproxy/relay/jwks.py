"""An identity provider's published keys (``--jwks-url``): fetched, cached, refreshed.

Identity providers (Keycloak, Auth0, Cognito, Entra) publish the public keys their tokens
are signed with as a JSON Web Key Set, and rotate them: a new key appears, tokens signed
with it follow, the old key goes later. So the relay:

- fetches the set as it starts (before it listens), and again every
  ``refresh_interval`` seconds;
- fetches it again at once when a token names a key id (``kid``) it does not know — at
  most once per :data:`REFETCH_INTERVAL`, so that tokens naming made-up ids cannot make
  it hammer the provider — and the handshake that met the token waits for that fetch
  (bounded by the fetch's timeout);
- keeps serving the keys it has while the provider is unreachable or answers nonsense,
  with a warning per failed fetch: a token signed with a known key is still checked; a
  relay that never got the set refuses the provider's tokens (401) until it does.

The HTTP client is httpx (on Trio through anyio): a well-kept client with a connection
pool, timeouts and TLS verification, which the hooks of the back end use too.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import trio

from .counters import Counters

logger = logging.getLogger("trio_wsproxy.relay")

#: The least time between two fetches asked for by unknown key ids.
REFETCH_INTERVAL = 10.0
#: The algorithms a published key may be for (the relay's, as for a key file).
ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA"})


class JwksKeys:
    """The key set published at ``url``, by key id (a :class:`KeySet` for the relay's
    :class:`~trio_wsproxy.protocol.tokens.TokenVerifier`). :meth:`run` keeps it fresh."""

    def __init__(
        self,
        url: str,
        refresh_interval: float = 300.0,
        timeout: float = 5.0,
        refetch_interval: float = REFETCH_INTERVAL,
    ) -> None:
        self.url = url
        self._refresh_interval = refresh_interval
        self._refetch_interval = refetch_interval
        self._timeout = timeout
        self._keys: dict[str, tuple[Any, str]] = {}
        self._client: Any = None
        self._lock = trio.Lock()
        self._last_fetch = -math.inf
        #: Where its fetches are counted, by outcome (the relay gives its own).
        self.counters = Counters()

    def get(self, kid: str) -> tuple[Any, str] | None:
        return self._keys.get(kid)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fetch the set, then keep it fresh until cancelled."""
        import httpx

        async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=True) as client:
            self._client = client
            await self.fetch()
            task_status.started()
            while True:
                await trio.sleep(self._refresh_interval if self._keys else self._refetch_interval)
                await self.fetch()

    async def unknown(self, kid: str) -> None:
        """A token names the key ``kid``, which the set lacks: fetch the set again, unless
        that was done less than ``refetch_interval`` (REFETCH_INTERVAL) ago."""
        interval = self._refetch_interval
        if trio.current_time() - self._last_fetch < interval or self._client is None:
            return
        async with self._lock:
            if kid not in self._keys and trio.current_time() - self._last_fetch >= interval:
                await self.fetch()

    async def fetch(self) -> bool:
        """Fetch the set now; on failure, keep what is held (and say so)."""
        import httpx
        import jwt

        self._last_fetch = trio.current_time()
        try:
            response = await self._client.get(self.url)
            response.raise_for_status()
            keys = {}
            for key in jwt.PyJWKSet.from_dict(response.json()).keys:
                algorithm = key.algorithm_name
                if key.key_id and algorithm in ALGORITHMS:
                    keys[key.key_id] = (key.key, algorithm)
            if not keys:
                raise ValueError("no key with an id for RS256, ES256 or EdDSA")
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            self.counters.jwks_fetches["failed"] += 1
            held = f"the {len(self._keys)} keys fetched before" if self._keys else "no keys"
            logger.warning("JWKS %s: %s: serving %s", self.url, exc, held)
            return False
        self.counters.jwks_fetches["ok"] += 1
        if keys.keys() != self._keys.keys():
            logger.info("JWKS %s: keys %s", self.url, ", ".join(sorted(keys)))
        self._keys = keys
        return True
