"""The relay's ``/metrics`` endpoint, in the Prometheus text format (prometheus-client).

Counters live on the relay as plain integers (the hot path only adds to them); this
module turns a snapshot into metric families when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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
        yield CounterMetricFamily(
            "trio_wsproxy_mailbox_full",
            "Times a sender had to wait because a recipient's mailbox was full",
            counters.mailbox_full,
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
        yield CounterMetricFamily(
            "trio_wsproxy_accept_failures",
            "Accepts that failed for want of file descriptors or memory (EMFILE, ENFILE, "
            "ENOBUFS, ENOMEM) and were retried 0.1 s later",
            counters.accept_failures,
        )
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
