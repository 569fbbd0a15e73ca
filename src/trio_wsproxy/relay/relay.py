"""The relay: listeners, the handshake phase of each connection, keepalive, shutdown."""

from __future__ import annotations

import functools
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

import attrs
import trio

from ..protocol import v1
from ..protocol.close_codes import CloseCode
from ..protocol.encoding import SUBPROTOCOLS
from ..protocol.handshake import (
    Join,
    Limits,
    Probe,
    Refusal,
    decide,
    head_complete,
    probe_response,
    refuse,
)
from ..protocol.hooks import JOIN as JOIN_HOOK
from ..protocol.hooks import HookRequest
from ..protocol.printable import printable
from ..protocol.tokens import TokenRefusal, TokenVerifier, unknown_key_id
from ..protocol.tokens import preload as preload_tokens
from .addresses import AddressLimiter, address_of
from .api import Api
from .budget import TurnBudget
from .compression import member_encoding
from .config import RelayConfig
from .counters import Counters
from .demo import demo_files
from .groups import STORM_LIFETIME, STORM_REASON, Bans, EvictionStorms, GroupRegistry
from .hooks import NO_GRANT, Grant, Hooks, connect_request
from .jwks import JwksKeys
from .listeners import open_listeners, paced
from .memory import BufferBudget
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import render_metrics
from .poller import Poller
from .presence import PresenceTracker
from .reader import READ_SIZE
from .revocations import Revocation, Revocations
from .session import Session
from .subjects import SubjectRates
from .webhooks import Webhooks

logger = logging.getLogger("trio_wsproxy.relay")

#: Makes the body of a ``/metrics`` answer from this relay's own (the whole relay's,
#: when this process is one worker of several); awaited once per scrape.
MetricsView = Callable[[bytes], Awaitable[bytes]]


# How long a refusal's response may take to write before the connection is dropped.
_REFUSAL_WRITE_TIMEOUT = 2.0


#: A token a revocation covers.
_REVOKED = TokenRefusal(HTTPStatus.UNAUTHORIZED, "access token revoked", "token_revoked")

#: The error event that answers a join refused for a limit (over_limit's kinds).
_JOIN_LIMITS = {
    "relay_full": v1.RELAY_FULL,
    "too_many_groups": v1.RELAY_FULL,
    "group_full": v1.GROUP_FULL,
    "backplane_down": v1.UNAVAILABLE,
}


@attrs.frozen
class RelayStats:
    """A snapshot of what the relay carries and has carried."""

    #: Groups with at least one member now.
    groups: int
    #: Members connected now.
    members: int
    #: Messages received from members and relayed, since the relay started.
    messages: int
    #: Payload bytes of those messages.
    bytes: int
    #: Copies queued for recipients (a message to a group of 10 counts 9).
    deliveries: int


