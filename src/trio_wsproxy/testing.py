"""Helpers for testing group behaviour with pytest-trio.

The ``wsproxy_relay`` and ``wsproxy_client`` fixtures (registered by installing this
package) give each test a relay and connected clients; the functions here make the
usual assertions about groups fail with a readable message instead of hanging::

    async def test_lobby_greets_newcomers(wsproxy_relay, wsproxy_client):
        bot = await wsproxy_client(group="lobby", id="bot")
        alice = await wsproxy_client(group="lobby")
        await wait_for_members(wsproxy_relay, 2, group="lobby")
        await alice.send(Hello("hi"))
        assert (await expect_message(bot, Hello)).text == "hi"
        await expect_silence(alice)          # a member never receives its own message

Each of them takes a group a client joined (``wsproxy.v1``) as well as the client: its
:class:`~trio_wsproxy.GroupHandle`, for what happens in that group. :func:`join_group`
joins one so that, for a fixture client, its messages are recorded from the join on::

        room = await join_group(alice, "room-2")
        await wait_for_member(room, "bot")
        await room.send(Hello("hi"))
        assert (await expect_message(bot_room, Hello)).text == "hi"
"""

from __future__ import annotations

import typing
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
import trio

from .client.client import Client, GroupHandle, Incoming, Joined, Left, Position, open_client
from .relay.relay import Relay

T = TypeVar("T")

__all__ = [
    "ClientFactory",
    "client_factory",
    "expect_direct_message",
    "expect_message",
    "expect_silence",
    "join_group",
    "wait_for_member",
    "wait_for_member_to_leave",
    "wait_for_members",
]

#: ``await factory(group="lobby", id=None, **open_client_options)`` -> a connected Client.
ClientFactory = Callable[..., Awaitable[Client]]

#: A client, or one group it joined: what the assertions below watch.
Member = Client | GroupHandle

# Messages a fixture client (or a group it joined with join_group) has received and no
# assertion has consumed yet. Recording starts before the factory returns the client
# (join_group the handle), so nothing sent after that is missed.
_inboxes: weakref.WeakKeyDictionary[Member, _Inbox] = weakref.WeakKeyDictionary()
# Where a fixture client's recorders run, and what ends them.
_recorders: weakref.WeakKeyDictionary[Client, tuple[trio.Nursery, trio.Event]] = (
    weakref.WeakKeyDictionary()
)

# Effectively unbounded for a test: the client must never wait on its own recorder.
_INBOX_SIZE = 1_000_000


class _Inbox:
    def __init__(self, channel: trio.MemoryReceiveChannel[Incoming[Any]]) -> None:
        self.channel = channel
        self.unclaimed: list[Incoming[Any]] = []


def _matches(incoming: Incoming[Any], message_type: Any) -> bool:
    origin = typing.get_origin(message_type) or message_type
    return isinstance(origin, type) and isinstance(incoming.value, origin)


def _name(member: Member) -> str:
    if isinstance(member, GroupHandle):
        return f"client {member.client.id!r} (in group {member.name!r})"
    return f"client {member.id!r} (group {member.group!r})"


def _type_name(message_type: Any) -> str:
    return getattr(message_type, "__qualname__", None) or repr(message_type)


async def expect_message(client: Member, message_type: type[T], timeout: float = 5.0) -> T:
    """The next message of ``message_type`` the client received (the oldest one not yet
    claimed by an earlier call); fails the test if none comes within ``timeout`` seconds.

    For clients made by the ``wsproxy_client`` fixture (and groups they joined with
    :func:`join_group`), messages that arrived before the call count; for other clients,
    only those arriving during it.
    """
    incoming = await _expect(client, message_type, False, timeout)
    return typing.cast(T, incoming.value)


async def expect_direct_message(
    client: Member, message_type: type[T], timeout: float = 5.0
) -> Incoming[T]:
    """Like :func:`expect_message`, for a message sent to this client only (wsproxy.v1:
    ``send_to`` or ``request(..., to=...)``); its :class:`~trio_wsproxy.Incoming` comes
    back, with its ``sender``. Messages of the type sent to the whole group are left for
    :func:`expect_message`."""
    return await _expect(client, message_type, True, timeout)


async def _expect(client: Member, message_type: Any, direct: bool, timeout: float) -> Incoming[Any]:
    what = ("direct " if direct else "") + _type_name(message_type)

    def wanted(incoming: Incoming[Any]) -> bool:
        return _matches(incoming, message_type) and (not direct or incoming.direct)

    inbox = _inboxes.get(client)
    if inbox is None:
        with trio.move_on_after(timeout):
            async with client.subscribe(message_type) as channel:
                async for incoming in channel:
                    if wanted(incoming):
                        return incoming
        pytest.fail(f"{_name(client)} received no {what} within {timeout:g}s", pytrace=False)
    for index, incoming in enumerate(inbox.unclaimed):
        if wanted(incoming):
            del inbox.unclaimed[index]
            return incoming
    with trio.move_on_after(timeout):
        async for incoming in inbox.channel:
            if wanted(incoming):
                return incoming
            inbox.unclaimed.append(incoming)
    others = ", ".join(repr(i.value) for i in inbox.unclaimed[-5:]) or "nothing else either"
    pytest.fail(
        f"{_name(client)} received no {what} within {timeout:g}s (unclaimed: {others})",
        pytrace=False,
    )


