"""Dashboard settings: a ``[dashboard]`` TOML table, ``CITY_DASHBOARD_*`` variables, secrets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from edge.settings import load_section

ENV_PREFIX = "CITY_DASHBOARD_"


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    """What the control room needs.

    Attributes:
        database_url: libpq connection string of a login in the dashboard role; sign-ins,
            acknowledgements and the audit log are written here, so on a replicated database it
            names the primary (``target_session_attrs=read-write``).
        read_database_url: Where the pages read the city; on a replicated database the same
            hosts with ``target_session_attrs=prefer-standby``, so the control room loads the
            standby and keeps showing the city while the primary fails over. Empty:
            ``database_url``.
        host: Interface to listen on.
        port: Port to listen on (0: any free port).
        refresh_s: Seconds between two live updates of the open page.
        stale_after_s: A device silent for longer than this is shown as stale.
        title: Shown in the header and the browser tab.
        log_level: Python logging level name.
        secret_key: Signs the session cookies (set it from a secret file; without one, a
            random key is made and sessions end with the process).
        cookie_secure: Send cookies over HTTPS only (turn off only on loopback trials).
        session_hours: A login lasts this long at most, however active.
        session_idle_minutes: A session with no request for this long has ended.
        login_links: Accept one-time login links (the demo prints one; keep off in production).
        tile_url: A tile server's ``https://.../{z}/{x}/{y}.png`` to draw under the map (empty:
            none; the map works without, from the devices and ``districts_file``).
        tile_attribution: The credit the tile server's licence asks for, shown on the map.
        broker_host: MQTT broker the Fleet page publishes remote configurations to (empty:
            remote configuration is off).
        broker_port: Its port.
        broker_username: The dashboard's broker account (the shipped ACL's ``dashboard``).
        broker_password: Its password (from a file: ``broker_password_file``).
        broker_ca_file: CA certificate, to connect over TLS.
        districts_file: GeoJSON FeatureCollection of the districts' boundaries, and landmarks
            with a ``kind`` property (``road`` and ``river`` lines, ``park`` and ``water``
            areas), drawn under the devices (no tile server needed); empty: districts are
            labelled at their devices' centre.
    """

    database_url: str = "postgresql:///smartcity"
    read_database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8050
    refresh_s: float = 5.0
    stale_after_s: float = 300.0
    title: str = "City telemetry"
    log_level: str = "INFO"
    secret_key: str = ""
    cookie_secure: bool = True
    session_hours: float = 12.0
    session_idle_minutes: float = 60.0
    login_links: bool = False
    districts_file: str = ""
    tile_url: str = ""
    tile_attribution: str = ""
    broker_host: str = ""
    broker_port: int = 1883
    broker_username: str = ""
    broker_password: str = ""
    broker_ca_file: str = ""

    def __post_init__(self) -> None:
        if self.refresh_s < 1:
            raise ValueError("refresh_s must be at least 1 second")
        if not self.session_hours > 0 or not self.session_idle_minutes > 0:
            raise ValueError("session_hours and session_idle_minutes must be positive")
        if not 0 <= self.port < 65_536:
            raise ValueError("port must be within 0..65535 (0: any free port)")
        if self.tile_url and not all(p in self.tile_url for p in ("{z}", "{x}", "{y}")):
            raise ValueError("tile_url must contain {z}, {x} and {y}")

    @property
    def reads_url(self) -> str:
        """The URL the pages read from."""
        return self.read_database_url or self.database_url

    def __repr__(self) -> str:  # the database URLs may carry a password
        return f"DashboardConfig(host={self.host!r}, port={self.port}, refresh_s={self.refresh_s})"


def load(path: str | None = None, env: Mapping[str, str] | None = None) -> DashboardConfig:
    """Load the settings from ``path`` (TOML, ``[dashboard]`` table) and the environment."""
    return load_section(DashboardConfig, "dashboard", ENV_PREFIX, path, env)
