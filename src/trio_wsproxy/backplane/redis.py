"""The Redis backplane: relay nodes that share one Redis form one relay.

Who talks to whom (Redis names: ``backplane/names.py``; what nodes say to each other:
``protocol/nodes.py``):

- Every node subscribes to the channel of each group it has members in, and to its own
  node channel. A member's message is delivered to the members on its own node directly
  and published once, as payload and metadata, on the group's channel; each other node
  subscribed there frames it for its members. Redis delivers one channel's messages in
  the order they were published, which is what keeps every sender's order.
- A message too large to hold streams through in ~1 MiB pieces, one sender per group at
  a time, decided in channel order (``backplane/streams.py``).
- Membership lives in a hash per group (id -> owner token of the newest connection);
  joins and leaves are announced on the group's channel with the member's id, so every
  node knows the group's members elsewhere. A join that replaces an owner on another
  node tells that node on its channel, and it closes the older connection with 4000.
  Each node refreshes its key every ``node_ttl``/3; nodes whose key expired are reaped
  by the others, which announces their members' leaves and cuts off (4002) any message
  they were streaming.
- Deliveries from Redis never wait on one member (``backplane/inbox.py``).
- When Redis is lost (or drops this node's subscription, or reaps it), members of
  groups with members on other nodes are closed with 4004: they may have missed
  messages. Groups that live on this node only keep working. The node reconnects with
  backoff and registers again; if its publishing connection broke, it tells the other
  nodes to close their members who may have missed its last messages, and it cuts off
  any message of its own they were still receiving.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from ..protocol import v1
from ..protocol.backoff import Backoff
from ..protocol.close_codes import CloseCode
from ..protocol.exceptions import first_leaf, leaves
from ..protocol.message import Message
from ..protocol.nodes import (
    NODE_ID_LENGTH,
    Ack,
    MemberJoined,
    MemberLeft,
    Messages,
    NodeMessage,
    NodeMessageError,
    Remove,
    Replace,
    Sequenced,
    Split,
    StreamAbort,
    StreamPiece,
    StreamStart,
    decode,
    encode_bodies,
    encode_messages,
    messages_header,
    owner_node,
    owner_token,
    stored_message,
)
from ..protocol.resp import ConnectionLost, ProtocolViolation, RedisAddress, RedisError
from ..relay.config import RelayConfig
from ..relay.counters import Counters
from ..relay.fanout import Courier
from ..relay.groups import (
    REPLACED_REASON,
    Group,
    Member,
    NodeGroups,
    PresenceChange,
    RegistryUnavailable,
)
from ..relay.history import HistoryLimits, HistoryPage, missed_by
from . import scripts
from .connection import RedisConnection
from .group import Delivery, Recovered, SharedGroup
from .inbox import Deliveries
from .names import Names
from .order import (
    Action,
    Decline,
    Deliver,
    DeliverPiece,
    EndRemote,
    Floor,
    Grant,
    Overflow,
    StartRemote,
)
from .streams import RemoteStream, Turns

logger = logging.getLogger("trio_wsproxy.backplane")

#: Bytes a node may have queued for Redis before its members' senders wait.
PUBLISH_BUFFER = 8 * 1024 * 1024
#: Reconnection backoff: first delay and the most it grows to (seconds).
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
#: How long shutdown spends removing this node's registration.
DEREGISTER_TIMEOUT = 1.0
#: How much longer than 4/3 of the history's ttl its keys stay in Redis after they were
#: last renewed (the meta hash twice as long: see scripts.py).
_HISTORY_MARGIN_MS = 10_000


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


def _no_presence(group: Group, member_id: str, joined: bool) -> None:
    """Until a relay watches presence (a backplane run without one, in tests)."""


class RedisBackplane(NodeGroups[SharedGroup]):
    """The group registry of a relay node in a cluster that shares one Redis.

    The relay runs it with ``await nursery.start(backplane.run, config, counters)``: it
    connects, keeps the node registered, and reconnects with backoff when Redis goes away.
    """

    metric_label = "RedisBackplane"

    def __init__(self, url: str, prefix: str, node_ttl: float) -> None:
        super().__init__()
        self.address = RedisAddress.from_url(url)
        self.prefix = prefix
        self.node_ttl = node_ttl
        #: This node's id in the cluster (16 hex digits, new every start).
        self.node = uuid.uuid4().hex[:NODE_ID_LENGTH]
        self._node = self.node.encode()
        self.names = Names(prefix, self._node)
        # Told of members joining and leaving on other nodes (the relay's presence).
        self._presence_changed: PresenceChange = _no_presence
        self._node_channel = self.names.node_channel()
        #: Every key and channel name starts with this: the prefix, then the version of
        #: what nodes say to each other. Nodes of another version are another cluster
        #: (never a garbled message to a member).
        self.namespace = self.names.namespace
        #: True while Redis is reachable and this node is registered.
        self.up = False
        #: Times the node lost the backplane, and reconnected.
        self.outages = 0
        #: Why the last connection to Redis ended (None: there was none yet).
        self._failure: BaseException | None = None
        #: Owner token of each member here (its connection's registration), and back.
        self._owners: dict[Member, str] = {}
        self._by_owner: dict[str, Member] = {}
        self._serial = itertools.count(1)
        self.turns = Turns(self, self._node, self.names.group_channel, node_ttl)
        self._pub: RedisConnection | None = None
        self._sub: RedisConnection | None = None
        self._config = RelayConfig()
        self._counters = Counters()
        self._deliveries: Deliveries | None = None
        self._courier: Courier | None = None
        self._task_status: trio.TaskStatus[None] | None = None
        #: Whether this node may have registrations in Redis to remove at shutdown.
        self._registered = False
        #: (group, id, owner) of members that left while Redis was away.
        self._left_while_down: list[tuple[str, str, str]] = []
        #: What to tell the other nodes once Redis is back: streams of ours they may
        #: still wait on, and groups whose members there may have missed our messages
        #: (group -> when this node lost Redis).
        self._aborts_due: list[tuple[str, int]] = []
        self._splits_due: dict[str, float] = {}
        self._known_nodes: set[bytes] = set()
        #: A publish was dropped because the connection had just failed.
        self._unsent = False
        #: The bounds of every group's history (None: history is off), the SHA1 of each
        #: script as Redis knows it, and the id of the Redis run (a history belongs to
        #: one: see scripts.py).
        self._history: HistoryLimits | None = None
        self._shas: dict[str, str] = {}
        self._run_id = ""
        #: Nodes found to keep history where this one does not (or the other way round).
        self._mismatched: set[bytes] = set()
        #: ARGV 3-7 of the history scripts (see scripts.py).
        self._history_bounds: list[bytes | str | int] = []

    # -- the GroupRegistry interface -------------------------------------------------

    def _new_group(self, name: str) -> SharedGroup:
        group = SharedGroup(name, self, self._node, self._config.mailbox_bytes, self._history)
        if self._history is not None:
            group.history_keys = self._history_keys(name)
        return group

    def _history_keys(self, group_name: str) -> tuple[str, str, str, bytes]:
        return (*self.names.history_keys(group_name), self.names.group_channel(group_name))

    def cluster_group_size(self, name: str) -> int:
        """Members of group ``name`` on every node, as far as this node knows (0 when it
        has none of its own: it only follows groups it has members in)."""
        group = self._groups.get(name)
        return 0 if group is None else len(group.members) + len(group.remote)

    def watch_presence(self, changed: PresenceChange) -> None:
        self._presence_changed = changed

    @property
    def down_reason(self) -> str | None:
        if self.up:
            return None
        where = f"Redis at {self.address.host}:{self.address.port}"
        if self._failure is None:
            return f"backplane unavailable: not connected to {where}"
        # One line, whatever the failure's text holds.
        failure = " ".join(str(self._failure).split()) or type(self._failure).__name__
        return f"backplane unavailable: cannot reach {where} ({failure})"

    def unavailable(self, group_name: str) -> str | None:
        if self.up:
            return None
        group = self._groups.get(group_name)
        if self._history is None and group is not None and not group.spans_nodes:
            return None  # it lives on this node only: it goes on through the outage
        return "backplane unavailable: the relay cannot reach Redis; try again"

    async def join(self, member: Member) -> Group:
        owner = owner_token(self.node, next(self._serial))
        group = self._add(member)
        self._owners[member] = owner
        self._by_owner[owner] = member
        if not self.up:
            if group.sequenced:  # (its order comes from Redis: see unavailable)
                member.close(CloseCode.BACKPLANE_UNAVAILABLE, "backplane unavailable")
            return group  # a group of this node only (see unavailable)
        # The first member here takes the snapshot of the members elsewhere (a group
        # held for the HTTP API may be subscribed already, but never took one).
        first = len(group.members) == 1
        try:
            if first and not group.subscribed.is_set() and not group.holds:
                await self._subscribe(group)
            else:
                await group.subscribed.wait()
            if not self.up:
                raise ConnectionLost("the backplane went away during the join")
            await self._register(group, member, owner, snapshot=first)
        except (ConnectionLost, RedisError) as exc:
            if group.members.get(member.id) is member:
                member.close(CloseCode.BACKPLANE_UNAVAILABLE, f"backplane unavailable: {exc}")
        return group

    def leave(self, member: Member) -> None:
        group = self._remove(member)
        if group is None:
            return
        owner = self._owners.pop(member, "")
        self._by_owner.pop(owner, None)
        if self.up:
            self._unregister(group.name, member.id, owner)
        elif self._registered:
            self._left_while_down.append((group.name, member.id, owner))
        if self._groups.get(group.name) is not group:  # (dropped: no members, no holds)
            if self.up and self._sub is not None:
                self._send_sub("UNSUBSCRIBE", self.names.group_channel(group.name))

    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[Group]:
        group, created = self._hold(name)
        try:
            if self.up:
                try:
                    if created:
                        await self._subscribe(group)
                    else:
                        await group.subscribed.wait()
                except (ConnectionLost, RedisError) as exc:
                    raise RegistryUnavailable(f"backplane unavailable: {exc}") from exc
            yield group
        finally:
            if self._release(group) and self.up and self._sub is not None:
                self._send_sub("UNSUBSCRIBE", self.names.group_channel(group.name))

    # -- the whole cluster's view, from Redis (the HTTP API's) --------------------------

    def _publisher_or_fail(self) -> RedisConnection:
        pub = self._pub
        if pub is None or not self.up:
            raise RegistryUnavailable("backplane unavailable: the relay cannot reach Redis")
        return pub

    async def _call(self, *args: bytes | str | int) -> object:
        pub = self._publisher_or_fail()
        try:
            return await pub.call(*args)
        except (ConnectionLost, RedisError) as exc:
            raise RegistryUnavailable(f"backplane unavailable: {exc}") from exc

    async def cluster_groups(self) -> dict[str, int]:
        start = self.names.members_key("")
        # SCAN's pattern is a glob: the prefix may hold glob characters of its own.
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in start) + "*"
        groups: dict[str, int] = {}
        cursor = b"0"
        while True:
            reply = await self._call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            if not (isinstance(reply, list) and len(reply) == 2):
                raise RegistryUnavailable(f"unexpected reply to SCAN: {reply!r}")
            cursor, keys = reply
            names = [k.decode()[len(start) :] for k in keys if isinstance(k, bytes)]
            pub = self._publisher_or_fail()
            waiters = [pub.send_nowait("HLEN", start + name) for name in names]
            for name, waiter in zip(names, waiters, strict=True):
                if waiter is None:
                    raise RegistryUnavailable("backplane unavailable: the connection broke")
                await waiter.event.wait()
                if isinstance(waiter.reply, int) and waiter.reply > 0:
                    groups[name] = waiter.reply
            if cursor in (b"0", 0):
                return groups

    async def cluster_members(self, group_name: str) -> list[str]:
        reply = await self._call("HKEYS", self.names.members_key(group_name))
        if not isinstance(reply, list):
            raise RegistryUnavailable(f"unexpected reply to HKEYS: {reply!r}")
        return [key.decode() for key in reply if isinstance(key, bytes)]

    def _here_only(self, group_name: str) -> SharedGroup | None:
        """The group, while Redis is away, if it lives on this node only (it goes on
        through the outage: see unavailable); None otherwise."""
        group = self._groups.get(group_name)
        if self.up or group is None or group.spans_nodes:
            return None
        return group

    async def cluster_size(self, group_name: str) -> int:
        group = self._here_only(group_name)
        if group is not None:
            return len(group.members)
        reply = await self._call("HLEN", self.names.members_key(group_name))
        return reply if isinstance(reply, int) else 0

    async def has_member(self, group_name: str, member_id: str) -> bool:
        group = self._groups.get(group_name)
        if group is not None and member_id in group.members:
            return True
        if self._here_only(group_name) is not None:
            return False
        reply = await self._call("HEXISTS", self.names.members_key(group_name), member_id)
        return reply == 1

    async def remove_member(self, group_name: str, member_id: str, reason: str) -> bool:
        group = self._groups.get(group_name)
        member = None if group is None else group.members.get(member_id)
        if member is not None:
            member.close(CloseCode.REMOVED, reason)
            return True
        owner = await self._call("HGET", self.names.members_key(group_name), member_id)
        if not isinstance(owner, bytes):
            return False
        node = owner_node(owner)
        removal = Remove(self._node, owner.decode(), reason).encode()
        await self._call("PUBLISH", self.names.node_channel(node), removal)
        return True

    # -- what groups and turns ask of the backplane ------------------------------------

    def publisher(self) -> RedisConnection | None:
        """The publishing connection while Redis is up and the node registered."""
        return self._pub if self.up else None

    def publish(self, group: Group, messages: list[Message]) -> None:
        """Publish whole messages (one or more, in order) for the group's members on
        other nodes, as one Redis message."""
        if not self.up:
            return
        if not group.sequenced:
            self.send_to_group(group.name, encode_messages(self._node, messages))
            return
        limits = self._history
        assert limits is not None
        kept = "".join(["1" if len(m.payload) <= limits.max_bytes else "0" for m in messages])
        header = messages_header(self._node, len(messages))
        args = self._history_args(scripts.SEQUENCE, group.name, group)
        self._send(*args, "M", header, kept, *encode_bodies(messages))

    async def publish_claim(self, group: Group, start: StreamStart) -> object:
        """Publish a stream's start (a claim of the group's floor) on its channel; the
        number of nodes that received it comes back. With history on, it takes its
        offset in the group's history (a gap: too large to keep) on the way."""
        pub = self._pub
        if pub is None or not self.up:
            raise ConnectionLost("the backplane is down")
        if not group.sequenced:
            return await pub.call("PUBLISH", self.names.group_channel(group.name), start.encode())
        args = self._history_args(scripts.SEQUENCE, group.name, group)
        reply = await pub.call(*args, "S", start.encode())
        if not isinstance(reply, list) or not reply:
            raise RedisError(f"unexpected reply to the sequencing script: {reply!r}")
        return reply[0]

    def _history_args(
        self, script: str, group_name: str, group: Group | None = None
    ) -> list[bytes | str | int]:
        """EVALSHA of a history script for ``group_name`` (``group``, if it is here),
        with its keys and ARGV 1-7 (a new epoch for each call, in case it starts one)."""
        keys = group.history_keys if isinstance(group, SharedGroup) else None
        if keys is None:
            keys = self._history_keys(group_name)
        return [
            "EVALSHA", self._shas[script], 4, *keys, self._run_id, os.urandom(8).hex(),
            *self._history_bounds,
        ]  # fmt: skip

    async def _read_history(
        self, pub: RedisConnection, group_name: str, after: int, limit: int
    ) -> tuple[str, int, int, list[tuple[int, bytes, bytes]]]:
        """The group's history in Redis: epoch, last offset, last trimmed, and (``after``
        >= 0) up to ``limit`` (0: all) entries after ``after``: (offset, kind, body)."""
        args = self._history_args(scripts.HISTORY, group_name)
        reply = await pub.call(*args, after, limit, 0)  # (0: no renewal; see _renew_histories)
        if not (isinstance(reply, list) and len(reply) == 4):
            raise RedisError(f"unexpected reply to the history script: {reply!r}")
        epoch, last, trimmed, flat = reply
        if not (
            isinstance(epoch, bytes)
            and isinstance(last, int)
            and isinstance(trimmed, int)
            and isinstance(flat, list)
        ):
            raise RedisError(f"unexpected reply to the history script: {reply!r}")
        entries: list[tuple[int, bytes, bytes]] = []
        for offset, kind, body in zip(flat[::3], flat[1::3], flat[2::3], strict=True):
            if not (isinstance(offset, int) and isinstance(kind, bytes)):
                raise RedisError(f"unexpected entry from the history script: {offset!r}")
            entries.append((offset, kind, body if isinstance(body, bytes) else b""))
        return epoch.decode(), last, trimmed, entries

    @staticmethod
    def _entries(entries: list[tuple[int, bytes, bytes]]) -> list[tuple[int, Message | None]]:
        """History entries as (offset, message or None for a gap), declined claims left
        out (they are no message)."""
        found: list[tuple[int, Message | None]] = []
        for offset, kind, body in entries:
            if kind == b"b":
                message = stored_message(body)
                message.offset = offset
                found.append((offset, message))
            elif kind == b"g":
                found.append((offset, None))
        return found

    async def recover(self, group_name: str, since: v1.Position, member_id: str) -> Recovered | str:
        """What ``member_id`` missed after ``since``, from the group's history in Redis,
        or why it cannot all be had (a Recovery reason)."""
        pub = self._pub
        if pub is None or not self.up:
            raise ConnectionLost("the backplane is down")
        epoch, last, trimmed, entries = await self._read_history(pub, group_name, since.offset, 0)
        if epoch != since.epoch or since.offset > last:
            return v1.EPOCH_CHANGED
        if since.offset < trimmed:
            return v1.POSITION_TOO_OLD
        if [offset for offset, _, _ in entries] != list(range(since.offset + 1, last + 1)):
            # Every offset given out is in some batch until trimmed: entries are missing
            # (evicted by a maxmemory policy, deleted by hand). Never a silent gap.
            return v1.POSITION_TOO_OLD
        missed = missed_by(self._entries(entries), since.offset, member_id)
        if isinstance(missed, str):
            return missed
        return Recovered(epoch, last, missed)

    async def read_history(self, group_name: str, after: int, limit: int) -> HistoryPage | None:
        if self._history is None:
            return None
        pub = self._publisher_or_fail()
        try:
            epoch, last, trimmed, entries = await self._read_history(pub, group_name, after, limit)
        except (ConnectionLost, RedisError) as exc:
            raise RegistryUnavailable(f"backplane unavailable: {exc}") from exc
        # (Batches were read: as many as messages asked for, and so at least as many.)
        return HistoryPage(epoch, trimmed + 1, last, self._entries(entries)[:limit])

    @property
    def congested(self) -> bool:
        """Whether so much waits to be written to Redis that senders should wait."""
        pub = self._pub
        return pub is not None and pub.pending >= PUBLISH_BUFFER

    async def wait_room(self) -> None:
        """Wait until what waits to be written to Redis is under PUBLISH_BUFFER."""
        pub = self._pub
        if pub is not None:
            try:
                await pub.wait_room(PUBLISH_BUFFER)
            except ConnectionLost:
                pass  # the outage closes whoever may have missed something

    # -- running -------------------------------------------------------------------------

    async def run(
        self,
        config: RelayConfig,
        counters: Counters,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Stay connected to Redis until cancelled; started once the first attempt
        to connect has succeeded or failed. Each outage is logged once, and so is the
        reconnection."""
        self._config, self._counters = config, counters
        self._history = limits = HistoryLimits.of(config)
        if limits is not None:
            ttl_ms = max(1, int(limits.ttl * 1000))
            # Renewed every ttl/3 while a node has members: a history outlives its last
            # member by the ttl at least.
            keep_ms = ttl_ms * 4 // 3 + _HISTORY_MARGIN_MS
            self._history_bounds = [self._node, limits.size, ttl_ms, limits.max_bytes, keep_ms]
        self._courier = Courier(config.slow_member_timeout, counters)
        self._deliveries = Deliveries(config, counters, self._courier, self._delivered)
        # Longer than a receiving node may wait for a slow member of its own, so that a
        # node that is only waiting for one is not given up on.
        self.turns.patience = config.slow_member_timeout + self.node_ttl
        self._task_status = task_status
        backoff = Backoff(BACKOFF_FIRST, BACKOFF_MAX, jitter=0.5)
        logged = False
        try:
            while True:
                failure: BaseException | None = None
                try:
                    await self._connected()
                except (*_OUTAGES, ExceptionGroup) as exc:
                    if not _is_outage(exc):
                        raise
                    failure = first_leaf(exc)
                was_up = self.up
                self._lose(failure)
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
                await trio.sleep(backoff.next_delay())
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(DEREGISTER_TIMEOUT):
                await self._deregister()

    async def _connected(self) -> None:
        """One connection's lifetime: connect, register, serve until it fails."""
        timeout = self.node_ttl
        address = self.address
        courier, deliveries = self._courier, self._deliveries
        if courier is None or deliveries is None:
            raise RuntimeError("the backplane runs through run()")
        pub = await RedisConnection.connect(address, timeout)
        sub = await RedisConnection.connect(address, timeout, self._on_message, courier.flush)
        async with trio.open_nursery() as nursery:
            await nursery.start(pub.run, address, timeout)
            await nursery.start(sub.run, address, timeout)
            self._pub, self._sub, deliveries.nursery = pub, sub, nursery
            if self._history is not None:
                await self._load_scripts(pub)
            await self._register_node(sub)
            if self.outages:
                logger.warning("backplane reconnected to %s:%d", address.host, address.port)
            else:
                logger.info(
                    "backplane connected to %s:%d as node %s", address.host, address.port,
                    self.node,
                )  # fmt: skip
            if self._task_status is not None:
                self._task_status.started()
                self._task_status = None
            nursery.start_soon(self._heartbeat, pub, sub)
            nursery.start_soon(self._reaper, pub)
            if self._history is not None:
                nursery.start_soon(self._renew_histories, pub, self._history.ttl / 3)

    async def _load_scripts(self, pub: RedisConnection) -> None:
        """Load the history scripts (run by SHA1 from then on) and learn Redis's run id."""
        info = await pub.call("INFO", "server")
        if not isinstance(info, bytes):
            raise RedisError(f"unexpected reply to INFO: {info!r}")
        for line in info.decode(errors="replace").splitlines():
            if line.startswith("run_id:"):
                self._run_id = line[len("run_id:") :].strip()
        if not self._run_id:
            raise RedisError("INFO server gave no run_id")
        for script in (scripts.SEQUENCE, scripts.HISTORY, scripts.DECLINED):
            sha = await pub.call("SCRIPT", "LOAD", script)
            if not isinstance(sha, bytes):
                raise RedisError(f"unexpected reply to SCRIPT LOAD: {sha!r}")
            self._shas[script] = sha.decode()

    async def _renew_histories(self, pub: RedisConnection, period: float) -> None:
        """Keep the histories of the groups with members here in Redis while they are
        quiet: a history expires only when nobody is there to recover it."""
        while True:
            await trio.sleep(period)
            for group in list(self._groups.values()):
                if group.members or group.holds:
                    args = self._history_args(scripts.HISTORY, group.name, group)
                    self._send(*args, -1, 0, 1)

    async def _register_node(self, sub: RedisConnection) -> None:
        """Announce this node, subscribe, and (after an outage) settle what happened
        meanwhile: streams of ours the others may wait on, members who left, groups whose
        members elsewhere may have missed ours, and members who stayed."""
        pub = self._pub
        if pub is None:
            raise ConnectionLost("the publishing connection is gone")
        await self._refresh(pub)
        self._registered = True
        await sub.subscribe(self._node_channel)
        self.up = True  # from here on, commands are sent (a failure below comes back here)
        # Each is forgotten only once Redis has taken it: if the connection fails again
        # first, it is still due next time.
        for due in list(self._aborts_due):
            group_name, stream_id = due
            message = StreamAbort(self._node, stream_id).encode()
            await pub.call("PUBLISH", self.names.group_channel(group_name), message)
            self._aborts_due.remove(due)
        for group_name, lost_at in list(self._splits_due.items()):
            message = self._split_message(lost_at)
            await pub.call("PUBLISH", self.names.group_channel(group_name), message)
            del self._splits_due[group_name]
        left, self._left_while_down = self._left_while_down, []
        for group_name, member_id, owner in left:
            self._unregister(group_name, member_id, owner)
        for group in list(self._groups.values()):
            if self._groups.get(group.name) is not group:
                continue  # emptied while we were busy with another group
            group.subscribed = trio.Event()
            await self._subscribe(group)
            if self._groups.get(group.name) is not group:
                if group.name not in self._groups:  # (a new group of that name needs it)
                    self._send_sub("UNSUBSCRIBE", self.names.group_channel(group.name))
                continue
            split = False
            first = True
            for member in group.sessions:
                stayed = self._owners.get(member)
                if stayed is not None and group.members.get(member.id) is member:
                    split |= await self._register(group, member, stayed, first, again=True)
                    first = False
            if split:
                # Members joined this group elsewhere while this node was cut off: each
                # side may have missed the other's messages.
                self.send_to_group(group.name, self._split_message(trio.current_time()))
                self._close_group(group, "the group was split by a backplane outage")

    def _split_message(self, since: float) -> bytes:
        """Tells the other nodes to close their members of a group who joined before
        ``since`` (this node's clock): they may have missed this node's messages."""
        return Split(self._node, max(0.0, trio.current_time() - since)).encode()

    async def _subscribe(self, group: SharedGroup) -> None:
        sub, pub = self._sub, self._pub
        if sub is None or pub is None:
            raise ConnectionLost("the subscribing connection is gone")
        group.mirror, group.early = None, []
        await sub.subscribe(self.names.group_channel(group.name))
        if group.sequenced:
            # Everything after this read comes on the channel, now that we follow it.
            epoch, last, _, _ = await self._read_history(pub, group.name, -1, 0)
            group.start_mirror(epoch, last)
        group.subscribed.set()

    async def _register(
        self,
        group: SharedGroup,
        member: Member,
        owner: str,
        snapshot: bool,
        again: bool = False,
    ) -> bool:
        """Record ``member`` (its connection ``owner``) as the newest of its id; True
        when the group turned out to have members elsewhere that this node did not know.

        ``again``: registering a member that stayed through an outage, which must not
        replace a connection made elsewhere meanwhile (that one is newer)."""
        pub = self._pub
        if pub is None:
            raise ConnectionLost("the publishing connection is gone")
        names = self.names
        leave = MemberLeft(self._node, member.id, owner).encode()
        entry = json.dumps([group.name, member.id, leave.hex()])
        reply = await pub.call(
            "EVAL", scripts.JOIN, 2, names.members_key(group.name), names.node_members_key(),
            member.id, owner, entry, self.namespace, int(snapshot), int(again),
        )  # fmt: skip
        if not (isinstance(reply, list) and len(reply) == 3):
            raise RedisError(f"unexpected reply to the join script: {reply!r}")
        old, pairs, registered = reply
        if not isinstance(pairs, list):
            raise RedisError(f"unexpected reply to the join script: {reply!r}")
        if not registered:
            member.close(CloseCode.REPLACED, REPLACED_REASON)
            return False
        if isinstance(old, bytes):
            old_node = owner_node(old)
            if old_node != self._node and old.decode() != owner:
                message = Replace(self._node, old.decode()).encode()
                self._send("PUBLISH", names.node_channel(old_node), message)
        unknown = False
        for other_id, other in zip(pairs[::2], pairs[1::2], strict=True):
            if isinstance(other, bytes) and isinstance(other_id, bytes):
                if owner_node(other) != self._node:
                    text = other.decode()
                    if text not in group.remote:
                        unknown = True
                        self._presence_changed(group, other_id.decode(), True)
                    group.remote[text] = other_id.decode()
                    self._known_nodes.add(owner_node(other))
        if group.members.get(member.id) is member:
            # (A member that left meanwhile announced its leave already.)
            self.send_to_group(group.name, MemberJoined(self._node, member.id, owner).encode())
        return unknown

    def _unregister(self, group_name: str, member_id: str, owner: str) -> None:
        names = self.names
        self._send(
            "EVAL", scripts.LEAVE, 2, names.members_key(group_name), names.node_members_key(),
            member_id, owner,
        )  # fmt: skip
        self.send_to_group(group_name, MemberLeft(self._node, member_id, owner).encode())

    async def _refresh(self, pub: RedisConnection) -> None:
        """Refresh this node's key; if it had expired, the other nodes have reaped us."""
        ttl_ms = max(1, int(self.node_ttl * 1000))
        previous = await pub.call("SET", self.names.node_key(), b"1", "PX", ttl_ms, "GET")
        await pub.call("SADD", self.names.nodes_key, self._node)
        if previous is None and self.up:
            raise BackplaneDown("this node's registration expired: the others reaped it")

    async def _heartbeat(self, pub: RedisConnection, sub: RedisConnection) -> None:
        while True:
            await trio.sleep(self.node_ttl / 3)
            sub.send_nowait("PING", wait=False)  # keeps the subscriber's reads alive
            await self._refresh(pub)

    async def _reaper(self, pub: RedisConnection) -> None:
        while True:
            # Jittered, so that the nodes do not all reap at once.
            await trio.sleep(self.node_ttl / 3 * random.uniform(0.8, 1.0))
            members = await pub.call("SMEMBERS", self.names.nodes_key)
            if not isinstance(members, list):
                raise RedisError(f"unexpected reply to SMEMBERS: {members!r}")
            nodes = {node for node in members if isinstance(node, bytes)}
            nodes |= self._known_nodes
            nodes.discard(self._node)
            candidates = sorted(nodes)
            waiters = [pub.send_nowait("EXISTS", self.names.node_key(node)) for node in candidates]
            for node, waiter in zip(candidates, waiters, strict=True):  # replies in order
                if waiter is None:
                    continue
                await waiter.event.wait()
                if waiter.reply == 0:
                    await self._reap(pub, node)

    async def _reap(self, pub: RedisConnection, node: bytes) -> None:
        """``node`` stopped refreshing its key: forget it and its members."""
        names = self.names
        reaped = await pub.call(
            "EVAL", scripts.REAP, 3, names.node_members_key(node), names.nodes_key,
            names.node_key(node), node, self.namespace, 0,
        )  # fmt: skip
        if reaped == -1:
            return  # it came back
        # (Its members' leaves reach every node in channel order: REAP announces them.)
        self._known_nodes.discard(node)
        for group in list(self._groups.values()):
            owner = group.order.owner
            if owner is not None and owner[0] == node:
                # Cut off its message in channel order, on every node, as it would have.
                self.send_to_group(group.name, StreamAbort(node, owner[1]).encode())
        logger.info("node %s expired; %s of its members forgotten", node.decode(), reaped)

    async def _deregister(self) -> None:
        """Remove this node and its members from Redis (shutdown), on a connection of
        its own: the node's connections are gone by now."""
        if not self._registered:
            return
        names = self.names
        try:
            pub = await RedisConnection.connect(self.address, DEREGISTER_TIMEOUT)
            async with trio.open_nursery() as nursery:
                await nursery.start(pub.run, self.address, DEREGISTER_TIMEOUT)
                for group_name, stream_id in self.turns.unfinished() + self._aborts_due:
                    message = StreamAbort(self._node, stream_id).encode()
                    pub.send_nowait("PUBLISH", names.group_channel(group_name), message)
                await pub.call(
                    "EVAL", scripts.REAP, 3, names.node_members_key(), names.nodes_key,
                    names.node_key(), self._node, self.namespace, 1,
                )  # fmt: skip
                await pub.call("DEL", names.node_key())
                nursery.cancel_scope.cancel()
        except (OSError, trio.TooSlowError, ConnectionLost, RedisError, ExceptionGroup) as exc:
            logger.info("could not remove this node from Redis: %s", first_leaf(exc))

    def _lose(self, failure: BaseException | None) -> None:
        """Redis is gone: close members who may have missed messages, forget the rest
        of the cluster, and let waiting senders go on locally."""
        was_up = self.up
        # If the publishing connection broke, or went down with publishes unwritten or
        # dropped, what this node published last may not have reached the others: once
        # back, it tells them to close their members who were there by then.
        pub = self._pub
        published_maybe_lost = self._unsent or (pub is not None and (pub.broken or pub.pending))
        self._unsent = False
        self.up = False
        self._failure = failure
        self._pub = self._sub = None
        if was_up:
            self.outages += 1
        if self._deliveries is not None:
            self._deliveries.nursery = None
        now = trio.current_time()
        for group in list(self._groups.values()):
            group.subscribed.set()  # wakes joins waiting on it; they see the outage
            # (A group held for an API post has members elsewhere only: it spans too.)
            # (A sequenced group's order comes from Redis: its members here go too.)
            if (
                group.spans_nodes
                or group.holds
                or group.inbox
                or group.order.pending
                or group.sequenced
            ):
                # (Messages from other nodes still waiting here are dropped with Redis.)
                if published_maybe_lost:
                    self._splits_due.setdefault(group.name, now)
                self._close_group(group, f"backplane lost ({failure}): messages may be missing")
            for member_id in set(group.remote.values()):
                self._presence_changed(group, member_id, False)
            group.remote.clear()
            group.order.reset()
            group.inbox = None
            group.inbox_bytes = 0
            group.inbox_drained.set()
            if isinstance(group.floor.holder, RemoteStream):
                group.floor.release(group.floor.holder)
            group.mirror, group.early = None, []
            group.changed()
        # Other nodes may be waiting on streams of ours (or claims they granted): they
        # are cut off once Redis is back (or when this node expires, if it never is).
        self._aborts_due.extend(self.turns.lose())
        self._known_nodes.clear()

    def _close_group(self, group: SharedGroup, reason: str) -> None:
        for member in group.sessions:
            member.close(CloseCode.BACKPLANE_UNAVAILABLE, reason)

    # -- receiving -----------------------------------------------------------------------

    async def _on_message(self, channel: bytes, data: bytes) -> None:
        try:
            message = decode(data)
            group_name = None if channel == self._node_channel else self.names.group_of(channel)
        except (NodeMessageError, UnicodeDecodeError) as exc:
            # Not ours (another program on our channels?): never let it cost the node.
            logger.debug("ignored a malformed backplane message on %r: %s", channel, exc)
            return
        if group_name is None:
            self._on_node_message(message)
        else:
            await self._on_group_message(channel, group_name, message)

    def _on_node_message(self, message: NodeMessage) -> None:
        """What another node says to this one on its own channel."""
        if type(message) is Replace:
            member = self._by_owner.get(message.owner)
            if member is not None:
                member.close(CloseCode.REPLACED, REPLACED_REASON)
        elif type(message) is Remove:
            member = self._by_owner.get(message.owner)
            if member is not None:
                member.close(CloseCode.REMOVED, message.reason)
        elif type(message) is Ack:
            self.turns.acknowledged(message.node, message.stream_id, message.piece)

    async def _on_group_message(self, channel: bytes, name: str, message: NodeMessage) -> None:
        """One message on a group's channel, in channel order. The group's
        :class:`~trio_wsproxy.backplane.order.ChannelOrder` decides what it means for the
        members here (which stream owns the floor, which whole messages wait for its end);
        this carries it out. Announcements update this node's view of the group's
        members elsewhere."""
        node = message.node
        group = self._groups.get(name)
        if group is None:
            # Left over from a group this node no longer has: never hold up a sender.
            if type(message) is StreamPiece and node != self._node:
                self._ack(node, message.stream_id, message.piece)
            self._send_sub("UNSUBSCRIBE", channel)
            return
        if node != self._node:
            self._known_nodes.add(node)
        if type(message) is MemberJoined:
            if node != self._node:
                if message.owner not in group.remote:
                    self._presence_changed(group, message.member_id, True)
                group.remote[message.owner] = message.member_id
        elif type(message) is MemberLeft:
            if group.remote.pop(message.owner, None) is not None:
                self._presence_changed(group, message.member_id, False)
        elif type(message) is Split:
            if node != self._node:
                self._split(group, message.seconds)
        elif type(message) is Sequenced:
            if group.sequenced:
                await self._sequenced(group, message)
            else:
                self._history_differs(group, node)
        elif group.sequenced and type(message) in (Messages, StreamStart):
            self._history_differs(group, node)  # (never our own: ours are sequenced)
        else:
            await self._carry_all(group, node, group.order.receive(message, self._floor(group)))

    def _history_differs(self, group: SharedGroup, node: bytes) -> None:
        """``node`` keeps history and this one does not, or the other way round: their
        members cannot be given one order, and would miss each other's messages. The
        members here are closed (4004), and the misconfiguration logged once per node."""
        if node not in self._mismatched:
            self._mismatched.add(node)
            logger.error(
                "node %s %s history and this node %s: give every node of a cluster the "
                "same --history-size; closing the members of the groups they share",
                node.decode(errors="replace"), "keeps no" if group.sequenced else "keeps",
                "does" if group.sequenced else "does not",
            )  # fmt: skip
        self._close_group(group, "the relay's nodes disagree on history: messages may be missing")

    async def _carry_all(self, group: SharedGroup, node: bytes, actions: list[Action]) -> None:
        """Carry out what the channel order decided; members catching up with the
        group's history wait meanwhile (see SharedGroup.quiet), and look again after."""
        if actions:
            group.handing += 1
            try:
                for action in actions:
                    await self._carry_out(group, node, action)
            finally:
                group.handing -= 1
        group.changed()

    @staticmethod
    def _floor(group: SharedGroup) -> Floor:
        holder = group.floor.holder
        if holder is None:
            return Floor.FREE
        if isinstance(holder, RemoteStream):
            return Floor.REMOTE
        return Floor.LOCAL

    async def _sequenced(self, group: SharedGroup, message: Sequenced) -> None:
        """Messages (or a stream's start) with their offsets in the group's history: in
        the mirror, then to the members here, the sender's node included."""
        inner = message.inner
        granted = group.order.owner is None
        if type(inner) is Messages:
            offset = message.offset
            for item in inner.messages:
                item.offset = offset
                offset += 1
        elif type(inner) is StreamStart:
            inner.head.offset = message.offset
            claim = self.turns.claims.get(inner.stream_id) if inner.node == self._node else None
            if claim is not None:
                claim.head.offset = message.offset  # (its member's own head)
            if not granted and inner.node == self._node:
                # The gap our claim left in the history is no message.
                meta = self._history_keys(group.name)[0]
                self._send("EVALSHA", self._shas[scripts.DECLINED], 1, meta, message.offset)
        if not group.record(message, granted):
            self._close_group(group, "the group's history was lost in Redis: epoch changed")
        actions = [] if inner is None else group.order.receive(inner, self._floor(group), True)
        await self._carry_all(group, message.node, actions)  # (the mirror moved, too)

    async def _carry_out(self, group: SharedGroup, node: bytes, action: Action) -> None:
        """Do what the group's channel order decided, for the members here."""
        deliveries = self._deliveries_or_fail()
        if type(action) is Deliver:
            await deliveries.messages(group, action.messages)
        elif type(action) is DeliverPiece:
            stream = group.floor.holder
            if not isinstance(stream, RemoteStream):
                raise RuntimeError(f"a piece for {group.name!r} came with no stream to take it")
            ack = Ack(self._node, stream.stream_id, action.number).encode()
            await deliveries.piece(
                group,
                stream,
                action.payload,
                action.first,
                action.last,
                (self.names.node_channel(node), ack),
            )
        elif type(action) is StartRemote:
            recipients = group.audiences
            if action.head.to is not None:
                # Addressed to one member: to it alone, if it is here (else nobody:
                # the stream only takes its turn on this node).
                target = group.reachable(action.head.to)
                recipients = () if target is None else ((target.encoding, (target,)),)
            if action.conflict:
                self._close_group(group, "two messages streamed at once across an outage")
                recipients = ()
            stream = RemoteStream(action.node, action.stream_id, action.head, recipients)
            group.floor.take(stream)
            self._counters.deliveries += len(stream.members())
        elif type(action) is EndRemote:
            stream = group.floor.holder
            if isinstance(stream, RemoteStream):
                if action.truncated and stream.delivered:
                    for member in stream.members():
                        member.close(
                            CloseCode.MESSAGE_TRUNCATED,
                            "a message was cut off: its sender left mid-message",
                        )
                group.floor.release(stream)
        elif type(action) is Grant:
            claim = self.turns.decide(action.stream_id, accepted=True)
            if claim is None:
                # A claim its member gave up on before the answer came: release it.
                abort = StreamAbort(self._node, action.stream_id).encode()
                self.send_to_group(group.name, abort)
            else:
                group.floor.take(claim.member)
        elif type(action) is Decline:
            self.turns.decide(action.stream_id, accepted=False)  # another streams first
        elif type(action) is Overflow:
            self._close_group(group, "messages arrived faster than the relay could order them")
        # EndOwn: nothing more to do here (this node's pieces went out as they were sent).

    def _split(self, group: SharedGroup, seconds: float) -> None:
        """Another node lost Redis with messages maybe unsent: close the members here
        that were there before then."""
        before = trio.current_time() - seconds
        for member in group.sessions:
            if member.joined_at <= before:
                member.close(
                    CloseCode.BACKPLANE_UNAVAILABLE,
                    "another node lost the backplane: messages may be missing",
                )

    def _ack(self, node: bytes, stream_id: int, piece: int) -> None:
        message = Ack(self._node, stream_id, piece).encode()
        self._send("PUBLISH", self.names.node_channel(node), message)

    async def _delivered(self, group: SharedGroup, delivery: Delivery) -> None:
        """A stream piece is queued: acknowledge it, and end its stream after the last."""
        if delivery.ack is not None:
            self._send("PUBLISH", *delivery.ack)
        if delivery.ended is not None:
            group.floor.release(delivery.ended)
            await self._carry_all(group, self._node, group.order.floor_freed())

    def _deliveries_or_fail(self) -> Deliveries:
        if self._deliveries is None:
            raise RuntimeError("the backplane runs through run()")
        return self._deliveries

    # -- sending ---------------------------------------------------------------------------

    def send_to_group(self, group_name: str, data: bytes) -> None:
        """Publish on a group's channel without waiting (a no-op while Redis is away)."""
        self._send("PUBLISH", self.names.group_channel(group_name), data)

    def _send(self, *args: bytes | str | int) -> None:
        """Queue a command whose reply nobody waits for; a no-op while Redis is away."""
        pub = self._pub
        if pub is None or not self.up:
            return
        try:
            pub.send_nowait(*args, wait=False)
        except ConnectionLost:
            self._unsent = True  # the connection failed a moment ago: _lose will know

    def _send_sub(self, *args: bytes | str | int) -> None:
        sub = self._sub
        if sub is None:
            return
        try:
            sub.send_nowait(*args, wait=False)
        except ConnectionLost:
            pass
