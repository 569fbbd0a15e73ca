"""The relay's hot path, compiled or pure Python: chosen when trio_wsproxy is imported.

An installation built with ``TRIO_WSPROXY_COMPILE=1`` (docs/production.md) holds
each module of :data:`MODULES` twice: compiled by mypyc, which Python imports first, and
its pure-Python source beside it. ``TRIO_WSPROXY_HOT_PATH`` chooses, at import:

- ``auto`` (or unset): the compiled modules where they are installed, else pure Python;
- ``pure``: the pure-Python modules, even where compiled ones are installed;
- ``compiled``: the compiled ones; importing trio_wsproxy fails with ImportError in an
  installation that has none.

Both paths are the same code and behave the same; the suite runs on each. Which one runs
is ``trio_wsproxy.HOT_PATH``. This module is the package's first import, so that the
choice is made before any hot-path module is imported; it imports only the standard
library, and the build (setup.py) reads :data:`MODULES` from its text.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

#: What runs for every message relayed: compiled in a compiled build.
MODULES = (
    "trio_wsproxy.protocol.assembly",
    "trio_wsproxy.protocol.encoding",
    "trio_wsproxy.protocol.frames",
    "trio_wsproxy.protocol.message",
    "trio_wsproxy.relay.budget",
    "trio_wsproxy.relay.counters",
    "trio_wsproxy.relay.fanout",
    "trio_wsproxy.relay.floor",
    "trio_wsproxy.relay.mailbox",
    "trio_wsproxy.relay.poller",
    "trio_wsproxy.relay.reader",
    "trio_wsproxy.relay.sender",
    "trio_wsproxy.relay.session",
    "trio_wsproxy.relay.views",
)
#: The environment variable that chooses, and its values.
VARIABLE = "TRIO_WSPROXY_HOT_PATH"
CHOICES = ("auto", "compiled", "pure")


class _PureFinder(importlib.abc.MetaPathFinder):
    """Finds the pure-Python source of a hot-path module, ahead of its compiled build."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES or path is None:
            return None
        leaf = fullname.rpartition(".")[2] + ".py"
        for entry in path:
            source = os.path.join(entry, leaf)
            if os.path.isfile(source):
                return importlib.util.spec_from_file_location(fullname, source)
        return None


def choose() -> str:
    """Read ``TRIO_WSPROXY_HOT_PATH`` before any hot-path module is imported, and make
    ``pure`` take effect; the choice. Raises ImportError for a value it does not know."""
    choice = os.environ.get(VARIABLE, "").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ImportError(
            f"{VARIABLE}={os.environ[VARIABLE]!r}: it must be one of {', '.join(CHOICES)}"
        )
    if choice == "pure" and not any(type(f) is _PureFinder for f in sys.meta_path):
        sys.meta_path.insert(0, _PureFinder())
    return choice


def in_use(choice: str) -> str:
    """Which hot path the imported modules are, ``"compiled"`` or ``"pure"``; ImportError
    when ``choice`` was ``compiled`` and they are not."""
    compiled = [is_compiled(importlib.import_module(name)) for name in MODULES]
    if all(compiled):
        return "compiled"
    if choice == "compiled":
        raise ImportError(
            f"{VARIABLE}=compiled, but this installation of trio_wsproxy is not compiled: "
            "build it with TRIO_WSPROXY_COMPILE=1 (see 'A compiled hot path' in the "
            "documentation's Running in production), "
            f"or set {VARIABLE} to auto or pure"
        )
    return "pure"


def is_compiled(module: ModuleType) -> bool:
    """Whether ``module`` was loaded from an extension module (compiled)."""
    return isinstance(getattr(module, "__loader__", None), importlib.machinery.ExtensionFileLoader)


#: The choice, read as trio_wsproxy is imported (before any hot-path module).
CHOICE = choose()
