"""The device registry: which devices exist, where, and of which family.

Ingest refuses telemetry from devices that are not registered here. The demo and the tests
register the simulated fleet; in production, provisioning does (``smartcity devices``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from edge.contract import ContractError, Reason, is_valid_id
from edge.metrics import FAMILIES, Family


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A registered device."""

    device: str
    site: str
    family: Family
    name: str = ""
    lat: float | None = None
    lon: float | None = None

    def __post_init__(self) -> None:
        for label, value in (("device", self.device), ("site", self.site)):
            if not is_valid_id(value):
                raise ContractError(Reason.INVALID_ID, f"{label} {value!r} is not a valid id")
        if self.family not in FAMILIES:
            raise ValueError(f"family {self.family!r} is not one of {FAMILIES}")


_UPSERT = (
    "INSERT INTO devices (device_id, site, family, name, lat, lon)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (device_id) DO UPDATE SET site = excluded.site, family = excluded.family,"
    " name = excluded.name, lat = excluded.lat, lon = excluded.lon"
)


def register_devices(conninfo: str, devices: Iterable[DeviceRecord]) -> int:
    """Insert or update devices; returns how many were written."""
    rows = [(d.device, d.site, d.family, d.name, d.lat, d.lon) for d in devices]
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        cur.executemany(_UPSERT, rows)
    return len(rows)


class SiteDirectory(Protocol):
    """Where ingest learns which devices are registered, and at which site."""

    async def all(self) -> dict[str, str]:
        """Every registered device with its site."""
        ...

    async def one(self, device: str) -> str | None:
        """The site of one device, or None if it is not registered."""
        ...


class PostgresDirectory:
    """A :class:`SiteDirectory` reading the ``devices`` table."""

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[tuple[object, ...]]]) -> None:
        self._pool = pool

    async def all(self) -> dict[str, str]:  # noqa: D102
        async with self._pool.connection() as conn:
            cursor = await conn.execute("SELECT device_id, site FROM devices")
            return {str(device): str(site) for device, site in await cursor.fetchall()}

    async def one(self, device: str) -> str | None:  # noqa: D102
        async with self._pool.connection() as conn:
            cursor = await conn.execute("SELECT site FROM devices WHERE device_id = %s", (device,))
            row = await cursor.fetchone()
            return None if row is None else str(row[0])


class MemoryDirectory:
    """A :class:`SiteDirectory` over a dict, for tests and tools."""

    def __init__(self, sites: dict[str, str]) -> None:
        self.sites = sites

    async def all(self) -> dict[str, str]:  # noqa: D102
        return dict(self.sites)

    async def one(self, device: str) -> str | None:  # noqa: D102
        return self.sites.get(device)
