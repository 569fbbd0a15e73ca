"""The Redis backplane: relay nodes that share one Redis form one relay.

Who talks to whom (``P`` is ``backplane_prefix`` and the protocol version, ``prefix:v1``):

- Every node subscribes to ``P:g:<group>`` for each group it has members in, and to
  its own ``P:n:<node>``. A member's message is delivered to the members on its own
  node directly and published once on the group's channel; each other node subscribed
  there delivers it to its members. Redis delivers one channel's messages in the order
  they were published, which is what keeps every sender's order.
- A message too large to hold streams through in ~1 MiB pieces. Which sender streams
  to a group first is decided by the group channel's order (the first start announced
  wins, the others wait for its end), so pieces of two messages never interleave. The
  receiving nodes acknowledge pieces on the sender node's channel, and the sender keeps
  at most ``STREAM_WINDOW`` pieces unacknowledged: memory stays flat on every node and
  no subscriber outgrows Redis's pub/sub output buffer.
- Membership lives in ``P:members:<group>`` (id -> owner token of the newest connection);
  a join that replaces an owner on another node tells that node on its channel, and it
  closes the older connection with 4000. Each node refreshes ``P:node:<node>`` every
  ``node_ttl``/3; nodes whose key expired are reaped by the others, which then treat their
  members as gone and cut off (4002) any message they were streaming.
- Deliveries from Redis never wait on one member: if a mailbox is full, the rest goes
  to the group's inbox, worked off by a task of the group's own (one slow member holds
  up its group, as on a single relay, never the node).
- When Redis is lost (or drops this node's subscription, or reaps it), members of
  groups with members on other nodes are closed with 4004: they may have missed
  messages. Groups that live on this node only keep working. The node reconnects with
  backoff and registers again; if its publishing connection broke, it tells the other
  nodes to close their members who may have missed its last messages, and it cuts off
  any message of its own they were still receiving.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import random
import struct
import uuid
from typing import TYPE_CHECKING

import trio

from ..protocol.close_codes import CloseCode
from ..protocol.resp import ConnectionLost, RedisAddress, RedisError
from ..relay.groups import Group, _Registry
from ..relay.session import Courier
from .connection import RedisConnection

if TYPE_CHECKING:
    from ..relay.relay import Relay
    from ..relay.session import Session

logger = logging.getLogger("trio_wsproxy.backplane")

#: Stream pieces a sender may have published and not yet seen acknowledged by every
#: receiving node. Pieces are about 1 MiB (FRAGMENT_SIZE): this keeps a subscriber's
#: backlog under Redis's default soft pub/sub limit (8 MB).
STREAM_WINDOW = 4
#: Bytes a node may have queued for Redis before its members' senders wait.
PUBLISH_BUFFER = 8 * 1024 * 1024
#: Reconnection backoff: first delay and the most it grows to (seconds).
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
#: The version of the messages and keys nodes share; part of every Redis name.
PROTOCOL_VERSION = 1
#: How long shutdown spends removing this node's registration.
DEREGISTER_TIMEOUT = 1.0

# Channel message kinds (first byte), then the 16-byte sending node id.
_MESSAGE = b"M"  # + count: framed whole messages, one after the other
_START = b"S"  # + stream id: claims the group for a streamed message
_PIECE = b"F"  # + stream id, piece number + framed fragment
_END = b"E"  # same as _PIECE, the last piece
_ABORT = b"X"  # + stream id: the sender left mid-message
_JOINED = b"J"  # + owner token
_LEFT = b"L"  # + owner token
_SPLIT = b"Z"  # + seconds: close the members that joined more than that long ago
# On a node's own channel:
_REPLACE = b"R"  # + owner token: close that connection, a newer one took its id
_ACK = b"A"  # + stream id, piece number
_COUNT = struct.Struct(">I")
_STREAM_ID = struct.Struct(">Q")
_PIECE_ID = struct.Struct(">QI")
_SECONDS = struct.Struct(">d")
_NODE_ID_LENGTH = 16

# id -> owner of the newest connection; the node's own index of what it registered.
# KEYS: members hash, node-members hash. ARGV: id, owner, entry, namespace, snapshot, keep.
# Returns the replaced owner (or nil) and, if ARGV[5] is 1, every owner in the group
# (a node asks once per group; join and leave announcements keep it up to date).
# With ARGV[6] = 1 (registering again after an outage) a different owner is newer and
# stays: the reply is {that owner, {}, 0} and nothing changes.
_JOIN = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[6] == '1' and old and old ~= ARGV[2] then
  return {old, {}, 0}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if old and old ~= ARGV[2] then
  redis.call('HDEL', ARGV[4] .. ':node-members:' .. string.sub(old, 1, 16), old)
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if ARGV[5] == '1' then
  return {old or false, redis.call('HVALS', KEYS[1]), 1}
end
return {old or false, {}, 1}
"""
# KEYS: members hash, node-members hash. ARGV: id, owner.
_LEAVE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
redis.call('HDEL', KEYS[2], ARGV[2])
return 1
"""
# Forget a node and every membership it registered that nobody has replaced since, and
# announce each as left on its group's channel. Unless ARGV[3] is 1 (the node removing
# itself), nothing happens while the node's key exists: it came back meanwhile.
# KEYS: node-members hash, nodes set, node key. ARGV: node, namespace, force.
_REAP = """
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[3]) == 1 then
  return -1
