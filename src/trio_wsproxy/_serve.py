"""Serving a relay: choosing its registry (in-process, or the Redis backplane) and its
token secret, for the Python API and the command line."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from .backplane.redis import RedisBackplane
from .protocol.exceptions import raise_sole_error
from .relay.config import RelayConfig, check_token_secret
from .relay.groups import GroupRegistry, LocalRegistry
from .relay.relay import Relay, run_relay


async def serve_relay(
    config: RelayConfig | None = None,
    *,
    registry: GroupRegistry | None = None,
    task_status: trio.TaskStatus[Relay] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a relay until cancelled: ``relay = await nursery.start(serve_relay, config)``.

    The listeners are bound before ``nursery.start`` returns the :class:`Relay`.
    Cancelling closes every session with 1001 (each gets ``close_timeout`` to finish its
    close handshake) and then returns. Without ``registry``, the config's ``backplane``
    decides: the Redis backplane if one is set, else the in-process registry.
    """
    config = config or RelayConfig()
    if config.log_level is not None:
        logging.getLogger("trio_wsproxy").setLevel(config.log_level.upper())
    if registry is None:
        registry = choose_registry(config)
    await run_relay(config, registry, read_token_secret(config), task_status=task_status)


def choose_registry(config: RelayConfig) -> GroupRegistry:
    """The registry ``config`` asks for: the Redis backplane, or the in-process one."""
    if config.backplane is not None:
        return RedisBackplane(config.backplane, config.backplane_prefix, config.node_ttl)
    return LocalRegistry()


@asynccontextmanager
async def open_relay(config: RelayConfig | None = None) -> AsyncIterator[Relay]:
    """Run a relay for the duration of an ``async with`` block (tests, embedding)::

    async with open_relay(RelayConfig(port=0)) as relay:
        ...  # connect to relay.url
    """
    try:
        async with trio.open_nursery() as nursery:
            relay: Relay = await nursery.start(serve_relay, config)
            try:
                yield relay
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The relay itself does not fail; an error here almost always comes from the
        # caller's block, which should see its own exception, not a group of one.
        raise_sole_error(group)


def read_token_secret(config: RelayConfig) -> str | None:
    """The token secret ``config`` gives (directly or in a file); None when tokens are off.

    Raises OSError when the file cannot be read, and ValueError when it is empty or
    holds a secret shorter than :data:`~trio_wsproxy.relay.config.MIN_TOKEN_SECRET_BYTES`
    (leading and trailing whitespace, such as the final newline, is not part of it)."""
    if config.token_secret_file is None:
        return config.token_secret
    with open(config.token_secret_file, encoding="utf-8") as file:
        secret = file.read().strip()
    if not secret:
        raise ValueError(f"token secret file {config.token_secret_file!r} is empty")
    check_token_secret(secret, f"the secret in token secret file {config.token_secret_file!r}")
    return secret
