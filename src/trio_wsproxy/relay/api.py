"""The HTTP API for back ends, on the relay's port (docs/api.md).

A connection whose first request's path is under ``/api/`` is handed here instead of
being upgraded. Requests are parsed by h11 (the sans-I/O HTTP/1.1 library that
httpcore and wsproto build on), so that framing, chunked bodies, ``Expect: 100-continue`` and
keep-alive are handled by a well-tested parser rather than by hand; this module routes
them, checks the key, and streams message bodies to the group through a
:class:`~.post.Poster` as they arrive.

The API is off unless the relay has a key: then every path under ``/api/`` is 404. With
a key, every call needs ``Authorization: Bearer KEY`` (401 otherwise). Every error is a
JSON object ``{"error": "..."}`` with its status; nothing a client sends reaches a
traceback, and a connection's failure ends that connection only. ``HEAD`` is answered
wherever ``GET`` is, with GET's status and headers and no body.

A bug in the relay's own code met serving a request is contained to its connection
(:meth:`Api.serve`): logged once with its traceback on ``trio_wsproxy.relay``, with the
failures of sessions and connections, counted in ``internal_errors["api"]``, and
answered 500 if the answer has not started (else the connection is dropped).
"""

from __future__ import annotations

import base64
import codecs
import hmac
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import parse_qsl, unquote, urlsplit

import h11
import trio

from ..protocol import v1
from ..protocol.assembly import FRAGMENT_SIZE
from ..protocol.envelope import encode_envelope_around
from ..protocol.printable import printable
from .config import API_PREFIX, under_api
from .groups import Bans, RegistryUnavailable
from .membership import Connection, Membership
from .openapi import MAX_BAN_SECONDS, MAX_TYPE_LENGTH, openapi_document
from .post import Poster
from .revocations import SUBJECT, TOKEN_ID, Revocation

if TYPE_CHECKING:
    from ..protocol.message import Message
    from .config import RelayConfig
    from .host import RelayCore

logger = logging.getLogger("trio_wsproxy.api")
# Where the relay's own failures go (a session's and a connection's too): one logger for
# an operator to watch for bugs, apart from the API's line per call.
failures = logging.getLogger("trio_wsproxy.relay")

# Bytes asked of the socket per read.
_READ_SIZE = 65536
# A request body the API has no use for (a GET's) is read past up to this many bytes,
# so that the connection can serve the next request; a longer one closes it.
_MAX_IGNORED_BODY = 65536
#: The answer to a join the back end asked for that the relay refused, by its code.
_REFUSAL_STATUS = {
    v1.ALREADY_JOINED: HTTPStatus.CONFLICT,
    v1.GROUP_LIMIT: HTTPStatus.CONFLICT,
    v1.BAD_GROUP_NAME: HTTPStatus.BAD_REQUEST,
}

#: Why DELETE closes a member (with CloseCode.REMOVED).
REMOVED_REASON = "removed from the group by the application's back end"

_JSON = "application/json"
# C0, DEL and C1: the characters an id may not hold.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# How much of a request's path goes into its log line.
_LOGGED_PATH = 200
# What a call that met a bug of the relay's is told: one line, nothing of the bug.
_INTERNAL_ERROR = "internal error: the relay failed answering this call (a bug, logged)"
#: The largest body a typed post (``?type=``) takes. It is checked (JSON must be JSON)
#: and put in its envelope before any of it goes out, so it is held whole; this bound
#: keeps that to what an untyped post holds anyway before it streams (one piece), and a
#: typed message's receivers parse it whole in any case. Larger data goes as a binary
#: message, which streams.
MAX_TYPED_BODY = FRAGMENT_SIZE
# What JSON allows around a value (RFC 8259 §2): trimmed from a typed post's body.
_JSON_WHITESPACE = b" \t\r\n"


