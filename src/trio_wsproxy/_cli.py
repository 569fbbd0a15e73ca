"""The ``trio-wsproxy`` command: ``trio-wsproxy serve`` runs a relay until SIGINT/SIGTERM.

The first SIGINT or SIGTERM closes every member with 1001 (each has ``close_timeout`` to
answer) and exits 0. A second one during that shutdown exits at once with status
128 + its number (130 for SIGINT, 143 for SIGTERM) and one line on stderr; members not
yet closed are cut off. ``--workers N`` behaves the same, for all its workers.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from . import __version__
from ._serve import (
    TLSConfigError,
    read_api_key,
    read_secret_file,
    read_token_secret,
    read_token_verifier,
    read_webhook_secret,
    serve_relay,
)
from ._workers.endpoint import WorkerLink
from ._workers.figures import serve_worker
from ._workers.signals import STOP_SIGNALS, signals_exit_at_once
from ._workers.supervise import WorkerFailed, serve_workers
from .config_file import (
    PARSERS,
    ConfigFileError,
    NoneOr,
    build_config,
    format_size,
    parse_size,
    read_config_file,
    render_config,
)
from .protocol.exceptions import first_leaf
from .protocol.tokens import mint_token
from .relay.config import RelayConfig, check_token_secret
from .relay.demo import demo_url

logger = logging.getLogger("trio_wsproxy.cli")

# How long a token lives when ``trio-wsproxy token`` is not given --ttl.
_TOKEN_TTL = "1h"


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


# Fields whose flag takes a size: their defaults are shown in binary units.
_SIZES = frozenset(
    name
    for name, parse in PARSERS.items()
    if parse is parse_size or (isinstance(parse, NoneOr) and parse.parse is parse_size)
)
# Defaults whose RelayConfig value is not what the command line does without the flag.
_CLI_DEFAULTS = {
    # RelayConfig's None leaves the loggers alone (an embedding application's choice);
    # the command line configures logging itself, at WARNING (see main).
    "log_level": "WARNING",
}
#: The level the command line logs at without --log-level.
DEFAULT_LOG_LEVEL = _CLI_DEFAULTS["log_level"]


def shown_default(name: str, value: Any) -> str:
    """How ``serve --help`` shows the default ``value`` of field ``name``: as the flag
    would be given (``4MiB``, ``30``, ``none``), so that giving it changes nothing."""
    if name in _CLI_DEFAULTS:
        return _CLI_DEFAULTS[name]
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or value == ():
        # A flag whose parser reads "none" (_optional) takes it for "no limit / off";
        # for the others (file names, origins) the setting is simply not given.
        return "none" if isinstance(PARSERS.get(name), NoneOr) else "not set"
    if name in _SIZES:
        return format_size(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _help(text: str, default: str) -> str:
    # argparse %-formats help texts: a literal % must be doubled.
    return f"{text} (default: {default})".replace("%", "%%")


def build_parser(*, defaults: bool = True) -> argparse.ArgumentParser:
    """The argument parser: ``serve`` takes one flag per :class:`RelayConfig` field.
    ``defaults`` False: ``serve``'s flags have none, so that the parsed arguments hold
    only the flags given (what overrides a config file)."""
    parser = argparse.ArgumentParser(
        prog="trio-wsproxy", description="Trio WebSocket group relay (EasyWebSocketProxy wire)."
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run a relay until SIGINT or SIGTERM")
    serve.add_argument(
        "--config",
        metavar="FILE",
        help='a TOML config file: each flag a key (max_message_size = "1MiB"), each '
        "namespace a [namespaces.NAME] table; the flags given override it (default: none)",
    )
    serve.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective settings (the file's and the flags', secrets masked) as "
        "a config file, and exit",
    )
    for field in attrs.fields(RelayConfig):
        default = field.default
        flag = "--" + field.name.replace("_", "-")
        if field.metadata.get("file_only"):
            continue  # (a table of the config file, not a flag)
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
        shown = _help(field.metadata["help"], shown_default(field.name, default))
        if isinstance(default, bool):
            serve.add_argument(
                flag, dest=field.name, action=argparse.BooleanOptionalAction,
                default=default if defaults else argparse.SUPPRESS, help=shown,
            )  # fmt: skip
            continue
        if isinstance(default, tuple):
            default = ",".join(default)
        if field.name not in PARSERS:  # a field added to RelayConfig without its flag
            raise LookupError(f"RelayConfig.{field.name} has no parser in config_file.PARSERS")
        serve.add_argument(
            flag,
            dest=field.name,
            type=PARSERS[field.name],
            default=default if defaults else argparse.SUPPRESS,
            help=shown,
            metavar=field.name.upper(),
        )
    # Internal: how the supervisor of --workers tells each worker where its private
    # metrics endpoint is (see _workers). Not for operators, so not in --help.
    serve.add_argument("--worker-dir", help=argparse.SUPPRESS)
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-count", type=int, help=argparse.SUPPRESS)
    token = commands.add_parser(
        "token",
        help="mint an access token for a relay that has a token secret",
        description="Print an HS256 access token for one member id and its groups. The "
        "secret comes from --secret-file or the TRIO_WSPROXY_TOKEN_SECRET variable.",
    )
    token.add_argument(
        "--secret-file",
        help=_help(
            "file holding the relay's token secret", "the TRIO_WSPROXY_TOKEN_SECRET variable"
        ),
    )
    token.add_argument("--id", required=True, dest="member_id", help="the member id (required)")
    token.add_argument(
        "--group",
        required=True,
        action="append",
        dest="groups",
        help="a group it may join; a trailing * makes it a prefix (required; repeatable)",
    )
    token.add_argument(
        "--ttl",
        default=_TOKEN_TTL,
        type=parse_duration,
        help=_help("lifetime: 3600, 90s, 30m, 12h, 7d", _TOKEN_TTL),
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
            secret = read_secret_file(args.secret_file, "token secret")
        except (OSError, ValueError) as exc:
            parser.error(str(exc))
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


def flag_named(message: str) -> str:
    """A RelayConfig error about one field's value (``"history_bytes must be ..."``),
    with the field named as its flag (``"--history-bytes must be ..."``): what an
    operator typed. So are the other fields it names by their names
    (``"livez_path '/x' is healthz_path already"``)."""
    name, _, rest = message.partition(" ")
    if name in _FLAG_FIELDS and rest.startswith("must "):
        message = f"{_flag(name)} {rest}"
    # Names with an underscore are field names, never words of a sentence.
    return _FIELD_NAME.sub(
        lambda match: _flag(match[0]) if match[0] in _FLAG_FIELDS else match[0], message
    )


_FIELD_NAME = re.compile(r"(?<![\w'-])[a-z]+(?:_[a-z]+)+(?![\w'])")


def _flag(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


# The fields that are flags (not the secrets, which come from the environment).
_FLAG_FIELDS = {
    field.name: field for field in attrs.fields(RelayConfig) if not field.metadata.get("env")
}


def config_from_args(
    args: argparse.Namespace,
    environ: Mapping[str, str] | None = None,
    given: set[str] | None = None,
) -> RelayConfig:
    """The RelayConfig the parsed ``serve`` flags (and the environment's secrets)
    describe, over the config file of ``--config`` if one is given: then ``given``
    names the flags given, which override the file (None: all of them)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in attrs.fields(RelayConfig):
        if field.metadata.get("file_only"):
            continue
        env = field.metadata.get("env")
        values[field.name] = environ.get(env) or None if env else getattr(args, field.name)
    path = getattr(args, "config", None)
    if path is None:
        return RelayConfig(**values)
    # Over the file: the flags given, and the secrets the environment holds.
    overrides = {
        name: value
        for name, value in values.items()
        if (
            value is not None
            if _FIELDS[name].metadata.get("env")
            else given is None or name in given
        )
    }
    return build_config(read_config_file(path), overrides, Path(path))


def _is_secret(name: str) -> bool:
    return bool(_FIELDS[name].metadata.get("env"))


_FIELDS = {field.name: field for field in attrs.fields(RelayConfig)}


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


def command_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of the command ``name`` (``serve``, ``token``): its errors show its
    own usage, with the flags they are about, rather than the top level's."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen: argparse.ArgumentParser = action.choices[name]
            return chosen
    raise LookupError(f"trio-wsproxy has no {name} command")


def start_failure(error: BaseException, config: RelayConfig) -> str:
    """What stopped a relay from listening, said with the address and the flag to
    change: ``[Errno 98] Address already in use`` names neither."""
    if isinstance(error, TLSConfigError):
        return str(error)  # (it names the file, and what is wrong with it)
    host, port = config.host, config.port
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: the address is already in use (another relay, or "
            f"another program, listens there): give --port another port (0 picks a free "
            f"one), or stop what holds it"
        )
    if isinstance(error, trio.socket.gaierror):
        return (
            f"cannot listen on --host {host!r}: it is neither an address nor a name that "
            f"resolves ({error.strerror}): give --host an address of this machine "
            f"(127.0.0.1, or 0.0.0.0 for all)"
        )
    if isinstance(error, OSError) and error.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen on {where}: --host {host!r} is not an address of this machine "
            f"({error.strerror}): give --host one of its addresses (127.0.0.1, or 0.0.0.0 "
            f"for all)"
        )
    if isinstance(error, OSError) and error.errno == errno.EACCES:
        return (
            f"cannot listen on {where}: permission denied (ports below 1024 need "
            f"privileges, such as CAP_NET_BIND_SERVICE): give --port 1024 or higher"
        )
    return str(error)


