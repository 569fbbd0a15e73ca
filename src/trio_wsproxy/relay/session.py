"""One member's session: a receiver task that reads and fans out, a sender task that
drains the member's mailbox onto its socket."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import trio

from ..protocol.close_codes import CloseCode
from ..protocol.frames import (
    OP_BINARY,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Close,
    Data,
    FrameParser,
    Ping,
    ProtocolError,
    close_frame,
    frame,
    frame_header,
)
from ..protocol.ratelimit import TokenBucket
from .mailbox import FULL, HELD, Mailbox

if TYPE_CHECKING:
    from ..backplane.redis import OutgoingStream
    from .groups import Group
    from .relay import Relay

logger = logging.getLogger("trio_wsproxy.relay")

# Bytes asked of the socket per read: large enough that a burst of small messages is
# parsed in one go, small enough not to allocate much per read.
READ_SIZE = 65536
# The sender writes at most about this much per send_all, so a member that drains
# slowly still shows progress (and frees mailbox room) often.
WRITE_BATCH = 262144
# A message that has not ended after this many bytes is forwarded in fragments of about
# this size as its data arrives, instead of being assembled; below it, a message goes out
# as one frame. Large enough that clients which cap fragments per message (Node's ws
# accepts 16,384) take messages of many GiB; small enough to bound each sender's buffer.
FRAGMENT_SIZE = 1024 * 1024
_PING_FRAME = frame(OP_PING, b"")


class Session:
    """A connected member. Created when its upgrade request is admitted; :meth:`join`
    comes before the 101 is sent, and :meth:`run` (which owns its tasks) after."""

    def __init__(
        self,
        relay: Relay,
        stream: trio.abc.Stream,
        member_id: str,
        group_name: str,
        remote: str,
        leftover: bytes = b"",
    ) -> None:
        self.id = member_id
        self.group_name = group_name
        self.remote = remote
        self.mailbox = Mailbox(relay.config.mailbox_bytes)
        # Plain TCP on POSIX: read and (directly, see Mailbox) write the socket itself.
        self._fd: int | None = None
        if isinstance(stream, trio.SocketStream) and os.name == "posix":
            self._fd = stream.socket.fileno()
        self._relay = relay
        self._stream = stream
        self._leftover = leftover
        self._group: Group | None = None
        # Shielded: the relay's cancellation must not cut a session mid-frame; close()
        # ends it instead, and its deadline bounds how long ending may take.
        self._scope = trio.CancelScope(shield=True)
        self._close: tuple[int, str] | None = None
        # Set when the member's close frame arrived (or its connection is gone): the
        # sender may then close TCP. _eof: the connection is gone, write nothing more.
        self._peer_closed = trio.Event()
        self._eof = False
        # The message being streamed to the group, and who it is going to.
        self._stream_to: tuple[Session, ...] = ()
        # Queues this receiver's fan-out; flushed after each read's events.
        self._courier = Courier(relay)
        #: This connection's registration in a backplane (set by the registry's join).
        self.owner = ""
        # The backplane's record of the message this member is streaming, if any.
        self._outgoing: OutgoingStream | None = None
        self._parts: list[bytes] = []
        self._parts_size = 0
        self._opcode = OP_BINARY
        self._streaming = False
        config = relay.config
        self._message_rate = (
            TokenBucket(config.max_message_rate) if config.max_message_rate is not None else None
        )
        self._byte_rate = (
            TokenBucket(config.max_byte_rate) if config.max_byte_rate is not None else None
        )
        self._limited = self._message_rate is not None or self._byte_rate is not None
        # Keepalive bookkeeping, read by the relay's keepalive task.
        self.reads = 0
        self.reads_seen = 0
        self.heard_at = trio.current_time()
        #: When the member joined (trio clock), set by :meth:`join`.
        self.joined_at = self.heard_at
        self.pinged_at: float | None = None

    def __repr__(self) -> str:
        return f"<Session id={self.id!r} group={self.group_name!r} remote={self.remote}>"

    def close(self, code: int, reason: str) -> None:
        """Leave the group now and end the session with ``code`` (callable from any task).

        What is still queued for the member is discarded: the close code tells its
        client that it may have missed messages. The first call decides the code.
        """
        if self._close is not None:
            return
        self._close = (code, reason)
        self._relay.closes[code] += 1
        self._relay.registry.leave(self)
        self._relay.membership_changed()
        self.mailbox.close()
        self._scope.deadline = min(
            self._scope.deadline, trio.current_time() + self._relay.config.close_timeout
        )
        level = logging.INFO if code in _NOTEWORTHY else logging.DEBUG
        if logger.isEnabledFor(level):
            fields = self._log_fields(code, reason)
            logger.log(level, "closing %r with %d: %s", self, code, reason, extra=fields)

    def _log_fields(self, code: int | None = None, reason: str | None = None) -> dict[str, object]:
        """Structured fields for log shippers (``--log-format json``)."""
        fields: dict[str, object] = {
            "member": self.id,
            "group": self.group_name,
            "remote": self.remote,
        }
        if code is not None:
            fields["code"] = code
        if reason is not None:
            fields["reason"] = reason
        return fields

    async def join(self) -> tuple[str, str] | None:
        """Join the group, before the upgrade is answered: once a client has its 101,
        it is a member everywhere. Returns (kind, reason) when it may not join after all
        (a limit reached meanwhile, the backplane unavailable, the relay stopping)."""
        relay = self._relay
        full = relay.over_limit(self.id, self.group_name)
        if full is not None:
            return full
        self.joined_at = trio.current_time()
        try:
            self._group = await relay.registry.join(self)
        except BaseException:
            self.close(CloseCode.GOING_AWAY, "the relay stopped during the join")
            raise
        relay.membership_changed()
        if self._close is not None:
            return "backplane_down", self._close[1]
        if relay.closing:
            self.close(CloseCode.GOING_AWAY, "relay shutting down")
            return "shutting_down", "relay shutting down"
        if logger.isEnabledFor(logging.INFO):
            logger.info("%r joined", self, extra=self._log_fields())
        return None

    async def run(self) -> None:
        """Serve the member, after :meth:`join` and the 101, until the session ends;
        never raises for a client's fault."""
        relay = self._relay
        if self._fd is not None:
            # Only now may frames go straight to the socket: the 101 is out.
            self.mailbox.fd = self._fd
        try:
            with self._scope:
                if relay.closing:
                    self.close(CloseCode.GOING_AWAY, "relay shutting down")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._send_loop, nursery.cancel_scope)
                    await self._receive_loop()
        finally:
            # Every normal end has closed already; this only acts when a bug ended us.
            self.close(CloseCode.INTERNAL_ERROR, "the relay failed serving this member")
            self._end_stream(truncated=True)
            with trio.CancelScope(shield=True):
                if isinstance(self._stream, trio.SocketStream):
                    await self._stream.aclose()  # never blocks
                else:
                    await trio.aclose_forcefully(self._stream)  # TLS may want to talk
            code = self._close[0] if self._close else None
            if logger.isEnabledFor(logging.INFO):
                logger.info("%r left (close code %s)", self, code, extra=self._log_fields(code))

    async def _receive_loop(self) -> None:
        try:
            await self._read_and_fan_out()
        finally:
            self._flush()

    async def _read_and_fan_out(self) -> None:
        parser = FrameParser(self._relay.config.max_message_size)
        data, self._leftover = self._leftover, b""
        while True:
            if data:
                self.reads += 1
                try:
                    events = parser.feed(data)
                except ProtocolError as exc:
                    # Fail the connection (RFC 6455 §7.1.7): no close reply is awaited.
                    self.close(exc.code, exc.reason)
                    self._peer_closed.set()
                    return
                for event in events:
                    if type(event) is Data:
                        if self._close is None:
                            if self._limited:
                                await self._pace(event)
                            await self._on_data(event)
                    elif type(event) is Ping:
                        await self._courier.deliver(frame(OP_PONG, event.payload), (self,))
                    elif type(event) is Close:
                        # Echo the member's code (RFC 6455 §5.5.1) unless we closed first.
                        code = event.code if event.code is not None else CloseCode.NORMAL
                        self.close(code, event.reason)
                        self._peer_closed.set()
                        return
                    # A pong only proves the member is alive, which self.reads records.
                self._flush()
            data = await self._receive_some()
            if not data:
                self._peer_gone("connection closed without a close frame")
                return

    async def _receive_some(self) -> bytes:
        """The next bytes from the member; b"" when its connection is gone."""
        fd = self._fd
        if fd is None:
            try:
                received = await self._stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return b""
            return received if isinstance(received, bytes) else bytes(received)
        # Plain TCP: wait first, then read once. Having just drained the socket, a read
        # attempt before waiting would almost always fail with EAGAIN — a wasted syscall
        # per message where messages come one per read (ping-pong, small groups).
        while True:
            try:
                await trio.lowlevel.wait_readable(fd)
            except trio.ClosedResourceError:
                return b""
            try:
                return os.read(fd, READ_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                return b""

    async def _pace(self, event: Data) -> None:
        """Forward no faster than the member's rate limits: sleep off any excess first.

        While this sleeps nothing more is read from the member, so TCP pushes back on
        the flood at its source."""
        now = trio.current_time()
        delay = 0.0
        if self._message_rate is not None and event.first:
            delay = self._message_rate.charge(1, now)
        if self._byte_rate is not None:
            delay = max(delay, self._byte_rate.charge(len(event.payload), now))
        if delay > 0:
            self._flush()
            await trio.sleep(delay)

    def _peer_gone(self, reason: str) -> None:
        self._eof = True
        self._peer_closed.set()
        if self._close is None:
            logger.debug("%r: %s", self, reason)
            # Nobody is left to hear a close frame: the sender sees _eof and just ends
            # (without cancellation, which costs more than the rest of a teardown).
            self.close(CloseCode.NORMAL, reason)

    async def _send_loop(self, session_scope: trio.CancelScope) -> None:
        mailbox, stream = self.mailbox, self._stream
        try:
            while self._close is None:
                batch, size = await mailbox.take(WRITE_BATCH)
                if self._close is not None:
                    break
                await stream.send_all(batch[0] if len(batch) == 1 else b"".join(batch))
                mailbox.written(size)
            assert self._close is not None
            if not self._eof:
                await stream.send_all(close_frame(*self._close))
            # RFC 6455 §7.1.1: the server closes TCP once both close frames were seen.
            await self._peer_closed.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._peer_gone("connection lost while writing")
        session_scope.cancel()

    async def _on_data(self, event: Data) -> None:
        payload = event.payload
        relay = self._relay
        relay.bytes += len(payload)
        if event.first:
            self._opcode = OP_TEXT if event.text else OP_BINARY
            if event.last:
                relay.messages += 1
                await self._broadcast(frame_header(self._opcode, len(payload)) + payload)
                return
            self._parts, self._parts_size, self._streaming = [], 0, False
        self._parts.append(payload)
        self._parts_size += len(payload)
        if not event.last and self._parts_size < FRAGMENT_SIZE:
            return
        piece = b"".join(self._parts)
        self._parts, self._parts_size = [], 0
        if self._streaming:
            await self._forward(OP_CONTINUATION, piece, event.last)
        elif event.last:
            relay.messages += 1
            await self._broadcast(frame_header(self._opcode, len(piece)) + piece)
        else:
            await self._start_stream()
            await self._forward(self._opcode, piece, False)

    async def _broadcast(self, data: bytes) -> None:
        """Queue one framed message for every other member of the group."""
        group = self._group
        assert group is not None
        if group.streamer is not None:
            await self._wait_for_stream(group)
        recipients = group.sessions
        self._relay.deliveries += len(recipients) - 1
        courier = self._courier
        if group.backplane is not None:
            if group.backplane.congested:
                self._flush()
                await group.backplane.wait_room()
            courier.publish(group, data)
        blocked = courier.offer(data, recipients, skip=self)
        if blocked is not None:
            await courier.wait_for_room(data, blocked)

    def _flush(self) -> None:
        self._courier.flush()

    async def _wait_for_stream(self, group: Group) -> None:
        while group.streamer is not None and group.streamer is not self:
            self._flush()
            await group.stream_done.wait()

    async def _start_stream(self) -> None:
        group = self._group
        assert group is not None
        await self._wait_for_stream(group)
        if group.backplane is not None:
            # Other nodes' members may be streaming to this group too: the backplane
            # decides who goes first, and may make this member wait its turn.
            self._flush()
            self._outgoing = await group.backplane.claim_stream(group, self)
        if group.streamer is not self:
            group.streamer = self
            group.stream_done = trio.Event()
        self._stream_to = tuple(member for member in group.sessions if member is not self)
        self._streaming = True
        self._relay.deliveries += len(self._stream_to)

    async def _forward(self, opcode: int, payload: bytes, last: bool) -> None:
        """Forward one piece of a streaming message to the members it started with."""
        data = frame(opcode, payload, last)
        await self._courier.deliver(data, self._stream_to)
        outgoing = self._outgoing
        if outgoing is not None:
            group = self._group
            assert group is not None and group.backplane is not None
            self._flush()
            await group.backplane.publish_piece(group, outgoing, data, last)
        if last:
            self._relay.messages += 1
            self._end_stream(truncated=False)

    def _end_stream(self, truncated: bool) -> None:
        group = self._group
        if not self._streaming or group is None:
            return
        outgoing, self._outgoing = self._outgoing, None
        if outgoing is not None and group.backplane is not None:
            group.backplane.end_stream(group, outgoing, truncated)
        if truncated:
            for member in self._stream_to:
                member.close(
                    CloseCode.MESSAGE_TRUNCATED,
                    "a message was cut off: its sender left mid-message",
                )
        self._streaming = False
        self._stream_to = ()
        if group.streamer is self:
            group.streamer = None
            group.stream_done.set()

    def keepalive(self, now: float, interval: float, timeout: float) -> None:
        """Called by the relay's keepalive task: ping a silent member, close a dead one."""
        if self.reads != self.reads_seen:
            self.reads_seen = self.reads
            self.heard_at = now
            self.pinged_at = None
        elif self.pinged_at is None:
            if now - self.heard_at >= interval:
                self.pinged_at = now
                self.mailbox.offer_control(_PING_FRAME)
        elif now - self.pinged_at >= timeout:
            self.close(CloseCode.KEEPALIVE_TIMEOUT, f"no answer to a ping within {timeout:g}s")


class Courier:
    """Queues frames in members' mailboxes for one producer (a member's receiver, or a
    backplane's subscriber), waiting for room where a mailbox is full.

    Frames a mailbox holds for a direct write (see Mailbox) are written by
    :meth:`flush`, which the producer calls before anything that may yield.
    """

    __slots__ = ("_held", "_outbox", "_outbox_group", "_relay")

    def __init__(self, relay: Relay) -> None:
        self._relay = relay
        self._held: list[Mailbox] = []
        # Whole messages for the group's members on other nodes, published together by
        # flush: one Redis message per read's worth instead of one per message.
        self._outbox: list[bytes] = []
        self._outbox_group: Group | None = None

    def publish(self, group: Group, data: bytes) -> None:
        """Queue a framed message for ``group``'s members on other nodes (a member's
        courier only: its messages all go to its one group)."""
        self._outbox.append(data)
        self._outbox_group = group

    async def deliver(self, data: bytes, members: tuple[Session, ...]) -> None:
        """Queue ``data`` for each of ``members``, waiting for room where a mailbox is full."""
        blocked = self.offer(data, members)
        if blocked is not None:
            await self.wait_for_room(data, blocked)

    def offer(
        self, data: bytes, members: tuple[Session, ...], skip: Session | None = None
    ) -> list[Session] | None:
        """Queue ``data`` for every member whose mailbox has room, without waiting;
        return the members whose mailboxes were full (None when there were none)."""
        blocked: list[Session] | None = None
        held = self._held
        for member in members:
            if member is not skip:
                result = member.mailbox.offer(data)
                if result == HELD:
                    held.append(member.mailbox)
                elif result == FULL:
                    if blocked is None:
                        blocked = []
                    blocked.append(member)
        return blocked

    async def wait_for_room(self, data: bytes, members: list[Session]) -> None:
        """Queue ``data`` for members whose mailboxes were full, waiting for room.

        A member whose mailbox stays full for ``slow_member_timeout`` is closed with
        4001: the group waits that long for it at most.
        """
        timeout = self._relay.config.slow_member_timeout
        for member in members:
            mailbox = member.mailbox
            while (result := mailbox.offer(data)) == FULL:
                if self._held or self._outbox:
                    # Write out what is held (it may be this very mailbox: offer again)
                    # and publish what other nodes wait for, before waiting here.
                    self.flush()
                    continue
                if mailbox.full_since is None:
                    mailbox.full_since = trio.current_time()
                    self._relay.mailbox_full += 1
                if not await mailbox.wait_room(mailbox.full_since + timeout):
                    member.close(
                        CloseCode.SLOW_CONSUMER,
                        f"mailbox full for {timeout:g}s: member reads too slowly",
                    )
            if result == HELD:
                self._held.append(mailbox)

    def flush(self) -> None:
        for mailbox in self._held:
            mailbox.flush()
        self._held.clear()
        if self._outbox:
            group = self._outbox_group
            assert group is not None and group.backplane is not None
            group.backplane.publish(group, self._outbox)
            self._outbox = []


# Closes worth a line at INFO; the rest (normal closes) are DEBUG.
_NOTEWORTHY = frozenset(CloseCode) - {CloseCode.NORMAL, CloseCode.GOING_AWAY}
