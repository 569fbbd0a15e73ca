"""The ``trio-wsproxy`` command: ``trio-wsproxy serve`` runs a relay until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from ._config import RelayConfig
from ._relay import serve_relay

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


# How each RelayConfig field's flag parses its value; every field has a flag.
_PARSERS: dict[str, Callable[[str], Any]] = {
    "host": str,
    "port": int,
    "path": str,
    "max_message_size": _optional(parse_size),
    "certfile": str,
    "keyfile": str,
    "log_level": str,
    "mailbox_bytes": parse_size,
    "slow_member_timeout": float,
    "ping_interval": _optional(float),
    "ping_timeout": float,
    "handshake_timeout": float,
    "max_handshake_size": parse_size,
    "max_id_length": int,
    "close_timeout": float,
}


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
        serve.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=_PARSERS[field.name],
            default=default,
            help=field.metadata["help"],
            metavar=field.name.upper(),
        )
    return parser


def config_from_args(args: argparse.Namespace) -> RelayConfig:
    """The RelayConfig the parsed ``serve`` flags describe."""
    values = {field.name: getattr(args, field.name) for field in attrs.fields(RelayConfig)}
    return RelayConfig(**values)


async def _serve(config: RelayConfig) -> None:
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
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
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=(config.log_level or "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    failure: OSError | None = None
    try:
        trio.run(_serve, config)
    except* OSError as group:
        # Port in use, bad address, unreadable certificate: say so in one line.
        failure = group.exceptions[0]  # type: ignore[assignment]
    if failure is not None:
        print(f"trio-wsproxy: cannot serve: {failure}", file=sys.stderr)
        sys.exit(1)
