"""The ``redis+sentinel://`` URL of ``--backplane``: the sentinels to ask, the service
they watch, and the master's credentials and database (the form the Python Redis world
uses). Parsed here, in the pure layer, so that the relay's settings check it up front;
the asking is ``backplane/sentinel.py``'s."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import attrs

from .resp import RedisAddress

SCHEME = "redis+sentinel"
#: The port of a sentinel given without one (Sentinel's own default).
SENTINEL_PORT = 26379


@attrs.frozen
class SentinelAddress:
    """The sentinels of a ``redis+sentinel://`` URL, the service they watch, and the
    master's credentials and database."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str) -> SentinelAddress:
        """Parse ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``;
        ValueError saying what is wrong otherwise."""
        parts = urlsplit(url)
        if parts.scheme != SCHEME:
            raise ValueError(f"a sentinel URL starts with {SCHEME}://, got {url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"a sentinel URL takes no query or fragment: {url!r}")
        credentials, _, hosts = parts.netloc.rpartition("@")
        username = password = None
        if credentials:
            user, colon, secret = credentials.partition(":")
            username = unquote(user) if user else None
            password = unquote(secret) if colon and secret else None
        sentinels = tuple(_host_port(item, url) for item in hosts.split(","))
        path = parts.path.strip("/").split("/") if parts.path.strip("/") else []
        if not path or not path[0]:
            raise ValueError(f"the sentinel URL {url!r} names no service (…/SERVICE)")
        if len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
            raise ValueError(f"the sentinel URL {url!r} must end in /SERVICE or /SERVICE/DB")
        return cls(
            sentinels=sentinels,
            service=unquote(path[0]),
            db=int(path[1]) if len(path) == 2 else 0,
            username=username,
            password=password,
        )

    def master(self, host: str, port: int) -> RedisAddress:
        """The address of the master at host:port, with this URL's credentials."""
        return RedisAddress(host, port, self.db, self.username, self.password)


def _host_port(item: str, url: str) -> tuple[str, int]:
    if not item:
        raise ValueError(f"an empty sentinel address in {url!r}")
    if item.startswith("["):  # [IPv6]:port
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"a sentinel address without a host in {url!r}: {item!r}")
    if not port_text:
        return host, SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad sentinel port in {url!r}: {item!r}")
    return host, int(port_text)


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SCHEME + "://")