class ApiError(Exception):
    """An answer other than success: its status, and the sentence of its JSON body."""

    def __init__(
        self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class _Call:
    """One request being answered: its connection, and what it asked."""

    def __init__(
        self, conn: h11.Connection, stream: trio.abc.Stream, request: h11.Request, remote: str
    ) -> None:
        self.conn = conn
        self.stream = stream
        self.request = request
        self.remote = remote
        self.method = request.method.decode("ascii")
        #: HEAD: answered as GET would be, without the body.
        self.head = request.method == b"HEAD"
        #: The status of the answer sent (what the call's log line and metric count).
        self.status: int = HTTPStatus.OK
        self.headers = {name.decode("ascii"): value for name, value in request.headers}
        try:
            url = urlsplit(request.target.decode("ascii"))
            self.path = url.path
            self.query = parse_qsl(
                url.query, keep_blank_values=True, strict_parsing=False, errors="strict"
            )
        except (UnicodeDecodeError, ValueError):
            raise ApiError(HTTPStatus.BAD_REQUEST, "malformed request target") from None


_Handler = Callable[[_Call, list[str]], Awaitable[None]]


class Api:
    """The API of one relay: ``key`` None means off (404 for every path)."""

    def __init__(self, host: RelayCore, key: str | None, bans: Bans | None = None) -> None:
        self._host = host
        #: Who the back end keeps out (``DELETE .../members/{id}?ban=``); the relay's own,
        #: which its handshake consults.
        self.bans = Bans() if bans is None else bans
        self._key = None if key is None else f"Bearer {key}".encode()
        # (method, path shape) -> handler; a shape's segments are names or "{}" for a
        # group or member id.
        self._routes: dict[tuple[str, ...], dict[str, _Handler]] = {
            ("openapi.json",): {"GET": self._openapi},
            ("groups",): {"GET": self._groups},
            ("groups", "{}", "members"): {"GET": self._members},
            ("groups", "{}", "messages"): {"POST": self._post},
            ("groups", "{}", "members", "{}"): {"DELETE": self._remove},
            ("groups", "{}", "members", "{}", "groups"): {"GET": self._member_groups},
            ("groups", "{}", "members", "{}", "groups", "{}"): {"PUT": self._add_to_group},
            ("groups", "{}", "bans", "{}"): {"DELETE": self._lift_ban},
            ("groups", "{}", "history"): {"GET": self._history},
            ("revocations",): {"POST": self._revoke},
        }

    @staticmethod
    def wants(head: bytes) -> bool:
        """Whether the request whose head is ``head`` is for the API (its path is under
        ``/api/``, or is ``/api`` itself)."""
        line = head[: head.find(b"\r\n")].split(b" ")
        if len(line) != 3:
            return False
        return under_api(line[1].split(b"?", 1)[0].decode("latin-1"))

    async def serve(self, stream: trio.abc.Stream, received: bytes, remote: str) -> None:
        """Answer the requests on ``stream``, whose first bytes are ``received``, until
        the client closes it, a response must close it, or it idles for the relay's
        ``handshake_timeout``. The caller closes the stream.

        Every request passes here, so this is where a bug of the relay's met answering
        one is contained: it ends this connection alone (after a 500, when the answer
        has not started), and never reaches the relay or another connection."""
        config = self._host.config
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=config.max_handshake_size)
        conn.receive_data(received)
        request: h11.Request | None = None  # (the one being answered)
        try:
            while True:
                with trio.move_on_after(config.handshake_timeout) as idle:
                    event = await _next_event(conn, stream)
                if idle.cancelled_caught or type(event) is h11.ConnectionClosed:
                    return
                if type(event) is not h11.Request:  # (h11 gives a Request first, or raises)
                    raise h11.RemoteProtocolError("expected a request", 400)
                request = event
                await self._answer(conn, stream, request, remote)
                if conn.their_state is h11.SEND_BODY:
                    await _linger(stream)  # answered before its body: let it hear us
                    return
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return  # (a response that closes the connection)
                conn.start_next_cycle()
                request = None
        except h11.RemoteProtocolError as exc:
            # A request h11 cannot parse: answered (when it still can be), then closed.
            self._count(exc.error_status_hint)
            await _fail(conn, stream, request, exc.error_status_hint, str(exc), config)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the client went away (mid-response, even)
        except Exception:
            # A bug of the relay's, never the client's (h11's LocalProtocolError too: it
            # means the relay broke HTTP). A call it met was counted a 500 by _answer.
            self._host.counters.internal_errors["api"] += 1
            failures.exception(
                "the HTTP API failed answering %s from %s", _described(request), remote
            )
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            await _fail(conn, stream, request, status, _INTERNAL_ERROR, config)

    def _count(self, status: int) -> None:
        self._host.counters.api_requests[status] += 1

    async def _answer(
        self, conn: h11.Connection, stream: trio.abc.Stream, request: h11.Request, remote: str
    ) -> None:
        # None: not answered here (the client went away, or sent what h11 cannot parse,
        # which serve() answers and counts). A bug of the relay's leaves it 500: serve()
        # answers it, and logs it.
        status: int | None = HTTPStatus.INTERNAL_SERVER_ERROR
        # (h11 lets only visible ASCII through in both.)
        method = request.method.decode("ascii", "replace")
        path = request.target.decode("ascii", "replace")
        try:
            try:
                call = _Call(conn, stream, request, remote)
                method, path = call.method, call.path
                handler, params = self._route(call)
                if handler not in (self._post, self._revoke):  # (the calls that take a body)
                    await _ignore_body(call, self._host.config.stream_timeout)
                await handler(call, params)
                status = call.status
            except RegistryUnavailable as exc:
                raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, str(exc)) from None
        except ApiError as error:
            status = error.status
            if conn.our_state is h11.SEND_RESPONSE:
                head = request.method == b"HEAD"
                await _send_error(conn, stream, status, error.message, error.headers, head=head)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            status = None
            raise
        except Exception:
            raise  # (a bug: serve() contains it; counted here as the 500 it is answered)
        except BaseException:
            status = None  # (cancelled: the relay is stopping)
            raise
        finally:
            if status is not None:
                self._log(method, path, remote, status)

    def _log(self, method: str, path: str, remote: str, status: int) -> None:
        """Count an answered call, and log it: removals are worth a line at INFO, posts
        and lists (many a second) only at DEBUG."""
        self._count(status)
        level = logging.INFO if method == "DELETE" else logging.DEBUG
        if logger.isEnabledFor(level):
            logger.log(
                level,
                "API %s %s from %s: %d",
                method,
                printable(path[:_LOGGED_PATH]),
                remote,
                status,
                extra={"remote": remote, "status": status},
            )

    def _route(self, call: _Call) -> tuple[_Handler, list[str]]:
        if self._key is None:
            raise ApiError(
                HTTPStatus.NOT_FOUND,
                "this relay has no HTTP API: start it with an API key "
                "(--api-key-file or TRIO_WSPROXY_API_KEY)",
            )
        given = call.headers.get("authorization", b"")
        scheme, _, key = given.partition(b" ")
        if not (scheme.lower() == b"bearer" and hmac.compare_digest(b"Bearer " + key, self._key)):
            raise ApiError(
                HTTPStatus.UNAUTHORIZED,
                "missing or wrong API key: send Authorization: Bearer KEY",
                (("WWW-Authenticate", "Bearer"),),
            )
        if not call.path.startswith(API_PREFIX):
            raise ApiError(HTTPStatus.NOT_FOUND, f"no such API path: {printable(call.path)}")
        segments = call.path[len(API_PREFIX) :].split("/")
        method = "GET" if call.head else call.method  # (HEAD: GET's answer, bodiless)
        for shape, methods in self._routes.items():
            params = _match(shape, segments, self._host.config.max_id_length)
            if params is None:
                continue
            handler = methods.get(method)
            if handler is None:
                allowed = ", ".join(methods)
                raise ApiError(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    f"{call.method} is not allowed here: use {allowed}",
                    (("Allow", allowed),),
                )
            return handler, params
        raise ApiError(HTTPStatus.NOT_FOUND, f"no such API path: {printable(call.path)}")

    # -- the calls -----------------------------------------------------------------------

    async def _openapi(self, call: _Call, params: list[str]) -> None:
        _no_query(call)
        document = openapi_document(self._host.config.max_id_length)
        await _send_json(call, HTTPStatus.OK, document)

    async def _groups(self, call: _Call, params: list[str]) -> None:
        _no_query(call)
        groups = await self._host.registry.cluster_groups()
        listed = [{"name": name, "members": groups[name]} for name in sorted(groups)]
        await _send_json(call, HTTPStatus.OK, {"groups": listed})

    async def _members(self, call: _Call, params: list[str]) -> None:
        _no_query(call)
        members = await self._host.registry.cluster_members(params[0])
        await _send_json(call, HTTPStatus.OK, {"members": sorted(members)})

    async def _history(self, call: _Call, params: list[str]) -> None:
        (group,) = params
        since, limit = _history_query(call)
        page = await self._host.registry.read_history(group, since, limit)
        if page is None:
            raise ApiError(
                HTTPStatus.NOT_FOUND, "this relay keeps no history: start it with --history-size"
            )
        body = {
            "epoch": page.epoch,
            "first": page.first,
            "last": page.last,
            "messages": [_history_entry(offset, message) for offset, message in page.entries],
        }
        await _send_json(call, HTTPStatus.OK, body)

    async def _remove(self, call: _Call, params: list[str]) -> None:
        group, member = params
        seconds = _ban_query(call, self._host.config.ban_seconds)
        registry = self._host.registry
        # Banned before it is closed, so that a client coming straight back (the .NET
        # client does, at once) finds the ban however soon its join arrives; undone if
        # there was nobody to remove.
        before = self.bans.ban(group, member, seconds, trio.current_time(), time.time())
        try:
            removed = await registry.remove_member(group, member, REMOVED_REASON)
        except BaseException:
            self.bans.restore(group, member, before)
            raise
        if not removed:
            self.bans.restore(group, member, before)
            raise ApiError(HTTPStatus.NOT_FOUND, _no_member(group, member))
        await _send(call, HTTPStatus.NO_CONTENT, b"", None)

    def _connection(self, group: str, member_id: str) -> Connection | None:
        """The connection that is member ``member_id`` of ``group`` here, if any."""
        found = self._host.registry.group(group)
        member = None if found is None else found.members.get(member_id)
        return member.connection if isinstance(member, Membership) else None

    async def _member_groups(self, call: _Call, params: list[str]) -> None:
        _no_query(call)
        group, member_id = params
        connection = self._connection(group, member_id)
        if connection is not None:
            groups: list[str] | None = connection.group_names
        else:
            groups = await self._host.registry.remote_member_groups(group, member_id)
            if groups is None:
                raise ApiError(HTTPStatus.NOT_FOUND, _no_member(group, member_id))
        await _send_json(call, HTTPStatus.OK, {"id": member_id, "group": group, "groups": groups})

    async def _add_to_group(self, call: _Call, params: list[str]) -> None:
        _no_query(call)
        group, member_id, other = params
        connection = self._connection(group, member_id)
        if connection is None:
            if not await self._host.registry.enter_elsewhere(group, member_id, other):
                raise ApiError(HTTPStatus.NOT_FOUND, _no_member(group, member_id))
            body = {"id": member_id, "group": group, "groups": [group, other]}
            await _send_json(call, HTTPStatus.ACCEPTED, body)
            return
        if not connection.encoding.presence:
            raise ApiError(
                HTTPStatus.CONFLICT, "a plain member (not wsproxy.v1) is in one group only"
            )
        refusal = await connection.join_for_back_end(other)
        if refusal is not None:
            raise ApiError(
                _REFUSAL_STATUS.get(refusal.error, HTTPStatus.SERVICE_UNAVAILABLE), refusal.detail
            )
        body = {"id": member_id, "group": group, "groups": connection.group_names}
        await _send_json(call, HTTPStatus.OK, body)

    async def _revoke(self, call: _Call, params: list[str]) -> None:
        _no_query(call)
        host = self._host
        body = await _small_body(call, host.config.stream_timeout)
        if not host.checks_tokens:
            raise ApiError(
                HTTPStatus.CONFLICT,
                "this relay checks no access tokens: there is nothing to revoke",
            )
        kind, value, seconds = _revocation_request(body, host.config.revocation_seconds)
        now = time.time()
        revocation = Revocation(kind, value, now, now + seconds)
        closed = host.revoke_here(revocation)
        await host.registry.revoke(revocation)
        answer = {kind: value, "until": revocation.until, "closed_here": closed}
        await _send_json(call, HTTPStatus.OK, answer)

    async def _lift_ban(self, call: _Call, params: list[str]) -> None:
        _no_query(call)
        group, member = params
        if not self.bans.lift(group, member, trio.current_time()):
            raise ApiError(
                HTTPStatus.NOT_FOUND,
                f"no ban on {member!r} in group {group!r} on this relay",
            )
        await _send(call, HTTPStatus.NO_CONTENT, b"", None)

    async def _post(self, call: _Call, params: list[str]) -> None:
        (group_name,) = params
        config, registry = self._host.config, self._host.registry
        to, message_type = _post_query(call, config.max_id_length)
        content_type = call.headers.get("content-type")
        text = _body_kind(content_type)
        around = None
        if message_type is not None:
            before, after = encode_envelope_around(message_type)
            around = (before.encode(), after.encode())
        length = call.headers.get("content-length")
        limit = config.max_message_size
        if length is not None:
            _check_size(int(length), around, limit)
        down = registry.unavailable(group_name)
        if down is not None:
            raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, down)
        if to is not None:
            if not await registry.has_member(group_name, to):
                raise ApiError(HTTPStatus.NOT_FOUND, _no_member(group_name, to))
            recipients = 1
        else:
            recipients = await registry.cluster_size(group_name)
        if call.conn.client_is_waiting_for_100_continue:
            go_on = call.conn.send(h11.InformationalResponse(status_code=100, headers=[]))
            await call.stream.send_all(go_on or b"")
        typed = None
        if around is not None:
            body = await _typed_body(call, around, limit, config.stream_timeout)
            typed = around[0] + _payload(body, content_type, text) + around[1]
            if limit is not None and len(typed) > limit:
                raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, _too_large(limit))
            text = True  # (an envelope is text, whatever the body was)
        async with registry.hold(group_name) as group:
            poster = Poster(self._host, group, text, to)
            try:
                if typed is None:
                    await _stream_body(call, poster, text, limit, config.stream_timeout)
                else:
                    await poster.feed(typed, True)
            except BaseException:
                poster.end(truncated=True)
                raise
        left = to is not None and not poster.found_here
        if left and to is not None and not await registry.has_member(group_name, to):
            # It left while the body came: never a 200 for a message that went nowhere.
            raise ApiError(
                HTTPStatus.NOT_FOUND,
                f"{_no_member(group_name, to)} any more: it left while the body came",
            )
        await _send_json(call, HTTPStatus.OK, {"recipients": recipients})


