"""Ingest's counters, and the Prometheus metrics in a registry of the worker's own.

The counters are counted once, in :class:`PipelineStats`; ``/metrics`` reads them when scraped
(:class:`_StatsCollector`), so the log summary, the tests and Prometheus cannot disagree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

_BATCH_ROWS = (10, 50, 100, 500, 1_000, 2_500, 5_000, 10_000, 25_000)
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(slots=True)
class PipelineStats:
    """Counters since start, for logs, metrics and tests.

    Everything counted is committed, except ``received`` (messages taken from the broker) and
    ``write_retries``.
    """

    received: int = 0
    messages_stored: int = 0
    readings_stored: int = 0
    duplicates: int = 0
    rejected_messages: int = 0
    rejected_readings: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    # (reason, "message" or "reading"): what Prometheus shows by label
    rejected_by_scope: Counter[tuple[str, str]] = field(default_factory=Counter)
    statuses: int = 0
    statuses_ignored: int = 0
    batches: int = 0
    write_retries: int = 0
    write_seconds: float = 0.0
    processing_seconds: float = 0.0


class _StatsCollector(Collector):
    """Shows a :class:`PipelineStats` as Prometheus counters, read at each scrape."""

    def __init__(self, stats: PipelineStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        for name, documentation, value in (
            ("ingest_messages_received", "MQTT messages received", stats.received),
            ("ingest_messages_stored", "Telemetry messages committed", stats.messages_stored),
            ("ingest_readings_stored", "Readings committed (new rows)", stats.readings_stored),
            (
                "ingest_readings_duplicate",
                "Redelivered readings recognised and not stored again",
                stats.duplicates,
            ),
            ("ingest_status_messages", "Device status messages stored", stats.statuses),
            (
                "ingest_write_retries",
                "Database writes retried after a failure",
                stats.write_retries,
            ),
        ):
            yield CounterMetricFamily(name, documentation, value=value)
        rejected = CounterMetricFamily(
            "ingest_rejected", "Refused messages and readings by reason", labels=["reason", "scope"]
        )
        for (reason, scope), count in sorted(stats.rejected_by_scope.items()):
            rejected.add_metric([reason, scope], count)
        yield rejected


class IngestMetrics:
    """Everything ingest exports on ``/metrics``.

    The counters are :attr:`stats`'s; histograms are observed once per committed batch, never
    per reading, to keep the hot path cheap.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.stats = PipelineStats()
        r.register(_StatsCollector(self.stats))
        self.batch_rows = Histogram(
            "ingest_batch_rows", "Readings per committed batch", buckets=_BATCH_ROWS, registry=r
        )
        self.write_seconds = Histogram(
            "ingest_write_seconds",
            "Time to commit one batch, retries included",
            buckets=_SECONDS,
            registry=r,
        )
        self.processing_seconds = Histogram(
            "ingest_processing_seconds",
            "Time in the detection hook per batch",
            buckets=_SECONDS,
            registry=r,
        )
        self.commit_latency = Histogram(
            "ingest_receive_to_commit_seconds",
            "From a message's arrival at ingest to the commit of its batch",
            buckets=_SECONDS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "ingest_queue_depth", "Messages received and waiting for the writer", registry=r
        )
        self.lag = Gauge(
            "ingest_consumer_lag_seconds",
            "Median age (device clock to commit) of the last batch's messages; "
            "grows when ingest falls behind or devices drain old backlogs",
            registry=r,
        )
        self.broker_connected = Gauge(
            "ingest_broker_connected",
            "brokers connected to now (1 with a single broker)",
            registry=r,
        )
        self.stalled = Gauge(
            "ingest_stalled",
            "1 while no telemetry arrives although devices report themselves online",
            registry=r,
        )
        self.task_restarts = PromCounter(
            "ingest_task_restarts",
            "Times a task that must run all along (consumer, detection) stopped and was restarted",
            ["task"],
            registry=r,
        )
