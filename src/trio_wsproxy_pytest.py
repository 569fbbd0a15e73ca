"""pytest plugin (registered through the ``pytest11`` entry point): the ``wsproxy_relay``
and ``wsproxy_client`` fixtures for pytest-trio tests.

Nothing here imports Trio or the relay until a test asks for a fixture, so test sessions
that do not use them are not slowed down. One thing it does for every Trio test: a skip or
xfail keeps the reason it was given (see :func:`pytest_pyfunc_call`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from trio_wsproxy import Relay
    from trio_wsproxy.testing import ClientFactory

_FIXTURES = frozenset({"wsproxy_relay", "wsproxy_client"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "wsproxy_relay(**fields): RelayConfig fields for this test's wsproxy_relay "
        "(e.g. mailbox_bytes=65536, ping_interval=0.5)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    used = _FIXTURES.intersection(getattr(item, "fixturenames", ()))
    if not used:
        return
    if not item.config.pluginmanager.hasplugin("trio"):
        pytest.fail(
            f"{', '.join(sorted(used))} need pytest-trio: pip install pytest-trio",
            pytrace=False,
        )
    if item.get_closest_marker("trio") is None:
        pytest.fail(
            f"{', '.join(sorted(used))} run in Trio: make this an async test and mark it "
            "@pytest.mark.trio, or set trio_mode = true in your pytest configuration",
            pytrace=False,
        )


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """Report a skip or xfail from inside a Trio test with the reason it was given.

    Trio wraps an exception that leaves a task in an exception group, so a
    ``pytest.skip(reason)`` inside a nursery (a pytest-trio test and its fixtures always
    run in one) reaches pytest-trio as a group. pytest-trio then raises a new, empty
    ``pytest.skip()`` in its place, and ``pytest -ra`` says ``Skipped`` at a line of
    pytest's own instead of the reason at the line that skipped. This raises the original
    one instead; any other outcome passes through untouched.
    """
    try:
        return (yield)
    except (pytest.skip.Exception, pytest.xfail.Exception) as outcome:
        original = _sole_outcome_in_group(outcome)
        if original is None:
            raise
        raise original from None


def _sole_outcome_in_group(outcome: BaseException) -> BaseException | None:
    """The exception of the same kind that ``outcome`` replaced, if it was raised without a
    reason while handling a group whose only exception is that one; else None."""
    group = outcome.__context__
    if getattr(outcome, "msg", None) or not isinstance(group, BaseExceptionGroup):
        return None
    from trio_wsproxy.protocol.exceptions import sole_error

    original = sole_error(group)
    return original if type(original) is type(outcome) else None


@pytest.fixture
async def wsproxy_relay(request: pytest.FixtureRequest) -> AsyncIterator[Relay]:
    """A fresh relay for this test on an ephemeral loopback port, in the test's nursery.

    Tune it with ``@pytest.mark.wsproxy_relay(field=value, ...)`` (any RelayConfig field).
    """
    from trio_wsproxy import RelayConfig, open_relay

    marker = request.node.get_closest_marker("wsproxy_relay")
    fields: dict[str, Any] = {"host": "127.0.0.1", "port": 0, **(marker.kwargs if marker else {})}
    async with open_relay(RelayConfig(**fields)) as relay:
        yield relay


@pytest.fixture
async def wsproxy_client(wsproxy_relay: Relay) -> AsyncIterator[ClientFactory]:
    """A factory of typed clients connected to ``wsproxy_relay``:
    ``client = await wsproxy_client(group="lobby", id=None, types=..., config=...)``.
    Every client is closed (code 1000) at the end of the test."""
    from trio_wsproxy.testing import client_factory

    async with client_factory(wsproxy_relay) as make:
        yield make
