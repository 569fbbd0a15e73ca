"""A group's members as fan-out reads them, rebuilt only when its membership changes.

The sender reads a group's audiences for every message, so they are built once per
change of membership, not once per message; and in a compiled build this is native code
the sender calls directly (the group itself stays Python: a distributed group subclasses
it).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Generic, Protocol, TypeVar

from ..protocol.encoding import Encoding


class _Framed(Protocol):
    @property
    def encoding(self) -> Encoding: ...


#: A member (relay/groups.py's Member: what is here is all the views need of one).
M = TypeVar("M", bound=_Framed)


class Views(Generic[M]):
    """The views of one group's member table (``members``, changed in place by the
    group, which calls :meth:`refresh` after each change)."""

    __slots__ = ("_audiences", "_members", "_sessions", "held_back")

    def __init__(self, members: dict[str, M]) -> None:
        self._members = members
        #: Members that messages and presence events do not reach yet: a distributed
        #: group's members catching up with its history (backplane/group.py); empty
        #: in one process.
        self.held_back: Collection[M] = ()
        # (None: built when next read.)
        self._sessions: tuple[M, ...] | None = None
        self._audiences: tuple[tuple[Encoding, tuple[M, ...]], ...] | None = None

    def sessions(self) -> tuple[M, ...]:
        """Every member, held back or not."""
        sessions = self._sessions
        if sessions is None:
            sessions = self._sessions = tuple(self._members.values())
        return sessions

    def audiences(self) -> tuple[tuple[Encoding, tuple[M, ...]], ...]:
        """The members that messages reach now, by encoding: fan-out frames each message
        once per audience."""
        audiences = self._audiences
        if audiences is None:
            held_back = self.held_back
            by_encoding: dict[Encoding, list[M]] = {}
            for member in self._members.values():
                if not held_back or member not in held_back:
                    by_encoding.setdefault(member.encoding, []).append(member)
            audiences = tuple((enc, tuple(members)) for enc, members in by_encoding.items())
            self._audiences = audiences
        return audiences

    def refresh(self) -> None:
        """Membership, or who is held back, changed: the views are rebuilt when next read."""
        self._sessions = self._audiences = None
