"""The relay's configuration: one frozen class, mapped one to one onto the command line."""

from __future__ import annotations

from typing import Any

import attrs

DEFAULT_PORT = 8765  # clear of the usual local services (Postgres, Redis, NATS, RabbitMQ, MQTT)


def _positive(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not (isinstance(value, int | float) and value > 0):
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _positive_or_none(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _positive(instance, attribute, value)


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not (isinstance(value, int | float) and value >= 0):
        raise ValueError(f"{attribute.name} must be zero or more, got {value!r}")


def _valid_path(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.startswith("/") or "?" in value or " " in value:
        raise ValueError(f"path must start with '/' and have no query, got {value!r}")


def _setting(default: Any, help: str, validator: Any = None) -> Any:
    return attrs.field(default=default, validator=validator, metadata={"help": help})


@attrs.frozen(kw_only=True)
class RelayConfig:
    """Everything the relay can be told. Each field is also a flag of ``trio-wsproxy
    serve`` (``max_message_size`` is ``--max-message-size``); its help is the flag's."""

    host: str = _setting("127.0.0.1", "Interface to listen on.")
    port: int = _setting(DEFAULT_PORT, "TCP port; 0 picks a free one.", attrs.validators.ge(0))
    path: str = _setting("/ws", "URL path of the WebSocket endpoint.", _valid_path)
    max_message_size: int | None = _setting(
        None,
        "Largest message a member may send, in bytes (close 1009 over it); none: no limit.",
        _positive_or_none,
    )
    certfile: str | None = _setting(
        None, "TLS certificate chain (PEM); serves wss:// with keyfile."
    )
    keyfile: str | None = _setting(None, "TLS private key (PEM).")
    log_level: str | None = _setting(
        None, "Level of the trio_wsproxy loggers (DEBUG, INFO, WARNING, ...)."
    )
    mailbox_bytes: int = _setting(
        4 * 1024 * 1024, "Bytes queued for one member before senders to it wait.", _positive
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

    def __attrs_post_init__(self) -> None:
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("certfile and keyfile go together: give both or neither")

    @property
    def tls(self) -> bool:
        """Whether the relay serves wss://."""
        return self.certfile is not None
