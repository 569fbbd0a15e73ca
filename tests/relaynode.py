"""A relay in the test's nursery that the test can stop and start again on its port."""

from __future__ import annotations

from typing import Any

import trio

from trio_wsproxy import Relay, RelayConfig, open_relay


class RestartableRelay:
    """A relay that can be stopped and started again on the same port (a cluster's node
    that dies and comes back, a relay restarting under its clients)."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._scope: trio.CancelScope | None = None
        self._stopped = trio.Event()
        self.port = 0
        self.relay: Relay | None = None

    @property
    def url(self) -> str:
        assert self.relay is not None, "start the relay first"
        return self.relay.url

    async def start(self, **overrides: Any) -> Relay:
        self._scope, self._stopped = trio.CancelScope(), trio.Event()
        config = RelayConfig(port=self.port, **overrides)
        self.relay = await self._nursery.start(self._run, config, self._scope, self._stopped)
        self.port = self.relay.port
        return self.relay

    async def stop(self) -> None:
        """Stop the relay as a dying one would: every member is closed with 1001."""
        assert self._scope is not None
        self._scope.cancel()
        await self._stopped.wait()

    async def _run(
        self,
        config: RelayConfig,
        scope: trio.CancelScope,
        stopped: trio.Event,
        *,
        task_status: trio.TaskStatus[Relay] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            with scope:
                async with open_relay(config) as relay:
                    task_status.started(relay)
                    await trio.sleep_forever()
        finally:
            stopped.set()
