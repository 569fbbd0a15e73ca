"""Several relay processes on one port: ``trio-wsproxy serve --workers N``.

A supervisor reserves the port, runs N ``trio-wsproxy serve --reuse-port`` processes
that listen on it together (the kernel spreads new connections across them), restarts
a worker that dies, and stops them all on SIGINT or SIGTERM (and kills them all at once
on a second one). Groups span the workers through the backplane; the supervisor itself
knows nothing of groups or members.

``/metrics`` answers for the whole relay whichever worker takes the scrape: the
supervisor gives each worker a private endpoint, a Unix socket in a directory of its own
(``--worker-dir``, ``--worker-index``, ``--worker-count``: internal flags, set by the
supervisor alone), reads every worker's figures there when asked on its own socket, and
adds them up (:func:`~trio_wsproxy.relay.metrics.render_whole_relay`), keeping what it
last heard from each so that the relay's counters never go down.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from http import HTTPStatus
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

import attrs
import h11
import trio

from ._serve import load_tls_context, serve_worker_relay
from .protocol.backoff import Backoff
from .protocol.exceptions import first_leaf
from .relay.config import RelayConfig
from .relay.demo import demo_url
from .relay.listeners import bind_reuseport
from .relay.metrics import (
    CONTENT_TYPE as METRICS_CONTENT_TYPE,
)
from .relay.metrics import (
    Figures,
    SampleKey,
    WorkerFigures,
    render_metrics,
    render_whole_relay,
)

if TYPE_CHECKING:
    from .relay.relay import Relay

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
#: The signals that stop a relay or a supervisor: the first gracefully, a second at once.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# How long the supervisor waits for one worker's figures when asked for the whole
# relay's. An idle or busy worker answers within milliseconds (it is one task among its
# sessions); one that has not answered in a second is stopped, stalled or dying, and the
# scrape goes on without it (its last counters still count).
_REPORT_TIMEOUT = 1.0
# How long a worker that took a scrape waits for the supervisor's answer: the
# supervisor's own wait for the slowest worker, and time to spare. Then it answers with
# its own figures alone rather than leave the scrape waiting.
_WHOLE_RELAY_TIMEOUT = _REPORT_TIMEOUT + 1.0
# Largest body read from a private endpoint: a worker's report holds 17 bytes per group
# it has (a digest), so this is room for a few million groups, and a bound all the same.
_MAX_BODY = 64 * 1024 * 1024
# How long a private endpoint waits for a request (its peers send theirs at once).
_REQUEST_TIMEOUT = 5.0
_READ_SIZE = 65536
# The supervisor's endpoint in its private directory: the whole relay's /metrics.
_WHOLE_RELAY_SOCKET = "relay.sock"
# Paths the private endpoints answer.
_REPORT_PATH = "/report"
_WHOLE_RELAY_PATH = "/metrics"


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


# -- the whole relay's figures: a private endpoint per worker, added up by the supervisor --


class EndpointError(Exception):
    """A private endpoint gave no proper answer: not a complete 200 response."""


@attrs.frozen
class WorkerLink:
    """What one worker is told of its supervisor's private endpoints (the internal flags
    ``--worker-dir``, ``--worker-index`` and ``--worker-count``)."""

    #: The supervisor's private directory, where both ends have their socket.
    directory: str
    #: Which of the supervisor's places this worker is in, from 1.
    index: int
    #: How many there are (``--workers``).
    count: int

    def __attrs_post_init__(self) -> None:
        if self.count < 2:
            raise ValueError(f"--worker-count must be 2 or more, got {self.count}")
        if not 1 <= self.index <= self.count:
            raise ValueError(
                f"--worker-index must be from 1 to --worker-count ({self.count}), got {self.index}"
            )
        if not self.directory:
            raise ValueError("--worker-dir is empty")

    @property
    def report_socket(self) -> str:
        """Where this worker serves its :class:`WorkerReport`."""
        return os.path.join(self.directory, f"worker-{self.index}.sock")

    @property
    def whole_relay_socket(self) -> str:
        """Where the supervisor serves the whole relay's ``/metrics``."""
        return os.path.join(self.directory, _WHOLE_RELAY_SOCKET)

    def flags(self) -> list[str]:
        return [
            f"--worker-dir={self.directory}",
            f"--worker-index={self.index}",
            f"--worker-count={self.count}",
        ]


def group_digest(name: str) -> str:
    """What a worker says of one of its groups: enough to count the groups of all the
    workers without double-counting a group on two of them (a collision in 64 bits is
    not to be feared), and without group names leaving the process."""
    return hashlib.blake2b(name.encode(), digest_size=8).hexdigest()


