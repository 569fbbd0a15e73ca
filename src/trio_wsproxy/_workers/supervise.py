"""The supervisor of ``trio-wsproxy serve --workers N``: it reserves the port, runs N
``trio-wsproxy serve --reuse-port`` processes that listen on it together, restarts a
worker that dies, and stops them all on SIGINT or SIGTERM (:func:`serve_workers`)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack
from functools import partial
from typing import NoReturn

import attrs
import trio

from .._serve import load_tls_context
from ..protocol.backoff import Backoff
from ..protocol.exceptions import first_leaf
from ..relay.config import RelayConfig
from ..relay.demo import demo_url
from ..relay.listeners import bind_reuseport
from .endpoint import WorkerLink, serve_http
from .figures import WholeRelay
from .signals import STOP_SIGNALS, exit_at_once

logger = logging.getLogger("trio_wsproxy.workers")

#: The start of the line ``trio-wsproxy serve`` prints on stdout once it listens
#: (``_serve`` in ``_cli``); the rest of the line is its URL.
LISTENING = "trio-wsproxy relay listening on "

# A worker that served this long before it died was healthy: its restart waits the
# shortest backoff again. Each quicker death doubles the wait, up to the longest.
_HEALTHY_RUN = 10.0
_FIRST_BACKOFF = 0.1
_LONGEST_BACKOFF = 5.0
# Startups in a row that may end before the worker listens. A worker that cannot
# listen (unreadable certificate, address not available) fails the same way every
# time; past this the supervisor gives up instead of restarting it forever.
_STARTUP_ATTEMPTS = 3
# Beyond close_timeout (its sessions' close handshakes), how long a worker told to stop
# has to cancel its tasks and exit before it is killed.
_EXIT_MARGIN = 2.0
# How long the supervisor, cut short by a second signal, waits for the workers it has
# just killed to be reaped before it exits: a SIGKILLed process is gone within
# milliseconds, and reaping them keeps them from lingering as zombies.
_REAP_TIMEOUT = 2.0


class WorkerFailed(Exception):
    """A worker kept exiting before it listened, so the supervisor gave up."""


def serve_flags(config: RelayConfig) -> list[str]:
    """The ``trio-wsproxy serve`` flags that describe ``config``: one per field that
    differs from its default, so that parsing them gives ``config`` back.

    Fields read from the environment (the token secret) have no flag and are left
    out: a child process gets them with its environment."""
    flags: list[str] = []
    for field in attrs.fields(RelayConfig):
        value = getattr(config, field.name)
        if field.metadata.get("env") or value == field.default:
            continue
        flag = "--" + field.name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag.removeprefix("--"))
        elif value is None:
            flags.append(f"{flag}=none")
        elif isinstance(value, tuple):
            flags.append(f"{flag}={','.join(value)}")
        else:
            # --flag=VALUE, so that a value starting with "-" is not taken for a flag.
            flags.append(f"{flag}={value}")
    return flags


def _environment(config: RelayConfig) -> dict[str, str]:
    """The supervisor's environment, plus the settings ``config`` reads from it."""
    environment = dict(os.environ)
    for field in attrs.fields(RelayConfig):
        name = field.metadata.get("env")
        value = getattr(config, field.name)
        if name and value is not None:
            environment[name] = str(value)
    return environment


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


