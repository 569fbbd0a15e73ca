"""One binary message of any size, streamed: :class:`BinaryStream` on the way in, the
pieces of a source (:func:`pieces_of`) on the way out.

Receiving, the connection task hands each piece of a streamed message to its
:class:`BinaryStream` as it arrives (:meth:`BinaryStream.feed`), through a channel of
:data:`STREAM_BUFFER` pieces: when the consumer is slower than the network, the
connection task waits, the socket stops being read, and the relay slows the sender —
nothing piles up in memory. A message that ends before its end (the connection dropped,
the relay cut it off) makes the stream raise :exc:`StreamInterrupted` once the pieces
that did arrive are read: a consumer never takes a truncated message for a whole one.

Sending, :func:`pieces_of` reads a path, a binary file, or a (sync or async) iterable of
``bytes`` one piece at a time; the client writes each piece before reading the next, so
the relay's backpressure paces the reading.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncGenerator, AsyncIterable, Iterable
from typing import IO, Any, Protocol, Union

import trio

from .errors import ClientError
from .incoming import Incoming

__all__ = [
    "DEFAULT_PIECE_SIZE",
    "STREAM_BUFFER",
    "BinaryStream",
    "StreamInterrupted",
    "StreamSource",
    "pieces_of",
]

#: Bytes read from a path or a file per piece sent by :meth:`Client.send_stream`.
DEFAULT_PIECE_SIZE = 1024 * 1024
#: Pieces of a streamed message held between the socket and its consumer.
STREAM_BUFFER = 4


class _AsyncReadable(Protocol):
    async def read(self, size: int = -1, /) -> bytes: ...


#: What :meth:`Client.send_stream` sends: a path, a binary file (sync or async), or an
#: iterable (sync or async) of ``bytes``.
StreamSource = Union[
    str,
    "os.PathLike[str]",
    IO[bytes],
    _AsyncReadable,
    Iterable[bytes],
    AsyncIterable[bytes],
]


class StreamInterrupted(ClientError):
    """A streamed message did not get to its end.

    Raised by a :class:`BinaryStream` when the connection ended mid-message (the relay
    closes the recipients of a message whose sender left mid-way with 4002), and by
    :meth:`Client.send_stream` when the connection dropped while it was sending; the
    recipients were then told, the same way."""

    def __init__(self, message: str, *, code: int, reason: str | None, transferred: int) -> None:
        super().__init__(message)
        #: The close code the connection ended with (1006: dropped without one).
        self.code = code
        #: The close frame's reason, if any.
        self.reason = reason
        #: Bytes of the message received (or sent) before it was interrupted.
        self.transferred = transferred


class BinaryStream:
    """One binary message, as its pieces arrive: an async iterable of ``bytes``.

    ::

        @client.on(trio_wsproxy.BinaryStream)
        async def save(stream: trio_wsproxy.BinaryStream) -> None:
            async with await trio.open_file("upload.bin", "wb") as file:
                async for piece in stream:
                    await file.write(piece)

    A stream can be read once, by one consumer. What a handler leaves unread when it
    returns is discarded (the rest of the message still arrives, and is dropped); a
    subscriber must read each stream to its end or :meth:`aclose` it, since the client
    reads nothing else meanwhile. Iterating raises :exc:`StreamInterrupted` if the
    message was cut off.
    """

    def __init__(
        self,
        *,
        sender: str | None,
        direct: bool,
        size: int | None,
        announcement: Incoming[Any] | None,
    ) -> None:
        #: The id of the member that sent it, where the relay says (``wsproxy.v1``).
        self.sender = sender
        #: Whether it was sent to this member only.
        self.direct = direct
        #: Its size in bytes when known before it is read: when the whole message had
        #: arrived by the time it was handed over (a small one). Otherwise None: the
        #: WebSocket protocol does not say how long a message will be; an announcement
        #: can (see :meth:`Client.send_stream`).
        self.size = size
        #: The typed message that announced it (its value, envelope and sender), if any.
        self.announcement = announcement
        #: Bytes read from it so far.
        self.received = 0
        self._in, self._out = trio.open_memory_channel[bytes](STREAM_BUFFER)
        self._complete = False
        self._interrupted: StreamInterrupted | None = None
        self._arrived = 0

    def __repr__(self) -> str:
        size = "unknown size" if self.size is None else f"{self.size} bytes"
        return f"<BinaryStream from {self.sender!r}, {size}, {self.received} read>"

    # -- the consumer's side ------------------------------------------------------------

    def __aiter__(self) -> BinaryStream:
        return self

    async def __anext__(self) -> bytes:
        piece = await self.read()
        if not piece:
            raise StopAsyncIteration
        return piece

    async def read(self) -> bytes:
        """The next piece of the message (never empty), or ``b""`` at its end. Raises
        :exc:`StreamInterrupted` where the message was cut off."""
        while True:
            try:
                piece = await self._out.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                if self._interrupted is not None:
                    raise self._interrupted from None
                return b""
            if piece:
                self.received += len(piece)
                return piece

    async def read_all(self, limit: int) -> bytes:
        """The rest of the message as one ``bytes``; :exc:`ValueError` beyond ``limit``
        bytes (the rest is discarded then)."""
        parts: list[bytes] = []
        total = 0
        async for piece in self:
            total += len(piece)
            if total > limit:
                await self.aclose()
                raise ValueError(f"the message is larger than {limit} bytes")
            parts.append(piece)
        return b"".join(parts)

    async def aclose(self) -> None:
        """Read no more: the rest of the message is discarded as it arrives."""
        self.discard()
        await trio.lowlevel.checkpoint()

    # -- the connection task's side -----------------------------------------------------

    async def feed(self, piece: bytes, last: bool) -> None:
        """Hand the next piece to the consumer, waiting while it is ``STREAM_BUFFER``
        pieces behind; dropped if the consumer is gone."""
        self._arrived += len(piece)
        if piece:
            try:
                await self._in.send(piece)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # discarded: the consumer returned or closed it
        if last:
            self._complete = True
            self._in.close()

    def interrupt(self, code: int, reason: str | None) -> None:
        """The message will not get to its end: once the pieces that came are read, the
        consumer gets :exc:`StreamInterrupted`."""
        if self._complete or self._interrupted is not None:
            return
        because = f"code {code}" + (f": {reason}" if reason else "")
        self._interrupted = StreamInterrupted(
            f"the message was cut off after {self._arrived} bytes: the connection ended "
            f"({because})",
            code=code,
            reason=reason,
            transferred=self._arrived,
        )
        self._in.close()

    def discard(self) -> None:
        """Drop whatever is not read yet, and what is still to come."""
        self._out.close()


async def pieces_of(source: StreamSource, piece_size: int) -> AsyncGenerator[bytes, None]:
    """The bytes of ``source``, one piece at a time, read as they are asked for: a path
    or binary file ``piece_size`` bytes at a time (a file through Trio's worker threads,
    so that a slow disk does not hold up the other tasks), an iterable's items as they
    come. A path's file is closed at the end; a given file is not."""
    if isinstance(source, str | os.PathLike):
        async with await trio.open_file(source, "rb") as file:
            while piece := await file.read(piece_size):
                yield piece
        return
    if isinstance(source, bytes | bytearray | memoryview):
        raise TypeError("send_stream sends a path, a binary file or an iterable of bytes")
    read = getattr(source, "read", None)
    if read is not None:
        if inspect.iscoroutinefunction(read):
            while piece := await read(piece_size):
                yield _checked(piece)
        else:
            while piece := await trio.to_thread.run_sync(read, piece_size):
                yield _checked(piece)
        return
    # An iterable's empty pieces are skipped: an empty piece is no end of the message.
    if isinstance(source, AsyncIterable):
        async for item in source:
            if piece := _checked(item):
                yield piece
        return
    if isinstance(source, Iterable):
        for item in source:
            if piece := _checked(item):
                yield piece
        return
    raise TypeError(
        "send_stream sends a path, a binary file or an iterable of bytes, "
        f"not {type(source).__name__}"
    )


def _checked(piece: object) -> bytes:
    if isinstance(piece, bytes):
        return piece
    if isinstance(piece, bytearray | memoryview):
        return bytes(piece)
    raise TypeError(f"a stream's pieces are bytes, got {type(piece).__name__}")