end
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local entry = cjson.decode(entries[i + 1])
  local members = ARGV[2] .. ':members:' .. entry[1]
  if redis.call('HGET', members, entry[2]) == entries[i] then
    redis.call('HDEL', members, entry[2])
  end
  redis.call('PUBLISH', ARGV[2] .. ':g:' .. entry[1], 'L' .. ARGV[1] .. entries[i])
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return #entries / 2
"""


class RemoteStream:
    """A message another node's member is streaming to a group, as this node forwards it."""

    __slots__ = ("delivered", "node", "queued", "recipients", "stream_id")

    def __init__(self, node: bytes, stream_id: int, recipients: tuple[Session, ...]) -> None:
        self.node = node
        self.stream_id = stream_id
        self.recipients = recipients
        #: Whether a piece went out: only then does cutting it off close the recipients.
        self.delivered = False
        #: Its pieces waiting in the group's inbox: acknowledgements keep that within
        #: the window, unless the sender stopped waiting for this node's slowest member.
        self.queued = 0


class OutgoingStream:
    """A message a member of this node streams to other nodes: its acknowledgements."""

    __slots__ = ("acked", "changed", "expected", "group_name", "pieces", "stream_id")

    def __init__(self, group_name: str, stream_id: int, expected: int) -> None:
        self.group_name = group_name
        self.stream_id = stream_id
        #: How many other nodes receive it (Redis's count of subscribers, less us).
        self.expected = expected
        self.pieces = 0
        self.acked: dict[bytes, int] = {}
        self.changed = trio.Event()

    def acked_by(self, piece: int) -> int:
        return sum(1 for last in self.acked.values() if last >= piece)


class SharedGroup(Group):
    """A group as one node sees it: its members here, owners of members elsewhere."""

    __slots__ = (
        "backplane",
        "inbox",
        "inbox_bytes",
        "inbox_drained",
        "owner",
        "pending",
        "pending_bytes",
        "remote",
        "subscribed",
    )

    def __init__(self, name: str, backplane: RedisBackplane) -> None:
        super().__init__(name)
        self.backplane = backplane
        #: Owner tokens of the group's members on other nodes, as far as this node knows.
        self.remote: set[str] = set()
        #: (node, stream id) of the message streaming to the group, in channel order.
        self.owner: tuple[bytes, int] | None = None
        #: Whole messages from other nodes that arrived while a message streamed.
        self.pending: collections.deque[bytes] = collections.deque()
        self.pending_bytes = 0
        self.subscribed = trio.Event()
        #: Deliveries waiting for a full mailbox, worked off by a task of the group's
        #: own so that the node's other groups go on; None when nothing waits.
        #: inbox_bytes counts its whole messages (stream pieces: RemoteStream.queued).
        self.inbox: collections.deque[_Delivery] | None = None
        self.inbox_bytes = 0
        #: Set whenever the inbox is worked off (a granted stream waits for that).
        self.inbox_drained = trio.Event()

    @property
    def spans_nodes(self) -> bool:
        return bool(self.remote) or isinstance(self.streamer, RemoteStream)


class _Delivery:
    """Frames for some of a group's members, and what to do once they are queued."""

    __slots__ = ("ack", "data", "ended", "members", "stream")

    def __init__(
        self,
        data: bytes,
        members: tuple[Session, ...],
        ack: tuple[bytes, bytes] | None = None,
        stream: RemoteStream | None = None,
        ended: RemoteStream | None = None,
    ) -> None:
        self.data = data
        self.members = members
        #: (channel, message) acknowledging a piece of ``stream``, sent once it is queued.
        self.ack = ack
        self.stream = stream
        #: A remote stream whose last piece this was: it ends once that is queued.
        self.ended = ended


class _Claim:
    __slots__ = ("accepted", "decided", "group_name", "session")

    def __init__(self, group_name: str, session: Session) -> None:
        self.group_name = group_name
        self.session = session
        self.accepted = False
        self.decided = trio.Event()


class BackplaneDown(Exception):
    """The backplane lost Redis (or Redis dropped or reaped this node)."""


