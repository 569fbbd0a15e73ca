"""Real Redis servers for the backplane tests: the shared one where it runs, or a
private ``redis-server`` on a free port that a test can stop, restart and reconfigure."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import trio

from trio_wsproxy.backplane.connection import RedisConnection
from trio_wsproxy.backplane.names import PROTOCOL_VERSION
from trio_wsproxy.protocol.resp import RedisAddress, Reply

SHARED = ("127.0.0.1", 6379)


def ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis answers PING at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def unavailable(reason: str) -> None:
    """Skip, saying why, except on CI, where a missing Redis fails the run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must not skip the backplane tests)")
    pytest.skip(reason)


class RedisServer:
    """A ``redis-server`` of the test's own, on a free loopback port."""

    def __init__(self, directory: Path, *config: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not installed")
        assert binary is not None
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.config = list(config)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (again) on the same port, and wait until it answers."""
        assert self.process is None
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.directory), *self.config]
        self.process = spawn(argv, self.port, "redis-server")

    def stop(self) -> None:
        """Kill it (as a crash would: clients see their connections drop)."""
        kill(self.process)
        self.process = None

    def command(self, *args: str) -> bytes:
        """Run one command on a fresh connection; the raw reply."""
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            parts.append(f"${len(arg.encode())}\r\n{arg}\r\n".encode())
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"".join(parts))
            return sock.recv(65536)


async def redis_call(url: str, *args: str) -> Reply:
    """Run one command on a connection of its own; the reply."""
    address = RedisAddress.from_url(url)
    connection = await RedisConnection.connect(address, 5)
    async with trio.open_nursery() as nursery:
        await nursery.start(connection.run, address, 5)
        reply = await connection.call(*args)
        nursery.cancel_scope.cancel()
    return reply


async def members_in_redis(url: str, prefix: str, group: str) -> set[str]:
    """The member ids the cluster under ``prefix`` has registered in ``group``."""
    reply = await redis_call(url, "HKEYS", f"{prefix}:v{PROTOCOL_VERSION}:members:{group}")
    assert isinstance(reply, list)
    return {item.decode() for item in reply if isinstance(item, bytes)}


async def subscribers(url: str, channel: str) -> int:
    """How many connections are subscribed to ``channel`` (PUBSUB NUMSUB)."""
    reply = await redis_call(url, "PUBSUB", "NUMSUB", channel)
    assert isinstance(reply, list) and len(reply) == 2 and isinstance(reply[1], int), reply
    return reply[1]


def spawn(argv: list[str], port: int, what: str) -> subprocess.Popen[bytes]:
    """Start a Redis (or Sentinel) process that listens on ``port``; return once it
    answers a PING (RuntimeError naming ``what`` if it exits or is silent for 10 s)."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not ping("127.0.0.1", port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{what} did not start on port {port}")
        time.sleep(0.02)
    return process


def kill(process: subprocess.Popen[bytes] | None) -> None:
    """kill -9 ``process``, if running, and reap it."""
    if process is not None:
        process.kill()
        process.wait()