class Relay:
    """A running relay, as handed back by ``nursery.start(serve_relay, config)``.

    Its listeners are bound when you get it; cancel the scope it runs in to stop it.
    """

    def __init__(
        self,
        config: RelayConfig,
        registry: GroupRegistry,
        ports: list[int],
        secret: str | TokenVerifier | None = None,
        metrics_view: MetricsView | None = None,
        api_key: str | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        self.config = config
        self._metrics_view = metrics_view
        self.registry = registry
        #: The TCP ports the relay listens on (one per bound address).
        self.ports = ports
        #: True once shutdown has begun.
        self.closing = False
        self.sessions: set[Session] = set()
        #: What the relay has carried since it started (read by /metrics and stats).
        self.counters = Counters()
        #: Fan-out work per scheduling turn, shared by every session (see budget.py).
        self.budget = TurnBudget()
        #: The bound on unfinished messages of all sessions together (see memory.py).
        self.buffers = BufferBudget(config.max_buffered_bytes)
        #: Where idle members' receivers park, read for by one task (see poller.py).
        self.poller = Poller() if config.shared_poller and Poller.available() else None
        #: Who is in each group, as wsproxy.v1 members hear it (see presence.py).
        #: The back end's hooks (None: none is set).
        self.hooks = Hooks(config, self.counters) if Hooks.wanted(config) else None
        self.presence = PresenceTracker(config.presence_limit, self.counters, config.namespaces)
        registry.watch_presence(self.presence.changed)
        #: What tokens are checked with (None: tokens are off).
        self._tokens = TokenVerifier.of(secret) if isinstance(secret, str | bytes) else secret
        if self._tokens is not None:
            preload_tokens()
        #: Revoked tokens, by subject or token id (POST /api/revocations; see
        #: revocations.py): from this node's API, and from the others' on a cluster.
        self.revocations = Revocations()
        registry.watch_revocations(self.revoke_here)
        #: The back end's webhooks (--webhook-url; None: off): joins, leaves, groups
        #: occupied and vacated (see webhooks.py).
        self.webhooks = Webhooks.of(config, webhook_secret, self.counters)
        if self.webhooks is not None:
            registry.watch_occupancy(self.webhooks)
        #: New connections per remote address (--max-connections-per-address-rate).
        rate = config.max_connections_per_address_rate
        self._arrivals = None if rate is None else AddressLimiter(rate)
        #: Subjects' message allowances (--max-subject-message-rate; see subjects.py).
        rate = config.max_subject_message_rate
        self.subject_rates = None if rate is None else SubjectRates(rate, registry.subject_lease())
        #: Members the back end removed and keeps out for a while (see groups.Bans).
        self.bans = Bans()
        #: Ids replacing themselves again and again in a group (see groups.EvictionStorms).
        self.storms = EvictionStorms()
        #: The HTTP API for back ends (off without a key: 404 under /api/).
        self.api = Api(self, api_key, self.bans)
        self._membership_changed = trio.Event()
        #: The demo's pages by path (``--demo``), else none.
        self._demo = demo_files(config.path) if config.demo else {}
        self._limits = Limits(
            path=config.path,
            probes=frozenset(
                p for p in (config.healthz_path, config.livez_path, config.metrics_path) if p
            )
            | frozenset(self._demo),
            max_id_length=config.max_id_length,
            max_group_length=config.max_id_length,
            max_head_size=config.max_handshake_size,
            subprotocols=frozenset(SUBPROTOCOLS),
            # (Negotiated where any group compresses: the relay's, or a namespace's.)
            compression=config.compression is not None
            or any(namespace.compression for namespace in config.namespaces),
        )

    @property
    def port(self) -> int:
        """The (first) port the relay listens on; useful with ``port=0``."""
        return self.ports[0]

    @property
    def url(self) -> str:
        """The relay's base URL, e.g. ``ws://127.0.0.1:8765/ws``."""
        scheme = "wss" if self.config.tls else "ws"
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        elif host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        return f"{scheme}://{host}:{self.port}{self.config.path}"

    @property
    def stats(self) -> RelayStats:
        """Live statistics: members and groups now, traffic since start."""
        counters = self.counters
        return RelayStats(
            groups=self.registry.group_count,
            members=self.registry.member_count,
            messages=counters.messages,
            bytes=counters.bytes,
            deliveries=counters.deliveries,
        )

    def group_size(self, name: str) -> int:
        """How many members the group ``name`` has now (0 if it does not exist)."""
        group = self.registry.group(name)
        return len(group.members) if group is not None else 0

    async def wait_members(self, count: int, group: str | None = None) -> None:
        """Wait until the relay has exactly ``count`` members (in ``group``, if given).

        For tests and orchestration. A member is registered before its 101 is sent, so a
        client whose connect has returned is already counted; leaves are asynchronous
        (noticed when the relay reads the close, or the connection drops), and so are
        other clients' joins: wait for them here. Time out with the caller's cancel
        scope.
        """
        while True:
            now = self.group_size(group) if group is not None else self.registry.member_count
            if now == count:
                return
            await self._membership_changed.wait()

    def membership_changed(self) -> None:
        """Called by sessions on every join and leave; wakes :meth:`wait_members`."""
        self._membership_changed.set()
        self._membership_changed = trio.Event()

    async def _handle_connection(self, stream: trio.abc.Stream) -> None:
        """Serve one connection; a bug met serving it ends it alone (logged once with
        its traceback and counted), never the listener or another connection."""
        try:
            await self._serve_connection(stream)
        except Exception:
            # (A session and an API request contain their own: this is the handshake's.)
            self.counters.internal_errors["connection"] += 1
            logger.exception(
                "the relay failed serving a connection from %s", _remote_address(stream)
            )

    async def _serve_connection(self, stream: trio.abc.Stream) -> None:
        remote = _remote_address(stream)
        session: Session | None = None
        accepted = False
        try:
            decision, leftover = await self._read_handshake(stream)
            if isinstance(decision, bytes):
                await self.api.serve(stream, decision + leftover, remote)
                return
            if isinstance(decision, Probe):
                response = await self._probe_response(decision)
                with trio.move_on_after(_REFUSAL_WRITE_TIMEOUT):
                    await stream.send_all(response)
                return
            if isinstance(decision, Join) and self._arrivals is not None:
                wait = self._arrivals.admit(address_of(remote), trio.current_time())
                if wait:
                    decision = refuse(
                        HTTPStatus.TOO_MANY_REQUESTS,
                        "too many new connections from this address: retry later",
                        (("Retry-After", str(wait)),),
                        kind="address_rate",
                    )
            claims: Mapping[str, Any] | None = None
            grant = NO_GRANT
            if isinstance(decision, Join):
                await self._know_signing_key(decision.token)
                admitted = self.admit(decision)
                if isinstance(admitted, Refusal):
                    decision = admitted
                else:
                    claims = admitted
            if isinstance(decision, Join) and self.hooks is not None:
                decision, grant = await self._ask_back_end(decision, remote)
            if isinstance(decision, Join):
                session = Session(
                    self,
                    stream,
                    decision.id,
                    decision.group,
                    remote,
                    leftover,
                    member_encoding(decision, self.config.compression_for(decision.group)),
                    decision.since,
                    # (Kept to authorise its joins of more groups, when tokens are on.)
                    decision.token if self._tokens is not None else None,
                    claims,
                    grant,
                    None if decision.deflate is None else decision.deflate.server_window_bits,
                )
                refused = await session.join()
                if refused is not None:
                    kind, reason = refused
                    decision = refuse(HTTPStatus.SERVICE_UNAVAILABLE, reason, kind=kind)
            if isinstance(decision, Refusal):
                self.counters.refusals[decision.kind, decision.status] += 1
                logger.info(
                    "refused %s: %d %s",
                    remote,
                    decision.status,
                    decision.reason,
                    extra={"remote": remote, "status": decision.status, "reason": decision.reason},
                )
                with trio.move_on_after(_REFUSAL_WRITE_TIMEOUT):
                    await stream.send_all(decision.response)
                return
            assert session is not None  # a Join made one
            self.sessions.add(session)
            await stream.send_all(decision.response)
            accepted = True
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            logger.debug("connection from %s lost during the handshake: %s", remote, exc)
            return
        finally:
            if not accepted:
                if session is not None:
                    self.sessions.discard(session)
                    session.close(CloseCode.NORMAL, "connection lost during the handshake")
                await trio.aclose_forcefully(stream)
        assert session is not None
        try:
            await session.run()
        finally:
            self.sessions.discard(session)

    async def _ask_back_end(self, join: Join, remote: str) -> tuple[Join | Refusal, Grant]:
        """The back end's hooks for a connection: connect (which may rename the member,
        name the groups it may join and give it an info), then join for the URL's
        group; a refusal carries the back end's status and reason."""
        hooks, config = self.hooks, self.config
        assert hooks is not None
        grant = NO_GRANT
        if config.connect_hook is not None:
            request = connect_request(join, remote, config.hook_headers, config.hook_cookies)
            answer = await hooks.ask(
                config.connect_hook, request, allow_on_failure=config.hook_failure == "allow"
            )
            if not answer.allow:
                assert answer.status is not None and answer.reason is not None
                return refuse(answer.status, answer.reason, kind="connect_hook"), grant
            grant = Grant(answer.groups, answer.info)
            if answer.id is not None and answer.id != join.id:
                grant = Grant(answer.groups, answer.info, join.id)
                if len(answer.id) > config.max_id_length:
                    reason = f"the connect hook's id is over {config.max_id_length} characters"
                    return refuse(HTTPStatus.BAD_GATEWAY, reason, kind="connect_hook"), grant
                join = attrs.evolve(join, id=answer.id)
                no_room = self._no_room(join)  # (checked again under its new id)
                if no_room is not None:
                    return no_room, grant
            if not grant.allows(join.group):
                reason = f"the back end does not allow group {join.group!r}"
                return refuse(HTTPStatus.FORBIDDEN, reason, kind="connect_hook"), grant
        refusal = await self.ask_join_hook(join.id, join.group, remote, grant.info)
        if refusal is not None:
            status, reason = refusal
            return refuse(status, reason, kind="join_hook"), grant
        return join, grant

    async def ask_join_hook(
        self, member_id: str, group: str, remote: str, info: Any
    ) -> tuple[int, str] | None:
        """The back end's join hook for ``group``, if its namespace (or the relay) has
        one: None when it allows, else its refusal's (status, reason)."""
        hooks = self.hooks
        site = self.config.hook_for(JOIN_HOOK, group)
        if hooks is None or site is None:
            return None
        url, allow_on_failure = site
        request = HookRequest(hook=JOIN_HOOK, id=member_id, group=group, remote=remote, info=info)
        answer = await hooks.ask(url, request, allow_on_failure)
        if answer.allow:
            return None
        assert answer.status is not None and answer.reason is not None
        return answer.status, answer.reason

    async def _know_signing_key(self, token: str | None) -> None:
        """A token that names a key the provider's key set lacks (a key rotated in):
        fetch the set again first (rate-limited: see jwks.py)."""
        tokens = self._tokens
        if tokens is not None and isinstance(tokens.key_set, JwksKeys):
            kid = unknown_key_id(tokens, token)
            if kid is not None:
                await tokens.key_set.unknown(kid)

    def admit(self, join: Join) -> Refusal | Mapping[str, Any] | None:
        """Who may join (origin, token) and whether there is room: a refusal, or the
        admitted ``join``'s token claims (None: tokens are off)."""
        config = self.config
        if config.allowed_origins and join.origin is not None:
            if join.origin.rstrip("/") not in config.allowed_origins:
                return refuse(HTTPStatus.FORBIDDEN, "origin not allowed", kind="origin")
        claims: Mapping[str, Any] | None = None
        if self._tokens is not None:
            verdict = self._token_verdict(join.token, join.id, join.group)
            if isinstance(verdict, TokenRefusal):
                challenge = (("WWW-Authenticate", "Bearer"),) if verdict.status == 401 else ()
                return refuse(verdict.status, verdict.reason, challenge, kind=verdict.kind)
            claims = verdict
        return self._no_room(join) or claims

    def _no_room(self, join: Join) -> Refusal | None:
        """Why ``join``'s member may not join its group now (a ban, a limit, an
        eviction storm); None: there is room."""
        now = trio.current_time()
        banned = self._banned(join, now)
        if banned is not None:
            return banned
        full = self.over_limit(join.id, join.group)
        if full is not None:
            return refuse(HTTPStatus.SERVICE_UNAVAILABLE, full[1], kind=full[0])
        return self._storm(join, now)

    @property
    def checks_tokens(self) -> bool:
        """Whether connections present access tokens."""
        return self._tokens is not None

    def refresh_verdict(self, member_id: str, token: str) -> Mapping[str, Any] | str | None:
        """A new token's claims when it may replace ``member_id``'s, why not (it is not
        valid, or revoked), or None when it is for another member."""
        if self._tokens is None:
            return "this relay checks no access tokens"
        verdict = self._tokens.identify(token, member_id, now=time.time())
        if isinstance(verdict, TokenRefusal):
            return None if verdict.kind == "token_id" else verdict.reason
        if self._revoked(verdict):
            return _REVOKED.reason
        return verdict

    def _token_verdict(
        self, token: str | None, member_id: str, group: str, *, now: float | None = None
    ) -> TokenRefusal | Mapping[str, Any]:
        """The claims of ``token`` if it admits ``member_id`` to ``group`` and no
        revocation covers it; otherwise why not (tokens on)."""
        assert self._tokens is not None
        config = self.config
        # A token without the groups claim: the back end's hooks decide, where it has any.
        decided = config.connect_hook is not None or config.hook_for(JOIN_HOOK, group) is not None
        verdict = self._tokens.verify(token, member_id, group, now=now, groups_optional=decided)
        if isinstance(verdict, TokenRefusal):
            return verdict
        return _REVOKED if self._revoked(verdict) else verdict

    def _revoked(self, claims: Mapping[str, Any]) -> bool:
        return self.revocations.refuses(claims, time.time())

    def revoke_here(self, revocation: Revocation) -> int:
        """Hold ``revocation`` and close (4007) every connection here that it covers;
        how many it closed."""
        if self._tokens is None or not self.revocations.add(revocation, time.time()):
            return 0
        self.counters.revocations[revocation.kind] += 1
        closed = 0
        for session in list(self.sessions):
            claims = session.claims
            if claims is not None and revocation.covers(claims):
                session.close(CloseCode.REVOKED, _REVOKED.reason)
                closed += 1
        if closed:
            logger.info(
                "revoked %s: closed %d connections here", revocation.kind, closed,
                extra={"closed": closed},
            )  # fmt: skip
        return closed

    def _banned(self, join: Join, now: float) -> Refusal | None:
        """A refusal while the back end keeps ``join``'s member out of its group."""
        reason = self._kept_out(join.group, join.id, join.token, now)
        if reason is None:
            return None
        return refuse(HTTPStatus.FORBIDDEN, reason, kind="banned")

    def _kept_out(self, group: str, member_id: str, token: str | None, now: float) -> str | None:
        """Why the back end keeps ``member_id`` out of ``group`` now, or None; a token
        issued after the ban began (already checked) lifts it."""
        ban = self.bans.current(group, member_id, now)
        if ban is None:
            return None
        if (
            self._tokens is not None
            and token is not None
            and self._tokens.issued_after(token, ban.since)
        ):
            self.bans.lift(group, member_id, now)
            logger.info(
                "a token issued after its removal lets %s back into %s",
                printable(member_id),
                printable(group),
            )
            return None
        left = max(1, math.ceil(ban.until - now))
        return f"removed from this group by the application's back end: kept out for {left}s more"

    def join_refusal(
        self,
        member_id: str,
        group_name: str,
        token: str | None,
        *,
        by_back_end: bool = False,
        token_id: str | None = None,
    ) -> v1.Error | None:
        """Why a connected v1 member ``member_id`` (that presented ``token``) may not join
        ``group_name`` too, as the error event that answers its join; None: it may. The
        same checks as a connection's first group gets (its name, its token, a ban, the
        limits), answered as events (the connection stays). A join the back end asks
        for (``by_back_end``) is its own decision: no token or ban is asked."""
        config = self.config
        if len(group_name) > config.max_id_length or not group_name.isprintable():
            return v1.Error(
                v1.BAD_GROUP_NAME,
                f"a group name is printable and at most {config.max_id_length} characters",
                group=group_name,
            )
        if self._tokens is not None and not by_back_end:
            verdict = self._token_verdict(token, token_id or member_id, group_name, now=time.time())
            if isinstance(verdict, TokenRefusal):
                return v1.Error(v1.NOT_ALLOWED, verdict.reason, group=group_name)
        kept_out = (
            None
            if by_back_end
            else self._kept_out(group_name, member_id, token, trio.current_time())
        )
        if kept_out is not None:
            return v1.Error(v1.BANNED, kept_out, group=group_name)
        full = self.over_limit(member_id, group_name)
        if full is not None:
            kind, reason = full
            code = _JOIN_LIMITS.get(kind, v1.UNAVAILABLE)
            return v1.Error(code, reason, group=group_name)
        return None

    def _storm(self, join: Join, now: float) -> Refusal | None:
        """A refusal (409) while ``join``'s id is in an eviction storm in its group."""
        group = self.registry.group(join.group)
        older = None if group is None else group.members.get(join.id)
        storm = self.storms.comeback(
            join.group, join.id, None if older is None else older.joined_at, now
        )
        if storm is None:
            return None
        if storm.refused == 1:
            # Once per storm, not per refusal: the refusals are counted in the metrics.
            logger.warning(
                "eviction storm: id %s replaced itself %d times in %.1fs in group %s (two "
                "clients with one id?); its comebacks are refused with 409 until the "
                "connection in the group is %gs old",
                printable(join.id),
                storm.replacements,
                storm.last - storm.first,
                printable(join.group),
                STORM_LIFETIME,
                extra={
                    "member": printable(join.id),
                    "group": printable(join.group),
                    "replacements": storm.replacements,
                },
            )
        return refuse(HTTPStatus.CONFLICT, STORM_REASON, kind="eviction_storm")

    def over_limit(self, member_id: str, group_name: str) -> tuple[str, str] | None:
        """(kind, reason) when one more member ``member_id`` in ``group_name`` would
        break a limit; a member replacing its own older connection adds nobody."""
        config = self.config
        down = self.registry.unavailable(group_name)
        if down is not None:
            return "backplane_down", down
        group = self.registry.group(group_name)
        if group is not None and member_id in group.members:
            return None
        if config.max_members is not None and self.registry.member_count >= config.max_members:
            return "relay_full", f"relay full: {config.max_members} members"
        if group is None:
            if config.max_groups is not None and self.registry.group_count >= config.max_groups:
                return "too_many_groups", f"relay full: {config.max_groups} groups"
        else:
            namespace = config.namespace(group_name)
            most = config.max_group_members
            if namespace is not None and namespace.max_group_members is not None:
                most = namespace.max_group_members
            if most is not None and len(group.members) >= most:
                return "group_full", f"group full: {most} members"
        return None

    async def _probe_response(self, probe: Probe) -> bytes:
        page = self._demo.get(probe.path)
        if page is not None:
            return probe_response(probe, HTTPStatus.OK, *page)
        if probe.path == self.config.metrics_path:
            body = render_metrics(self.counters, self.registry)
            if self._metrics_view is not None:
                body = await self._metrics_view(body)
            return probe_response(probe, HTTPStatus.OK, body, METRICS_CONTENT_TYPE)
        if probe.path == self.config.livez_path:
            # Liveness: the process serves. Neither an outage of the backplane nor a
            # shutdown is cured by a restart (it would cut the members' close handshakes).
            return probe_response(probe, HTTPStatus.OK, b"ok\n", "text/plain")
        unready = self.unready
        if unready is not None:
            body = unready.encode("utf-8", "replace") + b"\n"
            return probe_response(probe, HTTPStatus.SERVICE_UNAVAILABLE, body, "text/plain")
        return probe_response(probe, HTTPStatus.OK, b"ok\n", "text/plain")

    @property
    def unready(self) -> str | None:
        """Why the relay cannot admit members now (shutting down, the backplane down), in
        one line; None while it can. ``/healthz`` answers 503 with it."""
        if self.closing:
            return "shutting down"
        return self.registry.down_reason

    async def _read_handshake(
        self, stream: trio.abc.Stream
    ) -> tuple[Join | Refusal | Probe | bytes, bytes]:
        """The decision on the connection's request head, and the bytes after it; for a
        call of the HTTP API, the head itself (the API parses it)."""
        buffer = bytearray()
        with trio.move_on_after(self.config.handshake_timeout):
            while True:
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    raise trio.BrokenResourceError("closed before finishing its request")
                buffer += data
                complete = head_complete(buffer, self._limits)
                if isinstance(complete, Refusal):
                    return complete, b""
                if complete:
                    end = buffer.index(b"\r\n\r\n") + 4
                    head = bytes(buffer[:end])
                    if Api.wants(head):
                        return head, bytes(buffer[end:])
                    return decide(head, self._limits), bytes(buffer[end:])
        return (
            refuse(
                HTTPStatus.REQUEST_TIMEOUT,
                f"request not complete within {self.config.handshake_timeout:g}s",
            ),
            b"",
        )

    async def _watch(self) -> None:
        """Keepalive and stalled streams, checked a few times per interval for every
        session. Timestamps are taken per tick, not per read: the hot path only counts."""
        config = self.config
        interval, timeout = config.ping_interval, config.ping_timeout
        periods = [config.stream_timeout]
        if interval is not None:
            periods += [interval, timeout]
        tick = min(periods) / 4
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            self.bans.expire(now)
            self.storms.expire(now)
            for session in list(self.sessions):
                session.watch(now)
                if interval is not None:
                    session.keepalive(now, interval, timeout)

    def _shut_down(self) -> None:
        self.closing = True
        for session in list(self.sessions):
            session.close(CloseCode.GOING_AWAY, "relay shutting down")


async def run_relay(
    config: RelayConfig,
    registry: GroupRegistry,
    secret: str | TokenVerifier | None = None,
    *,
    api_key: str | None = None,
    metrics_view: MetricsView | None = None,
    webhook_secret: str | None = None,
    task_status: trio.TaskStatus[Relay] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a relay over ``registry`` until cancelled (``nursery.start``); ``secret`` (an
    HS256 secret, or a :class:`~trio_wsproxy.protocol.tokens.TokenVerifier`)
    turns access tokens on, ``api_key`` the HTTP API; ``metrics_view`` widens
    ``/metrics`` (see MetricsView); ``webhook_secret`` signs the webhooks of
    ``config.webhook_url``.
    :func:`trio_wsproxy.serve_relay` chooses the registry."""
    tcp_listeners = await open_listeners(config)
    ports = [listener.socket.getsockname()[1] for listener in tcp_listeners]
    listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(tcp_listeners)
    if config.certfile is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(config.certfile, config.keyfile)
        listeners = [trio.SSLListener(listener, context) for listener in tcp_listeners]
    relay = Relay(config, registry, ports, secret, metrics_view, api_key, webhook_secret)
    async with trio.open_nursery() as outer:
        webhooks = relay.webhooks
        if webhooks is not None:
            # Outside the sessions' nursery: it tells their last leaves once they are
            # closed, within close_timeout (see Webhooks.finish).
            await outer.start(webhooks.run)
        try:
            await _run(relay, registry, listeners, task_status=task_status)
        finally:
            if webhooks is not None:
                webhooks.finish(config.close_timeout)


async def _run(
    relay: Relay,
    registry: GroupRegistry,
    listeners: list[trio.abc.Listener[trio.abc.Stream]],
    *,
    task_status: trio.TaskStatus[Relay] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The relay's tasks and sessions, until cancelled."""
    config = relay.config
    async with trio.open_nursery() as nursery:
        tokens = relay._tokens
        if tokens is not None and isinstance(tokens.key_set, JwksKeys):
            tokens.key_set.counters = relay.counters
            await nursery.start(tokens.key_set.run)  # (before anyone presents a token)
        if relay.hooks is not None:
            await nursery.start(relay.hooks.run)
        await nursery.start(registry.run, config, relay.counters)
        nursery.start_soon(relay._watch)
        nursery.start_soon(relay.budget.run)
        nursery.start_soon(relay.presence.run)
        if relay.poller is not None:
            await nursery.start(relay.poller.run)
        # At the descriptor limit: a warning per interval, not a traceback per accept.
        listeners = paced(listeners, relay.counters)
        # Connections are served in this nursery, not serve_listeners' own: if a
        # listener (or any relay task) fails, the failure cancels this nursery at once,
        # and the shutdown below closes every session within its close_timeout, so the
        # relay ends with the error (a supervisor restarts it) instead of serving on
        # without a listener until its last member leaves.
        await nursery.start(
            functools.partial(
                trio.serve_listeners,
                relay._handle_connection,
                listeners,
                handler_nursery=nursery,
            )
        )
        logger.info("relay listening on %s", relay.url)
        task_status.started(relay)
        try:
            await trio.sleep_forever()
        finally:
            relay._shut_down()


def _remote_address(stream: trio.abc.Stream) -> str:
    inner = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if isinstance(inner, trio.SocketStream):
        try:
            address = inner.socket.getpeername()
        except OSError:
            return "?"
        return f"{address[0]}:{address[1]}"
    return "?"
