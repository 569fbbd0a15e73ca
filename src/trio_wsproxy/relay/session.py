"""One member's session: a receiver task that reads and fans out, a sender task that
drains the member's mailbox onto its socket.

Reading the socket (and the relay's hold on it: buffer turns, read-ahead, pacing, the
poller's hand-over) is the :class:`~.reader.MemberReader`'s; what the member sends into
its group is its :class:`~.sender.Sender`'s, in its :class:`~.membership.Membership`
(what the group holds as its member). The session
ties them together: the read loop, the v1 header, keepalive and its own lifecycle
(:class:`State`). Over v1 a session is in the groups it joins and leaves (DESIGN.md §8):
one membership each, the URL's group the first; each message's header says which group
it goes to, and the session picks that membership's sender for it."""

from __future__ import annotations

import enum
import functools
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Protocol, TypeVar

import trio

from ..protocol import v1
from ..protocol.assembly import FRAGMENT_SIZE, Assembly, Piece
from ..protocol.close_codes import CloseCode, client_close_label
from ..protocol.deflate import Deflated
from ..protocol.encoding import PLAIN, Encoding
from ..protocol.frames import (
    OP_PING,
    OP_PONG,
    Close,
    Data,
    Event,
    Ping,
    Pong,
    ProtocolError,
    close_frame,
    frame,
)
from ..protocol.hooks import PUBLISH as PUBLISH_HOOK
from ..protocol.hooks import publish_request
from ..protocol.message import Message
from ..protocol.printable import printable
from .budget import MEMBERSHIP, TEARDOWN
from .compression import group_encoding
from .fanout import Courier, send_control
from .groups import Group
from .history import CatchUp
from .hooks import NO_GRANT, Grant, Hooks
from .host import RelayCore
from .mailbox import Mailbox
from .membership import Membership
from .memory import BufferBudget
from .namespaces import PUBLISH_BACKEND
from .poller import Poller, Reader
from .presence import PresenceTracker, event_frame
from .reader import READ_FOR_YOURSELF, Handover, MemberReader
from .sender import Sender
from .subjects import SubjectRate, SubjectRates
from .webhooks import ABNORMAL_CLOSURE, Webhooks, tell_leaves

logger = logging.getLogger("trio_wsproxy.relay")

T = TypeVar("T")

# The sender writes at most about this much per send_all, so a member that drains
# slowly still shows progress (and frees mailbox room) often.
WRITE_BATCH = 262144
_PING_FRAME = frame(OP_PING, b"")


class State(enum.Enum):
    """Where a session is in its life (after wsproto's ``ConnectionState``)."""

    #: Serving the member (from its admission on: the join comes first).
    OPEN = "open"
    #: The relay closed it (:meth:`Session.close`): its close frame goes out, and the
    #: member's is awaited.
    LOCAL_CLOSING = "local closing"
    #: The member will send nothing more — its close frame came, or its data failed the
    #: connection: once the relay's close frame is out, TCP is closed.
    REMOTE_CLOSING = "remote closing"
    #: The connection is gone: nothing more is written.
    CLOSED = "closed"


_OPEN: Final = State.OPEN

# Connections' ids in this process (Session.key).
_KEYS = itertools.count(1)


class SessionHost(RelayCore, Protocol):
    """What a session needs of the relay it runs in."""

    @property
    def buffers(self) -> BufferBudget:
        """The relay-wide bound on unfinished messages."""

    @property
    def closing(self) -> bool:
        """True once the relay's shutdown has begun."""

    @property
    def presence(self) -> PresenceTracker:
        """Who is in each group, as v1 members hear it."""

    @property
    def poller(self) -> Poller | None:
        """Where idle members' receivers park (None: each reads for itself)."""

    @property
    def subject_rates(self) -> SubjectRates | None:
        """Subjects' allowances (``--max-subject-message-rate``; None: no limit)."""

    @property
    def webhooks(self) -> Webhooks | None:
        """Where joins and leaves are told to the back end (None: webhooks are off)."""

    def membership_changed(self) -> None:
        """A member joined or left (wakes those waiting for membership)."""

    def over_limit(self, member_id: str, group_name: str) -> tuple[str, str] | None:
        """(kind, reason) when one more member would break a limit."""

    def join_refusal(
        self,
        member_id: str,
        group_name: str,
        token: str | None,
        *,
        by_back_end: bool = False,
        token_id: str | None = None,
    ) -> v1.Error | None:
        """Why a member may not join one more group (its name, its token, a ban, a
        limit), as the error event that answers it; None: it may."""

    def refresh_verdict(self, member_id: str, token: str) -> Mapping[str, Any] | str | None:
        """A new token's claims when it may replace ``member_id``'s, why not (it is not
        valid, or revoked), or None when it is for another member."""

    @property
    def hooks(self) -> Hooks | None:
        """The back end's hooks (None: none is set)."""

    async def ask_join_hook(
        self, member_id: str, group: str, remote: str, info: Any
    ) -> tuple[int, str] | None:
        """The join hook's refusal (status, reason) of ``member_id`` in ``group``, if its
        namespace (or the relay) has one and it refuses; None: it may join."""


