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
    from .relay import Relay

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RelayCollector(Collector):
    """Reads one relay's live figures at scrape time."""

    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    def collect(self) -> Iterator[Metric]:
        relay = self._relay
        stats = relay.stats
        yield GaugeMetricFamily("trio_wsproxy_members", "Members connected now", stats.members)
        yield GaugeMetricFamily("trio_wsproxy_groups", "Groups with members now", stats.groups)
        yield CounterMetricFamily(
            "trio_wsproxy_messages", "Messages received from members and relayed", stats.messages
        )
        yield CounterMetricFamily(
            "trio_wsproxy_bytes", "Payload bytes of the messages relayed", stats.bytes
        )
        yield CounterMetricFamily(
            "trio_wsproxy_deliveries", "Message copies queued for recipients", stats.deliveries
        )
        yield CounterMetricFamily(
            "trio_wsproxy_mailbox_full",
            "Times a sender had to wait because a recipient's mailbox was full",
            relay.mailbox_full,
        )
        closes = CounterMetricFamily(
            "trio_wsproxy_closes", "Sessions closed, by close code", labels=["code"]
        )
        for code, count in sorted(relay.closes.items()):
            closes.add_metric([str(code)], count)
        yield closes
        refusals = CounterMetricFamily(
            "trio_wsproxy_refusals",
            "Connections refused before the upgrade, by reason",
            labels=["reason", "status"],
        )
        for (kind, status), count in sorted(relay.refusals.items()):
            refusals.add_metric([kind, str(status)], count)
        yield refusals
        backplane = GaugeMetricFamily(
            "trio_wsproxy_backplane_up",
            "1 when the group registry can deliver to every node (always 1 in-process)",
            labels=["kind"],
        )
        up = getattr(relay.registry, "up", True)
        backplane.add_metric([type(relay.registry).__name__], 1.0 if up else 0.0)
        yield backplane


def render_metrics(relay: Relay) -> bytes:
    """The Prometheus text exposition of ``relay``'s figures."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(relay))
    return generate_latest(registry)