async def _stream_body(
    call: _Call, poster: Poster, text: bool, limit: int | None, pace: float
) -> None:
    """Feed the request's body to ``poster`` as it arrives, checking text as UTF-8 and
    the size against ``limit``. The body keeps the pace a member's streaming message
    must (``pace``, the relay's stream_timeout): a body whose next piece is late
    (:attr:`Poster.piece_due`) fails with 408, and the poster's ``end`` frees the
    group. A trickle of bytes is no piece: it holds the group no longer than silence."""
    utf8 = codecs.getincrementaldecoder("utf-8")() if text else None
    size = 0
    heard = -math.inf  # when the body's last bytes came
    while True:
        event = await _body_event(call, poster.piece_due)
        if event is None:
            silent = heard < poster.piece_due - pace  # (nothing since the last piece)
            raise ApiError(HTTPStatus.REQUEST_TIMEOUT, _late(pace, silent))
        last = type(event) is h11.EndOfMessage
        chunk = bytes(event.data) if type(event) is h11.Data else b""
        if chunk:
            heard = trio.current_time()
        size += len(chunk)
        if limit is not None and size > limit:
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, _too_large(limit))
        if utf8 is not None:
            try:
                utf8.decode(chunk, final=last)
            except UnicodeDecodeError as exc:
                raise ApiError(
                    HTTPStatus.BAD_REQUEST,
                    f"the body is not UTF-8 (byte {size - len(chunk) + exc.start}): a text "
                    "message must be; send binary as application/octet-stream",
                ) from None
        if chunk or last:
            await poster.feed(chunk, last)
        if last:
            return


