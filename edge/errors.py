"""The platform's error root, and the edge agent's: one root per package, named by meaning.

Every error a package raises on purpose derives from its package's root (``EdgeError``,
``processing.errors.DetectionError``, ``ingest.errors.IngestError``,
``history.errors.HistoryError``, ``api.errors.ApiError``, ``dashboard.errors.ControlRoomError``,
``smartcity.errors.CommandError``), and every root from :class:`CityError`, so a caller catches
one thing per layer, or one for the whole platform. Where an error also derives from a builtin
(``ValueError`` for bad input), that is kept for callers that catch it.
"""


class CityError(Exception):
    """Root of every error the platform raises on purpose."""


class EdgeError(CityError):
    """Root of every error the edge agent raises on purpose."""


class ConfigError(EdgeError):
    """A configuration file or value is invalid; the message names the key."""
