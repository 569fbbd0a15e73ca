"""The build's one step that pyproject.toml cannot say: with TRIO_WSPROXY_COMPILE=1, the
relay's hot path (src/trio_wsproxy/_hot_path.py's MODULES) is compiled with mypyc,
beside its pure-Python source. Without it, the package is pure Python and needs no
compiler. docs/production.md ("A compiled hot path") says how to build it and how to
choose at import."""

import ast
import os
from pathlib import Path

from setuptools import setup


def hot_path_sources() -> list[str]:
    """The hot path's source files, from _hot_path.MODULES (read, not imported: the
    package's dependencies need not be installed to build it)."""
    tree = ast.parse(Path("src/trio_wsproxy/_hot_path.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "MODULES":
            modules = ast.literal_eval(node.value)
            return ["src/" + name.replace(".", "/") + ".py" for name in modules]
    raise RuntimeError("src/trio_wsproxy/_hot_path.py has no MODULES")


if __name__ == "__main__":  # (as setuptools runs it; tests/test_hot_path.py reads it)
    if os.environ.get("TRIO_WSPROXY_COMPILE") == "1":
        from mypyc.build import mypycify  # (a build requirement then: build_backend/)

        sources = hot_path_sources()
        setup(
            ext_modules=mypycify(sources, opt_level="3", group_name="trio_wsproxy"),
            # (A build folder of its own: a pure build after it takes no compiled module
            # from the one they would share.)
            options={"build": {"build_base": "build/compiled"}},
        )
    else:
        setup()
