"""A small HTTP/1.1 client for the relay's HTTP API in tests: trio sockets and h11, so
that requests, bodies (whole, chunked or streamed from an async iterable) and answers
are real bytes on a real connection."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Mapping
from typing import Any

import attrs
import h11
import trio

KEY = "test-api-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


@attrs.frozen
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        assert self.headers.get("content-type") == "application/json", self.headers
        return json.loads(self.body)


class ApiClient:
    """One keep-alive connection to a relay's port."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int) -> ApiClient:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def call(
        self,
        method: str,
        path: str,
        body: bytes | AsyncIterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        auth: bool = True,
    ) -> Answer:
        """Send one request and read its answer. A ``bytes`` body goes with a
        Content-Length; an async iterable one chunked, as it yields."""
        fields = {"Host": "relay", **(AUTH if auth else {}), **(headers or {})}
        if isinstance(body, bytes):
            fields.setdefault("Content-Length", str(len(body)))
        elif body is not None:
            fields["Transfer-Encoding"] = "chunked"
        request = h11.Request(method=method, target=path, headers=list(fields.items()))
        await self._send(request)
        if isinstance(body, bytes):
            if body:
                await self._send(h11.Data(data=body))
        elif body is not None:
            async for chunk in body:
                if chunk:
                    await self._send(h11.Data(data=chunk))
        await self._send(h11.EndOfMessage())
        return await self.answer()

    async def send_head(self, method: str, path: str, headers: Mapping[str, str]) -> None:
        """Start a request with a chunked body (then :meth:`send_chunk`, :meth:`answer`)."""
        fields = {"Host": "relay", **AUTH, **headers, "Transfer-Encoding": "chunked"}
        await self._send(h11.Request(method=method, target=path, headers=list(fields.items())))

    async def send_chunk(self, data: bytes) -> None:
        await self._send(h11.Data(data=data))

    async def end(self) -> None:
        """End a body begun with :meth:`send_head`."""
        await self._send(h11.EndOfMessage())

    async def answer(self) -> Answer:
        response: h11.Response | None = None
        parts: list[bytes] = []
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
            elif type(event) is h11.Response:
                response = event
            elif type(event) is h11.Data:
                parts.append(bytes(event.data))
            elif type(event) is h11.EndOfMessage:
                break
            elif type(event) is h11.ConnectionClosed:
                raise AssertionError("closed before an answer")
        assert response is not None
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        headers = {k.decode(): v.decode() for k, v in response.headers}
        return Answer(response.status_code, headers, b"".join(parts))

    async def _send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            await self.stream.send_all(data)


async def call(port: int, method: str, path: str, *args: Any, **kwargs: Any) -> Answer:
    """One request on a connection of its own."""
    client = await ApiClient.open(port)
    try:
        return await client.call(method, path, *args, **kwargs)
    finally:
        await client.aclose()
