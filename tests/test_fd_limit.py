"""Out of file descriptors, the relay waits: one warning now and then, the refused
accepts counted in /metrics, and connections accepted again once descriptors are free."""

from __future__ import annotations

import errno
import logging
import re
import subprocess
import sys

import pytest
import trio
import trio.testing

from relayproc import Output, first_line
from trio_wsproxy.relay.counters import Counters
from trio_wsproxy.relay.listeners import (
    RETRY_DELAY,
    WARNING_INTERVAL,
    PacedListener,
    paced,
)
from wsraw import RawClient

# Room for the interpreter's own descriptors (about ten) and a few dozen members.
FD_LIMIT = 64
# Far more connections than FD_LIMIT allows: reaching it without a refusal is a failure.
MOST_CONNECTIONS = 4 * FD_LIMIT
# How long the relay is kept at its limit with a connection waiting. trio.serve_listeners
# alone logs an ERROR with a traceback every 0.1 s of it.
AT_THE_LIMIT = 2.0
REFUSED = "cannot accept connections"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RECOVERED = r"accepting connections again \(failed accepts in the shortage: (\d+)\)"

RELAY = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, ({FD_LIMIT}, {FD_LIMIT}))
from trio_wsproxy._cli import main
main(["serve", "--port", "0"])
"""


async def join_or_wait(port: int, name: str, stderr: Output) -> tuple[RawClient, bool]:
    """Connect and ask to join: (the client, whether the relay answered 101) once it
    answers, or once the relay reports that it cannot accept (then the connection waits
    in its backlog, its request sent)."""
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    await client.send(
        f"GET /ws?id={name}&groupName=g HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    joined = False
    async with trio.open_nursery() as race:

        async def upgrade() -> None:
            nonlocal joined
            status, _headers, body = await client.read_response()
            assert status == 101, (status, body)
            joined = True
            race.cancel_scope.cancel()

        async def refused() -> None:
            await stderr.wait_for(REFUSED)
            race.cancel_scope.cancel()

        race.start_soon(upgrade)
        race.start_soon(refused)
    return client, joined


async def leave(member: RawClient) -> None:
    """Close ``member`` with a close handshake and wait until the relay has closed its
    end of the connection, so its descriptor is free again."""
    await member.send_frame(0x8, (1000).to_bytes(2, "big"))
    with trio.fail_after(10):
        await member.expect_close()
        with pytest.raises(EOFError):
            await member.recv_frame()
    await member.aclose()


async def scrape(port: int) -> str:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    await client.send(b"GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n")
    with trio.fail_after(10):
        status, _headers, body = await client.read_response()
    await client.aclose()
    assert status == 200
    return body.decode()


async def test_at_the_fd_limit_the_relay_warns_counts_and_accepts_again() -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", RELAY], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    stderr = Output()
    members: list[RawClient] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stderr.pump, process.stderr)
            line = await first_line(process.stdout, stderr)
            port = int(re.findall(rb":(\d+)/ws", line)[0])

            with trio.fail_after(60):
                for n in range(MOST_CONNECTIONS):
                    client, joined = await join_or_wait(port, f"m{n}", stderr)
                    if not joined:
                        break
                    members.append(client)
                else:
                    raise AssertionError(f"{MOST_CONNECTIONS} members and no refusal")
            assert 0 < len(members) < FD_LIMIT
            # The relay may have taken this last one with its last descriptor (and failed
            # at once on the next accept, which claims a descriptor before it looks for a
            # connection): either way none is left, and a connection now surely waits.
            maybe_waiting = client
            with trio.fail_after(10):
                waiting, joined = await join_or_wait(port, "waiting", stderr)
            assert not joined
            # The span measured, not a settle-wait: the relay keeps retrying meanwhile.
            await trio.sleep(AT_THE_LIMIT)

            # Descriptors free: the waiting connections are accepted and upgraded.
            async with trio.open_nursery() as leaving:
                for member in members[-10:]:
                    leaving.start_soon(leave, member)
            del members[-10:]
            with trio.fail_after(10):
                for client in (maybe_waiting, waiting):
                    members.append(client)
                    status, _headers, body = await client.read_response()
                    assert status == 101, (status, body)
            recovered = await stderr.wait_for(RECOVERED)
            # Ten tries a second for AT_THE_LIMIT seconds; fewer on a loaded machine.
            assert 3 <= int(recovered[1]) <= 2 * AT_THE_LIMIT / RETRY_DELAY + 5
            metrics = await scrape(port)
            [counted] = re.findall(r"^trio_wsproxy_accept_failures_total (\d+)\.0$", metrics, re.M)
            assert int(counted) >= int(recovered[1])
            # And it accepts as before.
            with trio.fail_after(10):
                members.append(await RawClient.open(port, "/ws?id=late&groupName=g"))
            nursery.cancel_scope.cancel()
    finally:
        for member in members:
            await member.aclose()
        process.kill()
        await process.wait()
    assert "Traceback" not in stderr.text
    assert "ERROR" not in stderr.text
    warnings = [line for line in stderr.text.splitlines() if "WARNING" in line]
    # One when the shortage began, one when it ended; while ten descriptors are freed at
    # once, the relay may run short once more in between and say so (two lines more).
    assert 2 <= len(warnings) <= 4, stderr.text
    assert REFUSED in warnings[0] and "EMFILE" in warnings[0]
    assert "(failed accepts since the shortage began: 1)" in warnings[0]
    for warning in warnings:
        assert REFUSED in warning or re.search(RECOVERED, warning), warning


class Refusing(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose accept fails with ``error`` ``count`` times, then accepts."""

    def __init__(self, count: int, error: int = errno.EMFILE) -> None:
        self.count = count
        self.error = error
        self.attempts = 0
        self.closed = False

    async def accept(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        self.attempts += 1
        if self.attempts <= self.count:
            raise OSError(self.error, "refused")
        stream, _ = trio.testing.memory_stream_pair()
        return stream

    async def aclose(self) -> None:
        self.closed = True


def shortage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "trio_wsproxy.relay" and record.levelno == logging.WARNING
    ]


