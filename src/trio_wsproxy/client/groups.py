"""The groups one client is in, over one connection (``wsproxy.v1``: DESIGN.md §8;
docs/protocol.md, "Many groups on one connection").

A client is in the group its URL names and in every group it joined since. For each it
keeps a :class:`Membership`: the parts a group has of its own — who else is in it
(:class:`~.membership.MemberList`), where the client is in its history
(:class:`~.resumption.Resumption`), the handlers and subscriptions that get its messages
(:class:`~.dispatch.Dispatcher`), the requests waiting for an answer from it
(:class:`~.requests.PendingRequests`) — and where the membership stands
(:class:`Standing`). :class:`Groups` holds them by name; the connection task routes each
message and event of the relay to the membership its ``"group"`` names (none: the URL's
group), and after each reconnect rejoins the groups the client was in.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator

import attrs
import trio

from .dispatch import Dispatcher
from .errors import ClientError
from .incoming import Replier
from .membership import MemberList
from .requests import PendingRequests
from .resumption import Resumption

__all__ = ["Groups", "Membership", "Standing"]


class Standing(enum.Enum):
    """Where a client's membership of one group stands; a joined group's ends LEFT."""

    #: A join was asked for and not answered yet.
    JOINING = "joining"
    #: In the group (after a reconnect, rejoining it: the relay answers in turn).
    JOINED = "joined"
    #: A leave was asked for: the group's messages still come until the relay's answer.
    LEAVING = "leaving"
    #: Out of the group: nothing of it is delivered any more.
    LEFT = "left"


@attrs.define(eq=False)
class Membership:
    """One client's part in one group (see the module docstring)."""

    #: The group's name.
    name: str
    #: Whether it is the group the client's URL named: its messages and events carry no
    #: ``"group"``, and neither do the client's messages to it.
    home: bool
    members: MemberList
    resumption: Resumption
    dispatcher: Dispatcher
    requests: PendingRequests
    #: What a message of the group replies through (its handle, or the client).
    sender: Replier
    #: What a message from one member of the group replies to it through.
    reply_via: Callable[[str], Replier]
    standing: Standing = Standing.JOINED
    #: The connection object the last join of the group went out on (see
    #: :meth:`Groups.to_rejoin`).
    joined_on: object = None
    #: Whether a welcome of the group came, ever.
    welcomed: bool = False
    #: Whether a join of it went out on a new connection and is not answered yet: a
    #: refusal then ends the membership, while one later refuses a message only (a
    #: publish hook's ``refused``).
    rejoining: bool = False
    #: Why the client is no longer in the group, once LEFT (None: it asked to leave).
    reason: str | None = None
    #: What a join, a send or a request of the group raises once LEFT.
    error: ClientError | None = None
    #: Set when a join is answered (welcomed or refused), and when the membership ends.
    answered: trio.Event = attrs.Factory(trio.Event)
    #: Set when the membership ends.
    ended: trio.Event = attrs.Factory(trio.Event)

    @property
    def wire_name(self) -> str | None:
        """The name the client's messages to the group carry: None for the URL's group."""
        return None if self.home else self.name

    @property
    def routed(self) -> bool:
        """Whether the group's messages and events are delivered (not once LEFT)."""
        return self.standing is not Standing.LEFT

    def welcome(self) -> None:
        """The relay's welcome of the group came: the client is in it."""
        self.standing = Standing.JOINED
        self.welcomed = True
        self.rejoining = False
        self.answered.set()

    def end(self, reason: str | None, error: ClientError) -> None:
        """The client is no longer in the group (``reason``: why, None when it asked to
        leave): nothing of it is delivered any more, the requests waiting on it raise
        ``error``, and (but for the URL's group, whose handlers are the client's) its
        dispatcher stops once it has handed out what it holds."""
        if self.standing is Standing.LEFT:
            return
        self.standing = Standing.LEFT
        self.rejoining = False
        self.reason = reason
        self.error = error
        self.joined_on = None
        self.members.connection_ended()
        self.requests.close(error)
        if not self.home:
            self.dispatcher.stop_taking()
        self.answered.set()
        self.ended.set()

    def join(self) -> None:
        """A join of the group is asked for (the URL's group's, again, after it was left:
        the same membership, its handlers the client's)."""
        self.standing = Standing.JOINING
        self.reason = self.error = None
        self.joined_on = None
        self.answered = trio.Event()
        self.ended = trio.Event()


class Groups:
    """The client's memberships by group name: the URL's group (:attr:`home`), always
    here, and each group joined, until it is left."""

    def __init__(self, home: Membership) -> None:
        #: The group the client's URL named.
        self.home = home
        self._by_name: dict[str, Membership] = {home.name: home}

    def __iter__(self) -> Iterator[Membership]:
        return iter(list(self._by_name.values()))

    def add(self, membership: Membership) -> None:
        """Hold ``membership`` (a group being joined; the URL's group's is always held)."""
        self._by_name[membership.name] = membership

    def get(self, name: str | None) -> Membership | None:
        """The membership a message or event of ``name`` (None: the URL's group) is
        delivered to; None when the client is not in that group (any more)."""
        membership = self.home if name is None else self._by_name.get(name)
        return membership if membership is not None and membership.routed else None

    def held(self, name: str) -> Membership | None:
        """The membership of ``name``, whatever its standing; None when not held."""
        return self._by_name.get(name)

    def drop(self, membership: Membership) -> None:
        """Forget a membership that ended (the URL's group's is kept: it can be joined
        again)."""
        if not membership.home and self._by_name.get(membership.name) is membership:
            del self._by_name[membership.name]

    def in_groups(self) -> dict[str, Membership]:
        """The memberships of the groups the client is in (rejoining included), by name."""
        return {
            name: membership
            for name, membership in self._by_name.items()
            if membership.standing is Standing.JOINED
        }

    def to_rejoin(self, connection: object) -> list[Membership]:
        """The groups to join on ``connection``, a new one: each the client is in or is
        joining, but for the URL's group (the URL names it), whose join did not go out on
        this connection already. Each is marked as joined on it."""
        rejoin = [
            membership
            for membership in self._by_name.values()
            if not membership.home
            and membership.standing in (Standing.JOINED, Standing.JOINING)
            and membership.joined_on is not connection
        ]
        for membership in rejoin:
            membership.joined_on = connection
            membership.rejoining = membership.standing is Standing.JOINED
        return rejoin
