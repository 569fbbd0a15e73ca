"""A node's life in the cluster: connect, register, keep its key alive (the heartbeat),
reap the nodes whose keys expired, lose Redis and come back, deregister at shutdown.

Each node refreshes its key every ``node_ttl``/3; nodes whose key expired are reaped by
the others, which announces their members' leaves and cuts off (4002) any message they
were streaming. When Redis is lost (or drops this node's subscription, or reaps it),
members of groups with members on other nodes are closed with 4004: they may have missed
messages. Groups that live on this node only keep working. The node reconnects with
backoff and registers again; if its publishing connection broke, it tells the other
nodes to close their members who may have missed its last messages, and it cuts off any
message of its own they were still receiving.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping

import trio

from ..protocol.backoff import Backoff
from ..protocol.exceptions import first_leaf, leaves
from ..protocol.nodes import Split, StreamAbort
from ..protocol.resp import ConnectionLost, ProtocolViolation, RedisAddress, RedisError
from . import scripts
from .channel import Channels
from .connection import RedisConnection, cancelled_first
from .group import SharedGroup
from .history import RedisHistory
from .link import RedisLink
from .names import Names
from .registry import Roster
from .sentinel import NoMaster, SentinelWatch, verify_master
from .streams import Turns

logger = logging.getLogger("trio_wsproxy.backplane")

#: Reconnection backoff: first delay and the most it grows to (seconds).
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
#: How long shutdown spends removing this node's registration.
DEREGISTER_TIMEOUT = 1.0


class BackplaneDown(Exception):
    """The backplane lost Redis (or Redis dropped or reaped this node)."""


#: What losing Redis raises while a node connects or is connected: the socket's errors, a
#: timeout (connecting, logging in), the connection closing or falling silent, an error
#: reply or bytes that are not RESP, the node dropped or reaped. The node reconnects from
#: these; anything else is a bug, which ends the relay with its traceback instead of
#: passing for an outage and being retried for ever.
_OUTAGES = (
    OSError,
    trio.TooSlowError,
    ConnectionLost,
    RedisError,
    ProtocolViolation,
    BackplaneDown,
)


def _is_outage(error: BaseException) -> bool:
    """Whether ``error`` (a nursery's group, possibly) is Redis lost and nothing else."""
    return all(isinstance(leaf, _OUTAGES) for leaf in leaves(error))


class NodeLifecycle:
    """Keeps one node connected to Redis and registered, through outages."""

    def __init__(
        self,
        link: RedisLink,
        roster: Roster,
        channels: Channels,
        history: RedisHistory,
        turns: Turns,
        names: Names,
        node: str,
        node_ttl: float,
        groups: Mapping[str, SharedGroup],
        sentinels: SentinelWatch | None = None,
    ) -> None:
        self._link = link
        #: The sentinels that say where the master is (None: a plain redis:// URL).
        self._sentinels = sentinels
        self._roster = roster
        self._channels = channels
        self._history = history
        self._turns = turns
        self._names = names
        self._node_id = node
        self._node = node.encode()
        self._node_ttl = node_ttl
        self._groups = groups
        #: Times the node lost the backplane, and reconnected.
        self.outages = 0
        #: Whether this node may have registrations in Redis to remove at shutdown.
        self.registered = False
        self._task_status: trio.TaskStatus[None] | None = None
        #: What to tell the other nodes once Redis is back: streams of ours they may
        #: still wait on, and groups whose members there may have missed our messages
        #: (group -> when this node lost Redis).
        self._aborts_due: list[tuple[str, int]] = []
        self._splits_due: dict[str, float] = {}

    async def run(self, task_status: trio.TaskStatus[None]) -> None:
        """Stay connected to Redis until cancelled; started once the first attempt
        to connect has succeeded or failed. Each outage is logged once, and so is the
        reconnection."""
        self._task_status = task_status
        try:
            async with trio.open_nursery() as nursery:
                if self._sentinels is not None:
                    nursery.start_soon(self._sentinels.run)
                await self._stay_connected()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(DEREGISTER_TIMEOUT):
                await self._deregister()

    async def _stay_connected(self) -> None:
        """Connect, serve, lose Redis, back off, again: for ever. With Sentinel, a
        failover announced while the node waits ends the wait at once."""
        backoff = Backoff(BACKOFF_FIRST, BACKOFF_MAX, jitter=0.5)
        logged = False
        while True:
            failure: BaseException | None = None
            try:
                await self._connected()
            except (*_OUTAGES, BaseExceptionGroup) as exc:
                cancelled_first(exc)
                if not _is_outage(exc):
                    raise
                failure = first_leaf(exc)
            was_up = self._link.up
            self.lose(failure)
            if self._task_status is not None:
                self._task_status.started()
                self._task_status = None
            if was_up:
                backoff.reset()
                logged = False
            if not logged:
                logger.warning(
                    "backplane %s: %s; reconnecting with backoff",
                    "lost" if was_up else "unavailable", failure,
                    exc_info=not isinstance(failure, ConnectionLost | OSError | BackplaneDown),
                )  # fmt: skip
                logged = True
            with trio.move_on_after(backoff.next_delay()):
                if self._sentinels is None:
                    await trio.sleep_forever()
                # (A failover that names another master ends the wait.)
                await self._sentinels.wait_moved()

    async def _connected(self) -> None:
        """One connection's lifetime: connect, register, serve until it fails."""
        timeout = self._node_ttl
        link = self._link
        address = link.address
        courier, deliveries = self._channels.courier, self._channels.deliveries
        if courier is None or deliveries is None:
            raise RuntimeError("the backplane runs through run()")
        sentinels = self._sentinels
        if sentinels is not None:
            address = link.address = await sentinels.locate()
        pub = await RedisConnection.connect(address, timeout)
        sub = await RedisConnection.connect(
            address, timeout, self._channels.on_message, courier.flush
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(pub.run, address, timeout)
            await nursery.start(sub.run, address, timeout)
            link.attach(pub, sub)
            if sentinels is not None:
                try:
                    await verify_master(pub, address)
                except NoMaster:
                    sentinels.distrust()
                    raise
                nursery.start_soon(self._follow, sentinels, address)
            deliveries.nursery = nursery
            history = self._history.limits
            if history is not None:
                await self._history.load_scripts(pub)
            await self._register_node(sub)
            if self.outages:
                logger.warning("backplane reconnected to %s:%d", address.host, address.port)
            else:
                logger.info(
                    "backplane connected to %s:%d as node %s", address.host, address.port,
                    self._node_id,
                )  # fmt: skip
            if self._task_status is not None:
                self._task_status.started()
                self._task_status = None
            nursery.start_soon(self._heartbeat, pub, sub)
            nursery.start_soon(self._reaper, pub)
            nursery.start_soon(self._roster.tell_vacated)
            if history is not None:
                nursery.start_soon(self._history.renew, history.ttl / 3)

    async def _follow(self, sentinels: SentinelWatch, address: RedisAddress) -> None:
        """Drop the master at ``address`` as soon as the sentinels name another: what
        it says from here on may be lost (it is about to be made a replica)."""
        await sentinels.moved_from(address)
        assert sentinels.master is not None
        host, port = sentinels.master
        raise BackplaneDown(
            f"failover: the sentinels moved the master from {address.host}:{address.port} "
            f"to {host}:{port}"
        )

    async def _register_node(self, sub: RedisConnection) -> None:
        """Announce this node, subscribe, and (after an outage) settle what happened
        meanwhile: streams of ours the others may wait on, members who left, groups whose
        members elsewhere may have missed ours, and members who stayed."""
        link = self._link
        pub = link.pub
        if pub is None:
            raise ConnectionLost("the publishing connection is gone")
        await self._refresh(pub)
        self.registered = True
        await sub.subscribe(self._names.node_channel())
        link.registered()  # from here on, commands are sent (a failure below comes back here)
        # (After the subscription: a revocation made meanwhile comes on the channel too.)
        await self._roster.load_revocations(pub)
        # Each is forgotten only once Redis has taken it: if the connection fails again
        # first, it is still due next time.
        for due in list(self._aborts_due):
            group_name, stream_id = due
            message = StreamAbort(self._node, stream_id).encode()
            await pub.call("PUBLISH", self._names.group_channel(group_name), message)
            self._aborts_due.remove(due)
        for group_name, lost_at in list(self._splits_due.items()):
            message = self._split_message(lost_at)
            await pub.call("PUBLISH", self._names.group_channel(group_name), message)
            del self._splits_due[group_name]
        self._roster.unregister_left()
        for group in list(self._groups.values()):
            if await self._roster.rejoin(group):
                # Members joined this group elsewhere while this node was cut off: each
                # side may have missed the other's messages.
                message = self._split_message(trio.current_time())
                link.send("PUBLISH", self._names.group_channel(group.name), message)
                group.close_members("the group was split by a backplane outage")

    def _split_message(self, since: float) -> bytes:
        """Tells the other nodes to close their members of a group who joined before
        ``since`` (this node's clock): they may have missed this node's messages."""
        return Split(self._node, max(0.0, trio.current_time() - since)).encode()

    async def _refresh(self, pub: RedisConnection) -> None:
        """Refresh this node's key; if it had expired, the other nodes have reaped us."""
        ttl_ms = max(1, int(self._node_ttl * 1000))
        previous = await pub.call("SET", self._names.node_key(), b"1", "PX", ttl_ms, "GET")
        await pub.call("SADD", self._names.nodes_key, self._node)
        if previous is None and self._link.up:
            raise BackplaneDown("this node's registration expired: the others reaped it")

    async def _heartbeat(self, pub: RedisConnection, sub: RedisConnection) -> None:
        while True:
            await trio.sleep(self._node_ttl / 3)
            sub.send_nowait("PING", wait=False)  # keeps the subscriber's reads alive
            await self._refresh(pub)

    async def _reaper(self, pub: RedisConnection) -> None:
        names = self._names
        while True:
            # Jittered, so that the nodes do not all reap at once.
            await trio.sleep(self._node_ttl / 3 * random.uniform(0.8, 1.0))
            members = await pub.call("SMEMBERS", names.nodes_key)
            if not isinstance(members, list):
                raise RedisError(f"unexpected reply to SMEMBERS: {members!r}")
            nodes = {node for node in members if isinstance(node, bytes)}
            nodes |= self._roster.known_nodes
            nodes.discard(self._node)
            candidates = sorted(nodes)
            waiters = [pub.send_nowait("EXISTS", names.node_key(node)) for node in candidates]
            for node, waiter in zip(candidates, waiters, strict=True):  # replies in order
                if waiter is None:
                    continue
                await waiter.event.wait()
                if waiter.reply == 0:
                    await self._reap(pub, node)

    async def _reap(self, pub: RedisConnection, node: bytes) -> None:
        """``node`` stopped refreshing its key: forget it and its members."""
        names = self._names
        reaped = await pub.call(
            "EVAL", scripts.REAP, 3, names.node_members_key(node), names.nodes_key,
            names.node_key(node), node, names.namespace, 0,
        )  # fmt: skip
        if reaped == -1:
            return  # it came back
        if not isinstance(reaped, list):
            raise RedisError(f"unexpected reply to the reap script: {reaped!r}")
        self._roster.reaped(reaped)
        # (Its members' leaves reach every node in channel order: REAP announces them.)
        self._roster.known_nodes.discard(node)
        for group in list(self._groups.values()):
            owner = group.order.owner
            if owner is not None and owner[0] == node:
                # Cut off its message in channel order, on every node, as it would have.
                abort = StreamAbort(node, owner[1]).encode()
                self._link.send("PUBLISH", names.group_channel(group.name), abort)
        logger.info("node %s expired; %s of its members forgotten", node.decode(), len(reaped) // 3)

    async def _deregister(self) -> None:
        """Remove this node and its members from Redis (shutdown), on a connection of
        its own: the node's connections are gone by now."""
        if not self.registered:
            return
        names = self._names
        address = self._link.address
        try:
            pub = await RedisConnection.connect(address, DEREGISTER_TIMEOUT)
            async with trio.open_nursery() as nursery:
                await nursery.start(pub.run, address, DEREGISTER_TIMEOUT)
                for group_name, stream_id in self._turns.unfinished() + self._aborts_due:
                    message = StreamAbort(self._node, stream_id).encode()
                    pub.send_nowait("PUBLISH", names.group_channel(group_name), message)
                gone = await pub.call(
                    "EVAL", scripts.REAP, 3, names.node_members_key(), names.nodes_key,
                    names.node_key(), self._node, names.namespace, 1,
                )  # fmt: skip
                await pub.call("DEL", names.node_key())
                self._roster.deregistered(gone if isinstance(gone, list) else [])
                nursery.cancel_scope.cancel()
        except (OSError, trio.TooSlowError, ConnectionLost, RedisError, ExceptionGroup) as exc:
            logger.info("could not remove this node from Redis: %s", first_leaf(exc))

    def lose(self, failure: BaseException | None) -> None:
        """Redis is gone: close members who may have missed messages, forget the rest
        of the cluster, and let waiting senders go on locally."""
        # If the publishing connection broke, or went down with publishes unwritten or
        # dropped, what this node published last may not have reached the others: once
        # back, it tells them to close their members who were there by then.
        was_up, published_maybe_lost = self._link.lose(failure)
        if was_up:
            self.outages += 1
        deliveries = self._channels.deliveries
        if deliveries is not None:
            deliveries.nursery = None
        now = trio.current_time()
        reason = f"backplane lost ({failure}): messages may be missing"
        for group in list(self._groups.values()):
            if group.lose_redis(reason, self._roster.presence_changed) and published_maybe_lost:
                self._splits_due.setdefault(group.name, now)
        # Other nodes may be waiting on streams of ours (or claims they granted): they
        # are cut off once Redis is back (or when this node expires, if it never is).
        self._aborts_due.extend(self._turns.lose())
        self._roster.known_nodes.clear()
