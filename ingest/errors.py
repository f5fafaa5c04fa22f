"""Ingest's error root (see :mod:`edge.errors` for the platform's)."""

from __future__ import annotations

from edge.errors import CityError


class IngestError(CityError):
    """Root of every error ingest raises on purpose: schema, broker connection, stopping."""
