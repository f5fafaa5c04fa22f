"""Air-quality index bands by the official rules, from versioned tables in ``data/aqi_bands.json``.

Each scheme names, per pollutant, its averaging period and the lower bound of every band. The
kernels receive the same tables as arrays (:func:`band_table`), so the banding the dashboard shows
and the banding that raises alerts cannot disagree.

Examples:
    >>> band("daqi-2013", "pm2_5", 53.4)
    6
    >>> band_name("daqi-2013", 7)
    '7 High'
    >>> band("eaqi-2021", "no2", 95.0)
    3
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Final

import numpy as np
from numpy.typing import NDArray

DEFAULT_SCHEME: Final = "daqi-2013"
MAX_BANDS: Final = 12


@dataclass(frozen=True, slots=True)
class Pollutant:
    """One pollutant's rule in a scheme."""

    averaging_hours: int
    lower_bounds: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Scheme:
    """One index: its band names, rounding, alert band and pollutant rules."""

    name: str
    title: str
    bands: tuple[str, ...]
    rounds: bool
    alert_from_band: int
    pollutants: dict[str, Pollutant]


@cache
def schemes() -> dict[str, Scheme]:
    """Every scheme shipped, by versioned name."""
    raw = json.loads(
        resources.files(__package__).joinpath("data/aqi_bands.json").read_text(encoding="utf-8")
    )
    found: dict[str, Scheme] = {}
    for name, spec in raw.items():
        pollutants = {
            key: Pollutant(int(rule["averaging_hours"]), tuple(map(float, rule["lower_bounds"])))
            for key, rule in spec["pollutants"].items()
        }
        for key, rule in pollutants.items():
            if len(rule.lower_bounds) != len(spec["bands"]) or list(rule.lower_bounds) != sorted(
                rule.lower_bounds
            ):
                raise ValueError(f"{name}/{key}: bounds must be ascending, one per band")
        found[name] = Scheme(
            name,
            spec["title"],
            tuple(spec["bands"]),
            spec["rounding"] == "integer",
            int(spec["alert_from_band"]),
            pollutants,
        )
    return found


def scheme(name: str) -> Scheme:
    """The scheme called ``name``; :class:`KeyError` naming the known ones otherwise."""
    try:
        return schemes()[name]
    except KeyError:
        raise KeyError(f"unknown air-quality scheme {name!r}; known: {sorted(schemes())}") from None


def band(scheme_name: str, pollutant: str, mean: float) -> int:
    """The band (1-based) of ``mean`` for ``pollutant``; 0 when unknown or not finite."""
    rule = scheme(scheme_name).pollutants.get(pollutant)
    if rule is None or not math.isfinite(mean):
        return 0
    value = math.floor(mean + 0.5) if scheme(scheme_name).rounds else mean
    return sum(1 for bound in rule.lower_bounds if value >= bound)


def band_name(scheme_name: str, number: int) -> str:
    """The band's name, or ``"unknown"`` for 0."""
    names = scheme(scheme_name).bands
    return names[number - 1] if 1 <= number <= len(names) else "unknown"


def band_table(scheme_name: str) -> tuple[list[str], NDArray[np.float64]]:
    """Pollutants and a ``[pollutant, MAX_BANDS]`` table of lower bounds padded with +inf."""
    rules = scheme(scheme_name).pollutants
    names = sorted(rules)
    table = np.full((len(names), MAX_BANDS), np.inf)
    for i, name in enumerate(names):
        bounds = rules[name].lower_bounds
        table[i, : len(bounds)] = bounds
    return names, table
