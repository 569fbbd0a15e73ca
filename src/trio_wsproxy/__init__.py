"""trio_wsproxy: a Trio relay and typed client for client-to-client WebSocket messaging.

Clients join a group on a relay (``ws://HOST:PORT/ws?id=ID&groupName=GROUP``); whatever
one member sends, every other member receives. Wire-compatible with the .NET library
EasyWebSocketProxy.
"""

from ._close_codes import CloseCode
from ._config import DEFAULT_PORT, RelayConfig
from ._groups import Group, GroupRegistry, LocalRegistry
from ._relay import Relay, RelayStats, open_relay, serve_relay

__all__ = [
    "DEFAULT_PORT",
    "CloseCode",
    "Group",
    "GroupRegistry",
    "LocalRegistry",
    "Relay",
    "RelayConfig",
    "RelayStats",
    "open_relay",
    "serve_relay",
]