def worker_link(
    args: argparse.Namespace, config: RelayConfig, parser: argparse.ArgumentParser
) -> WorkerLink | None:
    """The supervisor's endpoints a worker was given (the internal --worker-* flags), or
    None for a relay that is no supervisor's worker; a usage error when they are wrong."""
    given = (args.worker_dir, args.worker_index, args.worker_count)
    if all(value is None for value in given):
        return None
    if any(value is None for value in given):
        parser.error("--worker-dir, --worker-index and --worker-count go together")
    if config.workers != 1:
        parser.error("--worker-dir is for the workers of --workers, which are not supervisors")
    try:
        return WorkerLink(args.worker_dir, args.worker_index, args.worker_count)
    except ValueError as error:
        parser.error(str(error))


async def _serve(config: RelayConfig, link: WorkerLink | None = None) -> None:
    """Serve until the first SIGINT or SIGTERM, then close every session (1001, bounded by
    ``close_timeout``) and return. Run under :func:`signals_exit_at_once`, as ``main``
    does: the receiver is closed once the first signal is in, so that a second one ends
    the process at once instead of waiting for the members. ``link``: the relay is a
    worker of a supervisor, with those endpoints."""
    run = serve_relay if link is None else partial(serve_worker, link=link)
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
            relay = await nursery.start(run, config)
            print(f"trio-wsproxy relay listening on {relay.url}", flush=True)
            if config.demo and link is None:
                print(f"demo page at {demo_url(relay.url, config.path)}", flush=True)
            async for signum in signals:
                logger.info("%s received: closing every session", signal.Signals(signum).name)
                break
        nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``trio-wsproxy`` console script and ``python -m trio_wsproxy``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "token":
        _mint(args, command_parser(parser, "token"))
        return
    serve = command_parser(parser, "serve")
    given = set(vars(build_parser(defaults=False).parse_args(argv)))
    try:
        config = config_from_args(args, given=given)
    except ConfigFileError as exc:
        serve.error(str(exc))
    except ValueError as exc:
        serve.error(flag_named(str(exc)))
    if args.print_config:
        print(render_config(config), end="")
        return
    # A missing, unreadable or empty secret file, or a short secret: say so before serving.
    for flag, read in (
        ("--token-secret-file", read_token_secret),
        ("--token-public-key-file", read_token_verifier),
        ("--api-key-file", read_api_key),
        ("--webhook-secret-file", read_webhook_secret),
    ):
        try:
            read(config)
        except (ValueError, OSError) as exc:
            serve.error(f"{flag}: {exc}")
    link = worker_link(args, config, serve)
    handler = logging.StreamHandler(sys.stderr)
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=(config.log_level or DEFAULT_LOG_LEVEL).upper(), handlers=[handler])
    failure: BaseException | None = None
    try:
        # The first SIGINT or SIGTERM shuts down gracefully; a second exits at once.
        with signals_exit_at_once():
            if config.workers == 1:
                trio.run(_serve, config, link)
            else:
                trio.run(serve_workers, config)
    except* (OSError, WorkerFailed) as group:
        # Port in use, bad address, unreadable certificate, a worker that cannot
        # listen: say so in one line.
        failure = first_leaf(group)
    if failure is not None:
        print(f"trio-wsproxy: cannot serve: {start_failure(failure, config)}", file=sys.stderr)
        sys.exit(1)
