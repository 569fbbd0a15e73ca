"""RESP2, the protocol Redis speaks, sans-I/O: commands encoded, replies parsed, and
the ``redis://`` URL read. The connection that carries it is the backplane's
(``backplane/connection.py``)."""

from __future__ import annotations

from typing import TypeAlias
from urllib.parse import unquote, urlsplit

import attrs

#: What a reply can be: simple string/bulk bytes, int, None (nil), an error, or a list.
Reply: TypeAlias = "bytes | int | list[Reply] | RedisError | None"


class RedisError(Exception):
    """An error reply from Redis (``-ERR ...``)."""


class ConnectionLost(Exception):
    """The connection to Redis closed or stopped answering."""


class ProtocolViolation(Exception):
    """Redis sent bytes that are not RESP2."""


def encode(*args: bytes | str | int) -> bytes:
    """One command in RESP2: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(b"\r\n")
    return b"".join(parts)


class Parser:
    """Incremental RESP2 reply parser: :meth:`feed` bytes, then take :meth:`replies`."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> None:
        self._buffer = self._buffer + data if self._buffer else data

    def replies(self) -> list[Reply]:
        """Every complete reply buffered so far, in order."""
        out: list[Reply] = []
        buffer = self._buffer
        pos = 0
        size = len(buffer)
        while pos < size:
            reply, end = _parse(buffer, pos)
            if end < 0:
                break
            out.append(reply)
            pos = end
        self._buffer = buffer[pos:] if pos else buffer
        return out


def _parse(buffer: bytes, pos: int) -> tuple[Reply, int]:
    """The reply starting at ``pos`` and where it ends; (None, -1) if it is incomplete."""
    line_end = buffer.find(b"\r\n", pos)
    if line_end < 0:
        return None, -1
    kind = buffer[pos]
    if kind == 36:  # $ bulk string
        length = int(buffer[pos + 1 : line_end])
        if length < 0:
            return None, line_end + 2
        start = line_end + 2
        end = start + length
        if len(buffer) < end + 2:
            return None, -1
        return buffer[start:end], end + 2
    if kind == 42:  # * array
        count = int(buffer[pos + 1 : line_end])
        if count < 0:
            return None, line_end + 2
        items: list[Reply] = []
        pos = line_end + 2
        for _ in range(count):
            item, pos = _parse(buffer, pos)
            if pos < 0:
                return None, -1
            items.append(item)
        return items, pos
    if kind == 58:  # : integer
        return int(buffer[pos + 1 : line_end]), line_end + 2
    if kind == 43:  # + simple string
        return buffer[pos + 1 : line_end], line_end + 2
    if kind == 45:  # - error
        return RedisError(buffer[pos + 1 : line_end].decode(errors="replace")), line_end + 2
    raise ProtocolViolation(f"unexpected reply type {chr(kind)!r}")


@attrs.frozen
class RedisAddress:
    """Where a Redis is and how to log in, from a ``redis://`` URL."""

    host: str
    port: int
    db: int
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        """``redis://[[user]:password@]host[:port][/db]``; raises ValueError otherwise."""
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError(f"only redis:// URLs are supported, got {url!r}")
        try:
            port = parts.port or 6379
        except ValueError as exc:
            raise ValueError(f"bad port in {url!r}") from exc
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"the database in {url!r} must be a number")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            db=int(path or 0),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )
