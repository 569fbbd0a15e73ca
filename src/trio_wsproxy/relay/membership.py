"""A connection's membership in one group: what the group holds as its member.

A group's member list, its fan-out and its floor never hold a connection itself: they
hold one :class:`Membership` per group the connection is in. So a connection in several
groups is several members, one per group, each with its own :class:`~.sender.Sender`
(what the connection sends into that group) and its own position in that group's
history; frames to any of them land in the connection's one mailbox. A connection's
first membership is in the group its URL names; a v1 member joins and leaves more
(DESIGN.md §8), and its memberships in those name their group on the wire (their
encoding's ``group``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..protocol import v1
    from ..protocol.encoding import Encoding
    from .groups import Group
    from .mailbox import Mailbox
    from .sender import Sender


class Connection(Protocol):
    """What a membership needs of the connection it belongs to."""

    @property
    def id(self) -> str: ...

    @property
    def mailbox(self) -> Mailbox: ...

    @property
    def encoding(self) -> Encoding: ...

    @property
    def key(self) -> str:
        """The connection's id in this process: its memberships share it."""

    @property
    def group_names(self) -> list[str]:
        """The groups the connection is in now (sorted)."""

    async def join_for_back_end(self, group_name: str) -> v1.Error | None:
        """Join ``group_name`` too, as the back end asks: the refusal, or None."""

    def join_also(self, group_name: str) -> None:
        """The application's back end asks (through another node) that the connection
        join ``group_name`` too."""

    def membership_closed(self, membership: Membership, code: int, reason: str) -> None:
        """A group ends ``membership`` with ``code``: the connection decides whether that
        ends it (every membership of it ends with it) or that membership alone."""


class Membership:
    """``connection``'s membership in the group ``group_name``: the
    :class:`~.groups.Member` the group holds. Its ``id`` and ``mailbox`` are the
    connection's, its ``encoding`` the connection's for this group (plain attributes:
    fan-out reads them per recipient)."""

    __slots__ = (
        "connection",
        "connection_key",
        "encoding",
        "entering",
        "group",
        "group_name",
        "id",
        "info",
        "joined_at",
        "mailbox",
        "refused",
        "sender",
        "since",
    )

    def __init__(
        self,
        connection: Connection,
        group_name: str,
        since: v1.Position | None,
        now: float,
        encoding: Encoding | None = None,
    ) -> None:
        #: The connection it is a membership of.
        self.connection = connection
        self.connection_key = connection.key
        self.id = connection.id
        #: What the back end's connect hook gave the member (shown in presence).
        self.info: Mapping[str, Any] | None = getattr(connection, "info", None)
        self.mailbox = connection.mailbox
        self.encoding = connection.encoding if encoding is None else encoding
        self.group_name = group_name
        #: The position in the group's history the member named, to get what it missed.
        self.since = since
        #: When it joined (Trio's clock).
        self.joined_at = now
        #: The group, once joined; and what the connection sends into it.
        self.group: Group | None = None
        self.sender: Sender | None = None
        #: While a join of a group other than the URL's is under way (a group that ends
        #: it meanwhile refuses the join), and then what it was refused with.
        self.entering = False
        self.refused: tuple[int, str] | None = None

    def __repr__(self) -> str:
        return f"<Membership id={self.id!r} group={self.group_name!r}>"

    def joined(self, group: Group, sender: Sender) -> None:
        """The registry admitted it to ``group``; ``sender`` delivers into it."""
        self.group = group
        self.sender = sender

    def join_also(self, group_name: str) -> None:
        """(The Member interface.) The back end asks that this member's connection join
        ``group_name`` too."""
        self.connection.join_also(group_name)

    def close(self, code: int, reason: str) -> None:
        """(The Member interface.) The group ends this membership (a slow mailbox, a
        replacement, a removal, a lost backplane): the connection decides what that
        ends."""
        self.connection.membership_closed(self, code, reason)
