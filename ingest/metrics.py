"""Prometheus metrics for ingest, in a registry of the worker's own (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BATCH_ROWS = (10, 50, 100, 500, 1_000, 2_500, 5_000, 10_000, 25_000)
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class IngestMetrics:
    """Everything ingest exports on ``/metrics``.

    Counters are incremented once per committed batch, never per reading, to keep the hot path
    cheap.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter("ingest_messages_received", "MQTT messages received", registry=r)
        self.messages_stored = Counter(
            "ingest_messages_stored", "Telemetry messages committed", registry=r
        )
        self.readings_stored = Counter(
            "ingest_readings_stored", "Readings committed (new rows)", registry=r
        )
        self.duplicates = Counter(
            "ingest_readings_duplicate",
            "Redelivered readings recognised and not stored again",
            registry=r,
        )
        self.rejected = Counter(
            "ingest_rejected",
            "Refused messages and readings by reason",
            ["reason", "scope"],
            registry=r,
        )
        self.statuses = Counter(
            "ingest_status_messages", "Device status messages stored", registry=r
        )
        self.write_retries = Counter(
            "ingest_write_retries", "Database writes retried after a failure", registry=r
        )
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
        self.task_restarts = Counter(
            "ingest_task_restarts",
            "Times a task that must run all along (consumer, detection) stopped and was restarted",
            ["task"],
            registry=r,
        )
