"""The relay's ``/metrics`` endpoint, in the Prometheus text format (prometheus-client).

Counters live on the relay as plain integers (the hot path only adds to them); this
module turns a snapshot into metric families when Prometheus scrapes, and adds up the
figures of several relay processes into the whole relay's (``--workers``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import attrs
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from .compression import metric_lines as compression_metrics
from .counters import HOOK_BUCKETS
from .history import EVICTIONS

if TYPE_CHECKING:
    from .counters import Counters
    from .groups import GroupRegistry

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RelayCollector(Collector):
    """Reads one relay's live figures at scrape time."""

    def __init__(self, counters: Counters, registry: GroupRegistry) -> None:
        self._counters = counters
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        counters, registry = self._counters, self._registry
        yield GaugeMetricFamily(
            "trio_wsproxy_members", "Members connected now", registry.member_count
        )
        yield GaugeMetricFamily(
            "trio_wsproxy_groups", "Groups with members now", registry.group_count
        )
        yield CounterMetricFamily(
            "trio_wsproxy_messages",
            "Messages received from members and relayed",
            counters.messages,
        )
        yield CounterMetricFamily(
            "trio_wsproxy_bytes", "Payload bytes of the messages relayed", counters.bytes
        )
        yield CounterMetricFamily(
            "trio_wsproxy_deliveries", "Message copies queued for recipients", counters.deliveries
        )
        for name, documentation, value in compression_metrics():
            yield CounterMetricFamily(name, documentation, value)
        yield CounterMetricFamily(
            "trio_wsproxy_mailbox_full",
            "Times a sender had to wait because a recipient's mailbox was full",
            counters.mailbox_full,
        )
        yield CounterMetricFamily(
            "trio_wsproxy_presence_events",
            "wsproxy.v1 welcome, presence and members events queued for members",
            counters.presence_events,
        )
        yield CounterMetricFamily(
            "trio_wsproxy_direct_failures",
            "wsproxy.v1 messages to one member refused: no such member in the group",
            counters.direct_failures,
        )
        closes = CounterMetricFamily(
            "trio_wsproxy_closes", "Sessions the relay closed, by the code it sent", labels=["code"]
        )
        for code, count in sorted(counters.closes.items()):
            closes.add_metric([str(code)], count)
        yield closes
        client_closes = CounterMetricFamily(
            "trio_wsproxy_client_closes",
            "Sessions whose member closed first, by its code (ranges for application codes)",
            labels=["code"],
        )
        for label, count in sorted(counters.client_closes.items()):
            client_closes.add_metric([label], count)
        yield client_closes
        refusals = CounterMetricFamily(
            "trio_wsproxy_refusals",
            "Connections refused before the upgrade, by reason",
            labels=["reason", "status"],
        )
        for (kind, status), count in sorted(counters.refusals.items()):
            refusals.add_metric([kind, str(status)], count)
        yield refusals
        for name, documentation, label, figures in (
            (
                "trio_wsproxy_join_refusals",
                "wsproxy.v1 joins of one more group refused, by the error event's code",
                "error",
                counters.join_refusals,
            ),
            (
                "trio_wsproxy_revocations",
                "Revocations of access tokens held, made here or on another node, by kind",
                "kind",
                counters.revocations,
            ),
            (
                "trio_wsproxy_jwks_fetches",
                "Fetches of the identity provider's published keys (--jwks-url), by outcome",
                "outcome",
                counters.jwks_fetches,
            ),
            (
                "trio_wsproxy_token_refreshes",
                "wsproxy.v1 access tokens renewed in place, by outcome (ok; invalid: "
                "refused, the old one goes on; other_member: closed 1008)",
                "outcome",
                counters.token_refreshes,
            ),
            (
                "trio_wsproxy_limited_messages",
                "Messages a rate limit held back (paced, never dropped), by the limit: "
                "member (--max-message-rate, --max-byte-rate) or subject "
                "(--max-subject-message-rate)",
                "limit",
                counters.limited_messages,
            ),
        ):
            family = CounterMetricFamily(name, documentation, labels=[label])
            for key, count in sorted(figures.items()):
                family.add_metric([key], count)
            yield family
        yield CounterMetricFamily(
            "trio_wsproxy_token_expiries",
            "Members closed with 4006 because their access token expired unrenewed",
            counters.token_expiries,
        )
        yield CounterMetricFamily(
            "trio_wsproxy_publish_refusals",
            "Members' messages refused by the back end's publish hook (or its failure "
            "policy, or its size bound): they went nowhere",
            counters.publish_refusals,
        )
        hook_calls = CounterMetricFamily(
            "trio_wsproxy_hook_calls",
            "Calls of the back end's hooks, by hook and outcome (allowed, refused, replaced, "
            "timeout, failed)",
            labels=["hook", "outcome"],
        )
        for (hook, outcome), count in sorted(counters.hook_calls.items()):
            hook_calls.add_metric([hook, outcome], count)
        yield hook_calls
        latency = HistogramMetricFamily(
            "trio_wsproxy_hook_seconds",
            "How long the back end took to answer a hook (or the call to fail), by hook",
            labels=["hook"],
        )
        for hook, (counts, total) in sorted(counters.hook_seconds.items()):
            buckets, running = [], 0
            for bound, count in zip((*HOOK_BUCKETS, math.inf), counts, strict=True):
                running += count
                buckets.append((str(bound) if bound != math.inf else "+Inf", running))
            latency.add_metric([hook], buckets, total[0])
        yield latency
        api = CounterMetricFamily(
            "trio_wsproxy_api_requests",
            "Calls of the HTTP API for back ends, by the status of the answer",
            labels=["status"],
        )
        for status, count in sorted(counters.api_requests.items()):
            api.add_metric([str(status)], count)
        yield api
        yield CounterMetricFamily(
            "trio_wsproxy_accept_failures",
            "Accepts that failed for want of file descriptors or memory (EMFILE, ENFILE, "
            "ENOBUFS, ENOMEM) and were retried 0.1 s later",
            counters.accept_failures,
        )
        for name, documentation, pairs in (
            (
                "trio_wsproxy_webhook_events",
                "Webhook events by endpoint and outcome: sent, retried (in a request sent "
                "again), dropped (queue_full, refused, unsent_at_exit)",
                counters.webhook_events,
            ),
            (
                "trio_wsproxy_webhook_requests",
                "Webhook requests by endpoint and outcome: sent (2xx), retried (5xx, 408, "
                "429, timeout, connection error), refused (other answers: dropped)",
                counters.webhook_requests,
            ),
        ):
            by_endpoint = CounterMetricFamily(name, documentation, labels=["endpoint", "outcome"])
            for (endpoint, outcome), count in sorted(pairs.items()):
                by_endpoint.add_metric([endpoint, outcome], count)
            yield by_endpoint
        internal = CounterMetricFamily(
            "trio_wsproxy_internal_errors",
            "Failures of the relay's own code contained to one session (closed 1011) or one "
            "HTTP request (answered 500), by where they happened",
            labels=["where"],
        )
        for where, count in sorted(counters.internal_errors.items()):
            internal.add_metric([where], count)
        yield internal
        history = registry.history_usage
        yield GaugeMetricFamily(
            "trio_wsproxy_history_groups",
            "Groups with a history in this process, with members or kept after they "
            "emptied (with a backplane, histories are in Redis: 0)",
            history.groups,
        )
        yield GaugeMetricFamily(
            "trio_wsproxy_history_bytes",
            "Memory the histories in this process hold, in bytes: payloads, each kept "
            "message's overhead and each history's own (--max-history-bytes bounds it)",
            history.bytes,
        )
        evictions = CounterMetricFamily(
            "trio_wsproxy_history_evictions",
            "What the relay-wide history bounds took or withheld: histories of emptied "
            "groups dropped before their ttl, kept messages dropped before their group's "
            "own bounds, new groups that got no history",
            labels=["what"],
        )
        for what in EVICTIONS:  # (each from the start: rate() needs the zeros)
            evictions.add_metric([what], history.evictions.get(what, 0))
        yield evictions
        backplane = GaugeMetricFamily(
            "trio_wsproxy_backplane_up",
            "1 when the group registry can deliver to every node (always 1 in-process)",
            labels=["kind"],
        )
        backplane.add_metric([registry.metric_label], 1.0 if registry.up else 0.0)
        yield backplane


