"""Who is in the cluster: this node's members as registered in Redis (each connection's
owner token), the members and nodes elsewhere this node knows of, and the cluster's
membership as Redis holds it, for the HTTP API.

Membership lives in a hash per group (id -> owner token of the newest connection); joins
and leaves are announced on the group's channel with the member's id (see channel.py for
what a node does with them). A join that replaces an owner on another node tells that
node on its channel, and it closes the older connection with 4000.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence

import trio

from ..protocol.close_codes import CloseCode
from ..protocol.nodes import (
    Enter,
    MemberJoined,
    MemberLeft,
    Remove,
    Replace,
    Revoke,
    owner_connection,
    owner_node,
    owner_token,
)
from ..protocol.resp import ConnectionLost, RedisError
from ..relay.groups import (
    REPLACED_REASON,
    Group,
    GroupEvents,
    Member,
    PresenceChange,
    RegistryUnavailable,
)
from ..relay.revocations import Revocation
from . import scripts
from .connection import RedisConnection, _Waiter
from .group import SharedGroup
from .history import RedisHistory
from .link import RedisLink
from .names import Names


def _no_presence(group: Group, member_id: str, joined: bool) -> None:
    """Until a relay watches presence (a backplane run without one, in tests)."""


def _no_revocation(revocation: Revocation) -> object:
    """Until a relay watches revocations."""


class Roster:
    """This node's members in Redis, what it knows of the others, and the cluster's view."""

    def __init__(
        self,
        link: RedisLink,
        history: RedisHistory,
        names: Names,
        node: str,
        groups: Mapping[str, SharedGroup],
    ) -> None:
        self._link = link
        self._history = history
        self._names = names
        self._node_id = node
        self._node = node.encode()
        self._groups = groups
        #: Told of members joining and leaving on other nodes (the relay's presence).
        self.presence_changed: PresenceChange = _no_presence
        #: Told of the revocations of tokens that the back end made on any node.
        self.revoked: Callable[[Revocation], object] = _no_revocation
        #: Owner token of each member here (its connection's registration), and back.
        self._owners: dict[Member, str] = {}
        self.by_owner: dict[str, Member] = {}
        self._serial = itertools.count(1)
        #: (group, id, owner) of members that left while Redis was away.
        self._left_while_down: list[tuple[str, str, str]] = []
        #: The other nodes this one heard from (the reaper looks after them too).
        self.known_nodes: set[bytes] = set()
        #: Told of groups occupied and vacated on the whole cluster, and of the members
        #: of the nodes this one reaps (the webhooks), if anyone is.
        self.occupancy: GroupEvents | None = None
        # The leaves whose Redis reply says whether they vacated their group, in order.
        self._leaves, self._leave_replies = trio.open_memory_channel[tuple[str, _Waiter]](math.inf)

    # -- this node's members -------------------------------------------------------------

    def new_owner(self, member: Member) -> str:
        """The owner token of a new membership here (of ``member``'s connection)."""
        return owner_token(self._node_id, next(self._serial), member.connection_key)

    async def joined(self, group: SharedGroup, member: Member, owner: str) -> None:
        """``member`` (its connection ``owner``) is in ``group`` here: register it in
        Redis, the node subscribed to the group first. Redis away closes it (4004)."""
        link = self._link
        self._owners[member] = owner
        self.by_owner[owner] = member
        if not link.up:
            if group.sequenced:  # (its order comes from Redis: see unavailable)
                member.close(CloseCode.BACKPLANE_UNAVAILABLE, "backplane unavailable")
            return  # a group of this node only (see unavailable)
        # The first member here takes the snapshot of the members elsewhere (a group
        # held for the HTTP API may be subscribed already, but never took one).
        first = len(group.members) == 1
        try:
            if first and not group.subscribed.is_set() and not group.holds:
                await self.subscribe(group)
            else:
                await group.subscribed.wait()
            if not link.up:
                raise ConnectionLost("the backplane went away during the join")
            await self.register(group, member, owner, snapshot=first)
        except (ConnectionLost, RedisError) as exc:
            if group.members.get(member.id) is member:
                member.close(CloseCode.BACKPLANE_UNAVAILABLE, f"backplane unavailable: {exc}")

    def left(self, group: SharedGroup, member: Member, registered: bool) -> None:
        """``member`` left ``group`` here: take it out of Redis, or (Redis away, the
        node ``registered`` before) once Redis is back."""
        owner = self._owners.pop(member, "")
        self.by_owner.pop(owner, None)
        if self._link.up:
            self.unregister(group.name, member.id, owner)
        elif registered:
            self._left_while_down.append((group.name, member.id, owner))

    async def follow(self, group: SharedGroup, created: bool) -> None:
        """A hold of ``group`` (for the HTTP API) waits until the node follows its
        channel; RegistryUnavailable if it cannot."""
        if not self._link.up:
            return
        try:
            if created:
                await self.subscribe(group)
            else:
                await group.subscribed.wait()
        except (ConnectionLost, RedisError) as exc:
            raise RegistryUnavailable(f"backplane unavailable: {exc}") from exc

    def unsubscribe(self, group_name: str) -> None:
        """The group is gone from this node: stop following its channel."""
        link = self._link
        if link.up and link.sub is not None:
            link.send_sub("UNSUBSCRIBE", self._names.group_channel(group_name))

    async def subscribe(self, group: SharedGroup) -> None:
        """Follow the group's channel (and, with history on, mirror its history from
        there on)."""
        link = self._link
        sub, pub = link.sub, link.pub
        if sub is None or pub is None:
            raise ConnectionLost("the subscribing connection is gone")
        group.forget_mirror()
        await sub.subscribe(self._names.group_channel(group.name))
        if group.sequenced:
            # Everything after this read comes on the channel, now that we follow it.
            epoch, last, _, _ = await self._history.read(pub, group.name, -1, 0)
            group.start_mirror(epoch, last)
        group.subscribed.set()

    async def register(
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
        link = self._link
        pub = link.pub
        if pub is None:
            raise ConnectionLost("the publishing connection is gone")
        names = self._names
        leave = MemberLeft(self._node, member.id, owner).encode()
        entry = json.dumps([group.name, member.id, leave.hex()])
        reply = await pub.call(
            "EVAL", scripts.JOIN, 2, names.members_key(group.name), names.node_members_key(),
            member.id, owner, entry, names.namespace, int(snapshot), int(again),
        )  # fmt: skip
        if not (isinstance(reply, list) and len(reply) == 4):
            raise RedisError(f"unexpected reply to the join script: {reply!r}")
        old, pairs, registered, occupied = reply
        if not isinstance(pairs, list):
            raise RedisError(f"unexpected reply to the join script: {reply!r}")
        if not registered:
            member.close(CloseCode.REPLACED, REPLACED_REASON)
            return False
        if occupied == 1 and self.occupancy is not None:
            self.occupancy.occupied(group.name)
        if isinstance(old, bytes):
            old_node = owner_node(old)
            if old_node != self._node and old.decode() != owner:
                message = Replace(self._node, old.decode()).encode()
                link.send("PUBLISH", names.node_channel(old_node), message)
        unknown = False
        for other_id, other in zip(pairs[::2], pairs[1::2], strict=True):
            if isinstance(other, bytes) and isinstance(other_id, bytes):
                if owner_node(other) != self._node:
                    changed = self.presence_changed
                    unknown |= group.joined_elsewhere(other.decode(), other_id.decode(), changed)
                    self.known_nodes.add(owner_node(other))
        if group.members.get(member.id) is member:
            # (A member that left meanwhile announced its leave already.)
            joined = MemberJoined(self._node, member.id, owner).encode()
            link.send("PUBLISH", names.group_channel(group.name), joined)
        return unknown

    def unregister(self, group_name: str, member_id: str, owner: str) -> None:
        """Take a member's connection out of Redis, and announce its leave."""
        names = self._names
        link = self._link
        command = (
            "EVAL", scripts.LEAVE, 2, names.members_key(group_name), names.node_members_key(),
            member_id, owner,
        )  # fmt: skip
        waiter = None
        if self.occupancy is not None and link.up and link.pub is not None:
            try:
                waiter = link.pub.send_nowait(*command)
            except ConnectionLost:
                link.unsent = True
            if waiter is not None:
                self._leaves.send_nowait((group_name, waiter))
        else:
            link.send(*command)
        left = MemberLeft(self._node, member_id, owner).encode()
        link.send("PUBLISH", names.group_channel(group_name), left)

    async def tell_vacated(self) -> None:
        """Tell the webhooks of each group that a leave of this node's emptied on the
        whole cluster, as Redis's replies come (runs while the node is connected; a
        reply lost with the connection is not told)."""
        async for group_name, waiter in self._leave_replies:
            await waiter.event.wait()
            if waiter.reply == 2 and self.occupancy is not None:
                self.occupancy.vacated(group_name)

    def reaped(self, gone: Sequence[object]) -> None:
        """This node reaped a dead one: tell the webhooks of its members' leaves (and of
        the groups they were the last of), as the reap script listed them."""
        told = self.occupancy
        if told is None:
            return
        for group_name, member_id, vacated in zip(gone[::3], gone[1::3], gone[2::3], strict=True):
            if isinstance(group_name, bytes) and isinstance(member_id, bytes):
                told.reaped(group_name.decode(), member_id.decode())
                if vacated == 1:
                    told.vacated(group_name.decode())

    def deregistered(self, gone: Sequence[object]) -> None:
        """This node took itself out of Redis (shutdown): tell the webhooks of the groups
        emptied then — by the memberships it removed (their leaves are its sessions' to
        tell), and by the leaves whose reply came but was not read yet."""
        told = self.occupancy
        if told is None:
            return
        while True:
            try:
                group_name, waiter = self._leave_replies.receive_nowait()
            except trio.WouldBlock:
                break
            if waiter.event.is_set() and waiter.reply == 2:
                told.vacated(group_name)
        for name, vacated in zip(gone[::3], gone[2::3], strict=True):
            if isinstance(name, bytes) and vacated == 1:
                told.vacated(name.decode())

    async def rejoin(self, group: SharedGroup) -> bool:
        """Redis is back: follow the group's channel again and register its members
        that stayed through the outage. True when members joined the group elsewhere
        while this node was cut off: each side may have missed the other's messages."""
        if self._groups.get(group.name) is not group:
            return False  # emptied while we were busy with another group
        group.resubscribe()
        await self.subscribe(group)
        if self._groups.get(group.name) is not group:
            if group.name not in self._groups:  # (a new group of that name needs it)
                self._link.send_sub("UNSUBSCRIBE", self._names.group_channel(group.name))
            return False
        split = False
        first = True
        for member in group.sessions:
            stayed = self._owners.get(member)
            if stayed is not None and group.members.get(member.id) is member:
                split |= await self.register(group, member, stayed, first, again=True)
                first = False
        return split

    def unregister_left(self) -> None:
        """Redis is back: take out of it the members that left while it was away."""
        left, self._left_while_down = self._left_while_down, []
        for group_name, member_id, owner in left:
            self.unregister(group_name, member_id, owner)

    # -- the whole cluster's view, from Redis (the HTTP API's) --------------------------

    async def cluster_groups(self) -> dict[str, int]:
        """Every group with members on any node, and how many (Redis's count)."""
        start = self._names.members_key("")
        # SCAN's pattern is a glob: the prefix may hold glob characters of its own.
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in start) + "*"
        groups: dict[str, int] = {}
        cursor = b"0"
        while True:
            reply = await self._link.call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            if not (isinstance(reply, list) and len(reply) == 2):
                raise RegistryUnavailable(f"unexpected reply to SCAN: {reply!r}")
            cursor, keys = reply
            names = [k.decode()[len(start) :] for k in keys if isinstance(k, bytes)]
            pub = self._link.publisher_or_fail()
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
        """The ids of the group's members on every node (Redis's list)."""
        reply = await self._link.call("HKEYS", self._names.members_key(group_name))
        if not isinstance(reply, list):
            raise RegistryUnavailable(f"unexpected reply to HKEYS: {reply!r}")
        return [key.decode() for key in reply if isinstance(key, bytes)]

    def _here_only(self, group_name: str) -> SharedGroup | None:
        """The group, while Redis is away, if it lives on this node only (it goes on
        through the outage: see unavailable); None otherwise."""
        group = self._groups.get(group_name)
        if self._link.up or group is None or group.spans_nodes:
            return None
        return group

    async def cluster_size(self, group_name: str) -> int:
        """How many members the group has on every node (Redis's count)."""
        group = self._here_only(group_name)
        if group is not None:
            return len(group.members)
        reply = await self._link.call("HLEN", self._names.members_key(group_name))
        return reply if isinstance(reply, int) else 0

    async def has_member(self, group_name: str, member_id: str) -> bool:
        """Whether member ``member_id`` is in the group on any node."""
        group = self._groups.get(group_name)
        if group is not None and member_id in group.members:
            return True
        if self._here_only(group_name) is not None:
            return False
        reply = await self._link.call("HEXISTS", self._names.members_key(group_name), member_id)
        return reply == 1

    async def remove_member(self, group_name: str, member_id: str, reason: str) -> bool:
        """Close member ``member_id`` of the group (4003), on whichever node it is."""
        group = self._groups.get(group_name)
        member = None if group is None else group.members.get(member_id)
        if member is not None:
            member.close(CloseCode.REMOVED, reason)
            return True
        names = self._names
        owner = await self._link.call("HGET", names.members_key(group_name), member_id)
        if not isinstance(owner, bytes):
            return False
        node = owner_node(owner)
        removal = Remove(self._node, owner.decode(), reason).encode()
        await self._link.call("PUBLISH", names.node_channel(node), removal)
        return True

    async def revoke(self, revocation: Revocation) -> None:
        """Keep ``revocation`` in Redis until it ends, and tell every other node now."""
        names, link = self._names, self._link
        key = names.revoked_key(revocation.kind, revocation.value)
        until_ms = max(1, int(revocation.until * 1000))
        await link.call("SET", key, f"{revocation.at!r} {revocation.until!r}", "PXAT", until_ms)
        message = Revoke(
            self._node, revocation.kind, revocation.value, revocation.at, revocation.until
        ).encode()
        nodes = await link.call("SMEMBERS", names.nodes_key)
        for node in nodes if isinstance(nodes, list) else ():
            if isinstance(node, bytes) and node != self._node:
                await link.call("PUBLISH", names.node_channel(node), message)

    async def load_revocations(self, pub: RedisConnection) -> None:
        """The revocations in force in Redis (this node just (re)connected: it may have
        missed some while it was away), to the relay."""
        revocation_cursor: bytes = b"0"
        pattern = self._names.revoked_pattern()
        while True:
            reply = await pub.call("SCAN", revocation_cursor, "MATCH", pattern, "COUNT", 1000)
            if not (
                isinstance(reply, list)
                and len(reply) == 2
                and isinstance(reply[0], bytes)
                and isinstance(reply[1], list)
            ):
                raise RedisError(f"unexpected reply to SCAN: {reply!r}")
            revocation_cursor, keys = reply[0], reply[1]
            for key in keys:
                if not isinstance(key, bytes):
                    continue
                value = await pub.call("GET", key)
                if isinstance(value, bytes):
                    kind, _, name = key.decode().split(":revoked:", 1)[1].partition(":")
                    at, _, until = value.decode().partition(" ")
                    try:
                        self.revoked(Revocation(kind, name, float(at), float(until)))
                    except ValueError:
                        continue  # (not ours)
            if revocation_cursor == b"0":
                return

    async def _remote_owner(self, group_name: str, member_id: str) -> bytes | None:
        """The owner token of member ``member_id`` of the group when it is on another
        node (from Redis), else None."""
        owner = await self._link.call("HGET", self._names.members_key(group_name), member_id)
        if not isinstance(owner, bytes) or owner_node(owner) == self._node:
            return None
        return owner

    async def remote_member_groups(self, group_name: str, member_id: str) -> list[str] | None:
        """The groups of the connection that is member ``member_id`` of the group on
        another node, from that node's membership entries in Redis (one read of them:
        a call of the HTTP API's, not of any hot path)."""
        owner = await self._remote_owner(group_name, member_id)
        if owner is None:
            return None
        connection = owner_connection(owner)
        entries = await self._link.call("HGETALL", self._names.node_members_key(owner_node(owner)))
        if not isinstance(entries, list):
            raise RedisError(f"unexpected reply to HGETALL: {entries!r}")
        groups = []
        for key, entry in zip(entries[::2], entries[1::2], strict=True):
            if isinstance(key, bytes) and owner_connection(key) == connection:
                if isinstance(entry, bytes):
                    groups.append(json.loads(entry)[0])
        return sorted(groups)

    async def enter_elsewhere(self, group_name: str, member_id: str, other: str) -> bool:
        """Ask the node of member ``member_id`` of the group (on another node) to have
        its connection join ``other`` too (the G node message)."""
        owner = await self._remote_owner(group_name, member_id)
        if owner is None:
            return False
        entering = Enter(self._node, owner.decode(), other).encode()
        await self._link.call("PUBLISH", self._names.node_channel(owner_node(owner)), entering)
        return True
