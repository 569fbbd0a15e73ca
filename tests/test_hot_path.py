"""The relay's hot path, compiled or pure, chosen at import (trio_wsproxy/_hot_path.py).

The suite runs twice in CI: on the pure-Python installation, and on one built with
TRIO_WSPROXY_COMPILE=1 with TRIO_WSPROXY_HOT_PATH=compiled (.ci/run). These tests hold
in both: what they expect follows from whether compiled modules are installed."""

from __future__ import annotations

import importlib.util
import os
import runpy
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import trio_wsproxy
from trio_wsproxy import _hot_path

ROOT = Path(__file__).resolve().parent.parent


def compiled_installed() -> bool:
    """Whether this installation has a compiled build of every hot-path module."""
    for name in _hot_path.MODULES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None
        folder = Path(spec.origin).parent
        if not list(folder.glob(name.rpartition(".")[2] + ".*.so")):
            return False
    return True


def imported(choice: str | None) -> subprocess.CompletedProcess[str]:
    """Import trio_wsproxy in a new interpreter with TRIO_WSPROXY_HOT_PATH=``choice``
    (None: unset); it prints the hot path and where each of its modules came from."""
    env = {k: v for k, v in os.environ.items() if k != _hot_path.VARIABLE}
    if choice is not None:
        env[_hot_path.VARIABLE] = choice
    script = (
        "import sys, trio_wsproxy\n"
        "from trio_wsproxy import _hot_path\n"
        "print(trio_wsproxy.HOT_PATH)\n"
        "for name in _hot_path.MODULES:\n"
        "    print(sys.modules[name].__file__)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.parametrize("choice", [None, "auto", "AUTO", " auto "])
def test_auto_takes_the_compiled_modules_where_they_are_installed(choice: str | None) -> None:
    result = imported(choice)
    assert result.returncode == 0, result.stderr
    path, *files = result.stdout.split()
    expected = "compiled" if compiled_installed() else "pure"
    assert path == expected
    assert len(files) == len(_hot_path.MODULES)
    assert all(f.endswith(".so" if expected == "compiled" else ".py") for f in files), files


def test_pure_takes_the_python_source_even_beside_compiled_modules() -> None:
    result = imported("pure")
    assert result.returncode == 0, result.stderr
    path, *files = result.stdout.split()
    assert path == "pure"
    assert files and all(f.endswith(".py") for f in files), files


def test_compiled_takes_the_compiled_modules_or_refuses_to_import() -> None:
    result = imported("compiled")
    if compiled_installed():
        assert result.returncode == 0, result.stderr
        path, *files = result.stdout.split()
        assert path == "compiled"
        assert files and all(f.endswith(".so") for f in files), files
    else:
        assert result.returncode == 1
        assert (
            "ImportError: TRIO_WSPROXY_HOT_PATH=compiled, but this installation of "
            "trio_wsproxy is not compiled: build it with TRIO_WSPROXY_COMPILE=1"
        ) in result.stderr


def test_an_unknown_choice_is_refused_at_import_naming_the_choices() -> None:
    result = imported("fast")
    assert result.returncode == 1
    assert (
        "ImportError: TRIO_WSPROXY_HOT_PATH='fast': it must be one of auto, compiled, pure"
    ) in result.stderr


def test_this_run_is_on_the_path_it_asked_for() -> None:
    # (CI's compiled run sets TRIO_WSPROXY_HOT_PATH=compiled: the suite ran compiled.)
    asked = os.environ.get(_hot_path.VARIABLE, "auto").strip().lower()
    assert trio_wsproxy.HOT_PATH == (
        asked if asked != "auto" else "compiled" if compiled_installed() else "pure"
    )
    assert all(
        _hot_path.is_compiled(sys.modules[name]) == (trio_wsproxy.HOT_PATH == "compiled")
        for name in _hot_path.MODULES
    )
    assert "HOT_PATH" not in trio_wsproxy.__all__  # metadata, as __version__ is


def test_the_build_compiles_the_source_of_every_hot_path_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # setup.py reads _hot_path.MODULES from the module's text, not by importing it.
    monkeypatch.chdir(ROOT)
    sources = runpy.run_path(str(ROOT / "setup.py"), run_name="setup")["hot_path_sources"]()
    assert sources == [f"src/{name.replace('.', '/')}.py" for name in _hot_path.MODULES]
    assert all((ROOT / source).is_file() for source in sources)


def build_backend() -> dict[str, object]:
    """The in-tree build backend's hooks (pyproject.toml's backend-path)."""
    return runpy.run_path(str(ROOT / "build_backend" / "trio_wsproxy_build.py"))


def test_a_compiled_build_asks_for_mypyc_and_what_the_hot_path_imports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("TRIO_WSPROXY_COMPILE", "1")
    requires = build_backend()["get_requires_for_build_wheel"]()  # type: ignore[operator]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert requires == ["mypy==2.4.1", *project["dependencies"]]


def test_a_compiled_editable_install_is_refused_saying_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("TRIO_WSPROXY_COMPILE", "1")
    with pytest.raises(SystemExit) as refused:
        build_backend()["get_requires_for_build_editable"]()  # type: ignore[operator]
    assert str(refused.value) == (
        "TRIO_WSPROXY_COMPILE=1 builds a regular install, not an editable one: use "
        "'pip install .' (in a virtualenv of its own), or leave TRIO_WSPROXY_COMPILE "
        "unset for an editable install"
    )