async def _typed_body(
    call: _Call, around: tuple[bytes, bytes], limit: int | None, pace: float
) -> bytes:
    """The body of a post with ``?type=``, read whole: it is due within ``pace``, as an
    untyped body's first piece is, and its message (in the envelope's text ``around``
    it) must fit the relay's ``limit``, as far as the body's size tells."""
    body = bytearray()
    due = trio.current_time() + pace
    while True:
        event = await _body_event(call, due)
        if event is None:
            raise ApiError(
                HTTPStatus.REQUEST_TIMEOUT,
                f"the body did not all come within {pace:g}s (the relay's stream_timeout)",
            )
        if type(event) is h11.EndOfMessage:
            break
        if type(event) is h11.Data:
            body += event.data
            _check_size(len(body), around, limit)
    return bytes(body)


def _payload(body: bytes, content_type: bytes | None, text: bool) -> bytes:
    """The envelope's ``Message`` for a typed post's ``body``, by what its Content-Type
    says the body is: JSON goes as it is (once checked to be JSON), text as a JSON
    string, bytes as a base64 string (as .NET's serializer writes a ``byte[]``)."""
    media = (content_type or b"").split(b";", 1)[0].strip().lower()
    if media == b"application/json":
        return _json_value(body)
    if text:
        return json.dumps(_utf8(body), ensure_ascii=False).encode()
    return b'"' + base64.b64encode(body) + b'"'