def render_metrics(counters: Counters, registry: GroupRegistry) -> bytes:
    """The Prometheus text exposition of a relay's figures."""
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(RelayCollector(counters, registry))
    return generate_latest(collectors)


# -- the whole relay's figures, from those of its processes (--workers) ------------------
#
# Each worker of `--workers N` counts what it carries. A scrape must answer for the whole
# relay, so the workers' figures are read back from their expositions and added up, family
# by family, by the rules below. Counters are summed over every worker, including the
# last figures known of one that did not answer this time (or has died since): a counter
# of the whole relay then never goes down, which Prometheus would take for a restart.
# Gauges describe now, so only the workers that answered count; most are summed, and the
# ones below may not be.

#: (family name, sample name, its labels sorted): one series of an exposition.
SampleKey = tuple[str, str, tuple[tuple[str, str], ...]]

#: The gauges that are not summed over the workers that answered, and what is done instead.
#: (Summed, among others: trio_wsproxy_history_groups and trio_wsproxy_history_bytes,
#: which count what each process's own memory holds — 0 for workers, whose backplane
#: keeps the histories in Redis.)
WHOLE_RELAY_GAUGES = {
    # The relay can deliver to every node only if every worker can: the least of them.
    "trio_wsproxy_backplane_up": "min",
    # A group with members on two workers is one group: the distinct groups of all of
    # them (from each worker's digests of its group names), not the sum of their counts.
    "trio_wsproxy_groups": "distinct",
}
WORKERS = "trio_wsproxy_workers"
WORKERS_REPORTING = "trio_wsproxy_workers_reporting"


