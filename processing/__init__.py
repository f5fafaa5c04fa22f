"""Streaming anomaly detection over committed batches (numba kernels over per-stream state)."""