def _utf8(body: bytes) -> str:
    try:
        return body.decode()
    except UnicodeDecodeError as exc:
        raise ApiError(
            HTTPStatus.BAD_REQUEST,
            f"the body is not UTF-8 (byte {exc.start}): a text message must be; send binary "
            "as application/octet-stream",
        ) from None


def _check_size(size: int, around: tuple[bytes, bytes] | None, limit: int | None) -> None:
    """413 for a post whose body has (at least) ``size`` bytes, if that is too many: a
    typed body over MAX_TYPED_BODY, or a message (in its envelope, if ``around`` one)
    over the relay's ``limit``."""
    if around is not None and size > MAX_TYPED_BODY:
        raise ApiError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"a typed message's body (?type=) is at most {MAX_TYPED_BODY // 2**20} MiB: send "
            "larger data as a binary message, without ?type=",
        )
    envelope = 0 if around is None else len(around[0]) + len(around[1])
    if limit is not None and size + envelope > limit:
        raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, _too_large(limit))


def _json_value(body: bytes) -> bytes:
    """``body`` without the whitespace around it, once checked to be one JSON value as
    every client reads one (UTF-8; no NaN or Infinity, which Python's json alone takes);
    ApiError 400 with the reason otherwise. The value is passed on as it is, not written
    anew, so that what the back end wrote (a number's digits) is what members read."""
    try:
        json.loads(_utf8(body), parse_constant=_not_json)
    except ValueError as exc:  # (json.JSONDecodeError is one)
        raise ApiError(
            HTTPStatus.BAD_REQUEST,
            f"the body is not JSON, as application/json with ?type= must be: {exc}",
        ) from None
    except RecursionError:
        raise ApiError(HTTPStatus.BAD_REQUEST, "the body is JSON nested too deeply") from None
    return body.strip(_JSON_WHITESPACE)