class Session(Reader):
    """A connected member. Created when its upgrade request is admitted; :meth:`join`
    comes before the 101 is sent, and :meth:`run` (which owns its tasks) after."""

    def __init__(
        self,
        relay: SessionHost,
        stream: trio.abc.Stream,
        member_id: str,
        group_name: str,
        remote: str,
        leftover: bytes = b"",
        encoding: Encoding = PLAIN,
        since: v1.Position | None = None,
        token: str | None = None,
        claims: Mapping[str, Any] | None = None,
        grant: Grant = NO_GRANT,
        window_bits: int | None = None,
    ) -> None:
        self.id = member_id
        #: The connection's id in this process (its memberships share it).
        self.key = str(next(_KEYS))
        #: The group the member's URL named: its first (and, in plain, only) group.
        self.group_name = group_name
        self.remote = remote
        #: How messages are framed for this member (its subprotocol's, or plain).
        self.encoding = encoding
        # permessage-deflate as agreed (its window; None: not agreed): a group it joins
        # later is compressed as that group's namespace says.
        self._window_bits = window_bits
        # wsproxy.v1: each message the member sends starts with a header line. While
        # one arrives over several frames: its reader (None: no header pending).
        self._v1 = encoding.presence
        self._header: v1.HeaderReader | None = None
        # The token it presented (tokens on): every join of another group is checked
        # against it, as the URL's group was; and its claims (a revocation covers them).
        self._token = token
        self.claims = claims
        # What the back end's connect hook gave it: the groups it may join, and its
        # info (shown to the back end's hooks).
        self._grant = grant
        self.info = grant.info
        # The id the token was checked against (the URL's, when the connect hook gave
        # the member another): later joins and new tokens are checked against it too.
        self._token_id = grant.renamed_from or member_id
        # When the token expires (seconds since the epoch), and the clock that closes
        # the member then (4006) unless a new token came (v1): cancelled by a refresh.
        exp = None if claims is None else claims.get("exp")
        self._token_exp: float | None = exp if isinstance(exp, int | float) else None
        self._token_clock = trio.CancelScope()
        self.mailbox = Mailbox(relay.config.mailbox_bytes)
        self._relay = relay
        self._counters = relay.counters
        self._stream = stream
        # Shielded: the relay's cancellation must not cut a session mid-frame; close()
        # ends it instead, and its deadline bounds how long ending may take.
        self._scope = trio.CancelScope(shield=True)
        #: Where the session is in its life; the close code and reason, once closed.
        self.state = State.OPEN
        self._close: tuple[int, str] | None = None
        # Set when the member will send nothing more (REMOTE_CLOSING or CLOSED): the
        # sender may then close TCP.
        self._peer_closed = trio.Event()
        config = relay.config
        # The member's data frames, as the messages and pieces the relay forwards.
        self._assembly = Assembly(member_id)
        self._reader = MemberReader(
            stream,
            config,
            relay.buffers,
            self._assembly,
            self._pong,
            leftover,
            inflate=window_bits is not None,
        )
        # Queues this receiver's fan-out; flushed after each read's events.
        self._courier = Courier(config.slow_member_timeout, relay.counters)
        self._budget = relay.budget
        self._buffers = relay.buffers
        # The member's place in its URL's group: what the group holds as its member.
        self._membership = Membership(self, group_name, since, trio.current_time())
        # The groups it is in now (from the moment a join begins), by name.
        self._memberships: dict[str, Membership] = {}
        # The sender of the URL's group while the member is in it (a message whose
        # header names no group goes there), and the sender of the message in hand
        # (the hot path reads it).
        self._home: Sender | None = None
        self._sender: Sender | None = None
        # v1: a join or leave the member asked for, for its task to carry out; whether
        # the rest of a message is dropped (it named a group the member is not in).
        self._request: v1.Join | v1.Leave | v1.Refresh | None = None
        self._dropping = False
        self._refuse_plain = False
        # Its subject's allowance while it runs (--max-subject-message-rate).
        self._subject: SubjectRate | None = None
        # While it runs: its nursery (joins the back end asks for run there).
        self._nursery: trio.Nursery | None = None
        #: How many pauses the relay imposes on the member's reader now: meanwhile it
        #: is never judged dead (keepalive), nor its streaming stalled.
        self.paused = 0
        #: While the member streams a message: when its next piece is due at the latest.
        self.piece_due: float | None = None
        # Keepalive bookkeeping, read by the relay's keepalive task.
        self.reads_seen = 0
        self.heard_at = trio.current_time()
        #: When the member joined (trio clock), set by :meth:`join`.
        self.joined_at = self.heard_at
        self.pinged_at: float | None = None

    @property
    def connection_key(self) -> str:
        """(The Member interface, for the frames the session queues for itself.)"""
        return self.key

    @property
    def reads(self) -> int:
        """How many reads brought the member's bytes (keepalive's proof of life)."""
        return self._reader.reads

    def __repr__(self) -> str:
        return f"<Session id={self.id!r} group={self.group_name!r} remote={self.remote}>"

    def close(self, code: int, reason: str, *, by_client: bool = False) -> None:
        """Leave the group now and end the session with ``code`` (callable from any task).

        What is still queued for the member is discarded: the close code tells its
        client that it may have missed messages. The first call decides the code.
        ``by_client``: the member closed first, and ``code`` is its own (echoed).
        """
        if self._close is not None:
            return
        # (A connection that dropped without a close frame: 1006, as WebSocket says.)
        told = ABNORMAL_CLOSURE if self.state is State.CLOSED else code
        self._close = (code, reason)
        self.state = State.REMOTE_CLOSING if by_client else State.LOCAL_CLOSING
        if by_client:
            self._counters.client_closes[client_close_label(code)] += 1
        else:
            self._counters.closes[code] += 1
        registry, presence = self._relay.registry, self._relay.presence
        tell_leaves(self._relay.webhooks, self._memberships.values(), told)
        for membership in self._memberships.values():
            registry.leave(membership)
            if membership.group is not None:
                presence.changed(membership.group, self.id, joined=False)
        self._relay.membership_changed()
        self.mailbox.close()
        self._scope.deadline = min(
            self._scope.deadline, trio.current_time() + self._relay.config.close_timeout
        )
        level = logging.INFO if code in _NOTEWORTHY and not by_client else logging.DEBUG
        if logger.isEnabledFor(level):
            fields = self._log_fields(code, reason)
            how = "closed by the member" if by_client else "closing"
            logger.log(level, "%r %s with %d: %s", self, how, code, fields["reason"], extra=fields)

    def _log_fields(self, code: int | None = None, reason: str | None = None) -> dict[str, object]:
        """Structured fields for log shippers (``--log-format json``)."""
        fields: dict[str, object] = {
            "member": printable(self.id),
            "group": printable(self.group_name),
            "remote": self.remote,
        }
        if code is not None:
            fields["code"] = code
        if reason is not None:
            fields["reason"] = printable(reason)
        return fields

    async def join(self) -> tuple[str, str] | None:
        """Join the group, before the upgrade is answered: once a client has its 101,
        it is a member everywhere. Returns (kind, reason) when it may not join after all
        (a limit reached meanwhile, the backplane unavailable, the relay stopping)."""
        relay = self._relay
        full = relay.over_limit(self.id, self.group_name)
        if full is not None:
            return full
        membership = self._membership
        self.joined_at = membership.joined_at = trio.current_time()
        try:
            group, catch = await self._enter(membership)
        except BaseException:
            self.close(CloseCode.GOING_AWAY, "the relay stopped during the join")
            raise
        self._sender = self._home = membership.sender
        # A plain member of a group only the back end publishes in: what it sends is
        # refused (it has no events to be told by).
        self._refuse_plain = not self._v1 and self._home is not None and self._home.read_only
        self._joined(membership, group, catch)
        if self._close is not None:
            return "backplane_down", self._close[1]
        if relay.closing:
            self.close(CloseCode.GOING_AWAY, "relay shutting down")
            return "shutting_down", "relay shutting down"
        if logger.isEnabledFor(logging.INFO):
            logger.info("%r joined", self, extra=self._log_fields())
        return None

    async def _enter(self, membership: Membership) -> tuple[Group, CatchUp]:
        """Put ``membership`` in its group, with its sender, and catch it up with the
        group's history (see Group.catch_up)."""
        self._memberships[membership.group_name] = membership  # (close() leaves it)
        group = await self._relay.registry.join(membership)
        namespace = self._relay.config.namespace(membership.group_name)
        sender = Sender(
            membership,
            group,
            self._courier,
            self._counters,
            self._budget,
            in_group=True,
            unknown=functools.partial(self._no_such_member, membership),
            cut_off_reason="a message was cut off: its sender left mid-message",
            pause=self._paused,
            read_only=namespace is not None and namespace.publish == PUBLISH_BACKEND,
            publish_hook=self._relay.config.hook_for(PUBLISH_HOOK, membership.group_name),
        )
        membership.joined(group, sender)
        return group, await group.catch_up(membership, membership.since)

    def _joined(self, membership: Membership, group: Group, catch: CatchUp) -> None:
        """``membership`` is in ``group``: welcome it (v1), and tell the others."""
        webhooks = self._relay.webhooks
        if webhooks is not None and self._close is None:
            webhooks.joined(membership)
        if self._v1:
            self._welcome(membership, group, catch)
        self._relay.presence.changed(group, self.id, joined=True)
        self._relay.membership_changed()

    def _welcome(self, membership: Membership, group: Group, catch: CatchUp) -> None:
        """Welcome a v1 member to a group: with history, the group's position, and for a
        member that named its position, every message it missed, queued right after the
        welcome and before anything live (nothing is awaited from its catching up to
        here)."""
        self._relay.presence.welcome(membership, group, catch.position, catch.recovery)
        mailbox, encoding = self.mailbox, membership.encoding
        for message in catch.missed:  # (bounded by history_bytes: past the mailbox's bound)
            mailbox.offer_catch_up(encoding.message(message))

    # -- many groups (v1) ----------------------------------------------------------------

    async def _carry_out(self) -> None:
        """Join or leave a group, as the member asked (its messages wait meanwhile: a
        message it sends right after a join goes to the group it joined)."""
        request, self._request = self._request, None
        self._flush()  # (what it sent before goes out before)
        if type(request) is v1.Join:
            await self._join_group(request.group, request.since)
        elif type(request) is v1.Leave:
            membership = self._memberships.get(request.group)
            if membership is None or membership.group is None:
                self._not_in_group(request.group)
            else:
                self._drop(membership, None)
        elif type(request) is v1.Refresh:
            self._refresh(request.token)

    # -- the token's life (tokens on) ---------------------------------------------------

    async def _watch_token(self) -> None:
        """Tell a v1 member that its token expires soon (``token_refresh_margin`` ahead,
        or at once), and close the member with 4006 TOKEN_LEEWAY after it expired,
        unless a new token came meanwhile (then the clock starts again)."""
        margin = self._relay.config.token_refresh_margin
        while self._token_exp is not None:
            exp = self._token_exp
            with self._token_clock:
                if self._v1:
                    await trio.sleep(max(0.0, exp - margin - time.time()))
                    send_control(self, event_frame(v1.TokenExpiring(int(exp))))
                await trio.sleep(max(0.0, exp + TOKEN_LEEWAY - time.time()))
                if self._close is None:
                    self._counters.token_expiries += 1
                self.close(CloseCode.TOKEN_EXPIRED, _TOKEN_EXPIRED_REASON)
                return
            self._token_clock = trio.CancelScope()  # (refreshed: the new token's turn)

    def _refresh(self, token: str) -> None:
        """Take a new token for the connection: answered ``token_refreshed``; a token
        that is not valid (or revoked) is answered with the error ``token_invalid`` and
        the old one goes on until it expires; one for another member closes (1008)."""
        verdict = self._relay.refresh_verdict(self._token_id, token)
        if isinstance(verdict, str):
            self._counters.token_refreshes["invalid"] += 1
            logger.info("%r: a new access token refused: %s", self, verdict)
            detail = verdict
            send_control(self, event_frame(v1.Error(v1.TOKEN_INVALID, detail)))
            return
        if verdict is None:
            self._counters.token_refreshes["other_member"] += 1
            self.close(CloseCode.POLICY_VIOLATION, "a new access token must be for the same member")
            return
        exp = verdict.get("exp")
        self._token, self.claims = token, verdict
        self._token_exp = float(exp) if isinstance(exp, int | float) else None
        self._token_clock.cancel()
        self._counters.token_refreshes["ok"] += 1
        logger.info("%r renewed its access token (expires %s)", self, exp, extra=self._log_fields())
        send_control(self, event_frame(v1.TokenRefreshed(int(self._token_exp or 0))))

    @property
    def group_names(self) -> list[str]:
        """The groups the connection is in now, by name (sorted)."""
        return sorted(name for name, each in self._memberships.items() if each.group is not None)

    async def join_for_back_end(self, name: str) -> v1.Error | None:
        """Join the group ``name`` too because the application's back end says so (the
        HTTP API): no token or ban is asked, the limits hold. The member gets the
        group's welcome; the refusal, if any, is the caller's (None: joined)."""
        if not self._v1:
            return v1.Error(
                v1.UNAVAILABLE, "a plain member (not wsproxy.v1) is in one group only", group=name
            )
        return await self._join_group(name, None, by_back_end=True)

    def join_also(self, name: str) -> None:
        """(The Connection and Member interfaces.) The back end asks, through another
        node, that the connection join ``name`` too: done in the session's own nursery,
        a refusal logged (nobody waits for the answer)."""
        if self._nursery is not None and self.state is _OPEN:
            self._nursery.start_soon(self._join_asked_elsewhere, name)

    async def _join_asked_elsewhere(self, name: str) -> None:
        refusal = await self.join_for_back_end(name)
        if refusal is not None:
            logger.info(
                "%r: the back end's join of %s was refused: %s",
                self,
                printable(name),
                refusal.detail,
                extra=self._log_fields(),
            )

    async def _join_group(
        self, name: str, since: v1.Position | None, *, by_back_end: bool = False
    ) -> v1.Error | None:
        """Join the group ``name`` too, answered by its welcome, or refused with an error
        event that says why (the connection stays in the groups it is in); the back
        end's join gets the refusal back instead (None: joined)."""
        # A join is work like a teardown: many at once take turns with the fan-out.
        await self._paused(self._budget.spend, MEMBERSHIP, read_ahead=False)
        refusal = self._join_checks(name, by_back_end)
        if refusal is None and not by_back_end:
            refusal = await self._asked_back_end(name)
            if refusal is None:
                # The back end took its time: what the checks said may have changed (a
                # close, a join by the API, a limit reached, a ban).
                refusal = self._join_checks(name, by_back_end)
        # (From the checks to the membership's registration, nothing is awaited.)
        if refusal is not None:
            self._counters.join_refusals[refusal.error] += 1
            if not by_back_end:
                send_control(self, event_frame(refusal))
            return refusal
        if since is not None and not await self._recoveries_read():
            return v1.Error(v1.UNAVAILABLE, "the connection is closing", group=name)
        encoding = self.encoding
        if name != self.group_name or self._window_bits is not None:
            base = encoding.inner if isinstance(encoding, Deflated) else encoding
            base = base if name == self.group_name else base.for_group(name)
            threshold = self._relay.config.compression_for(name)
            encoding = group_encoding(base, self._window_bits, threshold)
        membership = Membership(self, name, since, trio.current_time(), encoding)
        membership.entering = True
        try:
            group, catch = await self._enter(membership)
        finally:
            membership.entering = False
        if self.state is not _OPEN:
            return v1.Error(v1.UNAVAILABLE, "the connection is closing", group=name)
        if membership.refused is not None or self._memberships.get(name) is not membership:
            # The group ended it while it joined (its history could not be caught up,
            # the backplane went away).
            self._courier.unserve(group)
            reason = "could not join" if membership.refused is None else membership.refused[1]
            refusal = v1.Error(v1.UNAVAILABLE, reason, group=name)
            if not by_back_end:
                send_control(self, event_frame(refusal))
            return refusal
        if name == self.group_name:
            self._home = membership.sender
        self._joined(membership, group, catch)
        return None

    def _join_checks(self, name: str, by_back_end: bool) -> v1.Error | None:
        """Why the member may not join ``name`` too, as far as the relay decides (the
        connection's state, its groups, its token, a ban, the limits); None: it may."""
        if self.state is not _OPEN:
            return v1.Error(v1.UNAVAILABLE, "the connection is closing", group=name)
        if name in self._memberships:
            return v1.Error(v1.ALREADY_JOINED, f"already in group {name!r}", group=name)
        limit = self._relay.config.max_groups_per_member
        if len(self._memberships) >= limit:
            return v1.Error(v1.GROUP_LIMIT, f"in {limit} groups already", group=name)
        return self._relay.join_refusal(
            self.id, name, self._token, by_back_end=by_back_end, token_id=self._token_id
        )

    async def _asked_back_end(self, name: str) -> v1.Error | None:
        """Whether the back end lets the member join ``name`` too: the groups its
        connect hook gave it, then the group's join hook (awaited in the member's own
        task: its other groups go on meanwhile). The refusal, if any."""
        if not self._grant.allows(name):
            detail = f"the application's back end does not allow group {name!r}"
            return v1.Error(v1.NOT_ALLOWED, detail, group=name)
        refused = await self._paused(
            self._relay.ask_join_hook, self.id, name, self.remote, self.info
        )
        if refused is not None:
            status, reason = refused
            return v1.Error(v1.REFUSED, reason, group=name, status=status)
        return None

    async def _recoveries_read(self) -> bool:
        """Before one more recovery: wait while what earlier joins recovered (queued
        outside the mailbox's bound, Mailbox.catch_up) is more than the bound, unread.
        So a member that names positions in many groups holds at most one group's
        history beyond its mailbox; one that does not read it within the slow-member
        timeout is closed with 4001 (False)."""
        mailbox = self.mailbox
        if mailbox.catch_up <= mailbox.capacity:
            return True
        timeout = self._relay.config.slow_member_timeout
        deadline = trio.current_time() + timeout
        while mailbox.catch_up > mailbox.capacity and self.state is _OPEN:
            if not await self._paused(mailbox.wait_room, deadline):
                self.close(
                    CloseCode.SLOW_CONSUMER,
                    f"recovered messages unread for {timeout:g}s: member reads too slowly",
                )
        return self.state is _OPEN

    def _drop(self, membership: Membership, reason: str | None) -> None:
        """Leave ``membership``'s group, the connection staying (in the groups it is in
        still, or in none), and tell the member (a ``left`` event)."""
        name = membership.group_name
        if self._memberships.get(name) is not membership:
            return
        del self._memberships[name]
        relay, group, sender = self._relay, membership.group, membership.sender
        code = None if reason is None else CloseCode.REMOVED  # (None: the member asked)
        tell_leaves(relay.webhooks, (membership,), code)
        relay.registry.leave(membership)
        if sender is not None:
            self._courier.unserve(sender.group)
            if sender is self._home:
                self._home = None
        if group is not None:
            relay.presence.changed(group, self.id, joined=False)
        relay.membership_changed()
        send_control(self, event_frame(v1.Left(name, reason)))

    def membership_closed(self, membership: Membership, code: int, reason: str) -> None:
        """(The Connection interface.) A group ends ``membership``: a join still under
        way is refused (the connection stays), and a v1 member in other groups that
        the back end removes from one leaves that one alone (unless a message of its
        streams there now); anything else ends the connection, as every group shares
        its mailbox and its id."""
        if membership.entering:
            membership.refused = (code, reason)
            self._relay.registry.leave(membership)
            del self._memberships[membership.group_name]
            return
        sender = membership.sender
        if (
            code == CloseCode.REMOVED
            and self._v1
            and len(self._memberships) > 1
            and not (sender is not None and sender.streaming)
        ):
            self._drop(membership, reason)
            return
        self.close(code, reason)

    def _not_in_group(self, name: str) -> None:
        """A message (or a leave) for a group the member is not in: dropped, and the
        member told so."""
        detail = f"not a member of group {name!r}"
        send_control(self, event_frame(v1.Error(v1.NOT_IN_GROUP, detail, group=name)))

    # -- serving -------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the member, after :meth:`join` and the 101, until the session ends;
        never raises for a client's fault."""
        relay = self._relay
        if self._reader.fd is not None:
            # Only now may frames go straight to the socket: the 101 is out.
            self.mailbox.fd = self._reader.fd
        try:
            with self._scope:
                if relay.closing:
                    self.close(CloseCode.GOING_AWAY, "relay shutting down")
                if relay.subject_rates is not None:
                    self._subject = relay.subject_rates.enter(self.id)
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._send_loop, nursery.cancel_scope)
                    if self._token_exp is not None:
                        nursery.start_soon(self._watch_token)
                    await self._receive_loop()
        except Exception:
            # A bug beyond the reader's (which contains its own): no close frame can be
            # trusted to follow what the sender task was writing.
            self.internal_error("the relay failed serving this member")
        finally:
            # Every end has closed already, but one that is not an Exception.
            self.close(CloseCode.INTERNAL_ERROR, "the relay failed serving this member")
            self._end_stream(truncated=True)
            self._reader.release()
            if self._subject is not None and relay.subject_rates is not None:
                relay.subject_rates.leave(self._subject)
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
        except Exception:
            # A bug in the relay's own code, met reading for this member (in its task
            # or in the poller, which raises it here): this member alone pays for it.
            # The sender task still writes the close frame; nothing more is read.
            self.internal_error("the relay failed serving this member")
            self._peer_closed.set()
        finally:
            self._flush()

    def internal_error(self, reason: str) -> None:
        """Contain an exception (being handled) from the relay's own code to this
        session: log it once with its traceback, count it, close the member with 1011."""
        self._counters.internal_errors["session"] += 1
        logger.exception("%r: %s", self, reason, extra=self._log_fields(None, reason))
        self.close(CloseCode.INTERNAL_ERROR, reason)

    async def _read_and_fan_out(self) -> None:
        reader = self._reader
        parser = reader.parser
        data, reader.leftover = reader.leftover, b""
        events: list[Event] = []
        event: Event | None = None
        # Plain TCP: this member's receiver parks in the poller while all is usual.
        fd = reader.fd
        poller = self._relay.poller if fd is not None else None
        flush = self._courier.flush
        # A violation in a read: failed once the frames before it are acted on.
        failure: ProtocolError | None = None
        while True:
            if data:
                reader.reads += 1
                try:
                    events = parser.feed(data)
                except ProtocolError as exc:
                    events, failure = exc.events, exc
            sender = self._sender
            if sender is not None and sender.blocked is not None:
                await sender.finish()  # (what the poller left for this task)
            if self._request is not None:
                await self._carry_out()  # (a join or leave the poller read)
            for event in events:
                if type(event) is Data and self.state is _OPEN and not reader.limited:
                    await self._on_data(event)  # the hot path, without _handle's frame
                elif await self._handle(event):
                    return
            if failure is not None:
                flush()
                self._fail(failure)
                return
            if reader.ahead and await self._act_on_ahead():
                return
            flush()
            # Nothing of this read stays alive while the member waits for its next one
            # (a read and its frames, or a whole message of up to 1 MiB, per member).
            data, events, event = b"", [], None
            if reader.unusual:
                unusual = await self._receive_unusually()  # (not on the hot path)
                if unusual is None:
                    return
                data = unusual
            elif poller is not None and poller.running and self._usual():
                assert fd is not None
                if poller.admits():
                    handover = await poller.park(self, fd)
                else:
                    handover = await self._read_solo(poller, fd)
                if handover.error is not None:
                    events, failure = handover.events, handover.error
                    continue
                if handover.data is None:
                    events = handover.events
                    continue
                data = handover.data
            else:
                data = await reader.receive_some()
            if not data:
                await self._tearing_down()
                self._peer_gone("connection closed without a close frame")
                return

    def _usual(self) -> bool:
        """Whether nothing unusual is going on, so that the poller may read for this
        member: it only ever forwards whole messages that need no wait."""
        return (
            self.state is _OPEN
            and self._header is None
            and self.piece_due is None
            and self._reader.usual
        )

    async def _read_solo(self, poller: Poller, fd: int) -> Handover:
        """While the poller is solo (see poller.py): wait for this member's own socket and
        read it as the poller would have, here, for as long as all stays usual; what
        the task goes on with, as from the poller."""
        while True:
            try:
                await trio.lowlevel.wait_readable(fd)
            except trio.ClosedResourceError:
                return Handover(data=b"")
            handover = self.readable()
            if handover is not None:
                return handover
            if poller.admits():
                return READ_FOR_YOURSELF  # (the poller looks again: park)

    def readable(self) -> Handover | None:
        """The poller's read for this parked member (see poller.py): read once, and
        forward what needs no wait, here and now; return what the member's task goes on
        with, or None when nothing is left for it."""
        # Parked, the session was found usual (_usual) and its task does nothing; what
        # the poller forwards keeps it so (anything else is handed over). Only others
        # can change it meanwhile: by closing it, or by taking the relay over its bound.
        if self.state is not _OPEN or self._buffers.over:
            return READ_FOR_YOURSELF
        read = self._reader.read_now()
        if not isinstance(read, list):
            return read  # (nothing read, or what only the task acts on)
        handover: Handover | None = None
        for index, event in enumerate(read):
            if type(event) is Data and self.state is _OPEN:
                done = self._on_data_now(event)
                if done:
                    continue
                # The member's task goes on from this frame (nothing done), or after it.
                handover = Handover(read[index:] if done is None else read[index + 1 :])
                break
            if type(event) is not Pong:
                handover = Handover(read[index:])
                break
        self._courier.flush()
        return handover

    async def _act_on_ahead(self) -> bool:
        """Act on what was read ahead while the member was paused, in order; True when
        the session's reading ends."""
        reader = self._reader
        while (event := reader.take_ahead()) is not None:
            if await self._handle(event):
                return True
        return False

    async def _receive_unusually(self) -> bytes | None:
        """The next bytes when the read-ahead ended the connection, this member holds
        part of a message, or the relay is over its buffer bound: b"" when the
        connection is gone, None when it failed (and was closed for it) or its reading
        ended."""
        reader = self._reader
        while True:
            end = reader.pop_end()
            if isinstance(end, ProtocolError):
                self._fail(end)
                return None
            if end:
                return b""
            # Over the relay's bound, and holding part of a message: read on only in
            # turn. (Not while streaming: its pieces go out as they come, and others may
            # be waiting for its message to end.)
            if not reader.needs_turn() or self.piece_due is not None:
                return await reader.receive_next()
            await self._paused(reader.take_turn)
            # If the relay went under its bound meanwhile, the reader read ahead: that
            # comes before anything read later (it may be the rest of the message, end
            # and all, and the member may send nothing more).
            if reader.ahead:
                if await self._act_on_ahead():
                    return None
                self._flush()

    async def _tearing_down(self) -> None:
        """A teardown is work like a fan-out: a mass disconnect takes turns (not while
        the relay itself is stopping: then every session ends at once, within its
        close_timeout)."""
        if not self._relay.closing:
            await self._budget.spend(TEARDOWN)

    async def _handle(self, event: Event) -> bool:
        """Act on one event from the member; True when the session's reading ends."""
        if type(event) is Data:
            if self.state is _OPEN:
                if self._reader.limited:
                    await self._pace(event)
                await self._on_data(event)
        elif type(event) is Ping:
            await self._courier.deliver(frame(OP_PONG, event.payload), (self,))
        elif type(event) is Close:
            await self._tearing_down()
            # Echo the member's code (RFC 6455 §5.5.1) unless we closed first.
            code = event.code if event.code is not None else CloseCode.NORMAL
            self.close(code, event.reason, by_client=True)
            self._member_done()
            return True
        # A pong only proves the member is alive, which self.reads records.
        return False

    def _fail(self, error: ProtocolError) -> None:
        # Fail the connection (RFC 6455 §7.1.7): no close reply is awaited.
        self.close(error.code, error.reason)
        self._member_done()

    def _member_done(self) -> None:
        """The member will send nothing more: once the close frame is out, TCP closes."""
        if self.state is not State.CLOSED:
            self.state = State.REMOTE_CLOSING
        self._peer_closed.set()

    def _pong(self, payload: bytes) -> None:
        send_control(self, frame(OP_PONG, payload))

    async def _paused(
        self, wait: Callable[..., Awaitable[T]], *args: Any, read_ahead: bool = True
    ) -> T:
        """Await ``wait(*args)``, a pause the relay imposes on the member's reader.

        Meanwhile the member is not judged by keepalive, and (on plain TCP, unless the
        pause is a scheduling turn's: too short to need it) its reader reads ahead up to
        READ_AHEAD bytes of data: pings are answered and pongs seen while the data waits
        its turn, in order."""
        self.paused += 1
        # Holding the buffer budget's turn but nothing more (or under the bound again):
        # the others do not wait out this pause (a hook, a rate limit) for it.
        self._reader.account()
        try:
            if read_ahead and self._reader.can_read_ahead():
                return await self._reader.reading_ahead(wait, *args)
            return await wait(*args)
        finally:
            self.paused -= 1
            # The member had no chance to be heard meanwhile: its timers start now.
            now = trio.current_time()
            self.heard_at, self.pinged_at = now, None
            if self.piece_due is not None:
                self.piece_due = max(self.piece_due, now + self._relay.config.stream_timeout)

    async def _pace(self, event: Data) -> None:
        """Forward no faster than the member's rate limits: sleep off any excess first.

        While this sleeps nothing more is read from the member, so TCP pushes back on
        the flood at its source."""
        delay = self._reader.pace(event)
        if delay > 0:
            self._counters.limited_messages["member"] += 1
            self._flush()
            await self._paused(trio.sleep, delay)
        subject = self._subject
        if subject is not None and event.first and not subject.take():
            # Over the subject's rate (all its connections, every node): wait for its
            # next token (on a cluster, maybe a lease from Redis), reading ahead.
            self._counters.limited_messages["subject"] += 1
            self._flush()
            await self._paused(subject.wait)

    def _peer_gone(self, reason: str) -> None:
        first = self._close is None
        self.state = State.CLOSED
        self._peer_closed.set()
        if first:
            logger.debug("%r: %s", self, reason)
            # Nobody is left to hear a close frame: the sender sees CLOSED and just ends
            # (without cancellation, which costs more than the rest of a teardown).
            self.close(CloseCode.NORMAL, reason)

    async def _send_loop(self, session_scope: trio.CancelScope) -> None:
        mailbox, stream = self.mailbox, self._stream
        try:
            while self.state is _OPEN:
                batch, size = await mailbox.take(WRITE_BATCH)
                if self.state is not _OPEN:
                    break
                await stream.send_all(batch[0] if len(batch) == 1 else b"".join(batch))
                if batch[0] is mailbox.tail:  # (a direct write's rest is first in line)
                    mailbox.tail = None
                mailbox.written(size, len(batch))
            assert self._close is not None
            if self.state is not State.CLOSED:
                if mailbox.tail is not None:
                    # The rest of a frame a direct write began: the close frame follows it.
                    await stream.send_all(mailbox.tail)
                await stream.send_all(close_frame(*self._close))
            # RFC 6455 §7.1.1: the server closes TCP once both close frames were seen.
            await self._peer_closed.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._peer_gone("connection lost while writing")
        session_scope.cancel()

    async def _on_data(self, event: Data) -> None:
        """Forward what a data frame completes: a whole message to every other member of
        the group (framed once per encoding among them), or a streaming one's piece."""
        received = self._received(event)
        if received is None:
            if self._request is not None:
                await self._carry_out()
            return
        event = received
        sender = self._sender
        assert sender is not None
        if event.first and event.last:
            # A whole message in one frame, the common case, as the assembly would have
            # it (it keeps no state for one): without the call, on the hot path.
            message = Message(self.id, event.text, event.payload, self._assembly.to)
        else:
            forward = self._assembly.feed(event)
            if forward is None:
                return
            if isinstance(forward, list):
                if sender.publish_hook is not None:
                    self._unhooked(sender, forward)
                    return
                for piece in forward:
                    if piece.first:
                        await sender.start(self._assembly.head)
                        self.piece_due = trio.current_time() + self._relay.config.stream_timeout
                    ended = await sender.forward(piece)
                    now = trio.current_time()
                    self.piece_due = None if ended else now + self._relay.config.stream_timeout
                return
            message = forward
        if sender.publish_hook is not None:
            published = await self._published(sender, message)
            if published is None:
                return
            message = published
        # The hot path: one synchronous call when nothing makes the message wait.
        if not sender.clear():
            self._flush()
            await sender.send(message)
            return
        sender.offer(message)
        if sender.blocked is not None:
            await sender.finish()

    def _on_data_now(self, event: Data) -> bool | None:
        """:meth:`_on_data` without a wait, for the poller: None, having done nothing,
        for what could have to wait before its offers (the member's task does it); else
        True, or False when the member's task must act before the next frame (a join or
        a leave the member asked for, an offer that found mailboxes full)."""
        if not (event.first and event.last):
            return None
        home = self._home
        # (In its URL's group alone, every message the poller may forward goes there.)
        sender = (
            home if home is not None and len(self._memberships) == 1 else self._sender_for(event)
        )
        if sender is None or sender.publish_hook is not None or not sender.clear():
            return None
        received = self._received(event)
        if received is None:
            return self._request is None
        sender.offer(Message(self.id, received.text, received.payload, self._assembly.to))
        return sender.blocked is None

    async def _published(self, sender: Sender, message: Message) -> Message | None:
        """What the back end's publish hook makes of ``message``: the message, or the
        one with the payload it replaced, or None when it refused (the sender told).
        Awaited in the member's own task, one message after another: its messages stay
        in order, and other members' go on meanwhile."""
        assert sender.publish_hook is not None
        url, allow_on_failure = sender.publish_hook
        name = sender.group.name
        try:
            request = publish_request(
                self.id, name, self.remote, self.info, message.text, message.payload, message.to
            )
        except UnicodeDecodeError:
            reason = "a text message must be UTF-8"
            self._publish_refused(sender, 400, reason, message.to, by_relay=True)
            return None
        self._flush()  # (what it sent before goes out first)
        hooks = self._relay.hooks
        assert hooks is not None
        answer = await self._paused(hooks.ask, url, request, allow_on_failure)
        if not answer.allow:
            assert answer.status is not None and answer.reason is not None
            self._publish_refused(sender, answer.status, answer.reason, message.to)
            return None
        if self.state is not _OPEN:
            return None
        membership = self._memberships.get(name)
        if membership is None or membership.sender is not sender:
            # It left the group (or was removed from it) while the back end answered.
            if self._v1:
                self._not_in_group(name)
            return None
        replacement = answer.replacement()
        if replacement is None:
            return message
        text, payload = replacement
        return Message(message.sender, text, payload, message.to)

    def _unhooked(self, sender: Sender, pieces: list[Piece]) -> None:
        """A message too large to go to the back end's publish hook whole (it would
        stream): refused, its first piece telling the sender, the rest dropped."""
        if pieces[0].first:
            limit = FRAGMENT_SIZE // 1024
            reason = f"a message into a group with a publish hook is at most {limit} KiB"
            self._publish_refused(sender, 413, reason, self._assembly.to, by_relay=True)

    def _publish_refused(
        self, sender: Sender, status: int, reason: str, to: str | None, *, by_relay: bool = False
    ) -> None:
        """The member's message goes nowhere: a v1 member is told (an error event); a
        plain one has no events to be told by. Either way the refusal is counted and
        logged at INFO: here when the relay refused (``by_relay``: the message could not
        go to the hook), by the hook's caller when the back end did."""
        self._counters.publish_refusals += 1
        if by_relay:
            logger.info(
                "%r: a message into %s refused: %d %s",
                self,
                printable(sender.group.name),
                status,
                reason,
                extra=self._log_fields(),
            )
        if self._v1:
            group = None if sender is self._home else sender.group.name
            error = v1.Error(v1.MESSAGE_REFUSED, reason, to, group, status)
            send_control(self, event_frame(error))

    def _received(self, event: Data) -> Data | None:
        """Count a data frame from the member and, over v1, take its message's header
        line off it: None while the header line is still arriving (or when it is bad:
        the connection failed)."""
        self._counters.bytes += len(event.payload)
        if self._v1:
            return self._strip_header(event)
        if self._refuse_plain:
            self.close(CloseCode.POLICY_VIOLATION, _READ_ONLY_REASON)
            self._member_done()
            return None
        return event

    def _sender_for(self, event: Data) -> Sender | None:
        """The sender of a v1 member in several groups for the whole message ``event``,
        as its header names the group (None: what only the member's task does: a join,
        a leave, a malformed header, a group it is not in)."""
        data = event.payload
        end = data.find(b"\n", 0, v1.MAX_MEMBER_HEADER)
        if end <= 0:
            return self._home if end == 0 else None
        try:
            target = v1.parse_member_header(data[:end])
        except v1.V1Error:
            return None
        if type(target) is not v1.ToGroup and type(target) is not v1.ToMember:
            return None
        if target.group is None:
            return self._home
        membership = self._memberships.get(target.group)
        return None if membership is None else membership.sender

    def _flush(self) -> None:
        self._courier.flush()

    def _strip_header(self, event: Data) -> Data | None:
        """A v1 member's data frame without its message's header line, whose target is
        noted for the assembly (``to``); None while the header line is still arriving.
        A malformed header fails the connection (1002)."""
        try:
            if event.first:
                # The common case, a whole message (or its header line) in one frame:
                # the reader's rule in one step, without holding anything.
                data = event.payload
                end = v1.header_end(data, event.last)
                if end is None:
                    self._header = reader = v1.HeaderReader()
                    reader.feed(data, False)
                    return None
            elif self._header is None:
                if self._dropping:
                    self._dropping = not event.last
                    return None
                return event
            else:
                read = self._header.feed(event.payload, event.last)
                if read is None:
                    return None
                self._header = None
                data, end = read
            if end == 1:
                # An empty header, the common case: to the URL's group.
                sender = self._home
                if sender is not None and not sender.read_only:
                    self._sender = sender
                    self._assembly.to = None
                    return Data(data[1:], event.text, True, event.last)
            target = v1.parse_member_header(data[: end - 1]) if end > 1 else v1.TO_GROUP
        except v1.V1Error as exc:
            self._fail(ProtocolError(CloseCode.PROTOCOL_ERROR, f"{v1.SUBPROTOCOL}: {exc}"))
            return None
        if isinstance(target, v1.Join | v1.Leave | v1.Refresh):
            if not event.last or end != len(data):
                self._fail(
                    ProtocolError(
                        CloseCode.PROTOCOL_ERROR,
                        f"{v1.SUBPROTOCOL}: a join, a leave or a token is its header line alone",
                    )
                )
            else:
                self._request = target
            return None
        group = target.group
        if group is None:
            sender = self._home
        else:
            membership = self._memberships.get(group)
            sender = None if membership is None else membership.sender
        if sender is None or sender.read_only:
            name = self.group_name if group is None else group
            if sender is None:
                self._not_in_group(name)
            else:
                detail = f"{_READ_ONLY_REASON}: group {name!r}"
                error = v1.Error(v1.READ_ONLY, detail, group=None if group is None else name)
                send_control(self, event_frame(error))
            self._dropping = not event.last
            return None
        self._sender = sender
        self._assembly.to = target.to if type(target) is v1.ToMember else None
        return Data(data[end:], event.text, True, event.last)

    def _no_such_member(self, membership: Membership, to: str, itself: bool) -> None:
        """A v1 message addressed to a member the group does not have, or to its sender:
        dropped, and its sender told why (an error event)."""
        self._counters.direct_failures += 1
        detail = (
            "a member cannot address a message to itself"
            if itself
            else f"no member {to!r} in group {membership.group_name!r}"
        )
        send_control(self, membership.encoding.event(v1.Error(v1.NO_SUCH_MEMBER, detail, to)))

    def _end_stream(self, truncated: bool) -> None:
        sender = self._sender
        if sender is not None:
            sender.end(truncated)
        self.piece_due = None

    def watch(self, now: float) -> None:
        """Called by the relay's watch task: close a member whose streaming message has
        stalled (its group waits for the message to end); never one the relay itself
        keeps waiting (:attr:`paused`)."""
        if self.piece_due is not None and not self.paused and now >= self.piece_due:
            timeout = self._relay.config.stream_timeout
            self.close(
                CloseCode.POLICY_VIOLATION,
                f"message stalled: no piece within {timeout:g}s while the group waited",
            )
            # The group waits no longer (not until the close handshake is over): its
            # recipients are told now, and the floor is free.
            self._end_stream(truncated=True)

    def keepalive(self, now: float, interval: float, timeout: float) -> None:
        """Called by the relay's keepalive task: ping a silent member, close a dead one;
        never one the relay itself keeps from being heard (:attr:`paused`)."""
        if self.paused:
            self.heard_at, self.pinged_at = now, None
        elif self.reads != self.reads_seen:
            self.reads_seen = self.reads
            self.heard_at = now
            self.pinged_at = None
        elif self.pinged_at is None:
            if now - self.heard_at >= interval:
                self.pinged_at = now
                send_control(self, _PING_FRAME)
        elif now - self.pinged_at >= timeout:
            self.close(CloseCode.KEEPALIVE_TIMEOUT, f"no answer to a ping within {timeout:g}s")


#: Seconds past its token's expiry a member is closed (4006) if no new token came.
TOKEN_LEEWAY = 1.0
_TOKEN_EXPIRED_REASON = "access token expired: get a new one, then reconnect"

#: Why a member's message into a group only the back end publishes in is refused.
_READ_ONLY_REASON = "only the application's back end publishes in this group"

# Closes worth a line at INFO; the rest (normal closes) are DEBUG.
_NOTEWORTHY = frozenset(CloseCode) - {CloseCode.NORMAL, CloseCode.GOING_AWAY}
