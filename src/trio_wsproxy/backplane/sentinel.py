"""Finding the master through Redis Sentinel, and following it when it fails over.

``--backplane redis+sentinel://[[user]:password@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]``
names the sentinels that watch the master called SERVICE (the URL form of the Python
Redis world). The node asks them in turn (one that is down is skipped) where the master
is (``SENTINEL get-master-addr-by-name``), connects there and checks that it is a master
(``ROLE``): a sentinel that has not yet heard of a failover, or a master that came back
as a replica, is not followed. The credentials and the database are the master's; the
sentinels are asked without them.

While the node is connected, :class:`SentinelWatch` stays subscribed to ``+switch-master``
on one sentinel (the next when that one goes away): when the master moves, the node drops
the old one at once instead of waiting for its connection to fail or fall silent, and a
node waiting to reconnect is woken. Losing every sentinel costs nothing while the master
is reachable; the node only needs them to find the master again.

What a failover costs the cluster's members, and why, is in ``docs/scaling.md``: the new
master is another lineage of the data (``history.py`` keys each history to the master's
run and replication ids), so every history starts a new epoch there, and a member
recovering across a failover is told ``epoch_changed``, never given a gap.
"""

from __future__ import annotations

import logging

import trio

from ..protocol.backoff import Backoff
from ..protocol.exceptions import first_leaf, leaves
from ..protocol.resp import ConnectionLost, ProtocolViolation, RedisAddress, RedisError
from ..protocol.sentinel_url import SentinelAddress
from .connection import RedisConnection, cancelled_first

logger = logging.getLogger("trio_wsproxy.backplane")

#: How long one sentinel has to answer before the next is asked (seconds).
ASK_TIMEOUT = 1.0
#: How often the watching connection pings its sentinel (it must hear from it within
#: twice that, or it moves on to the next).
WATCH_PING = 1.0


class NoMaster(ConnectionError):
    """No sentinel could say where a master is, or the one named is not a master."""


async def _ask(sentinel: tuple[str, int], *args: str) -> object:
    """One command to one sentinel, on a connection of its own."""
    address = RedisAddress(sentinel[0], sentinel[1], 0)
    connection = await RedisConnection.connect(address, ASK_TIMEOUT)
    async with trio.open_nursery() as nursery:
        await nursery.start(connection.run, address, ASK_TIMEOUT)
        with trio.fail_after(ASK_TIMEOUT):
            reply = await connection.call(*args)
        nursery.cancel_scope.cancel()
    return reply


def _master_reply(reply: object, service: str) -> tuple[str, int]:
    if reply is None:
        raise NoMaster(f"the sentinel knows no master named {service!r}")
    if not (
        isinstance(reply, list)
        and len(reply) == 2
        and isinstance(reply[0], bytes)
        and isinstance(reply[1], bytes)
        and reply[1].isdigit()
    ):
        raise ProtocolViolation(f"unexpected reply to SENTINEL get-master-addr-by-name: {reply!r}")
    return reply[0].decode(), int(reply[1])


#: What asking one sentinel may fail with: the next one is asked.
_SENTINEL_FAILURES = (
    OSError,
    trio.TooSlowError,
    ConnectionLost,
    RedisError,
    ProtocolViolation,
    NoMaster,
)


async def verify_master(pub: RedisConnection, where: RedisAddress) -> None:
    """NoMaster unless the Redis on ``pub`` says it is a master (``ROLE``)."""
    role = await pub.call("ROLE")
    kind = role[0] if isinstance(role, list) and role else None
    if kind != b"master":
        said = kind.decode(errors="replace") if isinstance(kind, bytes) else repr(role)
        raise NoMaster(
            f"{where.host}:{where.port} is a {said}, not a master (a failover in progress?)"
        )


