"""The relay's listening sockets: plain, or shared with other relay processes on one
port through SO_REUSEPORT (``--workers``); and paced, so that running out of file
descriptors is waited out with a warning now and then, not a traceback ten times a
second."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Sequence

import trio

from .config import RelayConfig
from .counters import Counters

logger = logging.getLogger("trio_wsproxy.relay")

# accept(2) errors that say the process or the system is short of something (file
# descriptors, kernel memory), not that the listener is broken: the connection stays in
# the backlog and a later accept can take it. The set trio.serve_listeners retries on.
CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# How long a listener waits after such an error before it tries again, as trio does:
# nothing frees a descriptor within microseconds, so trying sooner would only spin, and
# a tenth of a second is still no delay a connecting client notices.
RETRY_DELAY = 0.1
# At most one warning per this many seconds while accepts keep failing. A relay at its
# limit retries ten times a second and every line would say the same thing; one every
# ten seconds, with the count since the last, tells an operator at once that (and how
# much) the relay is turning connections away without filling the log.
WARNING_INTERVAL = 10.0


async def open_listeners(config: RelayConfig) -> list[trio.SocketListener]:
    """Bind and listen on ``config``'s host and port, with SO_REUSEPORT if it asks.

    Without ``reuse_port`` this is :func:`trio.open_tcp_listeners`. With it, see
    :func:`bind_reuseport`: other relay processes can bind the same port, and the kernel
    spreads new connections across them."""
    if not config.reuse_port:
        return await trio.open_tcp_listeners(config.port, host=config.host or None)
    sockets = await bind_reuseport(config)
    for sock in sockets:
        sock.listen(1024)
    return [trio.SocketListener(sock) for sock in sockets]


async def bind_reuseport(config: RelayConfig) -> list[trio.socket.SocketType]:
    """Bind (without listening) a SO_REUSEPORT socket on each of ``config``'s addresses,
    all on one port: ``config.port``, or with 0 the port the first address gets.

    Raises OSError when the port is taken by a socket without SO_REUSEPORT, or the
    address is not available."""
    if not hasattr(trio.socket, "SO_REUSEPORT"):
        raise OSError("this platform has no SO_REUSEPORT")
    addresses = await trio.socket.getaddrinfo(
        config.host or None,
        config.port,
        type=trio.socket.SOCK_STREAM,
        flags=trio.socket.AI_PASSIVE | trio.socket.AI_ADDRCONFIG,
    )
    port = config.port
    sockets: list[trio.socket.SocketType] = []
    try:
        for family, kind, proto, _, address in addresses:
            sock = trio.socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
            if family == trio.socket.AF_INET6:
                sock.setsockopt(trio.socket.IPPROTO_IPV6, trio.socket.IPV6_V6ONLY, 1)
            await sock.bind((address[0], port, *address[2:]))
            port = sock.getsockname()[1]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class AcceptFailureLog:
    """The log lines about failed accepts of one relay's listeners: a WARNING at the
    first failure, then at most one per :data:`WARNING_INTERVAL` with the count of
    failures since the previous one, and a WARNING when accepting works again."""

    def __init__(self) -> None:
        #: When the last warning of the current shortage was logged; None: no shortage.
        self._warned_at: float | None = None
        self._since_warning = 0
        self._in_shortage = 0

    def failed(self, exc: OSError) -> None:
        """One accept failed with ``exc`` (one of :data:`CAPACITY_ERRNOS`)."""
        self._since_warning += 1
        self._in_shortage += 1
        now = trio.current_time()
        if self._warned_at is not None and now - self._warned_at < WARNING_INTERVAL:
            return
        code = exc.errno if exc.errno is not None else 0
        logger.warning(
            "cannot accept connections: %s (%s); retrying every %gs, new connections wait "
            "in the listen backlog (failed accepts since %s: %d)",
            errno.errorcode.get(code, str(code)),
            os.strerror(code),
            RETRY_DELAY,
            "the shortage began" if self._warned_at is None else "the last warning",
            self._since_warning,
            extra={"failures": self._since_warning},
        )
        self._warned_at = now
        self._since_warning = 0

    def accepted(self) -> None:
        """An accept succeeded: ends a shortage, if there was one."""
        if self._warned_at is None:
            return
        logger.warning(
            "accepting connections again (failed accepts in the shortage: %d)",
            self._in_shortage,
            extra={"failures": self._in_shortage},
        )
        self._warned_at = None
        self._since_warning = self._in_shortage = 0


class PacedListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose :meth:`accept` waits out a shortage of file descriptors or
    memory: each failure with one of :data:`CAPACITY_ERRNOS` is counted in
    ``counters.accept_failures`` and reported through ``log`` (shared by the listeners
    of one relay, so that they report together), and the accept is tried again
    :data:`RETRY_DELAY` seconds later. Any other error propagates."""

    def __init__(
        self,
        listener: trio.abc.Listener[trio.abc.Stream],
        counters: Counters,
        log: AcceptFailureLog | None = None,
    ) -> None:
        self.listener = listener
        self._counters = counters
        self._log = log if log is not None else AcceptFailureLog()

    async def accept(self) -> trio.abc.Stream:
        while True:
            try:
                stream = await self.listener.accept()
            except OSError as exc:
                if exc.errno not in CAPACITY_ERRNOS:
                    raise
                self._counters.accept_failures += 1
                self._log.failed(exc)
                await trio.sleep(RETRY_DELAY)
            else:
                self._log.accepted()
                return stream

    async def aclose(self) -> None:
        await self.listener.aclose()


def paced(
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]], counters: Counters
) -> list[trio.abc.Listener[trio.abc.Stream]]:
    """``listeners``, each wrapped in a :class:`PacedListener` counting into
    ``counters``, all reporting through one :class:`AcceptFailureLog`."""
    log = AcceptFailureLog()
    return [PacedListener(listener, counters, log) for listener in listeners]