@attrs.frozen
class WorkerReport:
    """What a worker tells its supervisor of itself: the one wire format of the private
    endpoints (JSON: ``{"instance": ..., "exposition": ..., "groups": [...]}``)."""

    #: Names this process (not its place): a restarted worker counts from 0 again.
    instance: str
    #: Its own ``/metrics`` body, in the Prometheus text format.
    exposition: str
    #: :func:`group_digest` of each group with members on it.
    groups: frozenset[str]

    def encode(self) -> bytes:
        return json.dumps(
            {
                "instance": self.instance,
                "exposition": self.exposition,
                "groups": sorted(self.groups),
            }
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> WorkerReport:
        """The report in ``data``; ValueError saying what is wrong when it is not one."""
        try:
            fields = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"a worker report that is not JSON: {error}") from None
        if not isinstance(fields, dict):
            raise ValueError("a worker report that is not a JSON object")
        instance, exposition = fields.get("instance"), fields.get("exposition")
        groups = fields.get("groups")
        if not isinstance(instance, str) or not instance:
            raise ValueError("a worker report without its instance")
        if not isinstance(exposition, str):
            raise ValueError("a worker report without its exposition")
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise ValueError("a worker report whose groups are not a list of strings")
        return cls(instance, exposition, frozenset(groups))


# An endpoint's answer to a GET of a path: (status, body, content type).
Answer = tuple[int, bytes, str]


