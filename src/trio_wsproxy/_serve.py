"""Serving a relay: choosing its registry (in-process, or the Redis backplane), its
token secret and its TLS certificate, for the Python API and the command line."""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NoReturn

import trio

from .backplane.redis import RedisBackplane
from .protocol.exceptions import raise_sole_error
from .protocol.tokens import TokenVerifier
from .relay.config import RelayConfig, check_api_key, check_token_secret, check_webhook_secret
from .relay.groups import GroupRegistry, LocalRegistry
from .relay.jwks import JwksKeys
from .relay.relay import MetricsView, Relay, run_relay


async def serve_relay(
    config: RelayConfig | None = None,
    *,
    registry: GroupRegistry | None = None,
    task_status: trio.TaskStatus[Relay] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a relay until cancelled: ``relay = await nursery.start(serve_relay, config)``.

    The listeners are bound before ``nursery.start`` returns the :class:`Relay`.
    Cancelling closes every session with 1001 (each gets ``close_timeout`` to finish its
    close handshake) and then returns. Without ``registry``, the config's ``backplane``
    decides: the Redis backplane if one is set, else the in-process registry.
    """
    await serve_worker_relay(config or RelayConfig(), registry, None, task_status=task_status)


async def serve_worker_relay(
    config: RelayConfig,
    registry: GroupRegistry | None,
    metrics_view: MetricsView | None,
    *,
    task_status: trio.TaskStatus[Relay] = trio.TASK_STATUS_IGNORED,
) -> None:
    """:func:`serve_relay`, and ``metrics_view`` for ``/metrics`` (a worker of several
    answers for the whole relay: see ``_workers``)."""
    # A certificate the relay cannot use is named, with what is wrong with it, before
    # anything is bound (run_relay loads it again, unchanged, to make its listeners).
    load_tls_context(config)
    if config.log_level is not None:
        logging.getLogger("trio_wsproxy").setLevel(config.log_level.upper())
    if registry is None:
        registry = choose_registry(config)
    await run_relay(
        config,
        registry,
        read_token_verifier(config),
        api_key=read_api_key(config),
        metrics_view=metrics_view,
        webhook_secret=read_webhook_secret(config),
        task_status=task_status,
    )


def choose_registry(config: RelayConfig) -> GroupRegistry:
    """The registry ``config`` asks for: the Redis backplane, or the in-process one."""
    if config.backplane is not None:
        return RedisBackplane(config.backplane, config.backplane_prefix, config.node_ttl)
    return LocalRegistry()


@asynccontextmanager
async def open_relay(config: RelayConfig | None = None) -> AsyncIterator[Relay]:
    """Run a relay for the duration of an ``async with`` block (tests, embedding)::

    async with open_relay(RelayConfig(port=0)) as relay:
        ...  # connect to relay.url
    """
    try:
        async with trio.open_nursery() as nursery:
            relay: Relay = await nursery.start(serve_relay, config)
            try:
                yield relay
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The relay itself does not fail; an error here almost always comes from the
        # caller's block, which should see its own exception, not a group of one.
        raise_sole_error(group)


def read_token_secret(config: RelayConfig) -> str | None:
    """The token secret ``config`` gives (directly or in a file); None when tokens are off.

    Raises OSError when the file cannot be read, and ValueError when it is empty or
    holds a secret shorter than :data:`~trio_wsproxy.relay.config.MIN_TOKEN_SECRET_BYTES`
    (leading and trailing whitespace, such as the final newline, is not part of it)."""
    if config.token_secret_file is None:
        return config.token_secret
    secret = read_secret_file(config.token_secret_file, "token secret")
    check_token_secret(secret, f"the secret in token secret file {config.token_secret_file!r}")
    return secret


def read_token_verifier(config: RelayConfig) -> TokenVerifier | None:
    """What ``config`` checks tokens with (its secret, its identity provider's public
    key, both); None when tokens are off. Raises OSError for a file that cannot be read
    and ValueError for a key or secret that cannot be used, naming the file."""
    secret = read_token_secret(config)
    pem = None
    if config.token_public_key_file is not None:
        with open(config.token_public_key_file, "rb") as file:
            pem = file.read()
    key_set = None
    if config.jwks_url is not None:
        key_set = JwksKeys(config.jwks_url, config.jwks_refresh)
    if secret is None and pem is None and key_set is None:
        for name in ("token_issuer", "token_audience"):
            if getattr(config, name) is not None:
                raise ValueError(f"{name} checks tokens, but tokens are off (no secret, no key)")
        return None
    try:
        return TokenVerifier.of(
            secret,
            pem,
            key_set=key_set,
            issuer=config.token_issuer,
            audience=config.token_audience,
            id_claim=config.token_id_claim,
            groups_claim=config.token_groups_claim,
        )
    except ValueError as exc:
        raise ValueError(f"token public key file {config.token_public_key_file!r}: {exc}") from None


def read_api_key(config: RelayConfig) -> str | None:
    """The HTTP API's key ``config`` gives (directly or in a file); None when the API is
    off. Raises as :func:`read_token_secret` does (a key shorter than
    :data:`~trio_wsproxy.relay.config.MIN_API_KEY_BYTES` is refused)."""
    if config.api_key_file is None:
        return config.api_key
    key = read_secret_file(config.api_key_file, "API key")
    check_api_key(key, f"the key in API key file {config.api_key_file!r}")
    return key


def read_webhook_secret(config: RelayConfig) -> str | None:
    """The secret ``config``'s webhooks are signed with (from the environment, or its
    file, whitespace around it stripped); None when none is given. Raises as
    :func:`read_token_secret` does (a secret shorter than
    :data:`~trio_wsproxy.relay.config.MIN_WEBHOOK_SECRET_BYTES` is refused)."""
    if config.webhook_secret_file is None:
        return config.webhook_secret
    secret = read_secret_file(config.webhook_secret_file, "webhook secret")
    check_webhook_secret(
        secret, f"the secret in webhook secret file {config.webhook_secret_file!r}"
    )
    return secret


def read_secret_file(path: str, what: str) -> str:
    """The secret in file ``path``, leading and trailing whitespace (such as the final
    newline) stripped; ``what`` names it in errors ("token secret", "API key").

    Raises OSError, naming the file, when it cannot be read, and ValueError when it is not
    UTF-8 text or holds nothing but whitespace."""
    try:
        with open(path, encoding="utf-8") as file:
            secret = file.read().strip()
    except OSError as error:
        # Named, with the system's reason: "[Errno 2] No such file or directory: '/x'"
        # does not say which setting it is about.
        reason = error.strerror or str(error)
        raise type(error)(f"cannot read {what} file {path!r}: {reason}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{what} file {path!r} is not UTF-8 text") from None
    if not secret:
        raise ValueError(f"{what} file {path!r} is empty")
    return secret


class TLSConfigError(OSError):
    """The relay's certificate or key cannot be used: a file is missing or unreadable,
    is not PEM, holds the wrong thing (a key for a certificate: swapped), is encrypted,
    or the key does not belong to the certificate. The message names the file and says
    which; :attr:`path` is that file. An :exc:`OSError`, as file errors always were."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        #: The file at fault (the key file when the two do not match).
        self.path = path


