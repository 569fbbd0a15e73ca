from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from trio_wsproxy import Relay, RelayConfig, open_relay


@pytest.fixture
async def relay(request: pytest.FixtureRequest) -> AsyncIterator[Relay]:
    """A relay on a free loopback port; ``@pytest.mark.relay_config(field=value)`` tunes it."""
    marker = request.node.get_closest_marker("relay_config")
    overrides = marker.kwargs if marker else {}
    async with open_relay(RelayConfig(port=0, **overrides)) as running:
        yield running


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "relay_config(**fields): RelayConfig for the relay fixture")
