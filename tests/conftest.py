from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Generator, Iterator
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


class _Turns:
    """Whose turn it is to run, across pytest-xdist's workers: any number of tests at
    once, or one ``alone`` test with no other. Two locked files shared by the workers of
    one run: every test passes through the turnstile to take the room, an ``alone`` test
    keeps the turnstile until it has the room to itself, so the workers' next tests wait
    behind it instead of keeping it out for ever."""

    def __init__(self, directory: Path) -> None:
        self._turnstile = (directory / "turnstile").open("a")
        self._room = (directory / "room").open("a")

    @contextlib.contextmanager
    def held(self, alone: bool) -> Iterator[None]:
        fcntl.flock(self._turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(self._room, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(self._turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(self._room, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(self._turnstile, fcntl.LOCK_UN)


_TURNS: _Turns | None = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """A test marked ``alone`` asserts an upper bound on time (a group served within a
    second while another bursts, a timeout that fires within its margin): it runs while
    the other workers wait, so that what it measures is the relay and not the run's other
    tests. The rest run side by side."""
    global _TURNS
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:  # one process: one test at a time anyway
        return (yield)
    if _TURNS is None:
        # The workers of one run have their temporary directories in one (pytest-xdist's
        # basetemp; pytest's tmp_path_factory fixture reads the same attribute).
        shared = item.config._tmp_path_factory.getbasetemp().parent / "turns"
        shared.mkdir(exist_ok=True)
        _TURNS = _Turns(shared)
    with _TURNS.held(item.get_closest_marker("alone") is not None):
        return (yield)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """pytest-xdist's workers for ``-n auto`` (pyproject.toml's addopts): one more than
    the cores, at most 8. A test spends much of its time waiting (on a relay process
    starting, on a timeout it checks), which the extra worker fills: on 2 cores, 3
    workers ran the suite in 0.9 times as long as 2."""
    return min((os.cpu_count() or 1) + 1, 8)


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
    config.addinivalue_line(
        "markers", "alone: runs while no other test of the run does (_Turns, tests/conftest.py)"
    )


# What tests/test_docs.py checked, by kind: counted from the tests' reports, which reach
# this process from pytest-xdist's workers too, and printed at the end of the run.
_DOCUMENTATION_TALLY: Counter[str] = Counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        for name, value in report.user_properties:
            if name == "documentation examples":
                kind, count = value
                _DOCUMENTATION_TALLY[kind] += count


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _DOCUMENTATION_TALLY:
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(_DOCUMENTATION_TALLY.items()))
        terminalreporter.write_line(f"documentation examples: {counts}")


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
