"""A back end that receives the relay's webhooks in tests: a real HTTP/1.1 server (trio
sockets and h11) on a free port, which checks each request's signature and records what
it was sent, answering as the test tells it to."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import h11
import trio

from hookserver import serve_http
from trio_wsproxy.protocol.webhooks import (
    SIGNATURE_HEADER,
    SignatureError,
    WebhookEvent,
    decode_body,
    verify,
)

SECRET = "webhook-secret-for-the-tests-0123456789"


@attrs.frozen
class Received:
    """One request as the back end read it, and the status it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    #: Why its signature did not hold (None: it did).
    bad_signature: str | None


class WebhookBackEnd:
    """Serves until cancelled (``nursery.start(back_end.serve)``). ``answers`` are the
    statuses of the next requests, in order (200 once they run out); while ``hold`` is
    set, a request waits for ``release()`` before it is answered."""

    def __init__(self, secret: str = SECRET) -> None:
        self.secret = secret
        self.port = 0
        self.requests: list[Received] = []
        self.answers: list[int] = []
        self.hold = False
        self._released = trio.Event()
        self._changed = trio.Event()
        #: Requests that came in (held or not yet answered included).
        self.arrived = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks"

    @property
    def delivered(self) -> list[WebhookEvent]:
        """The events of the requests it took (2xx, signature good), in order."""
        return [
            event
            for request in self.requests
            if 200 <= request.status < 300 and request.bad_signature is None
            for event in decode_body(request.body).events
        ]

    def release(self) -> None:
        self.hold = False
        self._released.set()

    async def wait_until(self, condition: Callable[[], bool], within: float = 10.0) -> None:
        """Return once ``condition()`` holds (checked after each request)."""
        with trio.fail_after(within):
            while not condition():
                await self._changed.wait()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[WebhookBackEnd]:
        """Serve while the block runs."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.serve)
            yield self
            nursery.cancel_scope.cancel()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        await serve_http(stream, self._answer, self._answered)

    def _answered(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _answer(self, request: h11.Request, body: bytes) -> tuple[int, bytes]:
        self.arrived += 1
        self._changed.set()
        self._changed = trio.Event()
        headers = {name.decode().lower(): value.decode() for name, value in request.headers}
        if self.hold:
            await self._released.wait()
        status = self.answers.pop(0) if self.answers else 200
        try:
            verify(self.secret, body, headers.get(SIGNATURE_HEADER.lower()))
            bad = None
        except SignatureError as exc:
            bad = str(exc)
            status = 401
        self.requests.append(Received(request.target.decode(), headers, body, status, bad))
        return status, b'"ok"' if status < 300 else b'"no"'
