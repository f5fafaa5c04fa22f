"""The control room's error root (see :mod:`edge.errors` for the platform's)."""

from __future__ import annotations

from edge.errors import CityError


class ControlRoomError(CityError):
    """Root of every error the control room raises on purpose."""
