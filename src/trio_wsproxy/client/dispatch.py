"""The dispatcher: the one task that runs user code — handlers, subscriptions, hooks —
one job at a time, in arrival order.

The connection task submits jobs through a bounded channel (``ClientConfig.read_ahead``
jobs): when handlers fall behind, submitting waits, so the connection task stops reading
the socket; nothing is dropped and memory stays bounded.

A binary message goes to the handlers and subscriptions of :class:`~.streams.BinaryStream`
when there are any, as it arrives; else, assembled, to those of ``bytes``. One announced
by a typed message (:meth:`Dispatcher.add_stream_handler`) goes to the stream handlers of
the announcement's type, with it.

The client's own events (``Joined``, ``Left``, ``DeliveryFailed``: :data:`~.membership.EVENT_TYPES`)
go the same way, in order with the messages, to the handlers and subscriptions of their
own type only: a subscription to every message gets members' messages, as it always did.

**Held until the first handler.** A client is connected — welcomed, and over a relay
with history given what it missed — before ``open_client`` returns, so messages can
arrive before the ``async with`` body has registered anything. Until the first handler
or subscription is registered, messages and events are therefore held, in order, not
handed out as unhandled; at most ``read_ahead`` of them, past which they are handed out
as they come (a client that never registers anything, one that only sends, then goes
on as it always did). Hooks are never held. Registering several handlers in a row,
without an ``await`` between, puts them all in place before any held message runs.

**Where the application is.** :attr:`Dispatcher.position` is the position in the
group's history of the last message handed out (in a handler, the one it handles) —
not of the last one read, up to ``read_ahead`` ahead of it: what a program that saves
it and exits has really been given.
"""

from __future__ import annotations

import collections
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from ..protocol.typenames import TypeRegistry
from ..protocol.v1 import Position
from .incoming import HandlerErrorHook, Incoming
from .membership import EVENT_TYPES
from .stats import ClientStats
from .streams import BinaryStream

__all__ = ["Dispatcher", "Job", "call_user", "takes_incoming"]

logger = logging.getLogger("trio_wsproxy.client")

#: A unit of work for the dispatcher: a handler run, a hook call, ...
Job = Callable[[], Awaitable[None]]


def takes_incoming(handler: Callable[..., object]) -> bool:
    """Whether a handler takes a second positional parameter (the :class:`Incoming`)."""
    try:
        parameters = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature: give them the value
        return False
    positional = 0
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return True
        if parameter.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            positional += 1
    return positional >= 2


async def call_user(function: Callable[..., object], *args: object) -> None:
    """Call a user function that may be sync or async."""
    result = function(*args)
    if inspect.isawaitable(result):
        await result


# Handled without a registered type: binary messages, whole or as they arrive.
_UNTYPED = (bytes, BinaryStream)


def _remove(handlers: dict[Any, list[_Handler]], key: Any, function: Callable[..., object]) -> None:
    for registered in handlers.get(key, []):
        if registered.function == function:
            handlers[key].remove(registered)
            return
    raise ValueError(f"{function!r} is not a handler for {key!r}")


def _label(incoming: Incoming[Any]) -> str:
    """What ``incoming`` is, for a note on an exception raised handling it."""
    kind = type(incoming.value)
    if incoming.message_type is None and kind in EVENT_TYPES:
        return f"{kind.__name__} event"
    if kind is BinaryStream:
        return "binary stream"
    return f"{incoming.message_type or 'binary'} message"


@attrs.frozen
class _Handler:
    function: Callable[..., object]
    with_incoming: bool

    async def __call__(self, incoming: Incoming[Any]) -> None:
        if self.with_incoming:
            await call_user(self.function, incoming.value, incoming)
        else:
            await call_user(self.function, incoming.value)


@attrs.frozen(eq=False)
class _Subscription:
    message_type: Any  # None: every message
    channel: trio.MemorySendChannel[Incoming[Any]]

    def wants(self, message_type: Any) -> bool:
        return self.message_type is None or self.message_type == message_type

    def wants_event(self, event_type: type) -> bool:
        return self.message_type is event_type


