"""The operator commands' error root (see :mod:`edge.errors` for the platform's)."""

from __future__ import annotations

from edge.errors import CityError


class CommandError(CityError):
    """Root of every error a ``smartcity`` command raises on purpose; its message is for people."""
