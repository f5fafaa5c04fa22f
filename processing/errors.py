"""Detection's error root (see :mod:`edge.errors` for the platform's)."""

from __future__ import annotations

from edge.errors import CityError


class DetectionError(CityError):
    """Root of every error detection and the alert store raise on purpose."""
