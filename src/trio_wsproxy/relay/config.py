"""The relay's configuration: one frozen class, mapped one to one onto the command line."""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import urlsplit

import attrs

from ..protocol.sentinel_url import SentinelAddress, is_sentinel_url
from .namespaces import Namespace, check_namespaces, hook_url, namespace_of

DEFAULT_PORT = 8765  # clear of the usual local services (Postgres, Redis, NATS, RabbitMQ, MQTT)
# An HS256 key shorter than the hash's 256 bits weakens every token signed with it
# (RFC 7518 §3.2 requires at least that much), and PyJWT warns at the first token. A
# relay refuses one at start-up rather than run with it.
MIN_TOKEN_SECRET_BYTES = 32


def check_token_secret(secret: str, source: str) -> None:
    """Raise ValueError unless ``secret`` (from ``source``, named in the message) is long
    enough to sign tokens with. The message never holds the secret."""
    size = len(secret.encode())
    if size < MIN_TOKEN_SECRET_BYTES:
        raise ValueError(
            f"{source} is {size} bytes long: an HS256 secret needs at least "
            f"{MIN_TOKEN_SECRET_BYTES} (openssl rand -hex 32 makes one)"
        )


#: Paths under this (and ``/api`` itself) are the HTTP API's (relay/api.py).
API_PREFIX = "/api/"


def under_api(path: str) -> bool:
    """Whether ``path`` is one of the HTTP API's."""
    return path == API_PREFIX[:-1] or path.startswith(API_PREFIX)


#: The shortest HTTP API key accepted, in bytes: a key is a password that never
#: expires, so it must not be guessable (``openssl rand -hex 16`` gives 32).
MIN_API_KEY_BYTES = 16


def check_api_key(key: str, source: str) -> None:
    """Raise ValueError naming ``source`` if ``key`` is too short to be an API key, or
    holds characters an ``Authorization`` header cannot carry."""
    if len(key.encode()) < MIN_API_KEY_BYTES:
        raise ValueError(
            f"{source} is {len(key.encode())} bytes; an API key needs at least "
            f"{MIN_API_KEY_BYTES} (try: openssl rand -hex 16)"
        )
    if not all(33 <= ord(c) <= 126 for c in key):
        raise ValueError(f"{source} must be printable ASCII without spaces")


#: The shortest webhook secret accepted, in bytes: an HMAC key anyone could guess signs
#: forgeries as well as the relay's webhooks.
MIN_WEBHOOK_SECRET_BYTES = 16


def check_webhook_secret(secret: str, source: str) -> None:
    """Raise ValueError naming ``source`` if ``secret`` is too short to sign webhooks."""
    size = len(secret.encode())
    if size < MIN_WEBHOOK_SECRET_BYTES:
        raise ValueError(
            f"{source} is {size} bytes; a webhook secret needs at least "
            f"{MIN_WEBHOOK_SECRET_BYTES} (try: openssl rand -hex 32)"
        )


def check_webhooks(config: RelayConfig) -> None:
    """Raise ValueError for webhook settings that do not go together: a URL needs a
    secret (unsigned webhooks could be forged by anyone who can reach the back end)."""
    secret, secret_file = config.webhook_secret, config.webhook_secret_file
    if secret is not None and secret_file is not None:
        raise ValueError("give the webhook secret once: webhook_secret or webhook_secret_file")
    if secret is not None:
        check_webhook_secret(secret, "webhook_secret (TRIO_WSPROXY_WEBHOOK_SECRET)")
    if config.webhook_url is not None and secret is None and secret_file is None:
        raise ValueError(
            "webhook_url needs a secret to sign the webhooks with: give webhook_secret_file "
            "or set TRIO_WSPROXY_WEBHOOK_SECRET (unsigned webhooks could be forged)"
        )


