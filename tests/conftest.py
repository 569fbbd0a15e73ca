from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from loglines import LogLines, log_lines
from redisserver import SHARED, RedisServer, ping
from trio_wsproxy import Relay

pytest_plugins = ["pytester"]

# The properties are specifications of behaviour, not of speed: a machine busy with other
# work must not turn a slow example into a failure (hypothesis' default deadline is 200 ms).
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")

# The suite's subprocesses are started with fork(), not vfork(). Twice in a day's full
# runs on a 2-core machine, a child started with vfork() by one of several threads at
# once (the documentation tests' pool) failed its exec with EFAULT ("Bad address") for
# the interpreter's own path; a fork()ed child has its own copy of what it execs.
# (CPython 3.11's private switch; the spawns cost a few milliseconds more, for a
# process of the suite's size.)
if hasattr(subprocess, "_USE_VFORK"):
    subprocess._USE_VFORK = False


@pytest.fixture
async def relay(wsproxy_relay: Relay) -> Relay:
    """The plugin's relay under a shorter name; tune it with @pytest.mark.wsproxy_relay."""
    return wsproxy_relay


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: the one at 127.0.0.1:6379 where it runs, else a private
    ``redis-server`` on a free port, else a skip that says why (a failure on CI)."""
    if ping(*SHARED):
        yield "redis://{}:{}/0".format(*SHARED)
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def private_redis(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may stop and restart; extra server
    settings come from ``@pytest.mark.redis_config("--name", "value", ...)``."""
    marker = request.node.get_closest_marker("redis_config")
    server = RedisServer(tmp_path, *(marker.args if marker else ()))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prefix() -> str:
    """Keys and channels of this test's cluster only."""
    return f"test-{uuid.uuid4().hex[:12]}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "redis_config(*args): settings of private_redis")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Close the session's Chromium, if a test opened one (tests/browserdriver.py)."""
    browserdriver = sys.modules.get("browserdriver")
    if browserdriver is not None:
        browserdriver.shutdown()


@pytest.fixture
def backplane_log() -> Iterator[LogLines]:
    """What the backplane logs at INFO and above during the test."""
    with log_lines("trio_wsproxy.backplane") as lines:
        yield lines


@pytest.fixture
def relay_log() -> Iterator[LogLines]:
    """What the relay (its sessions) logs at INFO and above during the test."""
    with log_lines("trio_wsproxy.relay") as lines:
        yield lines
