"""The relay's listening sockets: plain, or shared with other relay processes on one
port through SO_REUSEPORT (``--workers``)."""

from __future__ import annotations

import trio

from .config import RelayConfig


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
