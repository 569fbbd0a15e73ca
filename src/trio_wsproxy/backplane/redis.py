"""The Redis backplane: relay nodes that share one Redis form one relay.

Who talks to whom (Redis names: ``backplane/names.py``; what nodes say to each other:
``protocol/nodes.py``; the Lua scripts: ``backplane/scripts.py``):

- Every node subscribes to the channel of each group it has members in, and to its own
  node channel. A member's message is delivered to the members on its own node directly
  and published once, as payload and metadata, on the group's channel (here:
  :meth:`RedisBackplane.publish`); each other node subscribed there frames it for its
  members (``backplane/channel.py``). Redis delivers one channel's messages in the order
  they were published, which is what keeps every sender's order.
- A message too large to hold streams through in ~1 MiB pieces, one sender per group at
  a time, decided in channel order (``backplane/streams.py``).
- Membership lives in a hash per group (id -> owner token of the newest connection);
  joins and leaves are announced on the group's channel with the member's id, so every
  node knows the group's members elsewhere. A join that replaces an owner on another
  node tells that node on its channel, and it closes the older connection with 4000
  (``backplane/registry.py``, which also answers the HTTP API's questions about the
  whole cluster).
- Each node refreshes its key every ``node_ttl``/3; nodes whose key expired are reaped
  by the others, which announces their members' leaves and cuts off (4002) any message
  they were streaming (``backplane/lifecycle.py``).
- Deliveries from Redis never wait on one member (``backplane/inbox.py``).
- With history on, Redis gives each group's messages their offsets, keeps the group's
  recent messages, and each node mirrors the tail of it (``backplane/history.py``,
  ``SharedGroup`` in ``backplane/group.py``).
- When Redis is lost (or drops this node's subscription, or reaps it), members of
  groups with members on other nodes are closed with 4004: they may have missed
  messages (``SharedGroup.lose_redis``). Groups that live on this node only keep
  working. The node reconnects with backoff and registers again; if its publishing
  connection broke, it tells the other nodes to close their members who may have missed
  its last messages, and it cuts off any message of its own they were still receiving
  (``backplane/lifecycle.py``).
- Everything goes to Redis through this node's two connections (``backplane/link.py``).

:class:`RedisBackplane` composes these: it is the relay's registry, and it keeps the
publishing path (``publish``) one call from the group.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from ..protocol import v1
from ..protocol.message import Message
from ..protocol.nodes import (
    NODE_ID_LENGTH,
    StreamStart,
    encode_bodies,
    encode_messages,
    messages_header,
)
from ..protocol.resp import ConnectionLost, RedisAddress, RedisError
from ..relay.config import RelayConfig
from ..relay.counters import Counters
from ..relay.groups import Group, GroupEvents, Member, NodeGroups, PresenceChange
from ..relay.history import HistoryPage
from ..relay.revocations import Revocation
from . import scripts
from .channel import Channels
from .connection import RedisConnection
from .group import Recovered, SharedGroup
from .history import RedisHistory
from .lifecycle import BACKOFF_FIRST as BACKOFF_FIRST
from .lifecycle import BACKOFF_MAX as BACKOFF_MAX
from .lifecycle import DEREGISTER_TIMEOUT as DEREGISTER_TIMEOUT
from .lifecycle import BackplaneDown as BackplaneDown
from .lifecycle import NodeLifecycle
from .link import RedisLink
from .names import Names
from .registry import Roster
from .streams import Turns

#: Bytes a node may have queued for Redis before its members' senders wait.
PUBLISH_BUFFER = 8 * 1024 * 1024


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
        #: Every key and channel name starts with this: the prefix, then the version of
        #: what nodes say to each other. Nodes of another version are another cluster
        #: (never a garbled message to a member).
        self.namespace = self.names.namespace
        self.turns = Turns(self, self._node, self.names.group_channel, node_ttl)
        self._config = RelayConfig()
        groups = self._groups
        self._link = RedisLink(self.address)
        self._history = RedisHistory(self._link, self.names, self._node, groups)
        self._roster = Roster(self._link, self._history, self.names, self.node, groups)
        self._channels = Channels(
            self._link, self._roster, self._history, self.turns, self.names, self._node, groups
        )
        self._lifecycle = NodeLifecycle(
            self._link, self._roster, self._channels, self._history, self.turns, self.names,
            self.node, node_ttl, groups,
        )  # fmt: skip

    @property
    def up(self) -> bool:
        """True while Redis is reachable and this node is registered."""
        return self._link.up

    @up.setter
    def up(self, value: bool) -> None:
        self._link.up = value

    @property
    def outages(self) -> int:
        """Times the node lost the backplane, and reconnected."""
        return self._lifecycle.outages

    @outages.setter
    def outages(self, value: int) -> None:
        self._lifecycle.outages = value

    # -- the GroupRegistry interface -------------------------------------------------

    def _new_group(self, name: str) -> SharedGroup:
        history = self._history
        limits = history.limits
        keys = None if limits is None else history.keys(name)
        return SharedGroup(name, self, self._node, self._config.mailbox_bytes, limits, keys)

    def cluster_group_size(self, name: str) -> int:
        """Members of group ``name`` on every node, as far as this node knows (0 when it
        has none of its own: it only follows groups it has members in).

        .. deprecated:: Unreleased
           Use ``group(name).size`` (this node's view of the group's members on every
           node), or ``await cluster_size(name)`` for Redis's count.
        """
        warnings.warn(
            "RedisBackplane.cluster_group_size is deprecated: use group(name).size for this "
            "node's view of the group's members on every node, or await cluster_size(name) "
            "for Redis's count",
            DeprecationWarning,
            stacklevel=2,
        )
        group = self._groups.get(name)
        return 0 if group is None else len(group.members) + len(group.remote)

    def watch_presence(self, changed: PresenceChange) -> None:
        self._roster.presence_changed = changed

    def watch_revocations(self, revoked: Callable[[Revocation], object]) -> None:
        self._roster.revoked = revoked

    def watch_occupancy(self, told: GroupEvents) -> None:
        self._roster.occupancy = told

    async def revoke(self, revocation: Revocation) -> None:
        await self._roster.revoke(revocation)

    @property
    def down_reason(self) -> str | None:
        return self._link.down_reason

    def unavailable(self, group_name: str) -> str | None:
        if self._link.up:
            return None
        group = self._groups.get(group_name)
        if self._history.limits is None and group is not None and not group.spans_nodes:
            return None  # it lives on this node only: it goes on through the outage
        return "backplane unavailable: the relay cannot reach Redis; try again"

    async def join(self, member: Member) -> Group:
        owner = self._roster.new_owner(member)
        group = self._add(member)
        await self._roster.joined(group, member, owner)
        return group

    def leave(self, member: Member) -> None:
        group = self._remove(member)
        if group is None:
            return
        self._roster.left(group, member, self._lifecycle.registered)
        if self._groups.get(group.name) is not group:  # (dropped: no members, no holds)
            self._roster.unsubscribe(group.name)

    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[Group]:
        group, created = self._hold(name)
        try:
            await self._roster.follow(group, created)
            yield group
        finally:
            if self._release(group):
                self._roster.unsubscribe(group.name)

    # -- the whole cluster's view, from Redis (the HTTP API's) --------------------------

    async def cluster_groups(self) -> dict[str, int]:
        """Every group with members on any node, with its member count (from Redis)."""
        return await self._roster.cluster_groups()

    async def cluster_members(self, group_name: str) -> list[str]:
        """The ids of ``group_name``'s members on every node (from Redis)."""
        return await self._roster.cluster_members(group_name)

    async def cluster_size(self, group_name: str) -> int:
        """How many members ``group_name`` has on every node (from Redis)."""
        return await self._roster.cluster_size(group_name)

    async def has_member(self, group_name: str, member_id: str) -> bool:
        return await self._roster.has_member(group_name, member_id)

    async def remove_member(self, group_name: str, member_id: str, reason: str) -> bool:
        return await self._roster.remove_member(group_name, member_id, reason)

    async def remote_member_groups(self, group_name: str, member_id: str) -> list[str] | None:
        return await self._roster.remote_member_groups(group_name, member_id)

    async def enter_elsewhere(self, group_name: str, member_id: str, other: str) -> bool:
        return await self._roster.enter_elsewhere(group_name, member_id, other)

    async def read_history(self, group_name: str, after: int, limit: int) -> HistoryPage | None:
        return await self._history.page(group_name, after, limit)

    # -- what groups and turns ask of the backplane: the publishing path ------------------

    def publisher(self) -> RedisConnection | None:
        """The publishing connection while Redis is up and the node registered."""
        link = self._link
        return link.pub if link.up else None

    def publish(self, group: Group, messages: list[Message]) -> None:
        """Publish whole messages (one or more, in order) for the group's members on
        other nodes, as one Redis message."""
        link = self._link
        if not link.up:
            return
        if not group.sequenced:
            link.send(
                "PUBLISH",
                self.names.group_channel(group.name),
                encode_messages(self._node, messages),
            )
            return
        history = self._history
        limits = history.limits
        assert limits is not None
        kept = "".join(["1" if len(m.payload) <= limits.max_bytes else "0" for m in messages])
        header = messages_header(self._node, len(messages))
        args = history.args(scripts.SEQUENCE, group.name, group)
        link.send(*args, "M", header, kept, *encode_bodies(messages))

    async def publish_claim(self, group: Group, start: StreamStart) -> object:
        """Publish a stream's start (a claim of the group's floor) on its channel; the
        number of nodes that received it comes back. With history on, it takes its
        offset in the group's history (a gap: too large to keep) on the way."""
        link = self._link
        pub = link.pub
        if pub is None or not link.up:
            raise ConnectionLost("the backplane is down")
        if not group.sequenced:
            return await pub.call("PUBLISH", self.names.group_channel(group.name), start.encode())
        args = self._history.args(scripts.SEQUENCE, group.name, group)
        reply = await pub.call(*args, "S", start.encode())
        if not isinstance(reply, list) or not reply:
            raise RedisError(f"unexpected reply to the sequencing script: {reply!r}")
        return reply[0]

    async def recover(self, group_name: str, since: v1.Position, member_id: str) -> Recovered | str:
        """What ``member_id`` missed after ``since``, from the group's history in Redis,
        or why it cannot all be had (a Recovery reason)."""
        return await self._history.recover(group_name, since, member_id)

    @property
    def congested(self) -> bool:
        """Whether so much waits to be written to Redis that senders should wait."""
        pub = self._link.pub
        return pub is not None and pub.pending >= PUBLISH_BUFFER

    async def wait_room(self) -> None:
        """Wait until what waits to be written to Redis is under PUBLISH_BUFFER."""
        pub = self._link.pub
        if pub is not None:
            try:
                await pub.wait_room(PUBLISH_BUFFER)
            except ConnectionLost:
                pass  # the outage closes whoever may have missed something

    def send_to_group(self, group_name: str, data: bytes) -> None:
        """Publish on a group's channel without waiting (a no-op while Redis is away)."""
        self._link.send("PUBLISH", self.names.group_channel(group_name), data)

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
        self._config = config
        self._history.configure(config)
        self._channels.configure(config, counters)
        # Longer than a receiving node may wait for a slow member of its own, so that a
        # node that is only waiting for one is not given up on.
        self.turns.patience = config.slow_member_timeout + self.node_ttl
        await self._lifecycle.run(task_status)
