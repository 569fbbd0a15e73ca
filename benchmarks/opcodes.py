"""Run a Python relay counting the bytecode instructions it executes, by package.

    python benchmarks/opcodes.py OUT.json -m trio_wsproxy serve --port 8765
    python benchmarks/opcodes.py OUT.json path/to/relay.py 8765

SIGUSR2 starts counting (and stops it: a toggle), SIGUSR1 writes ``OUT.json`` and ends
the process. The counts are deterministic — the same work gives the same count whatever
else the machine does — and say which part of a relayed message's Python is Trio's loop
and which the relay's own (``one_in_flight.py`` divides them by the messages relayed).
Tracing makes the relay about 20 times slower: its counts, not its times, are the point.
"""

from __future__ import annotations

import collections
import json
import os
import runpy
import signal
import sys
import types
from typing import Any

counts: collections.Counter[tuple[str, str]] = collections.Counter()
counting = False
out = sys.argv[1]


def _trace(frame: types.FrameType, event: str, arg: Any) -> Any:
    if counting:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[code.co_filename, code.co_name] += 1
    return _trace


def package(filename: str) -> str:
    """Who a code object belongs to: trio_wsproxy, trio (its loop, with outcome and the
    attrs-generated methods of its classes), or the rest."""
    if "trio_wsproxy" in filename:
        return "trio_wsproxy"
    if "/trio/" in filename or "/outcome/" in filename or "attrs generated" in filename:
        return "trio"
    if filename.endswith("collections/__init__.py"):
        return "trio"  # (Trio's instruments are a UserDict: looked up every turn)
    return "other"


def _toggle(*_: object) -> None:
    global counting
    counting = not counting


def _dump(*_: object) -> None:
    global counting
    counting = False
    by_package: collections.Counter[str] = collections.Counter()
    for (filename, _name), n in counts.items():
        by_package[package(filename)] += n
    top = [
        {"function": f"{'/'.join(filename.split('/')[-2:])}:{name}", "n": n}
        for (filename, name), n in counts.most_common(40)
    ]
    with open(out, "w") as f:
        json.dump({"by_package": dict(by_package), "top": top}, f)
    os._exit(0)


def main() -> None:
    signal.signal(signal.SIGUSR2, _toggle)
    signal.signal(signal.SIGUSR1, _dump)
    target = sys.argv[2:]
    sys.settrace(_trace)
    if target[0] == "-m":
        sys.argv = [target[1], *target[2:]]
        runpy.run_module(target[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = target
        runpy.run_path(target[0], run_name="__main__")


if __name__ == "__main__":
    main()
