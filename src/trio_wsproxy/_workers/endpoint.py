"""The workers' private endpoints: where they are (:class:`WorkerLink`), and the small
HTTP/1.1 server (:func:`serve_http`) and client (:func:`http_get`) the supervisor and
its workers speak there, each on a Unix socket in the supervisor's private directory.

Why not the relay's own HTTP (``relay/api.py``, h11 too): that one serves the public
port's ``/api/`` calls to a relay (``RelayCore``): keep-alive, bodies, JSON errors, an
API key, every call counted in the relay's ``api_requests``. Here a request is one GET
on a connection of its own, between processes of one relay, with no key, no counting
and plain-text errors, on a Unix socket; and the relay has no HTTP client at all. One
server serving both would change what each says (and count the supervisor's scrapes of
its workers in their figures), so the two stay apart, and this one is kept whole here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable
from functools import partial
from http import HTTPStatus

import attrs
import h11
import trio

# Largest body read from a private endpoint: a worker's report holds 17 bytes per group
# it has (a digest), so this is room for a few million groups, and a bound all the same.
_MAX_BODY = 64 * 1024 * 1024
# How long a private endpoint waits for a request (its peers send theirs at once).
_REQUEST_TIMEOUT = 5.0
_READ_SIZE = 65536
# The supervisor's endpoint in its private directory: the whole relay's /metrics.
_WHOLE_RELAY_SOCKET = "relay.sock"


class EndpointError(Exception):
    """A private endpoint gave no proper answer: not a complete 200 response."""


@attrs.frozen
class WorkerLink:
    """What one worker is told of its supervisor's private endpoints (the internal flags
    ``--worker-dir``, ``--worker-index`` and ``--worker-count``)."""

    #: The supervisor's private directory, where both ends have their socket.
    directory: str
    #: Which of the supervisor's places this worker is in, from 1.
    index: int
    #: How many there are (``--workers``).
    count: int

    def __attrs_post_init__(self) -> None:
        if self.count < 2:
            raise ValueError(f"--worker-count must be 2 or more, got {self.count}")
        if not 1 <= self.index <= self.count:
            raise ValueError(
                f"--worker-index must be from 1 to --worker-count ({self.count}), got {self.index}"
            )
        if not self.directory:
            raise ValueError("--worker-dir is empty")

    @property
    def report_socket(self) -> str:
        """Where this worker serves its :class:`~trio_wsproxy.protocol.workers.WorkerReport`."""
        return os.path.join(self.directory, f"worker-{self.index}.sock")

    @property
    def whole_relay_socket(self) -> str:
        """Where the supervisor serves the whole relay's ``/metrics``."""
        return os.path.join(self.directory, _WHOLE_RELAY_SOCKET)

    def flags(self) -> list[str]:
        return [
            f"--worker-dir={self.directory}",
            f"--worker-index={self.index}",
            f"--worker-count={self.count}",
        ]


# An endpoint's answer to a GET of a path: (status, body, content type).
Answer = tuple[int, bytes, str]


async def serve_http(
    path: str,
    answer: Callable[[str], Awaitable[Answer]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HTTP/1.1 (h11) on a Unix socket at ``path`` until cancelled: each GET is
    answered with ``await answer(target)``, then the connection closes. A socket left
    at ``path`` by an earlier process (the place's previous worker) is replaced. Raises
    OSError, before ``task_status.started()``, when the socket cannot be made."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        await sock.bind(path)
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    listener = trio.SocketListener(sock)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, partial(_answer_request, answer), [listener])
        task_status.started()


async def _answer_request(
    answer: Callable[[str], Awaitable[Answer]], stream: trio.SocketStream
) -> None:
    """Read one request from ``stream`` and answer it; a peer that goes away or speaks
    no HTTP ends only its own connection."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=16384)
    async with stream:
        try:
            request: h11.Request | None = None
            with trio.move_on_after(_REQUEST_TIMEOUT):
                while True:
                    event = connection.next_event()
                    if event is h11.NEED_DATA:
                        connection.receive_data(await stream.receive_some(_READ_SIZE))
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        break
            if request is None:
                return  # closed, or silent for _REQUEST_TIMEOUT: nobody to answer
            if request.method != b"GET":
                status, body, kind = 405, b"only GET\n", "text/plain"
            else:
                status, body, kind = await answer(request.target.decode("ascii", "replace"))
        except h11.RemoteProtocolError as error:
            status, body, kind = error.error_status_hint, f"{error}\n".encode(), "text/plain"
            if connection.our_state is not h11.SEND_RESPONSE:
                return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        headers = [
            ("Content-Type", kind),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
        try:
            await stream.send_all(
                connection.send(
                    h11.Response(
                        status_code=status, headers=headers, reason=HTTPStatus(status).phrase
                    )
                )
                + connection.send(h11.Data(data=body))
                + connection.send(h11.EndOfMessage())
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the asker gave up waiting


async def http_get(path: str, target: str) -> bytes:
    """GET ``target`` from the private endpoint on the Unix socket at ``path``: the body
    of its 200 answer. Raises OSError when nobody listens there, :exc:`EndpointError`
    for anything but a complete 200 (of at most ``_MAX_BODY`` bytes). The caller
    bounds the time."""
    stream = await trio.open_unix_socket(path)
    connection = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET", target=target, headers=[("Host", "localhost"), ("Connection", "close")]
    )
    async with stream:
        try:
            await stream.send_all(connection.send(request) + connection.send(h11.EndOfMessage()))
            status: int | None = None
            body = bytearray()
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await stream.receive_some(_READ_SIZE))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > _MAX_BODY:
                        raise EndpointError(f"an answer larger than {_MAX_BODY} bytes")
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise EndpointError("closed before answering")
        except h11.ProtocolError as error:
            raise EndpointError(f"not HTTP: {error}") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            raise EndpointError(f"connection lost: {error}") from None
    if status != 200:
        raise EndpointError(f"status {status}: {bytes(body[:200])!r}")
    return bytes(body)