async def wait_for_member(client: Member, member_id: str, timeout: float = 5.0) -> None:
    """Wait until ``member_id`` is among ``client.members`` (wsproxy.v1 presence: joins
    reach members in batches, a fraction of a second after the join); fails the test with
    the members the client knows of after ``timeout`` seconds."""
    await _wait_members(client, member_id, True, timeout)


async def wait_for_member_to_leave(client: Member, member_id: str, timeout: float = 5.0) -> None:
    """Wait until ``member_id`` is no longer among ``client.members``."""
    await _wait_members(client, member_id, False, timeout)


async def _wait_members(client: Member, member_id: str, present: bool, timeout: float) -> None:
    event = Joined if present else Left
    with trio.move_on_after(timeout):
        # Subscribed before looking: a change between the two cannot be missed.
        async with client.subscribe(event) as changes:
            while (member_id in client.members) != present:
                await changes.receive()
            return
    how = "join" if present else "leave"
    known = ", ".join(sorted(client.members)) or "none"
    protocol = (client.client if isinstance(client, GroupHandle) else client).protocol
    pytest.fail(
        f"{_name(client)} did not see {member_id!r} {how} within {timeout:g}s "
        f"(members it knows of: {known}; protocol: {protocol or 'plain'})",
        pytrace=False,
    )


async def expect_silence(client: Member, within: float = 0.3) -> None:
    """Fail the test if the client receives any message during the next ``within`` seconds."""
    inbox = _inboxes.get(client)
    with trio.move_on_after(within):
        if inbox is None:
            async with client.subscribe() as channel:
                incoming = await channel.receive()
        else:
            incoming = await inbox.channel.receive()
        pytest.fail(
            f"{_name(client)} expected silence for {within:g}s but received "
            f"{incoming.value!r} ({incoming.message_type or 'binary'})",
            pytrace=False,
        )


async def join_group(
    client: Client, group: str, *, since: Position | str | None = None, timeout: float = 5.0
) -> GroupHandle:
    """``await client.join(group, since=since)``, failing the test if the relay does not
    answer within ``timeout`` seconds; for a client of the ``wsproxy_client`` fixture the
    group's messages are recorded from the join on, for :func:`expect_message` and the
    others, as the client's are. A refused join raises
    :exc:`~trio_wsproxy.JoinRefused`, for ``pytest.raises``."""
    with trio.move_on_after(timeout):
        handle = await client.join(group, since=since)
        recorder = _recorders.get(client)
        if recorder is not None:
            nursery, stop = recorder
            await nursery.start(_record, handle, stop)
        return handle
    pytest.fail(f"{_name(client)} was not let into {group!r} within {timeout:g}s", pytrace=False)


async def _record(
    member: Member, stop: trio.Event, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Record ``member``'s messages in its inbox until ``stop``."""
    async with member.subscribe(buffer=_INBOX_SIZE) as channel:
        _inboxes[member] = _Inbox(channel)
        task_status.started()
        await stop.wait()


async def wait_for_members(
    relay: Relay,
    count: int,
    group: str | None = None,
    timeout: float = 5.0,
) -> None:
    """Wait until the relay has ``count`` members (in ``group``, if given); fails the test
    with what the relay has instead after ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        await relay.wait_members(count, group)
        return
    where = f"group {group!r}" if group is not None else "the relay"
    now = relay.group_size(group) if group is not None else relay.stats.members
    pytest.fail(
        f"expected {count} members in {where} within {timeout:g}s, it has {now}", pytrace=False
    )


@asynccontextmanager
async def client_factory(relay: Relay, **defaults: Any) -> AsyncIterator[ClientFactory]:
    """Make clients of ``relay`` that live until the block ends, then close with 1000.

    The machinery of the ``wsproxy_client`` fixture, for use without pytest."""
    stops: list[trio.Event] = []

    async def run(
        options: dict[str, Any], stop: trio.Event, task_status: trio.TaskStatus[Client]
    ) -> None:
        async with open_client(relay.url, **options) as client:
            async with (
                client.subscribe(buffer=_INBOX_SIZE) as channel,
                trio.open_nursery() as groups,
            ):
                _inboxes[client] = _Inbox(channel)
                _recorders[client] = (groups, stop)
                task_status.started(client)
                await stop.wait()

    async with trio.open_nursery() as nursery:

        async def make(group: str, id: str | None = None, **options: Any) -> Client:
            stop = trio.Event()
            stops.append(stop)
            merged = {**defaults, **options, "group": group, "id": id}
            client: Client = await nursery.start(run, merged, stop)
            return client

        try:
            yield make
        finally:
            for stop in stops:
                stop.set()