def _positive(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not (isinstance(value, int | float) and value > 0):
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _positive_or_none(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _positive(instance, attribute, value)


def _count_or_none(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not (isinstance(value, int) and value > 0):
        raise ValueError(f"{attribute.name} must be a positive whole number, got {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not (isinstance(value, int | float) and value >= 0):
        raise ValueError(f"{attribute.name} must be zero or more, got {value!r}")


#: The least ``max_history_bytes`` accepted: below it, a few dozen histories with nothing
#: kept (about 1 KiB each, see relay/history.py) would fill it, and no group could keep
#: a message for long.
MIN_HISTORY_MEMORY = 64 * 1024


def _history_memory(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not (isinstance(value, int) and value >= MIN_HISTORY_MEMORY):
        raise ValueError(
            f"{attribute.name} must be at least {MIN_HISTORY_MEMORY} bytes (64KiB), got {value!r}"
        )


def _valid_path(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.startswith("/") or "?" in value or " " in value:
        raise ValueError(f"{attribute.name} must start with '/' and have no query, got {value!r}")


def _valid_path_or_none(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _valid_path(instance, attribute, value)


#: The highest TCP port. A larger number is no port, and must be refused here: the
#: resolver takes it modulo 65536 (70000 listened on 4464, 65536 on a free port).
MAX_PORT = 65535


def _valid_port(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PORT:
        raise ValueError(
            f"{attribute.name} must be a TCP port from 0 to {MAX_PORT} (0: a free one), "
            f"got {value!r}"
        )


# The names logging knows (DEBUG, INFO, WARNING, ERROR, CRITICAL, and WARN, FATAL,
# NOTSET); the level is checked here, where a typo is a usage error, rather than where
# the loggers are set up, after the listeners are bound.
_LOG_LEVELS = tuple(logging.getLevelNamesMapping())


def _log_level(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not (isinstance(value, str) and value.upper() in _LOG_LEVELS):
        raise ValueError(
            f"{attribute.name} must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL "
            f"(in any case), got {value!r}"
        )


def _setting(
    default: Any, help: str, validator: Any = None, *, env: str | None = None, **kwargs: Any
) -> Any:
    metadata = {"help": help, "env": env}
    return attrs.field(default=default, validator=validator, metadata=metadata, **kwargs)


def _backplane_url(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, str) and is_sentinel_url(value):
        SentinelAddress.from_url(value)  # (ValueError saying what is wrong)
        return
    if value is not None and not (isinstance(value, str) and value.startswith("redis://")):
        raise ValueError(
            "backplane must be a redis://HOST:PORT/DB or "
            f"redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE URL, got {value!r}"
        )


def _valid_prefix(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError(f"backplane_prefix must be a non-empty word, got {value!r}")


def _origins(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    # Browsers send the scheme and host in lower case, and no trailing slash.
    return tuple(origin.strip().removesuffix("/").lower() for origin in value if origin.strip())


def _cookie_names(value: Any) -> tuple[str, ...]:
    """A comma-separated list (or a list) of names, blanks dropped."""
    if isinstance(value, str):
        value = value.split(",")
    return tuple(name.strip() for name in value if name.strip())


def _header_names(value: Any) -> tuple[str, ...]:
    """Header names (any case: HTTP's are not case-sensitive), lower-cased."""
    return tuple(name.lower() for name in _cookie_names(value))


#: What a hook that cannot be asked decides (RelayConfig.hook_failure).
HOOK_FAILURES = ("refuse", "allow")


# What a browser's Origin header holds (RFC 6454): a scheme, "://", a host and perhaps
# a port. Nothing else can ever be equal to one.
_ORIGIN_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def origin_problem(origin: str) -> str | None:
    """Why ``origin`` could never equal a browser's ``Origin`` header (no scheme, a path,
    a user, a query, a port out of range), or None when it could."""
    scheme, separator, _ = origin.partition("://")
    if not separator or not _ORIGIN_SCHEME.fullmatch(scheme):
        return "has no scheme"
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return "has a port that is not one (0-65535)"
    if not parts.hostname or "@" in parts.netloc:
        return "has no valid host"
    if parts.path or parts.query or parts.fragment or origin.endswith(("?", "#")):
        return "has a path or query (an origin ends after the host and port)"
    if port is not None and _DEFAULT_PORTS.get(scheme) == port:
        host = parts.netloc.rsplit(":", 1)[0]
        return f"names its scheme's default port, which browsers leave out ({scheme}://{host})"
    return None


def _valid_origins(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    for origin in value:
        problem = origin_problem(origin)
        if problem is not None:
            raise ValueError(
                f"{attribute.name} must be origins as browsers send them, "
                f"scheme://host[:port] such as https://example.com: {origin!r} {problem}"
            )


@attrs.frozen(kw_only=True)
class RelayConfig:
    """Everything the relay can be told. Each field is also a flag of ``trio-wsproxy
    serve`` (``max_message_size`` is ``--max-message-size``); its help is the flag's."""

    host: str = _setting("127.0.0.1", "Interface to listen on.")
    port: int = _setting(DEFAULT_PORT, "TCP port (0-65535); 0 picks a free one.", _valid_port)
    path: str = _setting("/ws", "URL path of the WebSocket endpoint.", _valid_path)
    max_message_size: int | None = _setting(
        None,
        "Largest message a member may send, in bytes (close 1009 over it); none: no limit.",
        _positive_or_none,
    )
    compression: int | None = _setting(
        256,
        "permessage-deflate with members that offer it: messages of at least this many "
        "bytes are compressed, once per message for all such members; none: off.",
        _positive_or_none,
    )
    certfile: str | None = _setting(
        None, "TLS certificate chain (PEM); serves wss:// with keyfile."
    )
    keyfile: str | None = _setting(None, "TLS private key (PEM).")
    log_level: str | None = _setting(
        None,
        "Level of the trio_wsproxy loggers: DEBUG, INFO, WARNING, ERROR or CRITICAL.",
        _log_level,
    )
    mailbox_bytes: int = _setting(
        4 * 1024 * 1024, "Bytes queued for one member before senders to it wait.", _positive
    )
    max_buffered_bytes: int | None = _setting(
        512 * 1024 * 1024,
        "Bytes of unfinished messages the relay holds for all members together; over it, "
        "members gathering large ones wait their turn to be read; none: no bound.",
        _positive_or_none,
    )
    slow_member_timeout: float = _setting(
        10.0, "Seconds a member's mailbox may stay full before it is closed (4001).", _non_negative
    )
    ping_interval: float | None = _setting(
        30.0,
        "Seconds of silence before the relay pings a member; none: no pings.",
        _positive_or_none,
    )
    ping_timeout: float = _setting(
        20.0, "Seconds a pinged member has to answer before it is closed (4003).", _positive
    )
    stream_timeout: float = _setting(
        30.0,
        "Seconds a member streaming a large message may take for its next piece (about "
        "1 MiB) while its group waits; then it is closed (1008) and its recipients get 4002. "
        "An HTTP API post is held to the same pace (then 408).",
        _positive,
    )
    presence_limit: int = _setting(
        1000,
        "Largest group whose wsproxy.v1 members get its member list and join/leave "
        "events; a larger group tells them its size only.",
        _positive,
    )
    history_size: int | None = _setting(
        None,
        "Messages each group keeps so that a reconnecting wsproxy.v1 member gets what it "
        "missed (with history_ttl and history_bytes); none: no history.",
        _positive_or_none,
    )
    history_ttl: float = _setting(
        300.0, "Seconds a message stays in its group's history.", _positive
    )
    history_bytes: int = _setting(
        1024 * 1024,
        "Payload bytes each group's history keeps at most (a larger message is noted "
        "but not kept: recovery across it fails).",
        _positive,
    )
    max_history_bytes: int | None = _setting(
        128 * 1024 * 1024,
        "Memory all groups' histories hold together, in bytes, counting each kept "
        "message's overhead and the histories of groups that emptied; over it, those go "
        "first (the longest emptied first), then the oldest messages relay-wide; "
        "none: no bound.",
        _history_memory,
    )
    max_history_groups: int | None = _setting(
        10_000,
        "Most groups with a history at once, those that emptied included (the longest "
        "emptied goes to make room); a new group finding them all taken by groups with "
        "members keeps none; none: no limit.",
        _count_or_none,
    )
    handshake_timeout: float = _setting(
        10.0, "Seconds a new connection has to send its whole upgrade request.", _positive
    )
    max_handshake_size: int = _setting(
        16384, "Largest upgrade request head, in bytes (431 over it).", _positive
    )
    max_id_length: int = _setting(
        256, "Longest id and groupName accepted, in characters (400 over it).", _positive
    )
    close_timeout: float = _setting(
        3.0,
        "Seconds a closing session has to deliver its close frame and hear the answer "
        "before its connection is dropped; bounds shutdown too.",
        _positive,
    )

    healthz_path: str | None = _setting(
        "/healthz",
        "Plain-HTTP readiness check path: 200 while the relay admits members, 503 and why "
        "while it cannot (backplane unreachable, shutting down); none: off.",
        _valid_path_or_none,
    )
    livez_path: str | None = _setting(
        "/livez",
        "Plain-HTTP liveness check path: 200 whenever the process answers at all (also "
        "while the backplane is unreachable); none: off.",
        _valid_path_or_none,
    )
    metrics_path: str | None = _setting(
        "/metrics",
        "Plain-HTTP Prometheus metrics path on the relay's port; none: off.",
        _valid_path_or_none,
    )
    demo: bool = _setting(
        False,
        "Serve the browser demo page at /demo/ and the JavaScript client at "
        "/demo/wsproxy.js on the relay's port (nothing else is reachable through it).",
    )
    token_secret: str | None = _setting(
        None,
        "HS256 secret: every connection must then present a token. Never a flag, so it "
        "stays out of process lists: set it from the environment or token_secret_file.",
        env="TRIO_WSPROXY_TOKEN_SECRET",
        repr=False,
    )
    token_secret_file: str | None = _setting(
        None, "File holding the HS256 token secret (turns tokens on)."
    )
    token_public_key_file: str | None = _setting(
        None,
        "File holding an identity provider's public key (PEM: RSA for RS256, P-256 for "
        "ES256, Ed25519 for EdDSA) that tokens are checked with (turns tokens on).",
    )
    jwks_url: str | None = _setting(
        None,
        "URL of an identity provider's published keys (JWKS) that its tokens are checked "
        "with, fetched at start-up, every jwks_refresh seconds and on an unknown key id "
        "(turns tokens on).",
    )
    jwks_refresh: float = _setting(
        300.0, "Seconds between two fetches of the JWKS (jwks_url).", _positive
    )
    token_issuer: str | None = _setting(
        None, "The iss a token must name (an identity provider's URL); none: not checked."
    )
    token_audience: str | None = _setting(
        None, "The aud a token must name (this relay's client id); none: not checked."
    )
    token_id_claim: str = _setting(
        "sub", "The token claim that names the member id.", attrs.validators.min_len(1)
    )
    token_groups_claim: str = _setting(
        "groups",
        "The token claim that lists the groups (or prefix*es) the member may join.",
        attrs.validators.min_len(1),
    )
    api_key: str | None = _setting(
        None,
        "Key of the HTTP API for back ends (/api/...): every call must then present it as "
        "Authorization: Bearer KEY. Never a flag: set it from the environment or "
        "api_key_file.",
        env="TRIO_WSPROXY_API_KEY",
        repr=False,
    )
    api_key_file: str | None = _setting(
        None, "File holding the HTTP API's key (turns the API on at /api/)."
    )
    connect_hook: str | None = _setting(
        None,
        "URL the relay POSTs each connection to before its upgrade, for the back end to "
        "allow it (and set its id, groups and info) or refuse it (docs/backend.md).",
        hook_url,
    )
    join_hook: str | None = _setting(
        None,
        "URL the relay POSTs each join of a group to (the URL's and every later one), for "
        "the back end to allow or refuse; the default of namespaces that set none.",
        hook_url,
    )
    publish_hook: str | None = _setting(
        None,
        "URL the relay POSTs each member's message to before it reaches the group, for the "
        "back end to allow, refuse or replace; the default of namespaces that set none.",
        hook_url,
    )
    hook_timeout: float = _setting(
        2.0,
        "Seconds the back end has to answer a hook (a wait for a free call counts); then "
        "hook_failure decides.",
        _positive,
    )
    hook_failure: str = _setting(
        "refuse",
        "What a hook that times out, fails or answers nonsense decides: refuse (503 for a "
        "connection, an error event for a join or a message) or allow.",
        attrs.validators.in_(HOOK_FAILURES),
    )
    max_hook_calls: int = _setting(
        100,
        "Hook calls in flight at once on this node; more wait (within hook_timeout).",
        _positive,
    )
    hook_headers: tuple[str, ...] = _setting(
        (),
        "Comma-separated request headers the connect hook is given (lower-cased names).",
        converter=_header_names,
    )
    hook_cookies: tuple[str, ...] = _setting(
        (), "Comma-separated cookies the connect hook is given.", converter=_cookie_names
    )
    webhook_url: str | None = _setting(
        None,
        "URL the relay POSTs its webhooks to (members' joins and leaves, groups occupied "
        "and vacated, batched and signed: see docs/backend.md); needs a webhook secret.",
        hook_url,
    )
    webhook_secret: str | None = _setting(
        None,
        "Secret the webhooks are signed with (HMAC-SHA256). Never a flag: set it from "
        "the environment or webhook_secret_file.",
        env="TRIO_WSPROXY_WEBHOOK_SECRET",
        repr=False,
    )
    webhook_secret_file: str | None = _setting(
        None, "File holding the secret the webhooks are signed with."
    )
    webhook_interval: float = _setting(
        0.5,
        "Seconds between two webhook requests at most once each (events in between go "
        "together in one body); also the first retry's wait.",
        _positive,
    )
    webhook_queue: int = _setting(
        10_000,
        "Most webhook events held unsent; beyond it new events are dropped, counted and logged.",
        _positive,
    )
    webhook_timeout: float = _setting(
        5.0,
        "Seconds a webhook request may take before it counts as failed (and is retried).",
        _positive,
    )
    allowed_origins: tuple[str, ...] = _setting(
        (),
        "Comma-separated browser origins allowed to connect (403 for others); "
        "requests without an Origin header are not browsers and pass. Each is "
        "scheme://host[:port], as browsers send it (https://example.com).",
        _valid_origins,
        converter=_origins,
    )
    max_members: int | None = _setting(
        None,
        "Most members the relay holds (503 before the upgrade); none: no limit.",
        _positive_or_none,
    )
    max_group_members: int | None = _setting(
        None,
        "Most members in one group (503 before the upgrade); none: no limit.",
        _positive_or_none,
    )
    max_groups: int | None = _setting(
        None,
        "Most groups at once (503 for a member that would open another); none: no limit.",
        _positive_or_none,
    )
    max_groups_per_member: int = _setting(
        1000,
        "Most groups one connection may be in at once (wsproxy.v1 joins past it are "
        "refused with the error event group_limit; the connection stays).",
        _positive,
    )
    ban_seconds: float = _setting(
        60.0,
        "Seconds a member removed through the HTTP API (DELETE .../members/{id}) stays "
        "out of its group: its joins are refused with 403 (each call may say ?ban=SECONDS; "
        "0: no ban). A token issued after the removal, or DELETE .../bans/{id}, lets it "
        "back in.",
        _non_negative,
    )
    token_refresh_margin: float = _setting(
        30.0,
        "Seconds before its token expires that a wsproxy.v1 member is told so "
        "(token_expiring), to send a new one; without one it is closed with 4006.",
        _positive,
    )
    revocation_seconds: float = _setting(
        3600.0,
        "Seconds a revocation (POST /api/revocations) lasts unless the call says: a "
        "subject's tokens issued before it, or a token id, are refused that long (make "
        "it longer than your tokens live).",
        _positive,
    )
    max_connections_per_address_rate: float | None = _setting(
        None,
        "New WebSocket connections per second one remote address may open, in bursts of "
        "as many (429 with Retry-After before the upgrade over it); none: no limit.",
        _positive_or_none,
    )
    max_message_rate: float | None = _setting(
        None,
        "Messages per second one member may send; the relay reads no faster.",
        _positive_or_none,
    )
    max_byte_rate: int | None = _setting(
        None,
        "Bytes per second one member may send; the relay reads no faster.",
        _positive_or_none,
    )
    max_subject_message_rate: float | None = _setting(
        None,
        "Messages per second one subject (the member id: with tokens, the token's id "
        "claim) may send over all its connections, on every node, in bursts of as many; "
        "the relay reads no faster. None: no limit.",
        _positive_or_none,
    )
    log_format: str = _setting(
        "text",
        "Log line format of the command line: text, or json for log shippers.",
        attrs.validators.in_(("text", "json")),
    )

    backplane: str | None = _setting(
        None,
        "redis://HOST:PORT/DB of the Redis that joins relay nodes into one relay, or "
        "redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB] to find its master through "
        "Redis Sentinel and follow its failovers; "
        "none: this process is the whole relay.",
        _backplane_url,
    )
    backplane_prefix: str = _setting(
        "trio-wsproxy",
        "Prefix of every Redis key and channel, so several clusters can share one Redis.",
        _valid_prefix,
    )
    node_ttl: float = _setting(
        10.0,
        "Seconds after which a node that stopped refreshing its registration (killed, "
        "cut off) counts as gone, and its members as left.",
        _positive,
    )
    workers: int = _setting(
        1,
        "Processes serving the port together (SO_REUSEPORT); more than 1 needs backplane.",
        attrs.validators.ge(1),
    )
    reuse_port: bool = _setting(
        False, "Set SO_REUSEPORT, so several relay processes can listen on one port."
    )
    shared_poller: bool = _setting(
        True,
        "Read the sockets of members with nothing unusual going on in one task, a "
        "wake-up per scheduling turn instead of one per message (Linux; plain TCP).",
    )
    namespaces: tuple[Namespace, ...] = attrs.field(
        default=(),
        converter=tuple,
        metadata={
            "help": "Group-name prefixes with policies of their own (the config file's "
            "[namespaces.NAME] tables; see relay/namespaces.py).",
            "env": None,
            "file_only": True,
        },
    )

    def __attrs_post_init__(self) -> None:
        if self.workers > 1 and self.backplane is None:
            raise ValueError("workers > 1 needs a backplane: without one, each is its own relay")
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("certfile and keyfile go together: give both or neither")
        if self.token_secret is not None and self.token_secret_file is not None:
            raise ValueError("give the token secret once: token_secret or token_secret_file")
        if self.token_secret == "":
            raise ValueError("token_secret is empty")
        if self.token_secret is not None:
            check_token_secret(self.token_secret, "token_secret (TRIO_WSPROXY_TOKEN_SECRET)")
        taken: dict[str, str] = {}
        for name in ("path", "healthz_path", "livez_path", "metrics_path"):
            value = getattr(self, name)
            if value is None:
                continue
            if under_api(value):
                raise ValueError(f"{name} {value!r} is under /api/, the HTTP API's paths")
            if value in taken:
                raise ValueError(
                    f"{taken[value]} and {name} are both {value!r}: give each a path of its own"
                )
            taken[value] = name
        if self.api_key is not None and self.api_key_file is not None:
            raise ValueError("give the API key once: api_key or api_key_file")
        if self.api_key is not None:
            check_api_key(self.api_key, "api_key (TRIO_WSPROXY_API_KEY)")
        check_webhooks(self)
        check_namespaces(self.namespaces)

    def namespace(self, group: str) -> Namespace | None:
        """The namespace the group ``group`` is in (its longest prefix), or None."""
        return namespace_of(self.namespaces, group) if self.namespaces else None

    def compression_for(self, group: str) -> int | None:
        """From how many bytes messages of ``group`` go compressed to members that agreed
        to permessage-deflate: its namespace's setting, else the relay's (None: never)."""
        namespace = self.namespace(group)
        if namespace is None or namespace.compression is None:
            return self.compression
        return namespace.compression or None

    def hook_for(self, hook: str, group: str) -> tuple[str, bool] | None:
        """The ``hook`` (``"join"``, ``"publish"``) asked for ``group``: its URL, and
        whether a failure to ask it allows (its namespace's, else the relay's); None:
        none is asked."""
        namespace = self.namespace(group)
        url = None if namespace is None else getattr(namespace, f"{hook}_hook")
        if url is None:
            url = getattr(self, f"{hook}_hook")
            if url is None:
                return None
        failure = None if namespace is None else namespace.hook_failure
        return url, (failure or self.hook_failure) == "allow"

    @property
    def tls(self) -> bool:
        """Whether the relay serves wss://."""
        return self.certfile is not None