def _not_json(name: str) -> NoReturn:
    # Python's json takes NaN and Infinity; JSON (JavaScript, System.Text.Json) does not.
    raise ValueError(f"{name} is not JSON")


def _match(shape: tuple[str, ...], segments: list[str], max_length: int) -> list[str] | None:
    """The ids in ``segments`` if they fit ``shape``; ApiError for an unusable id."""
    if len(shape) != len(segments):
        return None
    params: list[str] = []
    for want, got in zip(shape, segments, strict=True):
        if want != "{}":
            if want != got:
                return None
            continue
        try:
            value = unquote(got, errors="strict")
        except UnicodeDecodeError:
            raise ApiError(HTTPStatus.BAD_REQUEST, "an id in the path is not UTF-8") from None
        _check_id(value, "an id in the path", max_length)
        params.append(value)
    return params


def _check_id(value: str, what: str, max_length: int) -> None:
    # What the OpenAPI document can say of an id (openapi.ID_PATTERN): non-empty, not too
    # long, no control characters. (A member's handshake is stricter, str.isprintable:
    # an id only the API accepts is one no member has.)
    if not value:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{what} is empty")
    if len(value) > max_length:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{what} is longer than {max_length} characters")
    if _CONTROL.search(value):
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{what} has control characters")


def _no_query(call: _Call) -> None:
    if call.query:
        name = printable(call.query[0][0])
        raise ApiError(HTTPStatus.BAD_REQUEST, f"unknown query parameter {name!r}")


def _post_query(call: _Call, max_id_length: int) -> tuple[str | None, str | None]:
    """A post's ``?to=ID`` (the one member it is for) and ``?type=NAME`` (the message
    type its JSON body is sent as); each may be absent, neither given twice."""
    values: dict[str, str] = {}
    for key, value in call.query:
        if key not in ("to", "type"):
            raise ApiError(HTTPStatus.BAD_REQUEST, f"unknown query parameter {printable(key)!r}")
        if key in values:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"query parameter {key!r} given more than once")
        # (A type name is held to an id's rules, but may be longer: openapi says so too.)
        longest = MAX_TYPE_LENGTH if key == "type" else max_id_length
        _check_id(value, f"query parameter {key!r}", longest)
        values[key] = value
    return values.get("to"), values.get("type")


def _ban_query(call: _Call, default: float) -> float:
    """A removal's ``?ban=SECONDS`` (whole seconds, 0: no ban), else ``default``."""
    seconds: float | None = None
    for key, value in call.query:
        if key != "ban":
            raise ApiError(HTTPStatus.BAD_REQUEST, f"unknown query parameter {printable(key)!r}")
        if seconds is not None:
            raise ApiError(HTTPStatus.BAD_REQUEST, "query parameter 'ban' given more than once")
        if not (value.isascii() and value.isdigit() and len(value) <= 9) or (
            int(value) > MAX_BAN_SECONDS
        ):
            raise ApiError(
                HTTPStatus.BAD_REQUEST,
                f"query parameter 'ban' must be whole seconds, 0 to {MAX_BAN_SECONDS}",
            )
        seconds = int(value)
    return default if seconds is None else seconds


#: The most messages one history read returns (and the default).
HISTORY_LIMIT = 1000
HISTORY_DEFAULT = 100


