"""trio_wsproxy: a Trio relay and typed client for client-to-client WebSocket messaging.

Clients join a group on a relay (``ws://HOST:PORT/ws?id=ID&groupName=GROUP``); whatever
one member sends, every other member receives. Wire-compatible with the .NET library
EasyWebSocketProxy.
"""

# First: it chooses the relay's hot path, compiled or pure, before anything imports it.
from . import _hot_path
from ._serve import TLSConfigError, open_relay, serve_relay
from .backplane.redis import RedisBackplane
from .client.client import (
    DEFAULT_RECONNECT_CODES,
    BadMessage,
    BadMessageKind,
    BinaryStream,
    Client,
    ClientClosed,
    ClientConfig,
    ClientError,
    ClientStats,
    ClosedByRelay,
    ConnectError,
    DeliveryFailed,
    Disconnected,
    GroupHandle,
    HandshakeRefused,
    Incoming,
    Joined,
    JoinRefused,
    Left,
    MemberNotFound,
    NotConnected,
    NotInGroup,
    Position,
    ReplyError,
    RequestTimeout,
    Resumed,
    SentMessage,
    StreamInterrupted,
    StreamSource,
    UnsupportedByRelay,
    open_client,
)
from .config_file import ConfigFileError, load_config
from .protocol.close_codes import CloseCode
from .protocol.envelope import (
    EMPTY_GUID,
    Envelope,
    EnvelopeError,
    decode_envelope,
    encode_envelope,
)
from .protocol.tokens import check_token, mint_token
from .protocol.typenames import (
    PayloadError,
    TypeRegistry,
    check_sendable,
    dotnet_generic_name,
    message_type,
)
from .protocol.version import VERSION
from .relay.config import DEFAULT_PORT, RelayConfig
from .relay.groups import Group, GroupRegistry, LocalRegistry
from .relay.namespaces import Namespace
from .relay.relay import Relay, RelayStats

#: The installed distribution's version (``pyproject.toml``'s), e.g. ``"0.1.0"``.
__version__ = VERSION
del VERSION

#: Which relay hot path runs: ``"compiled"`` (a build with ``TRIO_WSPROXY_COMPILE=1``)
#: or ``"pure"`` (Python); ``TRIO_WSPROXY_HOT_PATH`` chooses at import (_hot_path.py).
HOT_PATH = _hot_path.in_use(_hot_path.CHOICE)

# __version__ and HOT_PATH are module metadata rather than API, so, as in trio, they are
# not in __all__: a star import does not bring them in, and the loop at the end leaves
# them alone.
__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_RECONNECT_CODES",
    "EMPTY_GUID",
    "BadMessage",
    "BadMessageKind",
    "BinaryStream",
    "Client",
    "ClientClosed",
    "ClientConfig",
    "ClientError",
    "ClientStats",
    "CloseCode",
    "ClosedByRelay",
    "ConfigFileError",
    "ConnectError",
    "DeliveryFailed",
    "Disconnected",
    "Envelope",
    "EnvelopeError",
    "Group",
    "GroupHandle",
    "GroupRegistry",
    "HandshakeRefused",
    "Incoming",
    "JoinRefused",
    "Joined",
    "Left",
    "LocalRegistry",
    "MemberNotFound",
    "Namespace",
    "NotConnected",
    "NotInGroup",
    "PayloadError",
    "Position",
    "RedisBackplane",
    "Relay",
    "RelayConfig",
    "RelayStats",
    "ReplyError",
    "RequestTimeout",
    "Resumed",
    "SentMessage",
    "StreamInterrupted",
    "StreamSource",
    "TLSConfigError",
    "TypeRegistry",
    "UnsupportedByRelay",
    "check_sendable",
    "check_token",
    "decode_envelope",
    "dotnet_generic_name",
    "encode_envelope",
    "load_config",
    "message_type",
    "mint_token",
    "open_client",
    "open_relay",
    "serve_relay",
]

# The public path in reprs, tracebacks and the API reference (trio does the same): the
# names live in private modules of the layers, and users know them as trio_wsproxy.X.
for _name in __all__:
    _value = globals()[_name]
    if getattr(_value, "__module__", "").startswith("trio_wsproxy."):
        try:
            _value.__module__ = __name__
        except (AttributeError, TypeError):  # (constants and frozensets have none to set)
            pass
del _name, _value
