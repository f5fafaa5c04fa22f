"""Streaming anomaly detection over committed batches (numba kernels over per-stream state)."""

from processing.kinds import Kind
from processing.offline import score_series
from processing.stage import DetectionStage, Event

__all__ = ["DetectionStage", "Event", "Kind", "score_series"]
