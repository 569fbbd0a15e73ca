"""The relay's config file, ``--config relay.toml`` (TOML, read with the standard
library's ``tomllib``), and the one way every setting is read from text.

The file maps onto :class:`~trio_wsproxy.RelayConfig` one to one, as the flags do: each
flag of ``trio-wsproxy serve`` is a key of the same name with underscores at the top
level (``max_message_size = "1MiB"``), and each namespace a table ``[namespaces.NAME]``
with ``prefix`` and its policy keys. A value is the file's native type (``true``,
``30``, ``2.5``, ``["https://a.example"]``) or the text its flag takes
(``"64KiB"``, ``"none"``); an unknown key, or a value of the wrong type, is an error
that names the key and its line. Secrets never go in the file: it names their files
(``token_secret_file``, ``api_key_file``), as the flags do.

:func:`load_config` is the Python API's way in; ``trio-wsproxy serve --config FILE``
reads the same file, and its flags override the file's values.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from .relay.config import RelayConfig
from .relay.namespaces import POLICY_KEYS, Namespace

_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_NONE_WORDS = frozenset({"none", "off", "0"})


def parse_size(text: str) -> int:
    """``"65536"``, ``"64KiB"``, ``"16M"``, ``"1GiB"``: bytes as an int (binary units)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size in bytes: {text!r} (e.g. 65536, 64KiB, 1GiB)")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


class NoneOr:
    """A flag's parser that reads ``none`` (or ``off``, ``0``) as None, anything else
    with ``parse``."""

    def __init__(self, parse: Callable[[str], Any]) -> None:
        #: How a value other than none is read.
        self.parse = parse
        self.__name__ = getattr(parse, "__name__", "value")  # argparse's error names it

    def __call__(self, text: str) -> Any:
        return None if text.strip().lower() in _NONE_WORDS else self.parse(text)


#: How each RelayConfig field's flag (and a string in the config file) is read; every
#: field has one (a boolean field is a --flag/--no-flag pair and needs no parser), but
#: the secrets (from the environment) and the file's tables (namespaces).
PARSERS: dict[str, Callable[[str], Any]] = {
    "host": str,
    "port": int,
    "path": str,
    "max_message_size": NoneOr(parse_size),
    "compression": NoneOr(parse_size),
    "certfile": str,
    "keyfile": str,
    "log_level": str,
    "mailbox_bytes": parse_size,
    "max_buffered_bytes": NoneOr(parse_size),
    "slow_member_timeout": float,
    "ping_interval": NoneOr(float),
    "ping_timeout": float,
    "stream_timeout": float,
    "presence_limit": int,
    "history_size": NoneOr(int),
    "history_ttl": float,
    "history_bytes": parse_size,
    "max_history_bytes": NoneOr(parse_size),
    "max_history_groups": NoneOr(int),
    "handshake_timeout": float,
    "max_handshake_size": parse_size,
    "max_id_length": int,
    "close_timeout": float,
    "healthz_path": NoneOr(str),
    "livez_path": NoneOr(str),
    "metrics_path": NoneOr(str),
    "token_secret_file": str,
    "token_public_key_file": str,
    "jwks_url": str,
    "jwks_refresh": float,
    "token_issuer": str,
    "token_audience": str,
    "token_id_claim": str,
    "token_groups_claim": str,
    "api_key_file": str,
    "webhook_url": str,
    "webhook_secret_file": str,
    "webhook_interval": float,
    "webhook_queue": int,
    "webhook_timeout": float,
    "allowed_origins": str,
    "connect_hook": NoneOr(str),
    "join_hook": NoneOr(str),
    "publish_hook": NoneOr(str),
    "hook_timeout": float,
    "hook_failure": str,
    "max_hook_calls": int,
    "hook_headers": str,
    "hook_cookies": str,
    "max_members": NoneOr(int),
    "max_group_members": NoneOr(int),
    "max_groups": NoneOr(int),
    "max_groups_per_member": int,
    "ban_seconds": float,
    "token_refresh_margin": float,
    "revocation_seconds": float,
    "max_connections_per_address_rate": NoneOr(float),
    "max_message_rate": NoneOr(float),
    "max_byte_rate": NoneOr(parse_size),
    "max_subject_message_rate": NoneOr(float),
    "log_format": str,
    "backplane": NoneOr(str),
    "backplane_prefix": str,
    "node_ttl": float,
    "workers": int,
}


