"""The ``trio-wsproxy`` command: ``trio-wsproxy serve`` runs a relay until SIGINT/SIGTERM.

The first SIGINT or SIGTERM closes every member with 1001 (each has ``close_timeout`` to
answer) and exits 0. A second one during that shutdown exits at once with status
128 + its number (130 for SIGINT, 143 for SIGTERM) and one line on stderr; members not
yet closed are cut off. ``--workers N`` behaves the same, for all its workers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import trio

from ._serve import read_token_secret, serve_relay
from ._workers import STOP_SIGNALS, WorkerFailed, serve_workers, signals_exit_at_once
from .protocol.exceptions import first_leaf
from .protocol.tokens import mint_token
from .relay.config import RelayConfig, check_token_secret

logger = logging.getLogger("trio_wsproxy.cli")

_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_NONE_WORDS = frozenset({"none", "off", "0"})


def parse_size(text: str) -> int:
    """``"65536"``, ``"64KiB"``, ``"16M"``, ``"1GiB"``: bytes as an int (binary units)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size in bytes: {text!r} (e.g. 65536, 64KiB, 1GiB)")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_or_none(text: str) -> Any:
        return None if text.strip().lower() in _NONE_WORDS else parse(text)

    return parse_or_none


# How each RelayConfig field's flag parses its value; every field has a flag (a boolean
# field is a --flag/--no-flag pair and needs no parser).
_PARSERS: dict[str, Callable[[str], Any]] = {
    "host": str,
    "port": int,
    "path": str,
    "max_message_size": _optional(parse_size),
    "certfile": str,
    "keyfile": str,
    "log_level": str,
    "mailbox_bytes": parse_size,
    "max_buffered_bytes": _optional(parse_size),
    "slow_member_timeout": float,
    "ping_interval": _optional(float),
    "ping_timeout": float,
    "stream_timeout": float,
    "handshake_timeout": float,
    "max_handshake_size": parse_size,
    "max_id_length": int,
    "close_timeout": float,
    "healthz_path": _optional(str),
    "metrics_path": _optional(str),
    "token_secret_file": str,
    "allowed_origins": str,
    "max_members": _optional(int),
    "max_group_members": _optional(int),
    "max_groups": _optional(int),
    "max_message_rate": _optional(float),
    "max_byte_rate": _optional(parse_size),
    "log_format": str,
    "backplane": _optional(str),
    "backplane_prefix": str,
    "node_ttl": float,
    "workers": int,
}


class _NeverAFlag(argparse.Action):
    """A flag for a setting that must not be one (a secret, visible in process lists):
    using it is a usage error that names where the setting goes, and never echoes its
    value. ``const`` is the environment variable that holds it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            f"{option_string} is not a flag, so that the secret stays out of process "
            f"lists: put it in a file for {option_string}-file, or in {self.const}"
        )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: ``serve`` takes one flag per :class:`RelayConfig` field."""
    parser = argparse.ArgumentParser(
        prog="trio-wsproxy", description="Trio WebSocket group relay (EasyWebSocketProxy wire)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run a relay until SIGINT or SIGTERM",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for field in attrs.fields(RelayConfig):
        default = field.default
        flag = "--" + field.name.replace("_", "-")
        if field.metadata.get("env"):
            # A secret: from the environment, never from the command line. The flag is
            # there to refuse it plainly; without it, argparse would take --token-secret
            # for an abbreviation of --token-secret-file, and the secret for a file name.
            serve.add_argument(
                flag,
                dest=f"refused_{field.name}",
                nargs="?",
                action=_NeverAFlag,
                const=field.metadata["env"],
                help=argparse.SUPPRESS,
            )
            continue
        if isinstance(default, bool):
            serve.add_argument(
                flag,
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=field.metadata["help"],
            )
            continue
        if isinstance(default, tuple):
            default = ",".join(default)
        serve.add_argument(
            flag,
            dest=field.name,
            type=_PARSERS[field.name],
            default=default,
            help=field.metadata["help"],
            metavar=field.name.upper(),
        )
    token = commands.add_parser(
        "token",
        help="mint an access token for a relay that has a token secret",
        description="Print an HS256 access token for one member id and its groups. The "
        "secret comes from --secret-file or the TRIO_WSPROXY_TOKEN_SECRET variable.",
    )
    token.add_argument("--secret-file", help="file holding the relay's token secret")
    token.add_argument("--id", required=True, dest="member_id", help="the member id")
    token.add_argument(
        "--group",
        required=True,
        action="append",
        dest="groups",
        help="a group it may join; a trailing * makes it a prefix (repeatable)",
    )
    token.add_argument(
        "--ttl", default="1h", type=parse_duration, help="lifetime: 3600, 90s, 30m, 12h, 7d"
    )
    return parser


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``"3600"``, ``"90s"``, ``"30m"``, ``"12h"``, ``"7d"``: seconds as a float."""
    match = _DURATION.fullmatch(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 3600, 30m, 12h, 7d)")
    return float(match.group(1)) * _SECONDS[match.group(2).lower()]


def _mint(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.secret_file:
        try:
            with open(args.secret_file, encoding="utf-8") as file:
                secret = file.read().strip()
        except OSError as exc:
            parser.error(f"cannot read the secret file: {exc}")
    else:
        secret = os.environ.get("TRIO_WSPROXY_TOKEN_SECRET", "")
    if not secret:
        parser.error("no secret: give --secret-file or set TRIO_WSPROXY_TOKEN_SECRET")
    try:
        # A relay refuses a short secret; a token signed with one would be no use to it.
        check_token_secret(secret, "the secret")
        print(mint_token(secret, args.member_id, args.groups, args.ttl))
    except ValueError as exc:
        parser.error(str(exc))


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> RelayConfig:
    """The RelayConfig the parsed ``serve`` flags (and the environment's secrets) describe."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in attrs.fields(RelayConfig):
        env = field.metadata.get("env")
        values[field.name] = environ.get(env) or None if env else getattr(args, field.name)
    return RelayConfig(**values)


# Attributes every LogRecord has; anything else was passed as ``extra`` and is a field.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's extra
    fields (member, group, remote, code, reason, status)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


async def _serve(config: RelayConfig) -> None:
    """Serve until the first SIGINT or SIGTERM, then close every session (1001, bounded by
    ``close_timeout``) and return. Run under :func:`signals_exit_at_once`, as ``main``
    does: the receiver is closed once the first signal is in, so that a second one ends
    the process at once instead of waiting for the members."""
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
            relay = await nursery.start(serve_relay, config)
            print(f"trio-wsproxy relay listening on {relay.url}", flush=True)
            async for signum in signals:
                logger.info("%s received: closing every session", signal.Signals(signum).name)
                break
        nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``trio-wsproxy`` console script and ``python -m trio_wsproxy``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "token":
        _mint(args, parser)
        return
    try:
        config = config_from_args(args)
        read_token_secret(config)  # a missing or empty secret file: say so before serving
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    handler = logging.StreamHandler(sys.stderr)
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=(config.log_level or "WARNING").upper(), handlers=[handler])
    failure: BaseException | None = None
    try:
        # The first SIGINT or SIGTERM shuts down gracefully; a second exits at once.
        with signals_exit_at_once():
            trio.run(_serve if config.workers == 1 else serve_workers, config)
    except* (OSError, WorkerFailed) as group:
        # Port in use, bad address, unreadable certificate, a worker that cannot
        # listen: say so in one line.
        failure = first_leaf(group)
    if failure is not None:
        print(f"trio-wsproxy: cannot serve: {failure}", file=sys.stderr)
        sys.exit(1)
