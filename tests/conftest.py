from __future__ import annotations

import pytest

from trio_wsproxy import Relay

pytest_plugins = ["pytester"]


@pytest.fixture
async def relay(wsproxy_relay: Relay) -> Relay:
    """The plugin's relay under a shorter name; tune it with @pytest.mark.wsproxy_relay."""
    return wsproxy_relay