def _history_query(call: _Call) -> tuple[int, int]:
    """``?since=OFFSET&limit=N`` of a history read: after which offset, how many."""
    values: dict[str, int] = {}
    for key, value in call.query:
        if key not in ("since", "limit"):
            raise ApiError(HTTPStatus.BAD_REQUEST, f"unknown query parameter {printable(key)!r}")
        if key in values:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"query parameter {key!r} given more than once")
        if not (value.isascii() and value.isdigit()) or len(value) > 18:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"query parameter {key!r} must be a count")
        values[key] = int(value)
    limit = values.get("limit", HISTORY_DEFAULT)
    if not 1 <= limit <= HISTORY_LIMIT:
        raise ApiError(
            HTTPStatus.BAD_REQUEST, f"query parameter 'limit' must be 1 to {HISTORY_LIMIT}"
        )
    return values.get("since", 0), limit


def _history_entry(offset: int, message: Message | None) -> dict[str, object]:
    """One message of a history read, as JSON: text as text, binary as base64."""
    if message is None:
        return {"offset": offset, "kept": False}
    entry: dict[str, object] = {
        "offset": offset,
        "kept": True,
        "from": message.sender or None,
        "to": message.to,
    }
    if message.text:
        entry["text"] = message.payload.decode()
    else:
        entry["binary"] = base64.b64encode(message.payload).decode("ascii")
    return entry


def _body_kind(content_type: bytes | None) -> bool:
    """Whether a body of ``content_type`` is a text message (else binary)."""
    media = b"" if content_type is None else content_type.split(b";", 1)[0].strip().lower()
    if media == b"application/octet-stream":
        return False
    if media.startswith(b"text/") or media == b"application/json":
        parameters = content_type.split(b";")[1:] if content_type is not None else []
        for parameter in parameters:
            key, _, value = parameter.strip().partition(b"=")
            charset = value.strip(b'"').lower()
            if key.strip().lower() == b"charset" and charset not in (b"utf-8", b"utf8"):
                raise ApiError(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "a text message is UTF-8: charset=utf-8"
                )
        return True
    raise ApiError(
        HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
        "Content-Type must be application/octet-stream (a binary message), or text/* or "
        "application/json (a text message)",
    )


def _too_large(limit: int) -> str:
    return f"the body is larger than the relay's max_message_size ({limit} bytes)"


def _no_member(group: str, member: str) -> str:
    return f"no member {member!r} in group {group!r}"


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream) -> Any:
    """The next h11 event, reading from ``stream`` as needed (its end is a close)."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        try:
            data = await stream.receive_some(_READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        conn.receive_data(bytes(data))


async def _body_event(call: _Call, due: float) -> Any:
    """The next event of the request's body, or None if it has not come by ``due`` (on
    Trio's clock)."""
    with trio.move_on_at(due):
        return await _next_event(call.conn, call.stream)
    return None


def _late(timeout: float, silent: bool) -> str:
    if silent:
        return f"the body made no progress for {timeout:g}s"
    return (
        f"the body came too slowly: each {FRAGMENT_SIZE // 2**20} MiB of it, and its end, "
        f"is due within {timeout:g}s of the last (the relay's stream_timeout)"
    )


async def _linger(stream: trio.abc.Stream) -> None:
    """Before closing a connection whose request body is still arriving: stop sending
    and read what comes for a moment, so that the client reads the answer instead of a
    reset (a close with unread data resets the connection)."""
    with trio.move_on_after(1.0):
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()
        received = 0
        while received < 16 * _MAX_IGNORED_BODY:
            data = await stream.receive_some(_READ_SIZE)
            if not data:
                return
            received += len(data)


async def _small_body(call: _Call, within: float, too_large: str | None = None) -> bytes:
    """The whole body of a call that takes a small one, or none (up to
    _MAX_IGNORED_BODY bytes: 413 over it, with ``too_large`` if given; 408 when it has
    not all come ``within`` seconds from now)."""
    body = bytearray()
    due = trio.current_time() + within
    while call.conn.their_state is h11.SEND_BODY:
        event = await _body_event(call, due)
        if event is None:
            raise ApiError(HTTPStatus.REQUEST_TIMEOUT, f"the body did not come within {within:g}s")
        if type(event) is h11.Data:
            body += event.data
            if len(body) > _MAX_IGNORED_BODY:
                raise ApiError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    too_large or f"this call takes a body of {_MAX_IGNORED_BODY} bytes at most",
                )
    return bytes(body)


#: The longest a revocation may last, in seconds: a year; more is a typo.
MAX_REVOCATION_SECONDS = 365 * 24 * 3600


