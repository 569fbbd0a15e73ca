"""Which wire name a Python type travels under, and how its payload is (un)structured.

All conversion policy lives here, in one :class:`TypeRegistry` around one cattrs
``Converter``: the ``MessageType`` names (.NET's for the primitives, ``module.QualName``
by default for everything else, any name on request), PascalCase field names for .NET
peers, and the JSON forms .NET uses for bytes (base64), GUIDs and dates. No I/O.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import re
import types
import typing
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs
import cattrs.preconf.json
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.v import format_exception

__all__ = [
    "DOTNET_RUNTIME_VERSION",
    "PayloadError",
    "TypeRegistry",
    "check_sendable",
    "dotnet_generic_name",
    "message_type",
    "normalize_type_name",
    "pascal_case",
    "runtime_version_of",
    "with_runtime_version",
]

logger = logging.getLogger("trio_wsproxy.client")

T = TypeVar("T")
C = TypeVar("C", bound=type)

#: The runtime version written into .NET generic type names (``List`1[[System.String,
#: System.Private.CoreLib, Version=8.0.0.0, ...]]``) until a client learns its group's:
#: .NET 8 is the current LTS. A .NET receiver matches the whole name ordinally, so a .NET 7
#: member drops a ``Version=8.0.0.0`` list without a word: a client takes the version
#: from the first generic name a member of its group sends (``ClientConfig.dotnet_version``
#: pins one instead). Names *received* match whatever version the sender wrote (see
#: :func:`normalize_type_name`).
DOTNET_RUNTIME_VERSION = "8.0.0.0"

# Where System.String and friends live, as .NET writes it inside generic type names.
_CORELIB = (
    "System.Private.CoreLib, Version={version}, Culture=neutral, PublicKeyToken=7cec85d7bea7798e"
)

# The .NET names Python's primitives travel under (what typeof(T).FullName gives).
_PRIMITIVE_NAMES: dict[Any, str] = {
    str: "System.String",
    bool: "System.Boolean",
    int: "System.Int32",
    float: "System.Double",
    dt.datetime: "System.DateTime",
    uuid.UUID: "System.Guid",
}

# Further .NET names accepted on receipt: they all fit a Python primitive.
_RECEIVED_ALIASES: dict[str, Any] = {
    "System.Char": str,
    "System.Byte": int,
    "System.SByte": int,
    "System.Int16": int,
    "System.UInt16": int,
    "System.Int64": int,
    "System.UInt32": int,
    "System.UInt64": int,
    "System.Single": float,
    "System.Decimal": float,
    "System.DateTimeOffset": dt.datetime,
}

# What each .NET integer type holds: a value outside it makes a .NET receiver throw an
# OverflowError in its receive loop, which drops its connection (it reconnects).
_INTEGER_RANGES: dict[str, range] = {
    "System.Byte": range(0, 2**8),
    "System.SByte": range(-(2**7), 2**7),
    "System.Int16": range(-(2**15), 2**15),
    "System.UInt16": range(0, 2**16),
    "System.Int32": range(-(2**31), 2**31),
    "System.UInt32": range(0, 2**32),
    "System.Int64": range(-(2**63), 2**63),
    "System.UInt64": range(0, 2**64),
}

# "System.Private.CoreLib, Version=8.0.0.0": the runtime's version inside a generic name.
_CORELIB_VERSION = re.compile(r"(System\.Private\.CoreLib, Version=)([^,\]]*)")

# The argument of List<T> for the integer types, as normalize_type_name leaves it.
_LIST_OF = "System.Collections.Generic.List`1[["

# The attribute the @message_type decorator leaves on a class.
_SPEC_ATTRIBUTE = "__trio_wsproxy_message__"

# ", Assembly, Version=..., Culture=..., PublicKeyToken=...]" inside a generic type name.
_ASSEMBLY_QUALIFIER = re.compile(r",[^\[\]]*\]")


class PayloadError(ValueError):
    """A payload that does not fit the type it was meant for. ``str(error)`` says why."""


@attrs.frozen
class _MessageSpec:
    name: str | None
    pascal_case: bool
    rename: Mapping[str, str]


def message_type(
    name: str | None = None,
    *,
    pascal_case: bool = False,
    rename: Mapping[str, str] | None = None,
) -> Callable[[C], C]:
    """Class decorator: give an attrs class its wire name and field names, where it is defined.

    ::

        @message_type("SharedData.Models.SocketMessage", pascal_case=True)
        @attrs.frozen
        class SocketMessage:
            message: str
            reply_required: bool = False

    Equivalent to ``registry.register(SocketMessage, ...)`` on every :class:`TypeRegistry`
    that meets the class; the registry reads the decorator the first time it sees the type.
    """

    def decorate(cls: C) -> C:
        setattr(cls, _SPEC_ATTRIBUTE, _MessageSpec(name, pascal_case, dict(rename or {})))
        return cls

    return decorate


def pascal_case(field_name: str) -> str:
    """The .NET property name for a Python field name: ``reply_required`` → ``ReplyRequired``."""
    return "".join(part[:1].upper() + part[1:] for part in field_name.split("_") if part)


def dotnet_generic_name(
    definition: str, *arguments: str, version: str = DOTNET_RUNTIME_VERSION
) -> str:
    """Return the full name .NET gives a generic type whose arguments are core library types.

    ``dotnet_generic_name("System.Collections.Generic.List`1", "System.String")`` is
    ``System.Collections.Generic.List`1[[System.String, System.Private.CoreLib,
    Version=8.0.0.0, Culture=neutral, PublicKeyToken=7cec85d7bea7798e]]``, what
    ``typeof(List<string>).FullName`` gives on .NET 8.
    """
    corelib = _CORELIB.format(version=version)
    return definition + "[" + ",".join(f"[{arg}, {corelib}]" for arg in arguments) + "]"


def normalize_type_name(name: str) -> str:
    """Drop the assembly qualifiers from the arguments of a .NET generic type name.

    ``List`1[[System.String, System.Private.CoreLib, Version=8.0.0.0, ...]]`` becomes
    ``List`1[[System.String]]``, so a name written by any .NET runtime version matches.
    Other names are returned unchanged.
    """
    return _ASSEMBLY_QUALIFIER.sub("]", name)


def runtime_version_of(name: str) -> str | None:
    """The .NET runtime version a generic type name was written by, or None.

    ``List`1[[System.String, System.Private.CoreLib, Version=7.0.0.0, ...]]`` gives
    ``"7.0.0.0"``: the version of the core library its arguments live in. Names without a
    core library argument (``System.String``, ``Game.Move``) give None.
    """
    found = _CORELIB_VERSION.search(name)
    return None if found is None else found.group(2)


def with_runtime_version(name: str, version: str) -> str:
    """``name`` with the core library version of its generic arguments set to ``version``
    (the version of an application's own assemblies is left alone); names without one are
    returned unchanged."""
    return _CORELIB_VERSION.sub(lambda m: m.group(1) + version, name)


def check_sendable(name: str, payload: Any) -> str | None:
    """Check an envelope's ``MessageType`` and unstructured ``Message`` against what a .NET
    member can receive, before it is sent.

    Raises :exc:`ValueError`, saying why, for what would knock every .NET member of the
    group offline (its receive loop throws and drops its connection): a top-level
    ``System.Guid`` (.NET reads top-level primitives through ``Convert``, which has no
    Guid: a Guid *field* of a class is fine), or an integer outside the range of the
    integer type it is named as (``System.Int32``, ``System.Int64``, ..., and ``List<>``
    of them). Returns a warning, for what a .NET member drops without a word (a
    ``Message`` that is null or ``""``), else None.
    """
    if name == "System.Guid":
        raise ValueError(
            "a top-level System.Guid cannot be received by a .NET member: it reads primitives "
            "with Convert, which has no Guid, and the error drops its connection; send the "
            "GUID as a str (System.String), or as a field of a class (a Guid field is fine)"
        )
    allowed = _INTEGER_RANGES.get(name)
    if allowed is not None:
        _check_integer(payload, name, allowed)
    elif name.startswith(_LIST_OF) and isinstance(payload, list):
        element = normalize_type_name(name)[len(_LIST_OF) : -2]
        allowed = _INTEGER_RANGES.get(element)
        if allowed is not None:
            for item in payload:
                _check_integer(item, f"List<{element}> element", allowed)
    if payload is None or payload == "":
        shown = "null" if payload is None else '""'
        return (
            f"a {name} message whose Message is {shown}: a .NET member drops it without a "
            "word (a reply too: its request times out)"
        )
    return None


def _check_integer(value: Any, what: str, allowed: range) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value not in allowed:
        hint = ""
        if what == "System.Int32" and value in _INTEGER_RANGES["System.Int64"]:
            hint = '; send it as a long with as_type="System.Int64"'
        raise ValueError(
            f"{value} does not fit a {what} ({allowed.start}..{allowed.stop - 1}): a .NET "
            f"member would overflow reading it and drop its connection{hint}"
        )


def default_type_name(tp: Any) -> str:
    """The name a type travels under unless registered otherwise: ``module.QualName``."""
    if isinstance(tp, type) and not isinstance(tp, types.GenericAlias):
        return f"{tp.__module__}.{tp.__qualname__}"
    return repr(tp)


def _describe(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _structure_str(value: object, _: object) -> str:
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a string, got {_describe(value)}")


def _structure_bool(value: object, _: object) -> bool:
    if isinstance(value, bool):
        return value
    raise TypeError(f"expected true or false, got {_describe(value)}")


def _structure_int(value: object, _: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise TypeError(f"expected an integer, got {_describe(value)}")


def _structure_float(value: object, _: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"expected a number, got {_describe(value)}")


def _structure_bytes(value: object, _: object) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"expected a base64 string, got {_describe(value)}")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"invalid base64: {exc}") from None


def _structure_uuid(value: object, _: object) -> uuid.UUID:
    if not isinstance(value, str):
        raise TypeError(f"expected a GUID string, got {_describe(value)}")
    return uuid.UUID(value)


def _structure_datetime(value: object, _: object) -> dt.datetime:
    if not isinstance(value, str):
        raise TypeError(f"expected an ISO 8601 string, got {_describe(value)}")
    return dt.datetime.fromisoformat(value)


def _configure(converter: cattrs.Converter) -> None:
    """The JSON forms both Python and .NET peers read: strict primitives (so ``"false"``
    never becomes True), base64 bytes and plain GUID strings as System.Text.Json writes
    them, ISO 8601 dates."""
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook(bytes, _structure_bytes)
    converter.register_unstructure_hook(bytes, lambda v: base64.b64encode(v).decode("ascii"))
    converter.register_structure_hook(uuid.UUID, _structure_uuid)
    converter.register_unstructure_hook(uuid.UUID, str)
    converter.register_structure_hook(dt.datetime, _structure_datetime)
    converter.register_unstructure_hook(dt.datetime, dt.datetime.isoformat)


def _nested_attrs_classes(tp: Any) -> list[type]:
    """Every attrs class a field of ``tp`` mentions (through lists, unions, dicts, ...)."""
    found: list[type] = []

    def visit(annotation: Any) -> None:
        if isinstance(annotation, type) and attrs.has(annotation):
            if annotation not in found:
                found.append(annotation)
        for argument in typing.get_args(annotation):
            visit(argument)

    if isinstance(tp, type) and attrs.has(tp):
        try:
            attrs.resolve_types(tp)
        except NameError:  # a forward reference we cannot resolve: no nested classes then
            return found
        for field in attrs.fields(tp):
            visit(field.type)
    else:
        visit(tp)
    return found


class TypeRegistry:
    """Wire names and payload conversion for typed messages: one configured cattrs converter.

    - ``str``, ``bool``, ``int``, ``float`` (and ``datetime``, ``UUID``) travel under their
      .NET names (``System.String``, ``System.Boolean``, ``System.Int32`` — always, whatever
      the value: send ``as_type="System.Int64"`` for a ``long`` —, ``System.Double``,
      ``System.DateTime``, ``System.Guid``, which is received but never sent: see
      :func:`check_sendable`); the other .NET integer and floating-point names are
      accepted on receipt.
    - ``list[str]``, ``list[int]``, ``list[bool]``, ``list[float]`` travel as .NET's
      ``System.Collections.Generic.List`1[[...]]`` (runtime version ``dotnet_version``).
    - Any other type travels as ``module.QualName`` unless registered with
      :meth:`register` or decorated with :func:`message_type`.

    A registry may be shared by several clients. ``converter`` may be a cattrs Converter
    of your own (extra hooks, unstructure strategies); the registry adds its hooks to it.
    ``pascal_case=True`` makes PascalCase the default field naming of every attrs class.
    """

    def __init__(
        self,
        converter: cattrs.Converter | None = None,
        *,
        pascal_case: bool = False,
        dotnet_version: str = DOTNET_RUNTIME_VERSION,
    ) -> None:
        #: The cattrs converter every payload goes through.
        self.converter: cattrs.Converter = (
            converter if converter is not None else cattrs.preconf.json.make_converter()
        )
        _configure(self.converter)
        self._names: dict[Any, str] = {}
        self._types: dict[str, Any] = {}
        # Field renames per attrs class, and the policy each registered class was given
        # (PascalCase?, explicit renames); a class with its own policy keeps it when a
        # PascalCase class that contains it is registered.
        self._renames: dict[type, dict[str, str]] = {}
        self._policies: dict[type, tuple[bool, dict[str, str]]] = {}
        for tp, name in _PRIMITIVE_NAMES.items():
            self._bind(tp, name, replace=False)
        for name, tp in _RECEIVED_ALIASES.items():
            self._types[normalize_type_name(name)] = tp
        for element in (str, int, bool, float):
            list_name = dotnet_generic_name(
                "System.Collections.Generic.List`1",
                _PRIMITIVE_NAMES[element],
                version=dotnet_version,
            )
            self._bind(list[element], list_name, replace=False)  # type: ignore[valid-type]
        if pascal_case:
            self.converter.register_structure_hook_factory(attrs.has, self._pascal_structure_fn)
            self.converter.register_unstructure_hook_factory(attrs.has, self._pascal_unstructure_fn)

    def register(
        self,
        tp: Any,
        name: str | None = None,
        *,
        pascal_case: bool | None = None,
        rename: Mapping[str, str] | None = None,
    ) -> None:
        """Send ``tp`` under ``name`` and dispatch received ``name`` messages to it.

        ``name`` defaults to ``module.QualName``; ``tp`` may be any type cattrs can
        convert, generic aliases included (``registry.register(list[Point], "...")``).
        For attrs classes, ``pascal_case=True`` renames every field the .NET way
        (``reply_required`` ↔ ``ReplyRequired``), and applies to the attrs classes nested
        in it that were not registered themselves; ``rename`` maps single fields to
        explicit wire names and wins over ``pascal_case``.

        Registering a name already taken by another type raises :exc:`ValueError`.
        """
        if tp is not bytes:
            self.ensure(tp)  # a @message_type spec first, so that this call refines it
        self._register(tp, name, pascal_case=pascal_case, rename=rename, explicit=True)

    def ensure(self, tp: Any) -> str:
        """Make ``tp`` known (its :func:`message_type` spec, or its default name) and
        return its wire name. Registered types are left as they are."""
        known = self._names.get(tp)
        if known is not None:
            return known
        spec = getattr(tp, "__dict__", {}).get(_SPEC_ATTRIBUTE)
        if isinstance(spec, _MessageSpec):
            self._register(
                tp, spec.name, pascal_case=spec.pascal_case, rename=spec.rename, explicit=True
            )
        else:
            self._register(tp, None, pascal_case=None, rename=None, explicit=False)
        return self._names[tp]

    def name_of(self, tp: Any) -> str:
        """The ``MessageType`` ``tp`` is sent under (registering it by default if need be)."""
        return self.ensure(tp)

    def name_for_value(self, value: object, tp: Any) -> str:
        """The ``MessageType`` for sending ``value`` as ``tp``: :meth:`name_of` ``tp``, or
        ``tp`` itself when it is a str (a wire name: ``as_type="System.Int64"``).

        The name never depends on the value: an ``int`` is ``System.Int32`` whether it is
        3 or 2**40 (:func:`check_sendable` refuses the latter before it is sent)."""
        if isinstance(tp, str):
            if not tp:
                raise ValueError("a type name must not be empty")
            return tp
        return self.ensure(tp)

    def type_named(self, name: str) -> Any | None:
        """The type received messages named ``name`` structure into, or None if unknown.

        .NET generic names match whatever runtime version wrote them."""
        found = self._types.get(name)
        if found is None:
            found = self._types.get(normalize_type_name(name))
        return found

    def unstructure(self, value: object, tp: Any) -> Any:
        """``value`` as JSON-compatible data (dicts, lists, str, numbers, bools, None).

        ``tp`` a str (a wire name) unstructures ``value`` as its own type."""
        if isinstance(tp, str):
            return self.converter.unstructure(value)
        self.ensure(tp)
        return self.converter.unstructure(value, unstructure_as=tp)

    def structure(self, payload: Any, tp: type[T]) -> T:
        """``payload`` (decoded JSON) as an instance of ``tp``.

        Raises :exc:`PayloadError`, with every problem cattrs found in one line, if it
        does not fit."""
        try:
            return self.converter.structure(payload, tp)
        except Exception as exc:  # cattrs raises many kinds; all mean "does not fit"
            raise PayloadError(_explain(exc, tp)) from exc

    # -- internals ---------------------------------------------------------------------

    def _register(
        self,
        tp: Any,
        name: str | None,
        *,
        pascal_case: bool | None,
        rename: Mapping[str, str] | None,
        explicit: bool,
    ) -> None:
        if tp is bytes:
            raise ValueError("bytes travel as binary frames, not under a type name")
        wire_name = name if name is not None else self._names.get(tp) or default_type_name(tp)
        if not wire_name:
            raise ValueError("a type name must not be empty")
        self._bind(tp, wire_name, replace=not explicit)
        if isinstance(tp, type) and attrs.has(tp) and (pascal_case is not None or rename):
            self._set_field_names(tp, pascal_case, rename or {})

    def _bind(self, tp: Any, name: str, *, replace: bool) -> None:
        key = normalize_type_name(name)
        holder = self._types.get(key)
        if holder is not None and holder != tp and key not in _PRIMITIVE_ALIAS_KEYS:
            if not replace:
                raise ValueError(f"type name {name!r} is already registered for {holder!r}")
            logger.debug("type name %r now means %r (was %r)", name, tp, holder)
        old = self._names.get(tp)
        if old is not None and old != name and self._types.get(normalize_type_name(old)) == tp:
            del self._types[normalize_type_name(old)]
        self._names[tp] = name
        self._types[key] = tp

    def _set_field_names(
        self, cls: type, pascal_case: bool | None, rename: Mapping[str, str]
    ) -> None:
        # A later registration refines an earlier one (a @message_type spec, typically).
        was_pascal, was_renamed = self._policies.get(cls, (False, {}))
        pascal = was_pascal if pascal_case is None else pascal_case
        renamed = {**was_renamed, **rename}
        self._renames[cls] = self._field_names(cls, pascal, renamed)  # validates first
        self._policies[cls] = (pascal, renamed)
        if pascal:
            for nested in _nested_attrs_classes(cls):
                if nested not in self._policies:
                    self._renames[nested] = self._field_names(nested, True, {})
        self._install_hooks()

    @staticmethod
    def _field_names(cls: type, pascal: bool, rename: Mapping[str, str]) -> dict[str, str]:
        names = {field.name for field in attrs.fields(cls)}
        unknown = set(rename) - names
        if unknown:
            raise ValueError(f"{cls.__qualname__} has no field(s) {sorted(unknown)}")
        result = {name: pascal_case(name) for name in names} if pascal else {}
        result.update(rename)
        return result

    def _install_hooks(self) -> None:
        # Generated hooks capture the hooks of their fields' types, so every renamed class
        # is regenerated, innermost first, whenever any of them changes.
        ordered: list[type] = []

        def visit(cls: type, seen: set[type]) -> None:
            if cls in ordered or cls in seen:
                return
            seen.add(cls)
            for nested in _nested_attrs_classes(cls):
                if nested in self._renames:
                    visit(nested, seen)
            ordered.append(cls)

        for cls in self._renames:
            visit(cls, set())
        for cls in ordered:
            self._install(cls, self._renames[cls])

    def _install(self, cls: type, renames: Mapping[str, str]) -> None:
        overrides: dict[str, Any] = {
            field: override(rename=wire) for field, wire in renames.items()
        }
        self.converter.register_structure_hook(
            cls, make_dict_structure_fn(cls, self.converter, **overrides)
        )
        self.converter.register_unstructure_hook(
            cls, make_dict_unstructure_fn(cls, self.converter, **overrides)
        )

    def _pascal_structure_fn(self, cls: Any) -> Callable[[Any, Any], Any]:
        overrides: dict[str, Any] = {
            f.name: override(rename=pascal_case(f.name)) for f in attrs.fields(cls)
        }
        return make_dict_structure_fn(cls, self.converter, **overrides)

    def _pascal_unstructure_fn(self, cls: Any) -> Callable[[Any], Any]:
        overrides: dict[str, Any] = {
            f.name: override(rename=pascal_case(f.name)) for f in attrs.fields(cls)
        }
        return make_dict_unstructure_fn(cls, self.converter, **overrides)


# Receive-only aliases (System.Int64 → int, ...) may be claimed by an explicit registration.
_PRIMITIVE_ALIAS_KEYS = frozenset(normalize_type_name(name) for name in _RECEIVED_ALIASES)


def _format_leaf(exc: BaseException, tp: Any) -> str:
    # Our hooks' own messages ("expected true or false, got str") say more than cattrs'
    # generic ones; cattrs' serve for its own errors (a missing field is a KeyError).
    if isinstance(exc, TypeError | ValueError) and str(exc):
        return str(exc)
    return format_exception(exc, tp)


def _explain(exc: BaseException, tp: Any) -> str:
    if isinstance(exc, cattrs.ClassValidationError | cattrs.IterableValidationError):
        details = "; ".join(cattrs.transform_error(exc, format_exception=_format_leaf))
    else:
        details = str(exc) or type(exc).__name__
    return f"does not fit {getattr(tp, '__qualname__', repr(tp))}: {details}"
