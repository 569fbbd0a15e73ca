"""How SIGINT and SIGTERM stop a relay or a supervisor: the first gracefully (through
:func:`trio.open_signal_receiver`), a second at once (:func:`exit_at_once`)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

#: The signals that stop a relay or a supervisor: the first gracefully, a second at once.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_at_once(signum: int, frame: FrameType | None = None) -> NoReturn:
    """End the process now, for a second SIGINT or SIGTERM that cuts a graceful shutdown
    short: one line on stderr, then exit status 128 + the signal's number (130 for
    SIGINT, 143 for SIGTERM: what a shell reports for a process that signal ended),
    with no traceback and no waiting. Members not yet closed are cut off: their
    connections end without a close frame when the process's sockets close.

    A signal handler (``signal.signal(SIGTERM, exit_at_once)``) as well as a function."""
    name = signal.Signals(signum).name
    try:
        print(
            f"trio-wsproxy: {name} during shutdown: exiting at once; members not yet "
            "closed are cut off",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
    except (OSError, ValueError):
        pass  # stderr or stdout is gone (closed pipe): the exit status still says it
    os._exit(128 + signum)


@contextmanager
def signals_exit_at_once() -> Iterator[None]:
    """Make SIGINT and SIGTERM :func:`exit_at_once` while the block runs (then put back
    the handlers there were). The command line runs its Trio loop in such a block:
    the loop takes the first signal through :func:`trio.open_signal_receiver` and shuts
    down gracefully; once that receiver is closed, the next one lands here. Trio then
    installs no KeyboardInterrupt handler of its own, so a SIGINT never becomes a
    traceback."""
    previous = {signum: signal.signal(signum, exit_at_once) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
