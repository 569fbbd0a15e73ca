"""Three Redis servers (a master and two replicas) and three sentinels of a test's own,
on free loopback ports, with Sentinel's timings cut short so that a failover takes about
a second: the ground for the Sentinel tests and ``benchmarks/sentinel_failover.py``."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import trio

from redisserver import RedisServer, free_port, kill, redis_call, spawn, unavailable

SERVICE = "relaymaster"
#: Sentinel's timings here: a master silent this long is down (ms), and a failover that
#: has not finished in this long is retried by another sentinel (ms).
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


class Sentinel:
    """One ``redis-server --sentinel`` on a free port (its config file rewritten by it)."""

    def __init__(self, binary: str, directory: Path, master_port: int) -> None:
        self.port = free_port()
        self.directory = directory
        self.conf = directory / f"sentinel-{self.port}.conf"
        self.id = os.urandom(20).hex()
        self.master_port = master_port
        self.configure()
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None

    def configure(self, replicas: tuple[int, ...] = (), others: tuple[Sentinel, ...] = ()) -> None:
        """Write its config file: the master, Sentinel's timings, and (so that it need
        not wait seconds for the hello messages) the replicas and the other sentinels."""
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.directory}",
            f"logfile {self.directory}/sentinel-{self.port}.log",
            f"sentinel myid {self.id}",
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 2",
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {SERVICE} 2",
        ]
        lines += [f"sentinel known-replica {SERVICE} 127.0.0.1 {port}" for port in replicas]
        lines += [
            f"sentinel known-sentinel {SERVICE} 127.0.0.1 {other.port} {other.id}"
            for other in others
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        assert self.process is None
        argv = [self.binary, str(self.conf), "--sentinel"]
        self.process = spawn(argv, self.port, "the sentinel")

    def stop(self) -> None:
        """kill -9."""
        kill(self.process)
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class SentinelSet:
    """A master, two replicas and three sentinels watching them as ``SERVICE``."""

    def __init__(self, directory: Path) -> None:
        self.redis = [RedisServer(directory)]
        master = self.redis[0]
        for _ in range(2):
            replica = RedisServer(directory, "--replicaof", "127.0.0.1", str(master.port))
            self.redis.append(replica)
        for server in self.redis:
            # (A master waits 5 s for more replicas before a diskless sync by default.)
            server.config += ["--dbfilename", f"dump-{server.port}.rdb"]
            server.config += ["--repl-diskless-sync-delay", "0"]
        self.sentinels = [Sentinel(master.binary, directory, master.port) for _ in range(3)]
        replicas = tuple(server.port for server in self.redis[1:])
        for sentinel in self.sentinels:
            sentinel.configure(replicas, tuple(s for s in self.sentinels if s is not sentinel))
        self.paused: list[RedisServer] = []

    def start(self) -> None:
        for server in self.redis:
            server.start()
        for sentinel in self.sentinels:
            sentinel.start()

    def stop(self) -> None:
        for server in self.paused:
            assert server.process is not None
            server.process.send_signal(signal.SIGCONT)
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.redis:
            server.stop()

    def url(self, *, dead_first: bool = False, db: int = 0) -> str:
        """The relay's ``--backplane`` URL (``dead_first``: a sentinel address where
        nothing listens comes first, to be skipped)."""
        hosts = [f"127.0.0.1:{s.port}" for s in self.sentinels]
        if dead_first:
            hosts.insert(0, f"127.0.0.1:{free_port()}")
        return f"redis+sentinel://{','.join(hosts)}/{SERVICE}/{db}"

    async def master_port(self, sentinel: Sentinel | None = None) -> int:
        """The master's port, as a (live) sentinel says."""
        for each in [sentinel] if sentinel else self.sentinels:
            if each.process is None:
                continue
            reply = await redis_call(each.url, "SENTINEL", "get-master-addr-by-name", SERVICE)
            assert isinstance(reply, list) and isinstance(reply[1], bytes), reply
            return int(reply[1])
        raise AssertionError("no sentinel is running")

    def server(self, port: int) -> RedisServer:
        return next(server for server in self.redis if server.port == port)

    async def ready(self) -> None:
        """Wait until every sentinel is connected to the master, the two replicas and the
        other sentinels, and has heard from each (a failover needs a quorum that knows
        where to go), and the replicas are in sync (one still loading is no candidate)."""
        views: dict[int, object] = {}
        try:
            with trio.fail_after(30):
                for sentinel in self.sentinels:
                    while True:  # (no event to wait for: other processes' state)
                        seen = await self._sees_all(sentinel)
                        if seen is True:
                            break
                        views[sentinel.port] = seen
                        await trio.sleep(0.05)
                for server in self.redis[1:]:
                    while True:
                        info = server.command("INFO", "replication")
                        if b"master_link_status:up" in info:
                            break
                        views[server.port] = info
                        await trio.sleep(0.05)
        except trio.TooSlowError:
            raise AssertionError(f"the sentinel set is not ready: {views!r}") from None

    async def _sees_all(self, sentinel: Sentinel) -> bool | dict[str, list[bytes]]:
        """True when ``sentinel`` sees every instance fresh and well; else what it sees."""

        def flags(reply: object) -> list[bytes]:
            assert isinstance(reply, list), reply
            instances = [reply] if reply and isinstance(reply[0], bytes) else reply
            found = []
            for instance in instances:
                fields = dict(zip(instance[::2], instance[1::2], strict=True))
                # (Heard from within the last second, and nothing amiss.)
                fresh = int(fields.get(b"last-ok-ping-reply", b"9999")) < 1000
                found.append(fields.get(b"flags", b"") if fresh else b"stale")
            return found

        master = flags(await redis_call(sentinel.url, "SENTINEL", "master", SERVICE))
        replicas = flags(await redis_call(sentinel.url, "SENTINEL", "replicas", SERVICE))
        others = flags(await redis_call(sentinel.url, "SENTINEL", "sentinels", SERVICE))
        if master == [b"master"] and replicas == [b"slave"] * 2 and others == [b"sentinel"] * 2:
            return True
        return {"master": master, "replicas": replicas, "sentinels": others}

    async def wait_master_not(self, port: int) -> int:
        """Wait until the live sentinels name a master other than ``port``; the new one's."""
        with trio.fail_after(30):
            while True:
                now = await self.master_port()
                if now != port:
                    return now
                await trio.sleep(0.05)

    def kill_master(self, port: int) -> None:
        self.server(port).stop()

    def pause(self, port: int) -> None:
        server = self.server(port)
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        self.paused.append(server)

    def resume(self, port: int) -> None:
        server = self.server(port)
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGCONT)
        self.paused.remove(server)

    async def role(self, port: int) -> bytes:
        reply = await redis_call(f"redis://127.0.0.1:{port}/0", "ROLE")
        assert isinstance(reply, list) and isinstance(reply[0], bytes), reply
        return reply[0]


def sentinel_set(directory: Path) -> SentinelSet:
    """A started set (skipped, saying why, without redis-server)."""
    import shutil

    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed")
    servers = SentinelSet(directory)
    servers.start()
    return servers