def format_size(size: int) -> str:
    """``4194304`` -> ``"4MiB"``: the largest binary unit that divides ``size`` (what
    :func:`parse_size` reads back)."""
    for unit in ("t", "g", "m", "k"):
        if size and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit.upper()}iB"
    return str(size)


class ConfigFileError(ValueError):
    """A config file that cannot be used; ``str()`` names the file, the line and the
    key, and says what is wrong."""


#: The fields a file may set (not the secrets themselves: their files, as the flags).
_FILE_FIELDS = {
    field.name: field for field in attrs.fields(RelayConfig) if field.metadata.get("env") is None
}
# The fields that hold lists (a TOML array, or a comma-separated string as the flag).
_LISTS = frozenset({"allowed_origins", "hook_headers", "hook_cookies"})
_NAMESPACE_KEYS = ("prefix", *POLICY_KEYS)
# Namespace keys to come, refused until they are there.
_NOT_YET: dict[str, str] = {}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The RelayConfig fields the file at ``path`` sets, by name, read and checked (the
    namespaces as ``namespaces``); :exc:`ConfigFileError` for anything wrong."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"{path}: cannot read the config file: {exc}") from None
    import tomllib  # (here: a relay without a file, or a client, never needs it)

    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path}: not TOML: {exc}") from None
    where = _Lines(path, text)
    values: dict[str, Any] = {}
    for key, value in document.items():
        if key == "namespaces":
            values["namespaces"] = _namespaces(value, where)
            continue
        field = _FILE_FIELDS.get(key)
        if field is None or field.metadata.get("file_only"):
            raise ConfigFileError(where.problem(None, key, _unknown(key, _FILE_FIELDS)))
        values[key] = _value(key, value, where)
    return values


def load_config(path: str | Path, **overrides: Any) -> RelayConfig:
    """The RelayConfig the file at ``path`` describes, with ``overrides`` (fields by
    name, as :class:`RelayConfig` takes them) over the file's values. Raises
    :exc:`ConfigFileError` (a ValueError) for a bad file or a value the relay refuses,
    naming the key and its line when the file gave it."""
    values = read_config_file(path)
    return build_config(values, overrides, Path(path))


def build_config(
    file_values: Mapping[str, Any], overrides: Mapping[str, Any], path: Path
) -> RelayConfig:
    """RelayConfig(**file_values, **overrides); a field the file gave that the relay
    refuses is named with its line."""
    try:
        return RelayConfig(**{**file_values, **overrides})
    except ValueError as exc:
        message = str(exc)
        name = message.split(" ", 1)[0]
        if name in file_values and name not in overrides:
            text = path.read_text("utf-8")
            line = _Lines(path, text).line(None, name)
            raise ConfigFileError(f"{path}:{line}: {message}") from None
        raise


def _value(key: str, value: Any, where: _Lines, table: str | None = None) -> Any:
    """The value of the field ``key`` that the file's ``value`` means."""
    field = _FILE_FIELDS[key]
    default = field.default
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigFileError(
                where.problem(table, key, f"expected true or false, got {value!r}")
            )
        return value
    if key in _LISTS:
        if isinstance(value, list) and all(isinstance(each, str) for each in value):
            return tuple(value)
        if isinstance(value, str):
            return value
        raise ConfigFileError(
            where.problem(table, key, f"expected a list of strings, got {value!r}")
        )
    parse = PARSERS[key]
    base = parse.parse if isinstance(parse, NoneOr) else parse
    if isinstance(value, str):
        try:
            return parse(value)
        except argparse.ArgumentTypeError as exc:  # (a size's or a duration's own words)
            raise ConfigFileError(where.problem(table, key, str(exc))) from None
        except ValueError:
            what = f"expected {_kind(base)}, got {value!r}"
            raise ConfigFileError(where.problem(table, key, what)) from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigFileError(where.problem(table, key, f"expected {_kind(base)}, got {value!r}"))
    if base is float:
        return float(value)
    if base in (int, parse_size) and isinstance(value, int):
        return value
    raise ConfigFileError(where.problem(table, key, f"expected {_kind(base)}, got {value!r}"))


def _kind(parse: Callable[[str], Any]) -> str:
    if parse is parse_size:
        return 'a size (a whole number of bytes, or text such as "64KiB")'
    if parse is int:
        return "a whole number"
    if parse is float:
        return "a number"
    return "a string"


