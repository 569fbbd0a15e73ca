"""Fan-out: a producer's frames queued in its recipients' mailboxes.

A producer is a member's receiver task, or a backplane's subscriber delivering what
other nodes sent. It never pays a task switch per message per recipient: offering to a
mailbox never blocks (see :class:`~trio_wsproxy.relay.mailbox.Mailbox`), frames held for
a direct write go out in one write per recipient per read, and only a full mailbox makes
the producer wait — for ``slow_member_timeout`` at most, after which that member is
closed with 4001 and the rest of the group goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ..protocol.close_codes import CloseCode
from ..protocol.message import Message
from .mailbox import FULL, HELD, Mailbox

if TYPE_CHECKING:
    from collections.abc import MutableSequence, Sequence

    from .counters import Counters
    from .groups import Audience, Group, Member


class Courier:
    """Queues frames in members' mailboxes for one producer, waiting for room where a
    mailbox is full.

    Frames a mailbox holds for a direct write (see Mailbox) are written by
    :meth:`flush`, which the producer calls before anything that may yield; so are the
    whole messages it has for its groups' other nodes (its outboxes).
    """

    __slots__ = ("_counters", "_held", "_outboxes", "_timeout")

    def __init__(self, slow_member_timeout: float, counters: Counters) -> None:
        self._timeout = slow_member_timeout
        self._counters = counters
        self._held: list[Mailbox] = []
        # Per group it serves: the whole messages for the group's members on other
        # nodes, handed over together by flush() (one publish per read's worth).
        self._outboxes: list[tuple[Group, MutableSequence[Message]]] = []

    def serve(self, group: Group) -> MutableSequence[Message] | None:
        """Be a courier of a member of ``group`` too: the outbox the producer appends
        that group's messages to (of the group's kind: None where nothing leaves this
        node)."""
        outbox = group.new_outbox()
        if outbox is not None:
            self._outboxes.append((group, outbox))
        return outbox

    def unserve(self, group: Group) -> None:
        """Serve ``group`` no more (its member left), once what it holds is handed over."""
        self.flush()
        self._outboxes = [each for each in self._outboxes if each[0] is not group]

    async def deliver(self, data: bytes, members: Sequence[Member]) -> None:
        """Queue ``data`` for each of ``members``, waiting for room where a mailbox is full."""
        blocked = self.offer(data, members)
        if blocked is not None:
            await self.wait_for_room(data, blocked)

    def offer(
        self, data: bytes, members: Sequence[Member], skip: Member | None = None
    ) -> list[Member] | None:
        """Queue ``data`` for every member whose mailbox has room, without waiting;
        return the members whose mailboxes were full (None when there were none)."""
        blocked: list[Member] | None = None
        held = self._held
        for member in members:
            if member is not skip:
                mailbox = member.mailbox
                result = mailbox.offer(data)
                if result == HELD:
                    held.append(mailbox)
                elif result == FULL:
                    if blocked is None:
                        blocked = []
                    blocked.append(member)
                    if mailbox.full_since is None:
                        # Its timer starts now, whoever the producer waits for first:
                        # K slow members cost the group one timeout, not K.
                        mailbox.full_since = trio.current_time()
                        self._counters.mailbox_full += 1
        return blocked

    async def wait_for_room(self, data: bytes, members: list[Member]) -> None:
        """Queue ``data`` for members whose mailboxes were full, waiting for room.

        A member whose mailbox stays full for ``slow_member_timeout`` (from when a
        producer first found it full) is closed with 4001: the group waits that long
        at most, however many of its members are slow at once.
        """
        timeout = self._timeout
        for member in members:
            mailbox = member.mailbox
            while (result := mailbox.offer(data)) == FULL:
                if self._held or any(outbox for _, outbox in self._outboxes):
                    # Write out what is held (it may be this very mailbox: offer again)
                    # and publish what other nodes wait for, before waiting here.
                    self.flush()
                    continue
                if mailbox.full_since is None:  # (room was made, and it filled again)
                    mailbox.full_since = trio.current_time()
                    self._counters.mailbox_full += 1
                if not await mailbox.wait_room(mailbox.full_since + timeout):
                    member.close(
                        CloseCode.SLOW_CONSUMER,
                        f"mailbox full for {timeout:g}s: member reads too slowly",
                    )
            if result == HELD:
                self._held.append(mailbox)

    def flush(self) -> None:
        """Write out held frames, and hand each outbox to its group."""
        held = self._held
        if held:
            for mailbox in held:
                mailbox.flush()
            held.clear()
        for group, outbox in self._outboxes:  # (none where every group is in process)
            if outbox:
                group.publish(list(outbox))
                outbox.clear()


def send_control(member: Member, data: bytes) -> None:
    """Queue a frame no producer waits to offer (an event, a pong, a ping) for
    ``member``: a member that lets such frames pile up past twice its mailbox's bound
    is closed with 4001 (see Mailbox.offer_control)."""
    if not member.mailbox.offer_control(data):
        member.close(
            CloseCode.SLOW_CONSUMER,
            "mailbox full: member does not read what the relay sends it",
        )


def cut_off(audiences: Sequence[Audience], reason: str) -> None:
    """A message that streamed to ``audiences`` ends unfinished: close its recipients
    with 4002, so that none takes its start for a whole message."""
    for _, members in audiences:
        for member in members:
            member.close(CloseCode.MESSAGE_TRUNCATED, reason)