def _revocation_request(body: bytes, default_seconds: float) -> tuple[str, str, float]:
    """What a POST /api/revocations body asks: ``{"sub": ID}`` or ``{"jti": ID}``, and
    ``"seconds"`` if given."""
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None
    if not isinstance(request, dict):
        raise ApiError(
            HTTPStatus.BAD_REQUEST, 'the body is an object: {"sub": ...} or {"jti": ...}'
        )
    unknown = request.keys() - {"sub", "jti", "seconds"}
    if unknown:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"unknown field {sorted(unknown)[0]!r}")
    kinds = [kind for kind in (SUBJECT, TOKEN_ID) if kind in request]
    if len(kinds) != 1:
        raise ApiError(HTTPStatus.BAD_REQUEST, 'name one of "sub" or "jti"')
    (kind,) = kinds
    value = request[kind]
    if not isinstance(value, str) or not value or len(value) > 1024 or _CONTROL.search(value):
        raise ApiError(
            HTTPStatus.BAD_REQUEST,
            f'"{kind}" must be a non-empty string of at most 1024 characters, without '
            "control characters",
        )
    seconds = request.get("seconds", default_seconds)
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 < seconds <= MAX_REVOCATION_SECONDS
    ):
        raise ApiError(
            HTTPStatus.BAD_REQUEST,
            f'"seconds" must be a number from 1 to {MAX_REVOCATION_SECONDS} (a year)',
        )
    return kind, value, float(seconds)


async def _ignore_body(call: _Call, within: float) -> None:
    """Read past a body the call does not use (see :func:`_small_body`)."""
    await _small_body(call, within, "this call takes no body")


async def _send_json(call: _Call, status: int, body: object) -> None:
    await _send(call, status, json.dumps(body, ensure_ascii=False).encode(), _JSON)


async def _send(call: _Call, status: int, body: bytes, content_type: str | None) -> None:
    call.status = status
    await _respond(call.conn, call.stream, status, body, content_type, head=call.head)


async def _send_error(
    conn: h11.Connection,
    stream: trio.abc.Stream,
    status: int,
    message: str,
    headers: tuple[tuple[str, str], ...] = (),
    *,
    head: bool = False,
    close: bool = False,
) -> None:
    body = json.dumps({"error": message}, ensure_ascii=False).encode()
    await _respond(conn, stream, status, body, _JSON, headers, head=head, close=close)


async def _fail(
    conn: h11.Connection,
    stream: trio.abc.Stream,
    request: h11.Request | None,
    status: int,
    message: str,
    config: RelayConfig,
) -> None:
    """Answer ``status`` on a connection that is ending (a request h11 cannot parse, or
    a bug met answering ``request``), if its answer has not started; a client still
    sending the body hears it before the close. A client gone meanwhile, or an answer
    h11 can no longer send, leaves the connection to be dropped, quietly."""
    try:
        with trio.move_on_after(config.handshake_timeout):
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                head = request is not None and request.method == b"HEAD"
                await _send_error(conn, stream, status, message, head=head, close=True)
            if conn.their_state is h11.SEND_BODY:
                await _linger(stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
        pass  # (gone, or h11 is in no state to answer: the connection is dropped)


def _described(request: h11.Request | None) -> str:
    """A request's method and path, for a log line (visible ASCII: h11 saw to it)."""
    if request is None:
        return "a connection with no request yet"
    method = request.method.decode("ascii", "replace")
    path = request.target.decode("ascii", "replace")[:_LOGGED_PATH]
    return f"{method} {printable(path)}"


async def _respond(
    conn: h11.Connection,
    stream: trio.abc.Stream,
    status: int,
    body: bytes,
    content_type: str | None,
    extra: tuple[tuple[str, str], ...] = (),
    *,
    head: bool = False,
    close: bool = False,
) -> None:
    """Send one answer. ``head``: to a HEAD request, whose answer has the headers GET's
    would, ``Content-Length`` included, and no body (h11 refuses one). ``close``: the
    connection ends after it."""
    headers = [(name, value) for name, value in extra]
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    if status != HTTPStatus.NO_CONTENT:
        headers.append(("Content-Length", str(len(body))))
    if close or conn.their_state is not h11.DONE:
        # The request's body is not read (an answer before it): the connection cannot
        # carry another request.
        headers.append(("Connection", "close"))
    parts = [conn.send(h11.Response(status_code=status, headers=headers))]
    if body and not head:
        parts.append(conn.send(h11.Data(data=body)))
    parts.append(conn.send(h11.EndOfMessage()))
    await stream.send_all(b"".join(part for part in parts if part))
