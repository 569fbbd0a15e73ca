"""The proposal for Trio on the performance page (benchmarks/trio-epoll-armed.patch)
does what it says, on a copy of the installed Trio: a task that waits on the same
descriptor again costs no epoll_ctl, and a stale registration — an fd closed without
notify_closing while a duplicate keeps its file open — costs one spurious wake-up, not
a busy loop (the reason Trio uses EPOLLONESHOT today)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trio

ROOT = Path(__file__).resolve().parent.parent
PATCH = ROOT / "benchmarks" / "trio-epoll-armed.patch"
TRIO = Path(trio.__file__).parent
# The file the patch is made against: Trio 0.35.0's _core/_io_epoll.py.
AGAINST = "7da665ef738566d4b440b065b487718ceca019422ee6ab35473b98faab51fd59"

# Run in a subprocess, on the Trio given by PYTHONPATH; prints its counts as JSON.
PROGRAM = r"""
import json, os, select, socket
import trio

class Counting:
    # Trio's epoll set, counting the epoll_ctl calls made on it.
    def __init__(self, epoll):
        self.epoll, self.ctl = epoll, 0
    def modify(self, *args):
        self.ctl += 1
        return self.epoll.modify(*args)
    def register(self, *args):
        self.ctl += 1
        return self.epoll.register(*args)
    def unregister(self, *args):
        self.ctl += 1
        return self.epoll.unregister(*args)
    def __getattr__(self, name):
        return getattr(self.epoll, name)

class Waits(trio.abc.Instrument):
    def __init__(self):
        self.io_waits = 0
    def before_io_wait(self, timeout):
        self.io_waits += 1

async def main():
    manager = trio.lowlevel.current_root_task()._runner.io_manager
    counting = Counting(manager._epoll)
    manager._epoll = counting
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    # 200 messages, each waited for by the same task on the same fd. One byte a read: on
    # a busy machine the sender may get two in before the reader wakes, and a read of
    # both would leave the reader waiting for a 200th that never comes.
    async def reader():
        for _ in range(200):
            await trio.lowlevel.wait_readable(a)
            a.recv(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        for _ in range(200):
            b.send(b"x")
            await trio.sleep(0.001)
    rewaits = counting.ctl
    # A stale registration: woken once, the task stops waiting; the fd is closed
    # without notify_closing while a duplicate keeps the socket open; then the socket
    # turns readable and stays so. Count Trio's waits over 0.2 s of sleeping.
    c, d = socket.socketpair()
    c.setblocking(False)
    d.send(b"y")
    await trio.lowlevel.wait_readable(c)
    c.recv(100)
    duplicate = os.dup(c.fileno())
    c.close()  # (a socket.socket: no notify_closing)
    d.send(b"z")
    waits = Waits()
    trio.lowlevel.add_instrument(waits)
    await trio.sleep(0.2)
    trio.lowlevel.remove_instrument(waits)
    os.close(duplicate)
    print(json.dumps({"ctl_for_200_rewaits": rewaits, "io_waits_in_200ms": waits.io_waits}))

trio.run(main)
"""


def counts(trio_parent: Path) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        env={"PYTHONPATH": str(trio_parent), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, int] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="module")
def patched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = (TRIO / "_core" / "_io_epoll.py").read_bytes()
    if hashlib.sha256(source).hexdigest() != AGAINST:
        pytest.skip(f"the patch is made against Trio 0.35.0; this is Trio {trio.__version__}")
    if shutil.which("patch") is None:
        pytest.fail("the patch tool is needed (Debian's patch package)")
    folder = tmp_path_factory.mktemp("trio-armed")
    shutil.copytree(TRIO, folder / "trio")
    subprocess.run(["patch", "-s", "-p1", "-d", str(folder), "-i", str(PATCH)], check=True)
    return folder


def test_a_task_waiting_on_the_same_fd_again_costs_no_epoll_ctl(patched: Path) -> None:
    today = counts(TRIO.parent)
    armed = counts(patched)
    assert today["ctl_for_200_rewaits"] >= 200  # (one re-arm per wait)
    # A few, whatever the number of waits: the first registration (a MOD that fails,
    # then an ADD) and the odd narrowing.
    assert armed["ctl_for_200_rewaits"] <= 5


def test_a_stale_registration_costs_one_wake_up_not_a_busy_loop(patched: Path) -> None:
    # A busy loop would wait thousands of times in 0.2 s; a sleep waits about once.
    assert counts(patched)["io_waits_in_200ms"] <= 5
    assert counts(TRIO.parent)["io_waits_in_200ms"] <= 5
