"""Groups and the registry that maps group names to their members."""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import trio

from ..protocol.close_codes import CloseCode

if TYPE_CHECKING:
    from ..backplane.redis import RedisBackplane, RemoteStream
    from .session import Session


class Group:
    """The members of one group, by id, and the message streaming through it, if any."""

    __slots__ = ("_sessions", "members", "name", "stream_done", "streamer")

    #: The backplane that also carries this group's messages to other nodes; None when
    #: the group lives in this process only.
    backplane: RedisBackplane | None = None

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: dict[str, Session] = {}
        self._sessions: tuple[Session, ...] | None = ()
        #: The member whose message is being forwarded piece by piece; None when idle.
        #: WebSocket forbids interleaving fragmented messages, so while one streams, the
        #: other members' messages to this group wait for ``stream_done``.
        self.streamer: Session | RemoteStream | None = None
        self.stream_done = trio.Event()

    @property
    def sessions(self) -> tuple[Session, ...]:
        """The members as a tuple, rebuilt only when membership changes (fan-out's view)."""
        sessions = self._sessions
        if sessions is None:
            sessions = self._sessions = tuple(self.members.values())
        return sessions

    def add(self, session: Session) -> None:
        self.members[session.id] = session
        self._sessions = None

    def remove(self, session: Session) -> bool:
        if self.members.get(session.id) is not session:
            return False
        del self.members[session.id]
        self._sessions = None
        return True


class GroupRegistry(Protocol):
    """Where members find their group. The in-process registry is the default; a
    distributed backplane implements the same interface."""

    async def join(self, session: Session) -> Group:
        """Add ``session`` to its group, closing an older member with the same id
        (``CloseCode.REPLACED``); return the group."""

    def leave(self, session: Session) -> None:
        """Remove ``session`` from its group if it is still there; drop empty groups."""

    @property
    def group_count(self) -> int:
        """Groups with at least one member."""

    @property
    def member_count(self) -> int:
        """Members in all groups."""

    def group(self, name: str) -> Group | None:
        """The group called ``name``, or None when it has no members."""

    def unavailable(self, group_name: str) -> str | None:
        """Why a member cannot join ``group_name`` now (a backplane outage), or None."""


GroupT = TypeVar("GroupT", bound=Group)


class _Registry(Generic[GroupT]):
    """What every registry keeps in this process: the groups with members here."""

    def __init__(self) -> None:
        self._groups: dict[str, GroupT] = {}
        self._members = 0

    def _new_group(self, name: str) -> GroupT:
        raise NotImplementedError

    def _add(self, session: Session) -> GroupT:
        """Put ``session`` in its group here, closing an older member with its id."""
        existing = self._groups.get(session.group_name)
        if existing is not None:
            older = existing.members.get(session.id)
            if older is not None:
                # Newest wins: a client that reconnects after a half-open drop must not
                # be locked out by its own ghost. close() calls leave().
                older.close(CloseCode.REPLACED, "replaced by a newer connection with the same id")
        group = self._groups.get(session.group_name)
        if group is None:
            group = self._groups[session.group_name] = self._new_group(session.group_name)
        group.add(session)
        self._members += 1
        return group

    def _remove(self, session: Session) -> GroupT | None:
        """Take ``session`` out of its group if it is still there, dropping the group
        when it empties; the group, or None when the session was not in it."""
        group = self._groups.get(session.group_name)
        if group is None or not group.remove(session):
            return None
        self._members -= 1
        if not group.members:
            del self._groups[group.name]
        return group

    @property
    def group_count(self) -> int:
        return len(self._groups)

    @property
    def member_count(self) -> int:
        return self._members

    def group(self, name: str) -> Group | None:
        return self._groups.get(name)


class LocalRegistry(_Registry[Group]):
    """The in-process registry: every member of every group is in this process."""

    def _new_group(self, name: str) -> Group:
        return Group(name)

    async def join(self, session: Session) -> Group:
        return self._add(session)

    def leave(self, session: Session) -> None:
        self._remove(session)

    def unavailable(self, group_name: str) -> str | None:
        return None
