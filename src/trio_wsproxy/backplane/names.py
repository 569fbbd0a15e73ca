"""Where the backplane keeps things in Redis: every key and channel name, in one place.

``P`` below is ``backplane_prefix``, then the version of what nodes say to each other
(``P = prefix:v3``): nodes of another version form another cluster instead of
misreading each other.

- ``P:g:<group>``: the group's channel — its messages, streamed pieces, announcements.
- ``P:n:<node>``: a node's own channel — replacements and acknowledgements for it.
- ``P:members:<group>``: hash, member id -> owner token of the newest connection.
- ``P:node-members:<node>``: hash, owner token -> entry (what reaping the node needs).
- ``P:node:<node>``: the node's liveness key, refreshed every ``node_ttl`` / 3.
- ``P:nodes``: set of the nodes that registered.
- ``P:revoked:<kind>:<value>``: a revocation in force, expiring with it.
- ``P:rate:<subject>``: hash, a subject's message-rate bucket (level, stamp), expiring
  once the bucket would be full again (``--max-subject-message-rate``).
- With history on (DESIGN.md §7; ``backplane/scripts.py``): ``P:history-meta:<group>``,
  hash of the group's history (epoch, the Redis run it belongs to, last offset given
  out, last offset trimmed, bytes kept, declined stream claims);
  ``P:history:<group>``, stream of its messages, one entry per batch a node published
  (entry id ``<first offset>-0``); and ``P:history-index:<group>``, list of
  ``"<first offset> <count> <ms> <bytes>"`` per batch, oldest first, by which the
  scripts trim without reading the messages.
"""

from __future__ import annotations

import attrs

#: The version of the messages and keys nodes share; part of every Redis name.
#: 2: messages travel as payload plus metadata (protocol/nodes.py), and membership
#: announcements carry member ids. 3: history in Redis, and messages sequenced by it (O).
PROTOCOL_VERSION = 3


@attrs.frozen
class Names:
    """The Redis names of one cluster (``prefix``), as seen by one node (``node``)."""

    prefix: str
    node: bytes

    @property
    def namespace(self) -> str:
        """The start of every name: the prefix and the protocol version."""
        return f"{self.prefix}:v{PROTOCOL_VERSION}"

    def group_channel(self, group_name: str) -> bytes:
        return f"{self.namespace}:g:{group_name}".encode()

    def group_of(self, channel: bytes) -> str:
        """The group whose channel ``channel`` is (raises UnicodeDecodeError if not text)."""
        return channel[len(self.namespace) + 3 :].decode()

    def node_channel(self, node: bytes | None = None) -> bytes:
        return f"{self.namespace}:n:".encode() + (node or self.node)

    def members_key(self, group_name: str) -> str:
        return f"{self.namespace}:members:{group_name}"

    def info_key(self, group_name: str) -> str:
        """The group's hash of what the back end gave its members' connections (by owner)."""
        return f"{self.namespace}:info:{group_name}"

    def node_members_key(self, node: bytes | None = None) -> str:
        return f"{self.namespace}:node-members:{(node or self.node).decode()}"

    def node_key(self, node: bytes | None = None) -> str:
        return f"{self.namespace}:node:{(node or self.node).decode()}"

    @property
    def nodes_key(self) -> str:
        return f"{self.namespace}:nodes"

    def revoked_key(self, kind: str, value: str) -> str:
        return f"{self.namespace}:revoked:{kind}:{value}"

    def revoked_pattern(self) -> str:
        return f"{self.namespace}:revoked:*"

    def subject_rate_key(self, subject: str) -> str:
        """A subject's message-rate bucket (backplane/rates.py)."""
        return f"{self.namespace}:rate:{subject}"

    def history_keys(self, group_name: str) -> tuple[str, str, str]:
        """The group's history: its meta hash, its stream, and its index."""
        namespace = self.namespace
        return (
            f"{namespace}:history-meta:{group_name}",
            f"{namespace}:history:{group_name}",
            f"{namespace}:history-index:{group_name}",
        )
