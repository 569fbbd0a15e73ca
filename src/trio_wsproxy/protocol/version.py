"""The installed distribution's version, for ``trio_wsproxy.__version__`` and for what the
relay says of itself (the HTTP API's OpenAPI document)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    #: ``pyproject.toml``'s version of the installed distribution, e.g. ``"0.2.0"``.
    VERSION = version("trio_wsproxy")
except PackageNotFoundError:  # imported from a source tree that was never installed
    VERSION = "0+unknown"
