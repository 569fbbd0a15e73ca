"""``trio-wsproxy serve --workers N``: one port, N relay processes, one supervisor."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import attrs
import pytest
import trio
import trio_websocket as tw

from redisserver import members_in_redis
from relayproc import Output, first_line
from trio_wsproxy import CloseCode, RelayConfig
from trio_wsproxy._cli import build_parser, config_from_args
from trio_wsproxy._workers import serve_flags

# Set for each test by _backplane (the suite's Redis, the test's own prefix).
BACKPLANE: tuple[str, ...] = ()
SERVE = (sys.executable, "-m", "trio_wsproxy", "serve")
# /proc/net/tcp states.
LISTEN = "0A"
ESTABLISHED = "01"
# Connections spread by SO_REUSEPORT's hash: all of them on one of two workers by
# chance happens once in 2**23 runs.
CONNECTIONS = 24


@pytest.fixture(autouse=True)
def _backplane(redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    flags = ("--backplane", redis_url, "--backplane-prefix", prefix)
    monkeypatch.setattr(sys.modules[__name__], "BACKPLANE", flags)


def _tcp_sockets() -> dict[int, tuple[int, str]]:
    """Every TCP socket of this network namespace: inode -> (local port, state)."""
    table: dict[int, tuple[int, str]] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(name).read_text().splitlines()[1:]:
            fields = line.split()
            table[int(fields[9])] = (int(fields[1].rsplit(":", 1)[1], 16), fields[3])
    return table


def sockets_on(pid: int, port: int, state: str) -> int:
    """How many TCP sockets with local port ``port`` in ``state`` process ``pid`` holds."""
    table = _tcp_sockets()
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed while we looked
        if target.startswith("socket:["):
            count += table.get(int(target[8:-1])) == (port, state)
    return count


def gone(pid: int) -> bool:
    """Whether process ``pid`` has exited and been reaped."""
    return not Path(f"/proc/{pid}").exists()


def is_running(pid: int) -> bool:
    try:
        return "trio_wsproxy" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


@attrs.frozen
class Supervisor:
    process: trio.Process
    line: str
    url: str
    port: int
    stderr: Output

    async def worker_pids(self) -> dict[int, int]:
        """Worker index -> pid, of the first process each place had."""
        pids = {}
        for index in (1, 2):
            match = await self.stderr.wait_for(rf"worker {index} \(pid (\d+)\) listening")
            pids[index] = int(match[1])
        return pids


@asynccontextmanager
async def supervisor(*flags: str) -> AsyncIterator[Supervisor]:
    """``serve --port 0 --workers 2`` with a backplane, logging at INFO, up and listening."""
    process = await trio.lowlevel.open_process(
        [*SERVE, "--port", "0", "--workers", "2", *BACKPLANE, "--log-level", "info", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    stderr = Output()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stderr.pump, process.stderr)
            line = await first_line(process.stdout, stderr)
            text = line.decode().strip()
            url = text.removeprefix("trio-wsproxy relay listening on ").split(" ")[0]
            port = urlsplit(url).port
            assert port is not None, text
            yield Supervisor(process, text, url, port, stderr)
            nursery.cancel_scope.cancel()
    finally:
        # Leave no process behind, whatever the test did.
        if process.returncode is None:
            process.terminate()
            with trio.move_on_after(10):
                await process.wait()
        started = re.findall(r"worker \d started \(pid (\d+)\)", stderr.text)
        for pid in map(int, started):
            if is_running(pid):
                os.kill(pid, signal.SIGKILL)
        if process.returncode is None:
            process.kill()
            await process.wait()


async def connect_many(stack: AsyncExitStack, url: str) -> None:
    for index in range(CONNECTIONS):
        await stack.enter_async_context(
            tw.open_websocket_url(f"{url}?id=m{index}&groupName=g{index}")
        )


def test_serve_flags_give_the_same_config_back() -> None:
    secret = "s3cret" * 6  # HS256 secrets are 32 bytes or longer
    config = RelayConfig(
        host="::1",
        port=0,
        path="/relay",
        max_message_size=1 << 20,
        ping_interval=None,
        healthz_path=None,
        slow_member_timeout=2.5,
        allowed_origins=("https://a.example", "https://b.example"),
        max_byte_rate=65536,
        log_level="info",
        backplane="redis://127.0.0.1:6379/0",
        workers=3,
        reuse_port=True,
        token_secret=secret,
    )
    flags = serve_flags(config)
    assert not any("s3cret" in flag for flag in flags)  # the secret travels in the environment
    args = build_parser().parse_args(["serve", *flags])
    assert config_from_args(args, {"TRIO_WSPROXY_TOKEN_SECRET": secret}) == config
    assert serve_flags(RelayConfig()) == []


async def test_two_workers_listen_on_one_port_and_both_serve_it() -> None:
    async with supervisor() as relay:
        assert relay.line == f"trio-wsproxy relay listening on {relay.url} (2 workers)"
        pids = await relay.worker_pids()
        assert len(set(pids.values())) == 2
        for pid in pids.values():
            assert sockets_on(pid, relay.port, LISTEN) == 1
        # The supervisor holds the port without listening: it is handed no connection.
        assert sockets_on(relay.process.pid, relay.port, LISTEN) == 0
        async with AsyncExitStack() as stack:
            await connect_many(stack, relay.url)
            served = [sockets_on(pid, relay.port, ESTABLISHED) for pid in pids.values()]
        assert sum(served) == CONNECTIONS
        assert all(served), served


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_stops_every_worker_and_the_supervisor_exits_0(signum: int) -> None:
    async with supervisor() as relay:
        pids = await relay.worker_pids()
        async with tw.open_websocket_url(f"{relay.url}?id=a&groupName=g") as member:
            relay.process.send_signal(signum)
            with pytest.raises(tw.ConnectionClosed) as info, trio.fail_after(10):
                await member.get_message()
            assert info.value.reason is not None
            assert info.value.reason.code == CloseCode.GOING_AWAY
        with trio.fail_after(10):
            assert await relay.process.wait() == 0
        for pid in pids.values():
            assert gone(pid)
        assert "restarting" not in relay.stderr.text  # no worker was taken for crashed


async def test_a_worker_that_does_not_stop_is_killed() -> None:
    async with supervisor("--close-timeout", "0.5") as relay:
        pids = await relay.worker_pids()
        os.kill(pids[1], signal.SIGSTOP)  # deaf to SIGTERM, not to SIGKILL
        relay.process.send_signal(signal.SIGTERM)
        with trio.fail_after(0.5 + 2 + 3):
            assert await relay.process.wait() == 0
        await relay.stderr.wait_for(
            rf"worker 1 \(pid {pids[1]}\) still running 2\.5s after SIGTERM: killing it"
        )
        for pid in pids.values():
            assert gone(pid)


async def test_a_killed_worker_is_reported_and_replaced() -> None:
    async with supervisor() as relay:
        pids = await relay.worker_pids()
        os.kill(pids[1], signal.SIGKILL)
        report = await relay.stderr.wait_for(
            rf"WARNING trio_wsproxy\.workers: worker 1 \(pid {pids[1]}\) was killed by "
            r"SIGKILL; restarting in 0\.1s"
        )
        match = await relay.stderr.wait_for(r"worker 1 \(pid (\d+)\) listening", report.end())
        replacement = int(match[1])
        assert replacement not in pids.values()
        assert sockets_on(replacement, relay.port, LISTEN) == 1
        assert gone(pids[1])
        async with AsyncExitStack() as stack:
            await connect_many(stack, relay.url)
            served = [sockets_on(pid, relay.port, ESTABLISHED) for pid in (replacement, pids[2])]
        assert sum(served) == CONNECTIONS
        assert all(served), served
        assert relay.process.returncode is None


async def test_workers_without_a_backplane_is_a_usage_error() -> None:
    result = await trio.run_process(
        [*SERVE, "--port", "0", "--workers", "2"], capture_stderr=True, check=False
    )
    assert result.returncode == 2
    assert b"workers > 1 needs a backplane" in result.stderr


async def test_a_port_in_use_is_a_one_line_error() -> None:
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(10):
            result = await trio.run_process(
                [*SERVE, "--port", str(port), "--workers", "2", *BACKPLANE],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert result.returncode == 1
    assert result.stdout == b""
    [line] = result.stderr.decode().splitlines()
    assert line.startswith("trio-wsproxy: cannot serve: ") and "in use" in line


async def test_a_worker_that_cannot_listen_makes_the_supervisor_give_up(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    tls = ("--certfile", missing, "--keyfile", missing)
    with trio.fail_after(15):
        result = await trio.run_process(
            [*SERVE, "--port", "0", "--workers", "2", *BACKPLANE, *tls],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 1
    assert result.stdout == b""
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr
    assert re.search(
        r"^trio-wsproxy: cannot serve: worker \d exited with code 1 before listening, "
        r"3 times in a row$",
        stderr.splitlines()[-1],
    ), stderr
    # Each worker's own error is there, and no place was started more than 3 times.
    assert 3 <= stderr.count("No such file or directory") <= 6


async def test_members_on_different_workers_reach_each_other(redis_url: str, prefix: str) -> None:
    async with supervisor() as relay, AsyncExitStack() as stack:
        pids = await relay.worker_pids()
        members = [
            await stack.enter_async_context(
                tw.open_websocket_url(f"{relay.url}?id=m{n}&groupName=g")
            )
            for n in range(12)
        ]
        served = [sockets_on(pid, relay.port, ESTABLISHED) for pid in pids.values()]
        assert all(served), f"the group should span both workers: {served}"
        # A member is registered in Redis (and its worker subscribed) before its upgrade
        # is answered: with every connection open, there is nothing left to wait for.
        assert await members_in_redis(redis_url, prefix, "g") == {f"m{n}" for n in range(12)}
        await members[0].send_message("across workers")
        await members[5].send_message(b"binary too")
        with trio.fail_after(10):
            for index, member in enumerate(members):
                got = [await member.get_message() for _ in range(1 if index in (0, 5) else 2)]
                # Two senders, maybe on two workers: each arrives, in either order.
                expected = {0: {b"binary too"}, 5: {"across workers"}}
                assert set(got) == expected.get(index, {"across workers", b"binary too"}), index
