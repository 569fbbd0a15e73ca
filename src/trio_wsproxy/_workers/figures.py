"""The whole relay's figures: a private endpoint per worker, added up by the supervisor.

The supervisor's :class:`WholeRelay` asks every worker for its :class:`WorkerReport` at
once and adds up what they say, keeping what it last heard from each (:class:`_Place`)
so that the relay's counters never go down; a worker (:func:`serve_worker`) reports its
own figures, and answers a scrape of ``/metrics`` with the supervisor's sum
(:func:`whole_relay_metrics`)."""

from __future__ import annotations

import logging
import secrets
from functools import partial
from typing import TYPE_CHECKING

import attrs
import trio

from .._serve import serve_worker_relay
from ..protocol.workers import WorkerReport, group_digest
from ..relay.config import RelayConfig
from ..relay.metrics import (
    CONTENT_TYPE as METRICS_CONTENT_TYPE,
)
from ..relay.metrics import (
    Figures,
    SampleKey,
    WorkerFigures,
    render_metrics,
    render_whole_relay,
)
from .endpoint import Answer, EndpointError, WorkerLink, http_get, serve_http

if TYPE_CHECKING:
    from ..relay.relay import Relay

logger = logging.getLogger("trio_wsproxy.workers")

# How long the supervisor waits for one worker's figures when asked for the whole
# relay's. An idle or busy worker answers within milliseconds (it is one task among its
# sessions); one that has not answered in a second is stopped, stalled or dying, and the
# scrape goes on without it (its last counters still count).
_REPORT_TIMEOUT = 1.0
# How long a worker that took a scrape waits for the supervisor's answer: the
# supervisor's own wait for the slowest worker, and time to spare. Then it answers with
# its own figures alone rather than leave the scrape waiting.
_WHOLE_RELAY_TIMEOUT = _REPORT_TIMEOUT + 1.0
# Paths the private endpoints answer.
_REPORT_PATH = "/report"
_WHOLE_RELAY_PATH = "/metrics"


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