# A PEM block's first line names what it holds: "CERTIFICATE", "PRIVATE KEY",
# "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY", ...
_PEM_LABEL = re.compile(rb"^-----BEGIN ([A-Z0-9 ]+)-----\s*$", re.MULTILINE)
_CERTIFICATE_LABELS = frozenset({b"CERTIFICATE", b"TRUSTED CERTIFICATE"})
_CERTIFICATE_BLOCK = re.compile(
    rb"-----BEGIN (?:TRUSTED )?CERTIFICATE-----.*?-----END (?:TRUSTED )?CERTIFICATE-----",
    re.DOTALL,
)
# A traditional OpenSSL key ("BEGIN RSA PRIVATE KEY") with a passphrase says so in a
# header; a PKCS #8 one is labelled "ENCRYPTED PRIVATE KEY".
_ENCRYPTED_HEADER = re.compile(rb"^Proc-Type: *4, *ENCRYPTED", re.MULTILINE)


class _Encrypted(Exception):
    """Raised by the passphrase callback: OpenSSL asks for one only for an encrypted key.
    Without a callback it would prompt on the terminal, and a relay has none."""


def _refuse_passphrase() -> NoReturn:
    raise _Encrypted


def _read_pem(kind: str, path: str) -> tuple[bytes, set[bytes]]:
    """The bytes of the ``kind`` file (certfile, keyfile) at ``path`` and the labels of its
    PEM blocks; :exc:`TLSConfigError` when it cannot be read or is empty."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise TLSConfigError(f"{kind} {path!r} does not exist", path) from None
    except IsADirectoryError:
        raise TLSConfigError(f"{kind} {path!r} is a directory, not a PEM file", path) from None
    except OSError as error:
        raise TLSConfigError(f"cannot read {kind} {path!r}: {error.strerror}", path) from None
    if not data.strip():
        raise TLSConfigError(f"{kind} {path!r} is empty", path)
    return data, set(_PEM_LABEL.findall(data))


def _check_certfile(path: str) -> None:
    data, labels = _read_pem("certfile", path)
    if not labels & _CERTIFICATE_LABELS:
        if any(label.endswith(b"PRIVATE KEY") for label in labels):
            raise TLSConfigError(
                f"certfile {path!r} holds a private key, not a certificate "
                "(are certfile and keyfile swapped?)",
                path,
            )
        raise TLSConfigError(
            f"certfile {path!r} is not a PEM certificate (no '-----BEGIN CERTIFICATE-----' line)",
            path,
        )
    certificates = b"\n".join(_CERTIFICATE_BLOCK.findall(data))
    try:
        # Parses every certificate of the chain (a key beside them is the keyfile's part).
        ssl.create_default_context().load_verify_locations(cadata=certificates.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError):
        raise TLSConfigError(
            f"certfile {path!r} holds a certificate that cannot be read (corrupt PEM)", path
        ) from None


def _check_keyfile(path: str) -> None:
    data, labels = _read_pem("keyfile", path)
    if not any(label.endswith(b"PRIVATE KEY") for label in labels):
        if labels & _CERTIFICATE_LABELS:
            raise TLSConfigError(
                f"keyfile {path!r} holds a certificate, not a private key "
                "(are certfile and keyfile swapped?)",
                path,
            )
        raise TLSConfigError(
            f"keyfile {path!r} is not a PEM private key (no '-----BEGIN PRIVATE KEY-----' line)",
            path,
        )
    if b"ENCRYPTED PRIVATE KEY" in labels or _ENCRYPTED_HEADER.search(data):
        raise _encrypted(path)


def _encrypted(path: str) -> TLSConfigError:
    return TLSConfigError(
        f"keyfile {path!r} is encrypted with a passphrase, which the relay cannot ask for: "
        "give it the key unencrypted (openssl pkey -in ENCRYPTED -out KEY)",
        path,
    )


def load_tls_context(config: RelayConfig) -> ssl.SSLContext | None:
    """The server TLS context for ``config``'s certfile and keyfile; None without them.

    Raises :exc:`TLSConfigError` naming the file and what is wrong with it, rather than
    OpenSSL's ``[SSL] PEM lib``. Never prompts for a passphrase."""
    if config.certfile is None or config.keyfile is None:
        return None
    certfile, keyfile = config.certfile, config.keyfile
    _check_certfile(certfile)
    _check_keyfile(keyfile)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile, password=_refuse_passphrase)
    except _Encrypted:
        raise _encrypted(keyfile) from None
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise TLSConfigError(
                f"keyfile {keyfile!r} does not belong to the certificate in certfile "
                f"{certfile!r} (it is the key of another certificate)",
                keyfile,
            ) from None
        # Both files looked right on their own: the key's body is what OpenSSL refused
        # (its own words, when it has any beyond "PEM lib", come after).
        detail = f": {error.reason}" if error.reason else ""
        raise TLSConfigError(
            f"keyfile {keyfile!r} holds a private key that cannot be read (corrupt PEM, "
            f"or a kind of key OpenSSL does not support){detail}",
            keyfile,
        ) from None
    except OSError as error:  # the files changed since they were read just now
        raise TLSConfigError(f"cannot load certfile {certfile!r}: {error}", certfile) from None
    return context