@pytest.mark.parametrize("error", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
async def test_a_shortage_is_retried_paced_and_counted(
    error: int, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    counters = Counters()
    inner = Refusing(45, error)
    listener = PacedListener(inner, counters)
    start = trio.current_time()
    await listener.accept()
    elapsed = trio.current_time() - start
    assert inner.attempts == 46
    assert counters.accept_failures == 45
    # 0.1 s between tries, never a busy loop: 45 waits, 4.5 s.
    assert elapsed == pytest.approx(45 * RETRY_DELAY)
    lines = shortage_lines(caplog)
    name = errno.errorcode[error]
    # 4.5 s is inside one warning interval: the first failure's warning, and the end.
    assert len(lines) == 2, lines
    assert name in lines[0] and "(failed accepts since the shortage began: 1)" in lines[0]
    assert lines[1] == "accepting connections again (failed accepts in the shortage: 45)"
    await listener.aclose()
    assert inner.closed


async def test_a_long_shortage_warns_once_per_interval_with_the_count_since_the_last(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    counters = Counters()
    # Tries at 0, 0.1, ... s: the 300 failures span 29.9 s, three warning intervals.
    listener = PacedListener(Refusing(300), counters)
    await listener.accept()
    assert counters.accept_failures == 300
    lines = shortage_lines(caplog)
    per_interval = round(WARNING_INTERVAL / RETRY_DELAY)  # 100
    assert len(lines) == 4, lines
    assert lines[0].endswith("(failed accepts since the shortage began: 1)")
    for line in lines[1:3]:
        count = int(re.findall(r"\(failed accepts since the last warning: (\d+)\)$", line)[0])
        # 100 tries in ten seconds; one more when the float clock lands a hair short.
        assert count in (per_interval, per_interval + 1), line
    assert lines[3] == "accepting connections again (failed accepts in the shortage: 300)"


async def test_the_listeners_of_one_relay_warn_together(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    counters = Counters()
    listeners = paced([Refusing(20), Refusing(20)], counters)
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(listener.accept)
    assert counters.accept_failures == 40
    lines = shortage_lines(caplog)
    assert len(lines) == 2, lines  # not one pair per listener
    assert lines[1] == "accepting connections again (failed accepts in the shortage: 40)"


async def test_other_accept_errors_propagate_uncounted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counters = Counters()
    listener = PacedListener(Refusing(1, errno.EBADF), counters)
    with pytest.raises(OSError) as info:
        await listener.accept()
    assert info.value.errno == errno.EBADF
    assert counters.accept_failures == 0
    assert not shortage_lines(caplog)


async def test_no_shortage_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    counters = Counters()
    listener = PacedListener(Refusing(0), counters)
    for _ in range(3):
        await listener.accept()
    assert counters.accept_failures == 0
    assert not shortage_lines(caplog)
