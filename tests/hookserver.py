"""A real HTTP back end for the relay's hooks in tests: trio sockets and h11 on a free
port, keep-alive, answering each POSTed JSON body with what the test's function says."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import h11
import trio


@attrs.frozen
class Reply:
    """An answer other than a JSON object with 200: a status and raw bytes."""

    status: int
    body: bytes = b""


Answer = Callable[[dict[str, Any]], Awaitable["dict[str, Any] | Reply"]]


class BackEnd:
    """Records every request (path, JSON body) and answers it with ``answer``."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.port = 0
        self._arrived = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bodies(self, hook: str | None = None) -> list[dict[str, Any]]:
        """The bodies received (of one hook, if given), in order."""
        return [body for _, body in self.requests if hook is None or body.get("hook") == hook]

    async def wait_requests(self, count: int) -> None:
        """Until ``count`` requests have arrived."""
        while len(self.requests) < count:
            await self._arrived.wait()

    async def _serve(self, stream: trio.SocketStream) -> None:
        await serve_http(stream, self._handle)

    async def _handle(self, request: h11.Request, body: bytes) -> tuple[int, bytes]:
        parsed = json.loads(body)
        self.requests.append((request.target.decode(), parsed))
        self._arrived.set()
        self._arrived = trio.Event()
        answer = await self.answer(parsed)
        if isinstance(answer, Reply):
            return answer.status, answer.body
        return 200, json.dumps(answer).encode()


Handler = Callable[[h11.Request, bytes], Awaitable[tuple[int, bytes]]]


async def serve_http(
    stream: trio.SocketStream, handler: Handler, answered: Callable[[], None] = lambda: None
) -> None:
    """Serve one keep-alive connection with h11: each request (its head and its whole
    body) answered with the status and body ``handler`` gives, as JSON; ``answered`` is
    called once each answer is written."""
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            request: h11.Request | None = None
            body = b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    if not data and conn.their_state is not h11.DONE:
                        return
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return
            assert request is not None
            status, content = await handler(request, body)
            headers = [("content-type", "application/json"), ("content-length", str(len(content)))]
            response = h11.Response(status_code=status, headers=headers)
            await stream.send_all(conn.send(response) + conn.send(h11.Data(data=content)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
            answered()
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
        return
    finally:
        await trio.aclose_forcefully(stream)


@asynccontextmanager
async def back_end(answer: Answer) -> AsyncIterator[BackEnd]:
    """A back end answering with ``answer`` while the block runs."""
    server = BackEnd(answer)
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, server._serve, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


async def allow(body: dict[str, Any]) -> dict[str, Any]:
    return {"allow": True}
