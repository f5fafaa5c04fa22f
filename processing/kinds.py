"""What an anomaly can be, how serious it is, and how long it must last before it is an alert.

Codes are the kernels' indices; names are what the database, the API and MQTT carry.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final, Literal

Severity = Literal["info", "warning", "critical"]


class Kind(IntEnum):
    """Anomaly kinds, in kernel order."""

    SPIKE = 0
    LEVEL_SHIFT = 1
    STUCK = 2
    IMPOSSIBLE = 3
    MISSING = 4
    AIR_QUALITY = 5
    CONGESTION = 6
    OVERFLOW = 7
    FIRE = 8
    NEIGHBOUR = 9

    @property
    def slug(self) -> str:
        """The stored name, e.g. ``level_shift``."""
        return self.name.lower()


N_KINDS: Final = len(Kind)

KIND_BY_SLUG: Final[dict[str, Kind]] = {kind.slug: kind for kind in Kind}

# Seconds an anomaly must last before it opens an alert, and seconds of calm before it resolves.
# Spikes open at once; sustained kinds wait so one odd reading is not an alert.
MIN_DURATION_S: Final[dict[Kind, float]] = {
    Kind.SPIKE: 0,
    Kind.LEVEL_SHIFT: 0,
    Kind.STUCK: 0,
    Kind.IMPOSSIBLE: 0,
    Kind.MISSING: 0,
    Kind.AIR_QUALITY: 0,
    Kind.CONGESTION: 90,
    Kind.OVERFLOW: 60,
    Kind.FIRE: 0,
    Kind.NEIGHBOUR: 0,
}
QUIET_S: Final[dict[Kind, float]] = {
    Kind.SPIKE: 900,
    Kind.LEVEL_SHIFT: 1800,
    Kind.STUCK: 0,
    Kind.IMPOSSIBLE: 300,
    Kind.MISSING: 0,
    Kind.AIR_QUALITY: 3600,
    Kind.CONGESTION: 600,
    Kind.OVERFLOW: 1800,
    Kind.FIRE: 1800,
    Kind.NEIGHBOUR: 1800,
}


def severity(kind: Kind, score: float) -> Severity:
    """How urgent an alert of ``kind`` with peak ``score`` (0..1) is."""
    if kind is Kind.FIRE:
        return "critical"
    if kind is Kind.AIR_QUALITY:
        return "critical" if score >= 0.99 else "warning"
    if kind in (Kind.OVERFLOW, Kind.CONGESTION, Kind.IMPOSSIBLE, Kind.MISSING):
        return "warning"
    return "warning" if score >= 0.8 else "info"