@attrs.frozen
class FamilyHead:
    """A metric family's name, type and help, as an exposition gives them."""

    name: str
    type: str
    documentation: str


@attrs.frozen
class Figures:
    """One relay process's ``/metrics``, read back: its families in order, and the value
    of each of their samples."""

    heads: tuple[FamilyHead, ...]
    values: Mapping[SampleKey, float]

    @classmethod
    def parse(cls, exposition: str) -> Figures:
        """Read a Prometheus text exposition (what :func:`render_metrics` writes).

        Raises ValueError when it is not one."""
        heads: list[FamilyHead] = []
        values: dict[SampleKey, float] = {}
        for family in text_string_to_metric_families(exposition):
            heads.append(FamilyHead(family.name, family.type, family.documentation))
            for sample in family.samples:
                key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
                values[key] = sample.value
        return cls(tuple(heads), values)

    def counters(self) -> dict[SampleKey, float]:
        """The samples of its counter families."""
        counting = {head.name for head in self.heads if head.type == "counter"}
        return {key: value for key, value in self.values.items() if key[0] in counting}


@attrs.frozen
class WorkerFigures:
    """What the whole relay's figures are made of, for one worker (one place of
    ``--workers``, whatever processes it has had)."""

    #: Its figures: the last it gave, counters including those of its earlier processes.
    figures: Figures
    #: Digests of the names of its groups (``WHOLE_RELAY_GAUGES``); None: unknown, so
    #: its own count of groups is added instead.
    groups: frozenset[str] | None
    #: Whether it answered for this scrape: only then do its gauges count.
    live: bool


def _distinct_groups(live: Sequence[WorkerFigures]) -> float:
    known = [worker.groups for worker in live if worker.groups is not None]
    unknown = [worker for worker in live if worker.groups is None]
    counts = (worker.figures.values.get(_GROUPS_KEY, 0.0) for worker in unknown)
    return float(len(frozenset[str]().union(*known))) + sum(counts)


_GROUPS_KEY: SampleKey = ("trio_wsproxy_groups", "trio_wsproxy_groups", ())


def render_whole_relay(workers: Sequence[WorkerFigures], configured: int) -> bytes:
    """The whole relay's exposition: every family of ``workers``' figures added up as
    the rules above say, then ``trio_wsproxy_workers`` (``configured``, the worker
    processes there should be) and ``trio_wsproxy_workers_reporting`` (those that
    answered). Families and series keep the names and labels one process gives them,
    in its order; series are sorted, so that successive scrapes read alike."""
    heads: dict[str, FamilyHead] = {}
    for worker in workers:
        for head in worker.figures.heads:
            heads.setdefault(head.name, head)
    live = [worker for worker in workers if worker.live]
    families: list[Metric] = []
    for head in heads.values():
        family = Metric(head.name, head.documentation, head.type)
        rule = "sum" if head.type == "counter" else WHOLE_RELAY_GAUGES.get(head.name, "sum")
        series: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = {}
        for worker in workers if head.type == "counter" else live:
            for (name, sample, labels), value in worker.figures.values.items():
                if name == head.name:
                    series.setdefault((sample, labels), []).append(value)
        for (sample, labels), values in sorted(series.items()):
            if rule == "min":
                total = min(values)
            elif rule == "distinct":
                total = _distinct_groups(live)
            else:
                total = sum(values)
            family.add_sample(sample, dict(labels), total)
        families.append(family)
    workers_family = GaugeMetricFamily(
        WORKERS, "Worker processes the relay runs (--workers)", float(configured)
    )
    reporting = GaugeMetricFamily(
        WORKERS_REPORTING,
        "Workers whose figures are in this scrape; the totals keep the last counters of "
        "one that did not answer in time",
        float(len(live)),
    )
    return generate_latest(_Fixed([*families, workers_family, reporting]))


class _Fixed(CollectorRegistry):
    """A registry that holds ready families, for :func:`generate_latest`."""

    def __init__(self, families: Sequence[Metric]) -> None:
        super().__init__(auto_describe=False)
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families