@attrs.frozen
class _Worker:
    """One of the supervisor's N places: the process in it now, restarted when it dies."""

    index: int
    #: The command of its processes (every place's has its own --worker-index).
    command: list[str]
    environment: dict[str, str]
    #: Seconds a worker has between SIGTERM and SIGKILL.
    stop_timeout: float
    #: The worker processes running now, of every place: what a second signal kills.
    running: set[trio.Process]

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep a worker process in this place until cancelled, which stops it.

        Reports the URL it listens on the first time one does. Raises
        :exc:`WorkerFailed` when one exits before listening too many times in a row."""
        backoff = Backoff(_FIRST_BACKOFF, _LONGEST_BACKOFF)
        failed_startups = 0
        announced = False

        def listening(url: str) -> None:
            nonlocal announced
            if not announced:
                announced = True
                task_status.started(url)

        while True:
            started_at = trio.current_time()
            pid, listened, returncode = await self._run_process(listening)
            # Here only when the worker ended by itself: stopping cancels _run_process.
            how = _describe(returncode)
            failed_startups = 0 if listened else failed_startups + 1
            if failed_startups == _STARTUP_ATTEMPTS:
                raise WorkerFailed(
                    f"worker {self.index} {how} before listening, {failed_startups} times in a row"
                )
            if trio.current_time() - started_at >= _HEALTHY_RUN:
                backoff.reset()
            delay = backoff.next_delay()
            logger.warning(
                "worker %d (pid %d) %s%s; restarting in %gs",
                self.index,
                pid,
                how,
                "" if listened else " before listening",
                delay,
            )
            await trio.sleep(delay)

    async def _run_process(self, listening: Callable[[str], None]) -> tuple[int, bool, int]:
        """Run one worker process to its end: (its pid, whether it listened, its exit
        status). Cancelling stops it (:meth:`_stop`) and waits for it."""
        process: trio.Process | None = None
        try:
            async with trio.open_nursery() as nursery:
                process = await nursery.start(
                    partial(
                        trio.run_process,
                        self.command,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        env=self.environment,
                        # A process group of its own, so that a Ctrl-C in the terminal
                        # reaches the supervisor alone, which stops every worker the one
                        # way: SIGTERM.
                        process_group=0,
                        check=False,
                        deliver_cancel=self._stop,
                    )
                )
                self.running.add(process)
                logger.info("worker %d started (pid %d)", self.index, process.pid)
                listened = await self._read_stdout(process, listening)
        finally:
            # run_process has returned (or never started one): nothing left to kill.
            if process is not None:
                self.running.discard(process)
        # run_process has returned: the process has exited.
        assert process.returncode is not None
        return process.pid, listened, process.returncode

    async def _read_stdout(self, process: trio.Process, listening: Callable[[str], None]) -> bool:
        """Read the worker's stdout until it closes; whether the worker listened.

        Its first ``LISTENING`` line gives its URL to ``listening``; any other output goes
        to the supervisor's stderr, keeping stdout for the supervisor's own line."""
        assert process.stdout is not None
        listened = False
        pending = b""
        async with process.stdout:
            async for chunk in process.stdout:
                pending += chunk
                while b"\n" in pending:
                    raw, _, pending = pending.partition(b"\n")
                    line = raw.decode(errors="replace")
                    if not listened and line.startswith(LISTENING):
                        listened = True
                        logger.info("worker %d (pid %d) listening", self.index, process.pid)
                        listening(line.removeprefix(LISTENING).strip())
                    else:
                        print(line, file=sys.stderr, flush=True)
        if pending:
            print(pending.decode(errors="replace"), file=sys.stderr, flush=True)
        return listened

    async def _stop(self, process: trio.Process) -> None:
        process.terminate()
        await trio.sleep(self.stop_timeout)
        logger.warning(
            "worker %d (pid %d) still running %gs after SIGTERM: killing it",
            self.index,
            process.pid,
            self.stop_timeout,
        )
        process.kill()


async def _start_all(nursery: trio.Nursery, workers: list[_Worker]) -> str:
    """Start every worker in ``nursery`` at once; their URL, once all of them listen."""
    urls: list[str] = []

    async def start(worker: _Worker) -> None:
        urls.append(await nursery.start(worker.run))

    async with trio.open_nursery() as starting:
        for worker in workers:
            starting.start_soon(start, worker)
    return urls[0]


async def _stop_on_signals(
    signals: AsyncIterator[int],
    scope: trio.CancelScope,
    running: set[trio.Process],
    clean_up: Callable[[], object],
) -> NoReturn:
    """The first signal cancels ``scope``, which stops every worker gracefully (SIGTERM,
    then SIGKILL after ``stop_timeout``); a second kills every worker in ``running`` at
    once, waits for them to be reaped, calls ``clean_up`` (what no ``finally`` will do
    now) and ends the supervisor (:func:`exit_at_once`)."""
    async for signum in signals:
        if not scope.cancel_called:
            logger.info("%s received: stopping every worker", signal.Signals(signum).name)
            scope.cancel()
            continue
        killed = list(running)
        for process in killed:
            process.kill()
        with trio.move_on_after(_REAP_TIMEOUT):
            for process in killed:
                await process.wait()
        clean_up()
        exit_at_once(signum)
    raise AssertionError("a signal receiver never ends")  # pragma: no cover


async def serve_workers(config: RelayConfig) -> None:
    """Run ``config.workers`` relay processes on ``config``'s port until SIGINT or SIGTERM.

    Once every worker listens, prints ``trio-wsproxy relay listening on URL (N workers)``
    on stdout. A worker that dies is restarted, after a growing backoff when it keeps
    dying. A signal sends SIGTERM to every worker, SIGKILL to any still running
    ``close_timeout`` plus a margin later, and returns once all have exited. A second
    signal before then SIGKILLs every worker and ends the process (:func:`exit_at_once`).

    Raises OSError when the port cannot be had, :exc:`~trio_wsproxy.TLSConfigError`
    when the certificate or key cannot be used (said once, rather than by every worker
    in turn), and :exc:`WorkerFailed` when a worker cannot get to listening (its own
    error is on stderr)."""
    load_tls_context(config)
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals, ExitStack() as held:
        # The supervisor binds the port too, with the listeners' options, but does not
        # listen: nobody else can take the port even while every worker restarts, and it
        # is handed no connections. With port 0 this picks the port for all.
        sockets = await bind_reuseport(config)
        for sock in sockets:
            held.enter_context(sock)
        port = sockets[0].getsockname()[1]
        worker_config = attrs.evolve(config, port=port, workers=1, reuse_port=True)
        # The workers' private endpoints: a directory only this user can enter (mkdtemp
        # makes it 0700), removed on the way out.
        directory = tempfile.mkdtemp(prefix="trio-wsproxy-")
        clean_up = partial(shutil.rmtree, directory, ignore_errors=True)
        held.callback(clean_up)
        whole = WholeRelay(directory, config.workers)
        environment = _environment(config)
        stop_timeout = config.close_timeout + _EXIT_MARGIN
        running: set[trio.Process] = set()
        try:
            async with trio.open_nursery() as watching:
                try:
                    await watching.start(serve_http, whole.socket, whole.answer)
                except OSError as error:  # e.g. a TMPDIR too long for a Unix socket's name
                    logger.warning(
                        "cannot open the workers' metrics endpoints in %s (%s): each scrape "
                        "of /metrics answers for the worker that takes it",
                        directory,
                        error,
                    )
                    links: list[WorkerLink | None] = [None] * config.workers
                else:
                    logger.info("the workers' figures meet in %s", directory)
                    links = list(whole.links)
                workers = [
                    _Worker(
                        index, _worker_command(worker_config, link), environment,
                        stop_timeout, running,
                    )
                    for index, link in enumerate(links, start=1)
                ]  # fmt: skip
                async with trio.open_nursery() as nursery:
                    # Outside the workers' nursery, so that it still listens while the
                    # first signal's cancellation stops them.
                    watching.start_soon(
                        _stop_on_signals, signals, nursery.cancel_scope, running, clean_up
                    )
                    url = await _start_all(nursery, workers)
                    print(f"{LISTENING}{url} ({len(workers)} workers)", flush=True)
                    if config.demo:
                        print(f"demo page at {demo_url(url, config.path)}", flush=True)
                watching.cancel_scope.cancel()
        except* WorkerFailed as group:
            raise first_leaf(group) from None


def _worker_command(config: RelayConfig, link: WorkerLink | None) -> list[str]:
    """The command line of a worker with ``config``, and ``link``'s flags when it has one."""
    # --workers=1 said outright: a worker must never become a supervisor itself,
    # whatever the default of --workers may one day be.
    return [
        *(sys.executable, "-m", "trio_wsproxy", "serve"),
        *serve_flags(config),
        *(link.flags() if link is not None else ()),
        "--workers=1",
    ]
