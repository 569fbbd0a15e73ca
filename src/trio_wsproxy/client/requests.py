"""Requests waiting for their answer: :class:`PendingRequests`, keyed by request id.

:meth:`Client.request` sends a message with a fresh ``Id`` and waits here; the connection
task hands over each :class:`~.wire.Reply` that carries one of those ids as ``ReplyId``
— and, over ``wsproxy.v1``, each ``no_such_member`` error of the relay, which ends the
requests addressed to that member (:meth:`PendingRequests.member_not_found`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import trio

from ..protocol.typenames import TypeRegistry
from .errors import ClientClosed, ClientError, MemberNotFound, ReplyError, RequestTimeout
from .incoming import BadMessage
from .wire import Reply, read_reply

__all__ = ["PendingReply", "PendingRequests"]

R = TypeVar("R")


@attrs.define(eq=False)
class PendingReply:
    """One request's answer to come: set once, with a value or an error."""

    #: What the answer's payload is structured into.
    reply_type: Any
    #: The member the request was addressed to; None: the group.
    to: str | None = None
    #: Set when the answer (or the error that stands for it) is in.
    done: trio.Event = attrs.Factory(trio.Event)
    #: The answer, once in.
    value: Any = None
    #: Raised by :meth:`wait` instead of returning a value.
    error: ClientError | None = None

    def resolve(self, value: Any = None, error: ClientError | None = None) -> None:
        """The answer is in: ``value``, or ``error`` for :meth:`wait` to raise."""
        self.value, self.error = value, error
        self.done.set()

    async def wait(self) -> Any:
        """The answer, once it is in; raises its error instead if it has one."""
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


class PendingRequests:
    """The requests of one client that wait for their answer, by request id."""

    def __init__(self) -> None:
        self._waiting: dict[str, PendingReply] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._waiting

    async def ask(
        self,
        request_id: str,
        reply_type: type[R],
        send: Callable[[], Awaitable[None]],
        *,
        limit: float,
        label: str,
        to: str | None = None,
    ) -> R:
        """Wait for the answer to ``request_id`` while ``send()`` sends the request, and
        return it; raises :exc:`RequestTimeout` after ``limit`` seconds (sending
        included). ``label`` names what was asked, for that error; ``to`` the member it
        was addressed to, if one."""
        pending = PendingReply(reply_type, to)
        self._waiting[request_id] = pending
        try:
            with trio.move_on_after(limit):
                await send()
                result: R = await pending.wait()
                return result
            raise RequestTimeout(
                f"no reply to request {request_id} ({label}) within {limit} s",
                request_id=request_id,
            )
        finally:
            self._waiting.pop(request_id, None)

    def answer(self, reply: Reply, types: TypeRegistry) -> BadMessage | None:
        """Give ``reply`` to the request it answers (one in this table). Returns the bad
        message to report when the payload does not fit the reply type; the request then
        raises :exc:`ReplyError`."""
        pending = self._waiting.pop(reply.request_id)
        value, bad = read_reply(reply, pending.reply_type, types)
        if bad is not None:
            pending.resolve(error=ReplyError(bad.reason))
            return bad
        pending.resolve(value)
        return None

    def member_not_found(self, member_id: str, detail: str) -> None:
        """The relay could not deliver a message to ``member_id``: every request waiting
        on an answer from that member raises :exc:`MemberNotFound`. (The relay's error
        does not say which message it answers: a request sent just as that member came
        back may end so too, and its answer, if any, arrives as an ordinary message.)"""
        for request_id, pending in list(self._waiting.items()):
            if pending.to == member_id and not pending.done.is_set():
                error = MemberNotFound(
                    f"request {request_id} to member {member_id!r} was not delivered: {detail}",
                    member_id=member_id,
                )
                pending.resolve(error=error)

    def close(self, error: ClientError | None = None) -> None:
        """The client closed (or left the group the requests went to): every waiting
        request raises ``error`` (:exc:`ClientClosed` if None)."""
        error = error or ClientClosed("the client closed before the reply came")
        for pending in list(self._waiting.values()):
            pending.resolve(error=error)
