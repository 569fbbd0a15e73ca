"""setuptools' build backend, with mypyc and the package's dependencies added to what a
build needs when TRIO_WSPROXY_COMPILE=1 asks for the compiled hot path (setup.py).

mypyc type-checks what it compiles, so the build environment holds the packages the hot
path imports (their types are what the compiled code is built against)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F403  (the backend's other hooks, unchanged)

#: The mypy release whose mypyc compiles the hot path (its build is tested in CI).
MYPYC = "mypy==2.4.1"


def _compiling() -> list[str]:
    if os.environ.get("TRIO_WSPROXY_COMPILE") != "1":
        return []
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    return [MYPYC, *project["dependencies"]]


# (When compiling, setuptools' own hook is not asked: it runs setup.py, which needs the
# very mypyc this adds. setup.py asks for nothing more than pyproject.toml does.)


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _compiling() or build_meta.get_requires_for_build_wheel(config_settings)


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    if os.environ.get("TRIO_WSPROXY_COMPILE") == "1":
        # Its compiled modules would be imported ahead of the sources being edited, and
        # go stale with every edit: refused, saying what to do instead.
        raise SystemExit(
            "TRIO_WSPROXY_COMPILE=1 builds a regular install, not an editable one: "
            "use 'pip install .' (in a virtualenv of its own), or leave "
            "TRIO_WSPROXY_COMPILE unset for an editable install"
        )
    return build_meta.get_requires_for_build_editable(config_settings)