class SentinelWatch:
    """Where the sentinels say the master is, and word of a failover as it happens."""

    def __init__(self, address: SentinelAddress) -> None:
        self.address = address
        #: Where the master is, as the sentinels said last (None until one said).
        self.master: tuple[str, int] | None = None
        self._moved = trio.Event()
        #: The sentinel asked first next time: the last one that answered.
        self._first = 0
        #: The sentinel whose +switch-master this node follows now (None: none).
        self.watching: tuple[str, int] | None = None

    @property
    def description(self) -> str:
        hosts = ",".join(f"{host}:{port}" for host, port in self.address.sentinels)
        return f"the master {self.address.service!r} of the sentinels {hosts}"

    def _order(self) -> list[tuple[str, int]]:
        sentinels = list(self.address.sentinels)
        return sentinels[self._first :] + sentinels[: self._first]

    async def locate(self) -> RedisAddress:
        """Ask the sentinels in turn where the master is (one that is down or does not
        know is skipped); NoMaster saying why each failed when none can tell."""
        failures = []
        for sentinel in self._order():
            try:
                reply = await _ask(
                    sentinel, "SENTINEL", "get-master-addr-by-name", self.address.service
                )
                host, port = _master_reply(reply, self.address.service)
            except (*_SENTINEL_FAILURES, BaseExceptionGroup) as exc:
                cancelled_first(exc)
                if not all(isinstance(leaf, _SENTINEL_FAILURES) for leaf in leaves(exc)):
                    raise
                failure = first_leaf(exc)
                failures.append(f"{sentinel[0]}:{sentinel[1]}: {failure or type(failure).__name__}")
                continue
            self._first = self.address.sentinels.index(sentinel)
            self._note((host, port))
            return self.address.master(host, port)
        raise NoMaster("no sentinel says where the master is (" + "; ".join(failures) + ")")

    def distrust(self) -> None:
        """The last sentinel that answered named a Redis that is no master (it has not
        heard of a failover yet): ask the next one first next time."""
        self._first = (self._first + 1) % len(self.address.sentinels)

    def _note(self, master: tuple[str, int]) -> None:
        if master != self.master:
            self.master = master
            self._moved.set()
            self._moved = trio.Event()

    async def wait_moved(self) -> None:
        """Wait until the sentinels name another master than they did last."""
        await self._moved.wait()

    async def moved_from(self, address: RedisAddress) -> None:
        """Return once the sentinels name another master than ``address``."""
        while self.master in (None, (address.host, address.port)):
            await self.wait_moved()

    async def run(self) -> None:
        """Stay subscribed to ``+switch-master`` on one of the sentinels, the next one when
        it goes away (backing off once all failed), until cancelled."""
        backoff = Backoff(0.1, 5.0, jitter=0.5)
        logged = False
        while True:
            for sentinel in self._order():
                try:
                    await self._watch(sentinel, backoff)
                except (*_SENTINEL_FAILURES, BaseExceptionGroup) as exc:
                    cancelled_first(exc)
                    if not all(isinstance(leaf, _SENTINEL_FAILURES) for leaf in leaves(exc)):
                        raise
                    if self.watching is not None:
                        logged = False  # (it worked since the last warning)
                        logger.info("sentinel %s:%d lost: %s", *sentinel, first_leaf(exc))
                    self.watching = None
            if not logged:
                logger.warning(
                    "no sentinel of %s can be watched for failovers; retrying with backoff "
                    "(the node stays on the master it has)",
                    self.description,
                )
                logged = True
            await trio.sleep(backoff.next_delay())

    async def _watch(self, sentinel: tuple[str, int], backoff: Backoff) -> None:
        address = RedisAddress(sentinel[0], sentinel[1], 0)
        sub = await RedisConnection.connect(address, ASK_TIMEOUT, self._on_message)
        async with trio.open_nursery() as nursery:
            await nursery.start(sub.run, address, 2 * WATCH_PING)
            with trio.fail_after(ASK_TIMEOUT):
                await sub.subscribe(b"+switch-master")
            # Subscribed: a switch from here on comes on the channel; one made before is
            # in the sentinel's answer.
            service = self.address.service
            reply = await _ask(sentinel, "SENTINEL", "get-master-addr-by-name", service)
            self._note(_master_reply(reply, service))
            backoff.reset()
            self.watching = sentinel
            logger.info("sentinel: watching %s:%d for failovers", *sentinel)
            while True:
                await trio.sleep(WATCH_PING)
                sub.send_nowait("PING", wait=False)

    async def _on_message(self, channel: bytes, data: bytes) -> None:
        # "<service> <old host> <old port> <new host> <new port>"
        fields = data.decode(errors="replace").split()
        if len(fields) == 5 and fields[0] == self.address.service and fields[4].isdigit():
            logger.warning(
                "sentinel: the master %r moved from %s:%s to %s:%s",
                fields[0], fields[1], fields[2], fields[3], fields[4],
            )  # fmt: skip
            self._note((fields[3], int(fields[4])))