class RedisBackplane(_Registry[SharedGroup]):
    """The group registry of a relay node in a cluster that shares one Redis.

    Run it with ``await nursery.start(backplane.run, relay)``: it connects, keeps the
    node registered, and reconnects with backoff when Redis goes away.
    """

    def __init__(self, url: str, prefix: str, node_ttl: float) -> None:
        super().__init__()
        self.address = RedisAddress.from_url(url)
        self.prefix = prefix
        #: Every key and channel name starts with this: the prefix, then the version of
        #: what nodes say to each other. Nodes of another version are another cluster
        #: (never a garbled message to a member).
        self.namespace = f"{prefix}:v{PROTOCOL_VERSION}"
        self.node_ttl = node_ttl
        #: This node's id in the cluster (16 hex digits, new every start).
        self.node = uuid.uuid4().hex[:_NODE_ID_LENGTH]
        self._node = self.node.encode()
        self._node_channel = f"{self.namespace}:n:{self.node}".encode()
        self._group_channel_prefix = f"{self.namespace}:g:".encode()
        #: True while Redis is reachable and this node is registered.
        self.up = False
        #: Times the node lost the backplane, and reconnected.
        self.outages = 0
        self._by_owner: dict[str, Session] = {}
        self._serial = itertools.count(1)
        self._stream_ids = itertools.count(1)
        self._claims: dict[int, _Claim] = {}
        self._streams: dict[int, OutgoingStream] = {}
        self._pub: RedisConnection | None = None
        self._sub: RedisConnection | None = None
        self._relay: Relay | None = None
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
        self._nursery: trio.Nursery | None = None
        #: A publish was dropped because the connection had just failed.
        self._unsent = False

    # -- the GroupRegistry interface -------------------------------------------------

    def _new_group(self, name: str) -> SharedGroup:
        return SharedGroup(name, self)

    def cluster_group_size(self, name: str) -> int:
        """Members of group ``name`` on every node, as far as this node knows (0 when it
        has none of its own: it only follows groups it has members in)."""
        group = self._groups.get(name)
        return 0 if group is None else len(group.members) + len(group.remote)

    def unavailable(self, group_name: str) -> str | None:
        if self.up:
            return None
        group = self._groups.get(group_name)
        if group is not None and not group.spans_nodes:
            return None  # it lives on this node only: it goes on through the outage
        return "backplane unavailable: the relay cannot reach Redis; try again"

    async def join(self, session: Session) -> Group:
        session.owner = f"{self.node}:{next(self._serial)}"
        group = self._add(session)
        self._by_owner[session.owner] = session
        if not self.up:
            return group  # a group of this node only (see unavailable)
        first = len(group.members) == 1 and not group.subscribed.is_set()
        try:
            if first:
                await self._subscribe(group)
            else:
                await group.subscribed.wait()
            if not self.up:
                raise ConnectionLost("the backplane went away during the join")
            await self._register(group, session, snapshot=first)
        except (ConnectionLost, RedisError) as exc:
            if group.members.get(session.id) is session:
                session.close(CloseCode.BACKPLANE_UNAVAILABLE, f"backplane unavailable: {exc}")
        return group

    def leave(self, session: Session) -> None:
        group = self._remove(session)
        if group is None:
            return
        self._by_owner.pop(session.owner, None)
        if self.up:
            self._unregister(group.name, session.id, session.owner)
        elif self._registered:
            self._left_while_down.append((group.name, session.id, session.owner))
        if not group.members:
            if self.up and self._sub is not None:
                self._send_sub("UNSUBSCRIBE", self._group_channel(group.name))

    # -- hooks the sessions call -------------------------------------------------------

    def _unregister(self, group_name: str, member_id: str, owner: str) -> None:
        self._send(
            "EVAL", _LEAVE, 2, self._members_key(group_name), self._node_members_key(),
            member_id, owner,
        )  # fmt: skip
        self._send("PUBLISH", self._group_channel(group_name), _LEFT + self._node + owner.encode())

    def publish(self, group: Group, frames: list[bytes]) -> None:
        """Publish framed whole messages (one or more, in order) for the group's members
        on other nodes, as one Redis message."""
        if self.up:
            count = _COUNT.pack(len(frames))
            self._publish(group, b"".join([_MESSAGE, self._node, count, *frames]))

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

    async def claim_stream(self, group: Group, session: Session) -> OutgoingStream | None:
        """Wait until ``session`` may stream a message to ``group``: the group channel's
        order decides between senders on different nodes. Returns with
        ``group.streamer`` set to ``session``, or None while Redis is down (the group
        then lives on this node only, see :meth:`unavailable`)."""
        while self.up and self._pub is not None:
            stream_id = next(self._stream_ids)
            claim = self._claims[stream_id] = _Claim(group.name, session)
            try:
                receivers = await self._pub.call(
                    "PUBLISH",
                    self._group_channel(group.name),
                    _START + self._node + _STREAM_ID.pack(stream_id),
                )
                await claim.decided.wait()
                if claim.accepted:
                    # What came before our start in the channel may still wait in the
                    # group's inbox (the tail of another message): it goes out first.
                    assert isinstance(group, SharedGroup)
                    while group.inbox is not None:
                        await group.inbox_drained.wait()
            except BaseException as exc:
                if claim.accepted:
                    self._give_up_claim(group, session, stream_id)
                if isinstance(exc, ConnectionLost | RedisError):
                    return None
                raise
            finally:
                del self._claims[stream_id]
            if claim.accepted:
                assert isinstance(receivers, int)
                stream = OutgoingStream(group.name, stream_id, receivers - 1)
                self._streams[stream_id] = stream
                return stream
            # Another member's message goes first: wait for its end, then ask again.
            while group.streamer is not None and group.streamer is not session:
                await group.stream_done.wait()
        return None

    def _give_up_claim(self, group: Group, session: Session, stream_id: int) -> None:
        """A claim was granted to a member that went away before streaming: release it."""
        if group.streamer is session:
            group.streamer = None
            group.stream_done.set()
        self._publish(group, _ABORT + self._node + _STREAM_ID.pack(stream_id))

    async def publish_piece(
        self, group: Group, stream: OutgoingStream, data: bytes, last: bool
    ) -> None:
        """Publish one framed piece of ``stream`` once the receivers have caught up."""
        stream.pieces += 1
        piece = stream.pieces
        relay = self._relay
        assert relay is not None
        # Longer than a receiving node may wait for a slow member of its own, so that a
        # node that is only waiting for one is not given up on.
        patience = relay.config.slow_member_timeout + self.node_ttl
        await self._wait_acks(stream, piece - STREAM_WINDOW, patience)
        pub = self._pub
        if not self.up or pub is None or stream.stream_id not in self._streams:
            return  # Redis went away meanwhile: the other nodes were told to drop it
        kind = _END if last else _PIECE
        try:
            receivers = await pub.call(
                "PUBLISH",
                self._group_channel(group.name),
                kind + self._node + _PIECE_ID.pack(stream.stream_id, piece) + data,
            )
        except (ConnectionLost, RedisError):
            return
        if isinstance(receivers, int):
            stream.expected = min(stream.expected, receivers - 1)
        if last:
            self._streams.pop(stream.stream_id, None)

    def end_stream(self, group: Group, stream: OutgoingStream, truncated: bool) -> None:
        """The member's streamed message ended; tell the other nodes if it was cut off."""
        self._streams.pop(stream.stream_id, None)
        if truncated:
            self._publish(group, _ABORT + self._node + _STREAM_ID.pack(stream.stream_id))

    async def _wait_acks(self, stream: OutgoingStream, piece: int, patience: float) -> None:
        if piece < 1:
            return
        deadline = trio.current_time() + patience
        while self.up and stream.stream_id in self._streams:
            if stream.acked_by(piece) >= stream.expected:
                return
            with trio.move_on_at(deadline):
                await stream.changed.wait()
                stream.changed = trio.Event()
                continue
            # A receiving node that does not keep up is not waited for any longer: if
            # it falls too far behind, Redis drops its subscription and it closes its
            # members with 4004. Nothing is lost silently either way.
            logger.debug("stream %d: a node did not acknowledge in %gs", stream.stream_id, patience)
            stream.expected = stream.acked_by(piece)

    # -- running -------------------------------------------------------------------------

    async def run(self, relay: Relay, *, task_status: trio.TaskStatus[None]) -> None:
        """Stay connected to Redis until cancelled; started once the first attempt
        to connect has succeeded or failed. Each outage is logged once, and so is the
        reconnection."""
        self._relay = relay
        self._courier = Courier(relay)
        self._task_status = task_status
        delay = BACKOFF_FIRST
        logged = False
        try:
            while True:
                failure: BaseException | None = None
                try:
                    await self._connected()
                except Exception as exc:  # any failure of the connection means: reconnect
                    failure = _first_cause(exc)
                was_up = self.up
                self._lose(failure)
                if self._task_status is not None:
                    self._task_status.started()
                    self._task_status = None
                if was_up:
                    delay, logged = BACKOFF_FIRST, False
                if not logged:
                    logger.warning(
                        "backplane %s: %s; reconnecting with backoff",
                        "lost" if was_up else "unavailable", failure,
                        exc_info=not isinstance(failure, ConnectionLost | OSError | BackplaneDown),
                    )  # fmt: skip
                    logged = True
                await trio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, BACKOFF_MAX)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(DEREGISTER_TIMEOUT):
                await self._deregister()

    async def _connected(self) -> None:
        """One connection's lifetime: connect, register, serve until it fails."""
        relay = self._relay
        assert relay is not None
        timeout = self.node_ttl
        address = self.address
        pub = await RedisConnection.connect(address, timeout)
        assert self._courier is not None
        sub = await RedisConnection.connect(address, timeout, self._on_message, self._courier.flush)
        async with trio.open_nursery() as nursery:
            await nursery.start(pub.run, address, timeout)
            await nursery.start(sub.run, address, timeout)
            self._pub, self._sub, self._nursery = pub, sub, nursery
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

    async def _register_node(self, sub: RedisConnection) -> None:
        """Announce this node, subscribe, and (after an outage) settle what happened
        meanwhile: streams of ours the others may wait on, members who left, groups whose
        members elsewhere may have missed ours, and members who stayed."""
        pub = self._pub
        assert pub is not None
        await self._refresh(pub)
        self._registered = True
        await sub.subscribe(self._node_channel)
        self.up = True  # from here on, commands are sent (a failure below comes back here)
        # Each is forgotten only once Redis has taken it: if the connection fails again
        # first, it is still due next time.
        for due in list(self._aborts_due):
            group_name, stream_id = due
            message = _ABORT + self._node + _STREAM_ID.pack(stream_id)
            await pub.call("PUBLISH", self._group_channel(group_name), message)
            self._aborts_due.remove(due)
        for group_name, lost_at in list(self._splits_due.items()):
            await pub.call("PUBLISH", self._group_channel(group_name), self._split_message(lost_at))
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
                    self._send_sub("UNSUBSCRIBE", self._group_channel(group.name))
                continue
            split = False
            first = True
            for session in group.sessions:
                if group.members.get(session.id) is session:
                    split |= await self._register(group, session, snapshot=first, again=True)
                    first = False
            if split:
                # Members joined this group elsewhere while this node was cut off: each
                # side may have missed the other's messages.
                message = self._split_message(trio.current_time())
                self._send("PUBLISH", self._group_channel(group.name), message)
                self._close_group(group, "the group was split by a backplane outage")

    def _split_message(self, since: float) -> bytes:
        """Tells the other nodes to close their members of a group who joined before
        ``since`` (this node's clock): they may have missed this node's messages."""
        return _SPLIT + self._node + _SECONDS.pack(trio.current_time() - since)

    async def _subscribe(self, group: SharedGroup) -> None:
        sub = self._sub
        assert sub is not None
        await sub.subscribe(self._group_channel(group.name))
        group.subscribed.set()

    async def _register(
        self, group: SharedGroup, session: Session, snapshot: bool, again: bool = False
    ) -> bool:
        """Record ``session`` as the newest connection of its id; True when the group
        turned out to have members elsewhere that this node did not know of.

        ``again``: registering a member that stayed through an outage, which must not
        replace a connection made elsewhere meanwhile (that one is newer)."""
        pub = self._pub
        assert pub is not None
        entry = json.dumps([group.name, session.id])
        reply = await pub.call(
            "EVAL", _JOIN, 2, self._members_key(group.name), self._node_members_key(),
            session.id, session.owner, entry, self.namespace, int(snapshot), int(again),
        )  # fmt: skip
        assert isinstance(reply, list) and len(reply) == 3
        old, owners, registered = reply
        if not registered:
            session.close(CloseCode.REPLACED, "replaced by a newer connection with the same id")
            return False
        if isinstance(old, bytes):
            old_owner = old.decode()
            old_node = old[:_NODE_ID_LENGTH]
            if old_node != self._node and old_owner != session.owner:
                self._send("PUBLISH", self._node_channel_of(old_node), _REPLACE + self._node + old)
        unknown = False
        assert isinstance(owners, list)
        for owner in owners:
            if isinstance(owner, bytes) and owner[:_NODE_ID_LENGTH] != self._node:
                text = owner.decode()
                unknown |= text not in group.remote
                group.remote.add(text)
                self._known_nodes.add(owner[:_NODE_ID_LENGTH])
        if group.members.get(session.id) is session:
            # (A member that left meanwhile announced its leave already.)
            self._publish(group, _JOINED + self._node + session.owner.encode())
        return unknown

    async def _refresh(self, pub: RedisConnection) -> None:
        """Refresh this node's key; if it had expired, the other nodes have reaped us."""
        ttl_ms = max(1, int(self.node_ttl * 1000))
        previous = await pub.call("SET", self._node_key(self._node), b"1", "PX", ttl_ms, "GET")
        await pub.call("SADD", self._nodes_key(), self._node)
        if previous is None and self.up:
            raise BackplaneDown("this node's registration expired: the others reaped it")

    async def _heartbeat(self, pub: RedisConnection, sub: RedisConnection) -> None:
        while True:
            await trio.sleep(self.node_ttl / 3)
            sub.send_nowait("PING", wait=False)  # keeps the subscriber's reads alive
            await self._refresh(pub)

    async def _reaper(self, pub: RedisConnection) -> None:
        while True:
            await trio.sleep(self.node_ttl / 3 * random.uniform(0.8, 1.0))
            members = await pub.call("SMEMBERS", self._nodes_key())
            assert isinstance(members, list)
            nodes = {node for node in members if isinstance(node, bytes)}
            nodes |= self._known_nodes
            nodes.discard(self._node)
            candidates = sorted(nodes)
            waiters = [pub.send_nowait("EXISTS", self._node_key(node)) for node in candidates]
            for node, waiter in zip(candidates, waiters, strict=True):  # replies in order
                assert waiter is not None
                await waiter.event.wait()
                if waiter.reply == 0:
                    await self._reap(pub, node)

    async def _reap(self, pub: RedisConnection, node: bytes) -> None:
        """``node`` stopped refreshing its key: forget it and its members."""
        reaped = await pub.call(
            "EVAL", _REAP, 3, self._node_members_key(node), self._nodes_key(),
            self._node_key(node), node, self.namespace, 0,
        )  # fmt: skip
        if reaped == -1:
            return  # it came back
        # (Its members' leaves reach every node in channel order: _REAP announces them.)
        self._known_nodes.discard(node)
        for group in list(self._groups.values()):
            if group.owner is not None and group.owner[0] == node:
                # Cut off its message in channel order, on every node, as it would have.
                message = _ABORT + node + _STREAM_ID.pack(group.owner[1])
                self._send("PUBLISH", self._group_channel(group.name), message)
        logger.info("node %s expired; %s of its members forgotten", node.decode(), reaped)

    async def _deregister(self) -> None:
        """Remove this node and its members from Redis (shutdown), on a connection of
        its own: the node's connections are gone by now."""
        if not self._registered:
            return
        try:
            pub = await RedisConnection.connect(self.address, DEREGISTER_TIMEOUT)
            async with trio.open_nursery() as nursery:
                await nursery.start(pub.run, self.address, DEREGISTER_TIMEOUT)
                streams = [(s.group_name, s.stream_id) for s in self._streams.values()]
                claims = [(c.group_name, stream_id) for stream_id, c in self._claims.items()]
                for group_name, stream_id in streams + claims + self._aborts_due:
                    message = _ABORT + self._node + _STREAM_ID.pack(stream_id)
                    pub.send_nowait("PUBLISH", self._group_channel(group_name), message)
                await pub.call(
                    "EVAL", _REAP, 3, self._node_members_key(), self._nodes_key(),
                    self._node_key(self._node), self._node, self.namespace, 1,
                )  # fmt: skip
                await pub.call("DEL", self._node_key(self._node))
                nursery.cancel_scope.cancel()
        except (OSError, trio.TooSlowError, ConnectionLost, RedisError, ExceptionGroup) as exc:
            logger.info("could not remove this node from Redis: %s", _first_cause(exc))

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
        self._pub = self._sub = None
        if was_up:
            self.outages += 1
        self._nursery = None
        now = trio.current_time()
        for group in list(self._groups.values()):
            group.subscribed.set()  # wakes joins waiting on it; they see the outage
            if group.spans_nodes or group.inbox or group.pending:
                # (Messages from other nodes still waiting here are dropped with Redis.)
                if published_maybe_lost:
                    self._splits_due.setdefault(group.name, now)
                self._close_group(group, f"backplane lost ({failure}): messages may be missing")
            group.remote.clear()
            group.owner = None
            group.pending.clear()
            group.pending_bytes = 0
            group.inbox = None
            group.inbox_bytes = 0
            group.inbox_drained.set()
            if isinstance(group.streamer, RemoteStream):
                group.streamer = None
                group.stream_done.set()
        # Other nodes may be waiting on streams of ours (or claims they granted): they
        # are cut off once Redis is back (or when this node expires, if it never is).
        for stream_id, claim in self._claims.items():
            self._aborts_due.append((claim.group_name, stream_id))
            claim.decided.set()
        for stream in self._streams.values():
            self._aborts_due.append((stream.group_name, stream.stream_id))
            stream.changed.set()
        self._streams.clear()
        self._known_nodes.clear()

    def _close_group(self, group: SharedGroup, reason: str) -> None:
        for session in group.sessions:
            session.close(CloseCode.BACKPLANE_UNAVAILABLE, reason)

    # -- receiving -----------------------------------------------------------------------

    async def _on_message(self, channel: bytes, data: bytes) -> None:
        try:
            await self._dispatch(channel, data)
        except (struct.error, UnicodeDecodeError, AssertionError) as exc:
            # Not ours (another program on our channels?): never let it cost the node.
            logger.debug("ignored a malformed backplane message on %r: %s", channel, exc)

    async def _dispatch(self, channel: bytes, data: bytes) -> None:
        if len(data) < 1 + _NODE_ID_LENGTH:
            return
        kind = data[:1]
        node = data[1 : 1 + _NODE_ID_LENGTH]
        body = memoryview(data)[1 + _NODE_ID_LENGTH :]
        if channel == self._node_channel:
            self._on_node_message(kind, node, body)
            return
        group = self._groups.get(channel[len(self._group_channel_prefix) :].decode())
        if group is None:
            # Left over from a group this node no longer has: never hold up a sender.
            if (kind == _PIECE or kind == _END) and node != self._node:
                self._ack(node, body)
            self._send_sub("UNSUBSCRIBE", channel)
            return
        if node != self._node:
            self._known_nodes.add(node)
        if group.pending and group.owner is None and group.streamer is None:
            await self._deliver_pending(group)
        if kind == _MESSAGE:
            if node == self._node:
                return
            if group.owner is not None or group.streamer is not None:
                self._hold(group, bytes(body))
            else:
                await self._deliver_messages(group, bytes(body))
        elif kind == _START:
            (stream_id,) = _STREAM_ID.unpack(body)
            await self._on_start(group, node, stream_id)
        elif kind == _PIECE or kind == _END:
            stream_id, piece = _PIECE_ID.unpack_from(body)
            if group.owner != (node, stream_id):
                return
            if node == self._node:
                if kind == _END:
                    await self._end_remote_stream(group, truncated=False)
                return
            streamer = group.streamer
            assert isinstance(streamer, RemoteStream)
            streamer.delivered = True
            ack = (
                self._node_channel_of(node),
                _ACK + self._node + _PIECE_ID.pack(stream_id, piece),
            )
            data = bytes(body[_PIECE_ID.size :])
            if kind == _END:
                group.owner = None
                delivery = _Delivery(data, streamer.recipients, ack, streamer, ended=streamer)
                await self._deliver(group, delivery)
                await self._deliver_pending(group)
            else:
                await self._deliver(group, _Delivery(data, streamer.recipients, ack, streamer))
        elif kind == _ABORT:
            (stream_id,) = _STREAM_ID.unpack(body)
            if group.owner == (node, stream_id):
                await self._end_remote_stream(group, truncated=True)
        elif kind == _JOINED:
            if node != self._node:
                group.remote.add(bytes(body).decode())
        elif kind == _LEFT:
            group.remote.discard(bytes(body).decode())
        elif kind == _SPLIT and node != self._node:
            (seconds,) = _SECONDS.unpack(body)
            before = trio.current_time() - seconds
            for session in group.sessions:
                if session.joined_at <= before:
                    session.close(
                        CloseCode.BACKPLANE_UNAVAILABLE,
                        "another node lost the backplane: messages may be missing",
                    )

    def _ack(self, node: bytes, body: memoryview) -> None:
        stream_id, piece = _PIECE_ID.unpack_from(body)
        message = _ACK + self._node + _PIECE_ID.pack(stream_id, piece)
        self._send("PUBLISH", self._node_channel_of(node), message)

    def _on_node_message(self, kind: bytes, node: bytes, body: memoryview) -> None:
        if kind == _REPLACE:
            session = self._by_owner.get(bytes(body).decode())
            if session is not None:
                session.close(CloseCode.REPLACED, "replaced by a newer connection with the same id")
        elif kind == _ACK:
            stream_id, piece = _PIECE_ID.unpack(body)
            stream = self._streams.get(stream_id)
            if stream is not None:
                stream.acked[node] = max(piece, stream.acked.get(node, 0))
                stream.changed.set()

    async def _on_start(self, group: SharedGroup, node: bytes, stream_id: int) -> None:
        claim = self._claims.get(stream_id) if node == self._node else None
        if group.owner is not None:
            if claim is not None:
                claim.decided.set()  # not accepted: another message streams first
            return
        group.owner = (node, stream_id)
        if node == self._node:
            if claim is None:
                # A claim its member gave up on before the answer came: release it.
                self._publish(group, _ABORT + self._node + _STREAM_ID.pack(stream_id))
                return
            claim.accepted = True
            group.streamer = claim.session
            _new_stream_done(group)
            claim.decided.set()
            return
        recipients = group.sessions
        if group.streamer is not None and not isinstance(group.streamer, RemoteStream):
            # A message this node began streaming while Redis was away is still going:
            # its members cannot take another one in the middle of it. (A remote one
            # whose end is still in the group's inbox goes out before this one's pieces.)
            self._close_group(group, "two messages streamed at once across an outage")
            recipients = ()
        group.streamer = RemoteStream(node, stream_id, recipients)
        _new_stream_done(group)
        assert self._relay is not None
        self._relay.deliveries += len(recipients)

    async def _end_remote_stream(self, group: SharedGroup, truncated: bool) -> None:
        """The message streaming to ``group`` ended (in channel order): it was cut off,
        or it was this node's own (its pieces are all in the mailboxes here by now).
        Then deliver what waited for it."""
        group.owner = None
        streamer = group.streamer
        if isinstance(streamer, RemoteStream):
            if truncated and streamer.delivered:
                for member in streamer.recipients:
                    member.close(
                        CloseCode.MESSAGE_TRUNCATED,
                        "a message was cut off: its sender left mid-message",
                    )
            _end_stream(group, streamer)
        await self._deliver_pending(group)

    async def _deliver_pending(self, group: SharedGroup) -> None:
        while group.pending and group.owner is None:
            data = group.pending.popleft()
            group.pending_bytes -= len(data)
            await self._deliver_messages(group, data)

    async def _deliver_messages(self, group: SharedGroup, body: bytes) -> None:
        """Deliver a published batch (a count, then framed messages) to the group here."""
        (count,) = _COUNT.unpack_from(body)
        relay = self._relay
        assert relay is not None
        relay.deliveries += count * len(group.sessions)
        await self._deliver(group, _Delivery(body[_COUNT.size :], group.sessions))

    def _hold(self, group: SharedGroup, data: bytes) -> None:
        """Keep a whole message that arrived while another one streams to the group."""
        assert self._relay is not None
        if group.pending_bytes + len(data) > self._relay.config.mailbox_bytes:
            group.pending.clear()
            group.pending_bytes = 0
            self._close_group(group, "messages arrived faster than the relay could order them")
            return
        group.pending.append(data)
        group.pending_bytes += len(data)

    async def _deliver(self, group: SharedGroup, delivery: _Delivery) -> None:
        """Queue a delivery for the group's members here, without waiting on anyone.

        Held direct writes go out once per read from Redis (the subscriber's on_batch),
        so a burst of messages costs each member one write, as on the local path. If a
        mailbox is full, the rest of this delivery and the group's next ones wait in
        the group's inbox, worked off by a task of its own: one slow member holds up
        its group (for ``slow_member_timeout`` at most), never the node's other groups.
        """
        if group.inbox is not None:
            self._enqueue(group, delivery)
            return
        courier = self._courier
        assert courier is not None
        blocked = courier.offer(delivery.data, delivery.members)
        if blocked is None:
            if delivery.stream is not None:  # (a whole message needs nothing more)
                await self._delivered(group, delivery)
            return
        delivery.members = tuple(blocked)
        group.inbox = collections.deque()
        group.inbox_drained = trio.Event()
        self._enqueue(group, delivery)
        assert self._nursery is not None
        self._nursery.start_soon(self._work_off_inbox, group)

    def _enqueue(self, group: SharedGroup, delivery: _Delivery) -> None:
        inbox = group.inbox
        assert inbox is not None and self._relay is not None
        inbox.append(delivery)
        if delivery.ack is not None:
            # A stream piece: acknowledgements pace them, up to the window. More means
            # the sender gave up waiting for this node's slowest member.
            stream = delivery.stream
            assert stream is not None
            stream.queued += 1
            overflow = stream.queued > STREAM_WINDOW + 1
        else:
            group.inbox_bytes += len(delivery.data)
            overflow = group.inbox_bytes > self._relay.config.mailbox_bytes
        if overflow and len(inbox) > 1:
            # The group's backlog from other nodes is full too: whoever it waits for is
            # too slow for the group, as if its timeout had passed.
            head = inbox[0]
            for member in head.members:
                mailbox = member.mailbox
                if mailbox.queued + len(head.data) > mailbox.capacity:
                    member.close(
                        CloseCode.SLOW_CONSUMER,
                        "mailbox full and the group's messages from other nodes piling up",
                    )

    async def _work_off_inbox(self, group: SharedGroup) -> None:
        assert self._relay is not None
        courier = Courier(self._relay)
        inbox = group.inbox
        try:
            while inbox is not None and inbox and group.inbox is inbox:
                delivery = inbox[0]
                blocked = courier.offer(delivery.data, delivery.members)
                if blocked is not None:
                    await courier.wait_for_room(delivery.data, blocked)
                courier.flush()
                if group.inbox is not inbox:
                    return  # the backplane went away meanwhile
                inbox.popleft()
                if delivery.ack is None:
                    group.inbox_bytes -= len(delivery.data)
                else:
                    assert delivery.stream is not None
                    delivery.stream.queued -= 1
                    await self._delivered(group, delivery)
        finally:
            courier.flush()
            # Cancelled with deliveries left (Redis went away): _lose deals with them.
            if group.inbox is inbox and not inbox:
                group.inbox = None
                group.inbox_bytes = 0
                group.inbox_drained.set()

    async def _delivered(self, group: SharedGroup, delivery: _Delivery) -> None:
        """A stream piece is queued: acknowledge it, and end its stream after the last."""
        if delivery.ack is not None:
            self._send("PUBLISH", *delivery.ack)
        if delivery.ended is not None:
            _end_stream(group, delivery.ended)
            await self._deliver_pending(group)

    # -- Redis names and sending ---------------------------------------------------------

    def _group_channel(self, name: str) -> bytes:
        return self._group_channel_prefix + name.encode()

    def _node_channel_of(self, node: bytes) -> bytes:
        return f"{self.namespace}:n:".encode() + node

    def _members_key(self, group_name: str) -> str:
        return f"{self.namespace}:members:{group_name}"

    def _node_members_key(self, node: bytes | None = None) -> str:
        return f"{self.namespace}:node-members:{(node or self._node).decode()}"

    def _node_key(self, node: bytes) -> str:
        return f"{self.namespace}:node:{node.decode()}"

    def _nodes_key(self) -> str:
        return f"{self.namespace}:nodes"

    def _publish(self, group: Group, data: bytes) -> None:
        self._send("PUBLISH", self._group_channel(group.name), data, wait=False)

    def _send(self, *args: bytes | str | int, wait: bool = False) -> None:
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


def _new_stream_done(group: Group) -> None:
    """A new message streams to ``group``: waiters on the last one's end re-check."""
    group.stream_done.set()
    group.stream_done = trio.Event()


def _end_stream(group: Group, streamer: RemoteStream) -> None:
    if group.streamer is streamer:
        group.streamer = None
        group.stream_done.set()


def _first_cause(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (the failure worth naming)."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