class Dispatcher:
    """The handlers and subscriptions of one client, and the task that runs them.

    ``types`` checks that what is handled can be received; ``stats`` counts unhandled
    messages and handler errors; ``on_handler_error``, if given, gets what a handler
    raises — without it, the exception ends the dispatcher (so the client).
    """

    def __init__(
        self,
        *,
        types: TypeRegistry,
        stats: ClientStats,
        read_ahead: int,
        on_handler_error: HandlerErrorHook | None,
    ) -> None:
        self._types = types
        self._stats = stats
        self._on_handler_error = on_handler_error
        self._handlers: dict[Any, list[_Handler]] = {}
        self._stream_handlers: dict[Any, list[_Handler]] = {}
        self._subscriptions: list[_Subscription] = []
        #: Whether binary messages are wanted as streams: something handles
        #: :class:`BinaryStream`.
        self.wants_streams = False
        self._closed = False
        # Each job with whether it keeps its place among the messages (a hook does not).
        self._jobs_in, self._jobs_out = trio.open_memory_channel[tuple[Job, bool]](read_ahead)
        # Until the first handler or subscription: the jobs held, up to read_ahead of
        # them, and what wakes the dispatcher when that handler comes.
        self._holding = True
        self._held: collections.deque[Job] = collections.deque()
        self._hold_limit = read_ahead
        self._wake: trio.CancelScope | None = None
        # The position of the last message handed out (epoch None: none).
        self._epoch: str | None = None
        self._offset = 0

    @property
    def position(self) -> Position | None:
        """Where the last message handed out is in the group's history (the welcome's
        position before any); None without one: before the welcome, or no history."""
        return None if self._epoch is None else Position(self._epoch, self._offset)

    def _release(self) -> None:
        """The first handler or subscription is there: hand out what was held."""
        if self._holding:
            self._holding = False
            if self._wake is not None:
                self._wake.cancel()

    # -- registrations ----------------------------------------------------------------------

    def add_handler(self, message_type: Any, function: Callable[..., object]) -> None:
        """Call ``function`` for each message of ``message_type``, after those added before."""
        if message_type not in _UNTYPED and message_type not in EVENT_TYPES:
            self._types.ensure(message_type)
        entry = _Handler(function, takes_incoming(function))
        self._handlers.setdefault(message_type, []).append(entry)
        self._refresh()
        self._release()

    def remove_handler(self, message_type: Any, function: Callable[..., object]) -> None:
        """Stop calling ``function`` for ``message_type`` (:exc:`ValueError` if it was not on)."""
        _remove(self._handlers, message_type, function)
        self._refresh()

    def add_stream_handler(self, announcement_type: Any, function: Callable[..., object]) -> None:
        """Make ``announcement_type`` an announcement: call ``function`` with each message
        of it and the :class:`BinaryStream` its sender sends next."""
        if announcement_type in _UNTYPED or announcement_type in EVENT_TYPES:
            raise TypeError(f"a stream is announced by a typed message, not {announcement_type}")
        self._types.ensure(announcement_type)
        self._stream_handlers.setdefault(announcement_type, []).append(_Handler(function, False))
        self._release()

    def remove_stream_handler(
        self, announcement_type: Any, function: Callable[..., object]
    ) -> None:
        """Stop calling ``function`` for streams announced by ``announcement_type``."""
        _remove(self._stream_handlers, announcement_type, function)

    def announces(self, message_type: Any) -> bool:
        """Whether messages of ``message_type`` announce a stream."""
        return bool(self._stream_handlers.get(message_type))

    def _refresh(self) -> None:
        self.wants_streams = bool(self._handlers.get(BinaryStream)) or any(
            subscription.message_type is BinaryStream for subscription in self._subscriptions
        )

    @asynccontextmanager
    async def subscription(
        self, message_type: Any, buffer: int
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Incoming[Any]]]:
        """A channel of the messages of ``message_type`` (None: all) dispatched while the
        block runs, holding up to ``buffer``; it ends when the client closes."""
        if message_type is not None and message_type not in _UNTYPED:
            if message_type not in EVENT_TYPES:
                self._types.ensure(message_type)
        send_channel, receive_channel = trio.open_memory_channel[Incoming[Any]](buffer)
        subscription = _Subscription(message_type, send_channel)
        self._subscriptions.append(subscription)
        self._refresh()
        self._release()
        if self._closed:
            send_channel.close()
        try:
            with receive_channel:
                yield receive_channel
        finally:
            self._subscriptions.remove(subscription)
            self._refresh()
            send_channel.close()

    # -- submitting jobs --------------------------------------------------------------------

    async def deliver(self, incoming: Incoming[Any], message_type: Any) -> None:
        """Queue ``incoming`` for the handlers and subscriptions of ``message_type``."""
        await self._jobs_in.send((functools.partial(self._dispatch, incoming, message_type), True))

    async def deliver_stream(
        self, incoming: Incoming[BinaryStream], announced_as: Any = None
    ) -> None:
        """Queue the stream ``incoming`` for the handlers of streams announced by
        ``announced_as``, or (None) for those and the subscriptions of
        :class:`BinaryStream`."""
        # (Never held: streams are wanted only once something handles them.)
        self._release()
        job = functools.partial(self._dispatch_stream, incoming, announced_as)
        await self._jobs_in.send((job, True))

    async def deliver_event(self, incoming: Incoming[Any]) -> None:
        """Queue the client's event ``incoming`` (its value a ``Joined``, ``Left``, ...) for
        the handlers and subscriptions of its type; nobody wanting it is not "unhandled"."""
        await self._jobs_in.send((functools.partial(self._dispatch_event, incoming), True))

    async def call_soon(self, hook: Callable[..., object], *args: object) -> None:
        """Queue a call of the user function ``hook`` with ``args``, in order with messages
        (ahead of those held for the first handler: hooks are never held)."""
        await self._jobs_in.send((functools.partial(call_user, hook, *args), False))

    async def moved(self, position: Position | None, *, at_once: bool = False) -> None:
        """The connection is at ``position`` now (a welcome; None: it cannot say): so is
        :attr:`position` once the messages queued before are handed out — or ``at_once``,
        when none can be (the first welcome)."""
        if at_once:
            self._move(position)
        else:
            job = functools.partial(self._move_soon, position)
            await self._jobs_in.send((job, True))

    async def passed(self, offset: int) -> None:
        """A message with ``offset`` was taken by the client itself (a request's answer,
        a bad message): :attr:`position` passes it in its turn."""
        await self._jobs_in.send((functools.partial(self._pass, offset), True))

    def _move(self, position: Position | None) -> None:
        if position is None:
            self._epoch, self._offset = None, 0
        else:
            self._epoch, self._offset = position.epoch, position.offset

    async def _move_soon(self, position: Position | None) -> None:
        self._move(position)

    async def _pass(self, offset: int) -> None:
        self._passed(offset)

    def stop_taking(self) -> None:
        """Nothing more comes in: :meth:`run` finishes the jobs queued, then returns."""
        self._jobs_in.close()

    def close(self) -> None:
        """The client closed: every subscription's channel ends, now and for new ones."""
        self._closed = True
        for subscription in self._subscriptions:
            subscription.channel.close()

    # -- the dispatcher task ----------------------------------------------------------------

    async def run(self, on_failure: Callable[[], Awaitable[None]]) -> None:
        """Run the jobs, in order, until :meth:`stop_taking`. A job's exception ends it,
        after ``on_failure()`` (closing the connection properly while it still reads).
        Until the first handler or subscription, messages are held (see the module)."""
        try:
            if not await self._hold():
                return
            async for job, _ in self._jobs_out:
                await job()
        except Exception:
            await on_failure()
            raise

    async def _hold(self) -> bool:
        """Hold the messages (and events) that come before the first handler or
        subscription, up to ``read_ahead``; run hooks meanwhile; then run what was held.
        Returns False if nothing more comes in (the client closed) first."""
        while self._holding:
            item = None
            with trio.CancelScope() as self._wake:
                try:
                    item = await self._jobs_out.receive()
                except trio.EndOfChannel:
                    return False
            self._wake = None
            if item is None:
                continue  # _release woke it
            job, in_order = item
            if not in_order:
                await job()
            elif len(self._held) + 1 < self._hold_limit:
                self._held.append(job)
            else:
                self._held.append(job)
                self._holding = False
                logger.debug(
                    "%d messages arrived before any handler or subscription: handed out",
                    len(self._held),
                )
        while self._held:
            await self._held.popleft()()
        return True

    async def _dispatch(self, incoming: Incoming[Any], message_type: Any) -> None:
        handlers = tuple(self._handlers.get(message_type, ()))
        subscriptions = [s for s in self._subscriptions if s.wants(message_type)]
        offset = incoming.offset
        if offset is not None:
            self._offset = offset  # (in its handlers, the position is this message's)
        if not handlers and not subscriptions:
            self._stats.unhandled += 1
            logger.debug("no handler for a %s message", incoming.message_type or "binary")
            return
        # The hot path: _hand_out's loops inline, without one more coroutine per message.
        for handler in handlers:
            try:
                await handler(incoming)
            except Exception as error:
                await self._handler_failed(handler, error, incoming)
        for subscription in subscriptions:
            try:
                await subscription.channel.send(incoming)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the subscriber left between the snapshot and now

    async def _dispatch_stream(self, incoming: Incoming[BinaryStream], announced_as: Any) -> None:
        stream = incoming.value
        subscriptions: list[_Subscription] = []
        self._passed(incoming.offset)
        try:
            if announced_as is not None:
                announcement = stream.announcement
                assert announcement is not None
                stream_handlers = tuple(self._stream_handlers.get(announced_as, ()))
                if not stream_handlers:  # removed since the announcement came
                    self._stats.unhandled += 1
                for handler in stream_handlers:
                    try:
                        await call_user(handler.function, announcement.value, stream)
                    except Exception as error:
                        await self._handler_failed(handler, error, announcement)
                return
            handlers = tuple(self._handlers.get(BinaryStream, ()))
            subscriptions = [s for s in self._subscriptions if s.message_type is BinaryStream]
            if not handlers and not subscriptions:
                self._stats.unhandled += 1
                logger.debug("no handler for a binary stream")
            await self._hand_out(incoming, handlers, subscriptions)
        finally:
            if not subscriptions:
                stream.discard()  # what the handlers left unread

    def _passed(self, offset: int | None) -> None:
        if offset is not None:
            self._offset = offset

    async def _dispatch_event(self, incoming: Incoming[Any]) -> None:
        event_type = type(incoming.value)
        handlers = tuple(self._handlers.get(event_type, ()))
        subscriptions = [s for s in self._subscriptions if s.wants_event(event_type)]
        await self._hand_out(incoming, handlers, subscriptions)

    async def _hand_out(
        self,
        incoming: Incoming[Any],
        handlers: tuple[_Handler, ...],
        subscriptions: list[_Subscription],
    ) -> None:
        for handler in handlers:
            try:
                await handler(incoming)
            except Exception as error:
                await self._handler_failed(handler, error, incoming)
        for subscription in subscriptions:
            try:
                await subscription.channel.send(incoming)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the subscriber left between the snapshot and now

    async def _handler_failed(
        self, handler: _Handler, error: Exception, incoming: Incoming[Any]
    ) -> None:
        """``handler`` raised ``error``: give it to ``on_handler_error``, or re-raise it
        (ending the client) with a note of what was being handled."""
        self._stats.handler_errors += 1
        if self._on_handler_error is None:
            error.add_note(f"raised by {handler.function!r}, handling a {_label(incoming)}")
            raise error
        await call_user(self._on_handler_error, error, incoming)