def _namespaces(value: Any, where: _Lines) -> tuple[Namespace, ...]:
    if not isinstance(value, dict):
        raise ConfigFileError(
            where.problem(None, "namespaces", "expected [namespaces.NAME] tables")
        )
    namespaces = []
    for name, table in value.items():
        section = f"namespaces.{name}"
        if not isinstance(table, dict):
            raise ConfigFileError(where.problem(section, None, "expected a table"))
        for key in table:
            if key in _NOT_YET:
                raise ConfigFileError(where.problem(section, key, _NOT_YET[key]))
            if key not in _NAMESPACE_KEYS:
                raise ConfigFileError(
                    where.problem(section, key, _unknown(key, dict.fromkeys(_NAMESPACE_KEYS)))
                )
        if "prefix" not in table:
            raise ConfigFileError(where.problem(section, None, "a namespace needs a prefix"))
        fields: dict[str, Any] = {}
        for key, item in table.items():
            if key in ("prefix", "publish", "join_hook", "publish_hook", "hook_failure"):
                if not isinstance(item, str):
                    raise ConfigFileError(
                        where.problem(section, key, f"expected a string, got {item!r}")
                    )
                fields[key] = item
            elif key == "presence":
                if not isinstance(item, bool):
                    raise ConfigFileError(
                        where.problem(section, key, f"expected true or false, got {item!r}")
                    )
                fields[key] = item
            elif key == "compression":
                # ("none" or "off" in a namespace: never compressed there, not the relay's.)
                fields[key] = _value(key, item, where, section) or 0
            else:
                fields[key] = _value(key, item, where, section)
        try:
            namespaces.append(Namespace(name=name, **fields))
        except ValueError as exc:
            key = str(exc).split(" ", 1)[0]
            raise ConfigFileError(
                where.problem(section, key if key in table else None, str(exc))
            ) from None
    return tuple(namespaces)


def _unknown(key: str, known: Mapping[str, Any]) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r}{hint}"


class _Lines:
    """Where a key is in the file's text (tomllib gives values, not lines)."""

    _TABLE = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_-]+|\"[^\"]*\")\s*=")

    def __init__(self, path: Path, text: str) -> None:
        self._path = path
        self._lines = text.splitlines()

    def line(self, table: str | None, key: str | None) -> int | str:
        """The line of ``key`` in ``table`` (None: the top level; key None: the table's
        header); "?" when it cannot be found (a dotted or inline key)."""
        current: str | None = None
        for number, text in enumerate(self._lines, 1):
            header = self._TABLE.match(text)
            if header is not None:
                current = header.group(1).replace(" ", "").replace('"', "")
                if key is None and current == table:
                    return number
                continue
            if key is None:
                continue
            found = self._KEY.match(text)
            if found is not None and current == table and found.group(1).strip('"') == key:
                return number
        return "?"

    def problem(self, table: str | None, key: str | None, what: str) -> str:
        """``FILE:LINE: [TABLE] KEY: WHAT``."""
        line = self.line(table, key) if key is not None else self.line(table, None)
        name = key if table is None else f"[{table}] {key}" if key is not None else f"[{table}]"
        return f"{self._path}:{line}: {name}: {what}"


_SECRETS = frozenset(field.name for field in attrs.fields(RelayConfig) if field.metadata.get("env"))


def render_config(config: RelayConfig) -> str:
    """The settings of ``config`` as a config file (``--print-config``): every key with
    its value, secrets masked; reading it back gives the same settings."""
    lines = []
    for field in attrs.fields(RelayConfig):
        value = getattr(config, field.name)
        if field.name == "namespaces":
            continue
        if field.name in _SECRETS:
            shown = (
                "set (masked: it comes from the environment)" if value is not None else "not set"
            )
            lines.append(f"# {field.name}: {shown}")
            continue
        if value is None and not isinstance(PARSERS.get(field.name), NoneOr):
            lines.append(f"# {field.name}: not set")
            continue
        lines.append(f"{field.name} = {_toml(value)}")
    for namespace in config.namespaces:
        lines.append("")
        lines.append(f"[namespaces.{_toml_key(namespace.name)}]")
        for key in _NAMESPACE_KEYS:
            value = getattr(namespace, key)
            if value is not None:
                lines.append(f"{key} = {_toml(value)}")
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(each) for each in value) + "]"
    return _string(str(value))


def _string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped)
    return f'"{escaped}"'


def _toml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _string(name)
