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
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                body = b""
                target = ""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        if not data:
                            return
                        conn.receive_data(data)
                    elif isinstance(event, h11.Request):
                        target = event.target.decode()
                    elif isinstance(event, h11.Data):
                        body += bytes(event.data)
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                request = json.loads(body)
                self.requests.append((target, request))
                self._arrived.set()
                self._arrived = trio.Event()
                answer = await self.answer(request)
                if isinstance(answer, Reply):
                    status, content = answer.status, answer.body
                else:
                    status, content = 200, json.dumps(answer).encode()
                headers = [
                    ("content-type", "application/json"),
                    ("content-length", str(len(content))),
                ]
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
                await stream.send_all(conn.send(h11.Data(data=content)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
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
