"""This node's link to Redis: its two connections while it is up, why the last one
ended, and the commands that go out on them without waiting. Every other part of the
backplane sends through it."""

from __future__ import annotations

from ..protocol.resp import ConnectionLost, RedisAddress, RedisError
from ..relay.groups import RegistryUnavailable
from .connection import RedisConnection


class RedisLink:
    """The publishing and subscribing connections of one node, and whether it is up."""

    def __init__(self, address: RedisAddress, located_by: str | None = None) -> None:
        #: The Redis the node connects to (with Sentinel: the master it found last).
        self.address = address
        #: Who says where the master is (Sentinel's description), None: the URL does.
        self.located_by = located_by
        #: True while Redis is reachable and this node is registered.
        self.up = False
        #: Why the last connection to Redis ended (None: there was none yet).
        self.failure: BaseException | None = None
        #: The connections of the current attempt (None while there is none).
        self.pub: RedisConnection | None = None
        self.sub: RedisConnection | None = None
        #: A publish was dropped because the connection had just failed.
        self.unsent = False

    def attach(self, pub: RedisConnection, sub: RedisConnection) -> None:
        """The connections of a new attempt: the node registers on them next."""
        self.pub, self.sub = pub, sub

    def registered(self) -> None:
        """The node is registered again: commands go out from here on."""
        self.up = True

    def lose(self, failure: BaseException | None) -> tuple[bool, bool]:
        """Redis is gone (``failure`` says why). Returns whether the node was up, and
        whether what it published last may not have reached the other nodes: its
        publishing connection broke, or went down with publishes unwritten or dropped."""
        was_up = self.up
        pub = self.pub
        published_maybe_lost = self.unsent or (pub is not None and (pub.broken or pub.pending))
        self.unsent = False
        self.up = False
        self.failure = failure
        self.pub = self.sub = None
        return was_up, bool(published_maybe_lost)

    @property
    def down_reason(self) -> str | None:
        """Why the node cannot reach the cluster now, in one line (None while it can)."""
        if self.up:
            return None
        where = f"Redis at {self.address.host}:{self.address.port}"
        if self.located_by is not None:
            where = self.located_by
        if self.failure is None:
            return f"backplane unavailable: not connected to {where}"
        # One line, whatever the failure's text holds.
        failure = " ".join(str(self.failure).split()) or type(self.failure).__name__
        return f"backplane unavailable: cannot reach {where} ({failure})"

    # -- sending -------------------------------------------------------------------------

    def send(self, *args: bytes | str | int) -> None:
        """Queue a command whose reply nobody waits for; a no-op while Redis is away."""
        pub = self.pub
        if pub is None or not self.up:
            return
        try:
            pub.send_nowait(*args, wait=False)
        except ConnectionLost:
            self.unsent = True  # the connection failed a moment ago: lose() will know

    def send_sub(self, *args: bytes | str | int) -> None:
        """Queue a command on the subscribing connection (SUBSCRIBE's kin, PING)."""
        sub = self.sub
        if sub is None:
            return
        try:
            sub.send_nowait(*args, wait=False)
        except ConnectionLost:
            pass

    # -- calls for the HTTP API: Redis away is RegistryUnavailable ------------------------

    def publisher_or_fail(self) -> RedisConnection:
        """The publishing connection, or RegistryUnavailable while Redis is away."""
        pub = self.pub
        if pub is None or not self.up:
            raise RegistryUnavailable("backplane unavailable: the relay cannot reach Redis")
        return pub

    async def call(self, *args: bytes | str | int) -> object:
        """A command's reply; RegistryUnavailable while Redis is away or if it fails."""
        pub = self.publisher_or_fail()
        try:
            return await pub.call(*args)
        except (ConnectionLost, RedisError) as exc:
            raise RegistryUnavailable(f"backplane unavailable: {exc}") from exc