async def serve_http(
    path: str,
    answer: Callable[[str], Awaitable[Answer]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HTTP/1.1 (h11) on a Unix socket at ``path`` until cancelled: each GET is
    answered with ``await answer(target)``, then the connection closes. A socket left
    at ``path`` by an earlier process (the place's previous worker) is replaced. Raises
    OSError, before ``task_status.started()``, when the socket cannot be made."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        await sock.bind(path)
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    listener = trio.SocketListener(sock)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, partial(_answer_request, answer), [listener])
        task_status.started()


async def _answer_request(
    answer: Callable[[str], Awaitable[Answer]], stream: trio.SocketStream
) -> None:
    """Read one request from ``stream`` and answer it; a peer that goes away or speaks
    no HTTP ends only its own connection."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=16384)
    async with stream:
        try:
            request: h11.Request | None = None
            with trio.move_on_after(_REQUEST_TIMEOUT):
                while True:
                    event = connection.next_event()
                    if event is h11.NEED_DATA:
                        connection.receive_data(await stream.receive_some(_READ_SIZE))
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        break
            if request is None:
                return  # closed, or silent for _REQUEST_TIMEOUT: nobody to answer
            if request.method != b"GET":
                status, body, kind = 405, b"only GET\n", "text/plain"
            else:
                status, body, kind = await answer(request.target.decode("ascii", "replace"))
        except h11.RemoteProtocolError as error:
            status, body, kind = error.error_status_hint, f"{error}\n".encode(), "text/plain"
            if connection.our_state is not h11.SEND_RESPONSE:
                return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        headers = [
            ("Content-Type", kind),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
        try:
            await stream.send_all(
                connection.send(
                    h11.Response(
                        status_code=status, headers=headers, reason=HTTPStatus(status).phrase
                    )
                )
                + connection.send(h11.Data(data=body))
                + connection.send(h11.EndOfMessage())
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the asker gave up waiting


async def http_get(path: str, target: str) -> bytes:
    """GET ``target`` from the private endpoint on the Unix socket at ``path``: the body
    of its 200 answer. Raises OSError when nobody listens there, :exc:`EndpointError`
    for anything but a complete 200 (of at most ``_MAX_BODY`` bytes). The caller
    bounds the time."""
    stream = await trio.open_unix_socket(path)
    connection = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET", target=target, headers=[("Host", "localhost"), ("Connection", "close")]
    )
    async with stream:
        try:
            await stream.send_all(connection.send(request) + connection.send(h11.EndOfMessage()))
            status: int | None = None
            body = bytearray()
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await stream.receive_some(_READ_SIZE))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > _MAX_BODY:
                        raise EndpointError(f"an answer larger than {_MAX_BODY} bytes")
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise EndpointError("closed before answering")
        except h11.ProtocolError as error:
            raise EndpointError(f"not HTTP: {error}") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            raise EndpointError(f"connection lost: {error}") from None
    if status != 200:
        raise EndpointError(f"status {status}: {bytes(body[:200])!r}")
    return bytes(body)


@attrs.define
class _Place:
    """What the supervisor knows of the figures of one of its places."""

    #: The process it last heard from, and what that one said last.
    instance: str | None = None
    figures: Figures | None = None
    groups: frozenset[str] = frozenset()
    #: That process's counters, never lowered (two scrapes' answers may cross).
    counted: dict[SampleKey, float] = attrs.Factory(dict)
    #: The counters of the place's earlier processes, added up.
    retired: dict[SampleKey, float] = attrs.Factory(dict)
    #: Those earlier processes: a late answer from one of them is not news.
    gone: set[str] = attrs.Factory(set)

    def heard(self, report: WorkerReport, figures: Figures) -> bool:
        """Take in what the place's process said; False when it came from a process the
        place has had before (a late answer from one since replaced)."""
        if report.instance in self.gone:
            return False
        if report.instance != self.instance:
            if self.instance is not None:
                # A new process counts from 0: what the old one counted stays counted.
                for key, value in self.counted.items():
                    self.retired[key] = self.retired.get(key, 0.0) + value
                self.gone.add(self.instance)
            self.instance, self.counted = report.instance, {}
        for key, value in figures.counters().items():
            self.counted[key] = max(self.counted.get(key, 0.0), value)
        self.figures, self.groups = figures, report.groups
        return True

    def whole(self, live: bool) -> WorkerFigures | None:
        """The place's share of the whole relay's figures (None before it was heard)."""
        if self.figures is None:
            return None
        values = dict(self.figures.values)
        for key in self.counted.keys() | self.retired.keys():
            values[key] = self.counted.get(key, 0.0) + self.retired.get(key, 0.0)
        return WorkerFigures(Figures(self.figures.heads, values), self.groups, live)


class WholeRelay:
    """The supervisor's endpoint for the whole relay's ``/metrics``: asks every worker
    for its figures at once (each has ``_REPORT_TIMEOUT``), and adds up what they say
    with what it last heard from those that did not answer."""

    def __init__(self, directory: str, count: int) -> None:
        self.links = [WorkerLink(directory, index, count) for index in range(1, count + 1)]
        #: Where it answers.
        self.socket = self.links[0].whole_relay_socket
        self._count = count
        self._places = {link.index: _Place() for link in self.links}

    async def answer(self, target: str) -> Answer:
        if target != _WHOLE_RELAY_PATH:
            return 404, f"nothing at {target}\n".encode(), "text/plain"
        return 200, await self.metrics(), METRICS_CONTENT_TYPE

    async def metrics(self) -> bytes:
        """The whole relay's exposition, now."""
        live: set[int] = set()

        async def ask(link: WorkerLink) -> None:
            with trio.move_on_after(_REPORT_TIMEOUT):
                try:
                    report = WorkerReport.decode(await http_get(link.report_socket, _REPORT_PATH))
                    figures = Figures.parse(report.exposition)
                except (OSError, EndpointError, ValueError) as error:
                    logger.info("worker %d gave no figures: %s", link.index, error)
                    return
                if self._places[link.index].heard(report, figures):
                    live.add(link.index)
                return
            logger.info(
                "worker %d gave no figures within %gs: its last counters count, its gauges do not",
                link.index,
                _REPORT_TIMEOUT,
            )

        async with trio.open_nursery() as nursery:
            for link in self.links:
                nursery.start_soon(ask, link)
        shares = [place.whole(index in live) for index, place in self._places.items()]
        return render_whole_relay([share for share in shares if share is not None], self._count)


def own_report(relay: Relay, instance: str) -> WorkerReport:
    """What ``relay`` (a worker's) tells the supervisor of itself now."""
    registry = relay.registry
    names = {session.group_name for session in relay.sessions}
    return WorkerReport(
        instance,
        render_metrics(relay.counters, registry).decode(),
        # The groups with members here: what the registry counts. (A closing session
        # may outlive its group; the group is gone once its last member has left.)
        frozenset(group_digest(name) for name in names if registry.group(name) is not None),
    )


async def whole_relay_metrics(link: WorkerLink, own: bytes) -> bytes:
    """The body a worker answers ``/metrics`` with: the whole relay's, from the
    supervisor. When the supervisor does not answer within ``_WHOLE_RELAY_TIMEOUT``, the
    worker's own figures ``own`` alone, with ``trio_wsproxy_workers_reporting`` 1 (its
    counters then count this worker only)."""
    with trio.move_on_after(_WHOLE_RELAY_TIMEOUT):
        try:
            return await http_get(link.whole_relay_socket, _WHOLE_RELAY_PATH)
        except (OSError, EndpointError) as error:
            logger.warning("the supervisor gave no figures for /metrics: %s", error)
    alone = WorkerFigures(Figures.parse(own.decode()), None, live=True)
    return render_whole_relay([alone], link.count)


async def serve_worker(
    config: RelayConfig,
    link: WorkerLink,
    *,
    task_status: trio.TaskStatus[Relay] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A worker of a supervisor: :func:`~trio_wsproxy.serve_relay` with ``config``, and
    its figures on its private endpoint for the supervisor to add up (a socket that
    cannot be made is a warning: the worker serves, and scrapes miss its gauges)."""
    instance = secrets.token_hex(8)
    async with trio.open_nursery() as nursery:
        relay: Relay = await nursery.start(
            serve_worker_relay, config, None, partial(whole_relay_metrics, link)
        )

        async def report(target: str) -> Answer:
            if target != _REPORT_PATH:
                return 404, f"nothing at {target}\n".encode(), "text/plain"
            return 200, own_report(relay, instance).encode(), "application/json"

        try:
            await nursery.start(serve_http, link.report_socket, report)
        except OSError as error:
            logger.warning(
                "worker %d cannot give its figures to the supervisor at %s: %s",
                link.index,
                link.report_socket,
                error,
            )
        task_status.started(relay)
