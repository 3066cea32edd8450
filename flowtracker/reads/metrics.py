"""Prometheus metrics: the database's totals, read at each scrape, and request latency.

The totals come from the counters that the ingest transactions keep (what /status shows),
so every worker process serves the same numbers and a scrape costs a few indexed reads.
The latency histogram lives in the memory of each process.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flowtracker import __version__
from flowtracker.engine.timestamps import parse_timestamp
from flowtracker.reads import summaries
from flowtracker.store.protocol import Store

# Scrive waits 60 s for an answer; a callback takes milliseconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

Family = CounterMetricFamily | GaugeMetricFamily
_FAMILIES: dict[str, tuple[type[Family], str, list[str]]] = {
    "flowtracker_callbacks": (
        CounterMetricFamily,
        "Callbacks received, by kind and the outcome each delivery got when it arrived "
        "(duplicate: a repeated delivery; /status shows the current outcomes, which a late "
        "event can change). From the database: the same in every worker.",
        ["kind", "outcome"],
    ),
    "flowtracker_out_of_order": (
        CounterMetricFamily,
        "Callbacks that arrived after a later one of the same subject.",
        ["kind"],
    ),
    "flowtracker_quarantined": (
        CounterMetricFamily,
        "Malformed requests refused and quarantined (every delivery of a body counts).",
        [],
    ),
    "flowtracker_quarantined_bodies": (
        GaugeMetricFamily,
        "Distinct malformed bodies kept in the quarantine.",
        [],
    ),
    "flowtracker_instances": (GaugeMetricFamily, "Flow instances per state.", ["state"]),
    "flowtracker_documents": (GaugeMetricFamily, "Documents per state.", ["state"]),
    "flowtracker_stuck_instances": (
        GaugeMetricFamily,
        "Flow instances in progress with no callback for longer than FLOWTRACKER_STUCK_AGE.",
        [],
    ),
    "flowtracker_last_callback_timestamp_seconds": (
        GaugeMetricFamily,
        "When the last callback was received (Unix time); absent before the first.",
        [],
    ),
    "flowtracker_pruned": (
        GaugeMetricFamily,
        "Subjects removed by retention, whose tombstones are kept (flowtracker prune).",
        ["kind"],
    ),
    "flowtracker_reconciliations": (
        CounterMetricFamily,
        "Subjects reconciled with Scrive's API, by result (changed, unchanged, unknown: "
        "Scrive answered 404, error: no usable answer).",
        ["result"],
    ),
    "flowtracker_changes": (
        CounterMetricFamily,
        "Changes written to the change feed (the last seq).",
        [],
    ),
    "flowtracker_webhook_deliveries": (
        CounterMetricFamily,
        "Webhook delivery attempts, by subscription and result (delivered: answered 2xx; "
        "failed: anything else, retried).",
        ["subscription", "result"],
    ),
    "flowtracker_webhook_lag": (
        GaugeMetricFamily,
        "Changes committed that a subscription has not been delivered yet.",
        ["subscription"],
    ),
}


def http_responses(registry: CollectorRegistry) -> Counter:
    """HTTP answers by status code (401, 413, 503 included), registered on `registry`."""
    return Counter(
        "flowtracker_http_responses",
        "HTTP answers by status code. Per worker process, like the latency histogram.",
        ["status"],
        registry=registry,
    )


def build_info(registry: CollectorRegistry) -> Info:
    """`flowtracker_build_info{version=...} 1`, registered on `registry`."""
    info = Info("flowtracker_build", "The version of flowtracker serving.", registry=registry)
    info.info({"version": __version__})
    return info


def request_latency(registry: CollectorRegistry) -> Histogram:
    """The HTTP latency histogram, registered on `registry`."""
    return Histogram(
        "flowtracker_http_request_duration_seconds",
        "Time to answer HTTP requests, by route template, method and status class. "
        "Per worker process: with several workers a scrape shows the one that answered it.",
        ["route", "method", "status"],
        registry=registry,
        buckets=LATENCY_BUCKETS,
    )


class StoreCollector(Collector):
    """The totals of /status as metric families, read from the store at each scrape."""

    def __init__(
        self, store: Store, stuck_age_seconds: int, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.store = store
        self.stuck_age_ns = stuck_age_seconds * 1_000_000_000
        self.clock = clock

    def describe(self) -> list[Metric]:
        """The families without samples: lets the registry check names without a read."""
        return [_family(name) for name in _FAMILIES]

    def collect(self) -> list[Metric]:
        counts = summaries.counts(self.store, self.clock(), stuck_age_ns=self.stuck_age_ns)
        samples: dict[str, list[tuple[list[str], float]]] = {
            "flowtracker_callbacks": [
                ([kind, outcome], n)
                for kind, outcomes in counts["callbacks"].items()
                for outcome, n in outcomes.items()
            ],
            "flowtracker_out_of_order": [([k], n) for k, n in counts["out_of_order"].items()],
            "flowtracker_quarantined": [([], counts["quarantined_requests"])],
            "flowtracker_quarantined_bodies": [([], counts["quarantined"])],
            "flowtracker_instances": [([s], n) for s, n in counts["instances"].items()],
            "flowtracker_documents": [([s], n) for s, n in counts["documents"].items()],
            "flowtracker_stuck_instances": [([], counts["stuck"])],
            "flowtracker_reconciliations": [([r], n) for r, n in counts["reconciliations"].items()],
            "flowtracker_pruned": [([k], n) for k, n in counts["pruned"].items()],
            "flowtracker_last_callback_timestamp_seconds": _last(counts["last_callback_at"]),
            **self._feed(),
        }
        families: list[Metric] = []
        for name, rows in samples.items():
            family = _family(name)
            for labels, value in rows:
                family.add_metric(labels, value)
            families.append(family)
        return families

    def _feed(self) -> dict[str, list[tuple[list[str], float]]]:
        last, _ = self.store.change_clock()
        subscriptions = self.store.subscriptions()
        return {
            "flowtracker_changes": [([], last)],
            "flowtracker_webhook_deliveries": [
                ([s.id, result], n)
                for s in subscriptions
                for result, n in (("delivered", s.delivered), ("failed", s.failed))
            ],
            "flowtracker_webhook_lag": [([s.id], max(0, last - s.position)) for s in subscriptions],
        }


def open_feeds(registry: CollectorRegistry) -> Gauge:
    """The gauge of feeds open in this process, registered on `registry`."""
    return Gauge(
        "flowtracker_feed_connections",
        "Server-Sent Events feeds (/feed) open. Per worker process.",
        registry=registry,
    )


def _family(name: str) -> Family:
    kind, documentation, labels = _FAMILIES[name]
    return kind(name, documentation, labels=labels)


def _last(received_at: str | None) -> list[tuple[list[str], float]]:
    if received_at is None:
        return []
    return [([], parse_timestamp(received_at).ns / 1_000_000_000)]
