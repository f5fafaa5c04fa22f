"""History's error root (see :mod:`edge.errors` for the platform's)."""

from __future__ import annotations

from edge.errors import CityError


class HistoryError(CityError):
    """Root of every error history raises on purpose: a question it cannot answer as asked."""
