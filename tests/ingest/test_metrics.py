"""/metrics shows the pipeline's own counters: one count, read at each scrape."""

from __future__ import annotations

from prometheus_client import generate_latest

from ingest.metrics import IngestMetrics


def test_counters_are_read_from_the_stats_when_scraped() -> None:
    metrics = IngestMetrics()
    stats = metrics.stats
    stats.received += 5
    stats.readings_stored += 12
    stats.duplicates += 2
    stats.rejected_by_scope["malformed_json", "message"] += 1
    stats.rejected_by_scope["out_of_range", "reading"] += 3
    body = generate_latest(metrics.registry).decode()
    assert "ingest_messages_received_total 5.0" in body
    assert "ingest_readings_stored_total 12.0" in body
    assert "ingest_readings_duplicate_total 2.0" in body
    assert 'ingest_rejected_total{reason="malformed_json",scope="message"} 1.0' in body
    assert 'ingest_rejected_total{reason="out_of_range",scope="reading"} 3.0' in body
    stats.readings_stored += 1  # a later scrape sees the later count
    assert "ingest_readings_stored_total 13.0" in generate_latest(metrics.registry).decode()


def test_two_workers_metrics_do_not_share_counts() -> None:
    first, second = IngestMetrics(), IngestMetrics()
    first.stats.readings_stored += 4
    assert "ingest_readings_stored_total 0.0" in generate_latest(second.registry).decode()
