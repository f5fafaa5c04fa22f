"""The planner API's error root (see :mod:`edge.errors` for the platform's)."""

from __future__ import annotations

from edge.errors import CityError


class ApiError(CityError):
    """Root of every error the API's own modules raise on purpose."""
