"""API settings: an ``[api]`` TOML table, ``CITY_API_*`` variables, secrets from files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from edge.settings import load_section

ENV_PREFIX = "CITY_API_"


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """What the planner API needs.

    Attributes:
        database_url: libpq connection string of a login in the ``smartcity_api`` role; its
            writes (token use, the audit log) go here, so on a replicated database it names the
            primary (``target_session_attrs=read-write``).
        read_database_url: Where history, the catalogue and token checks are read; on a
            replicated database the same hosts with ``target_session_attrs=prefer-standby``, so
            reads load the standby and keep answering while the primary fails over. Empty:
            ``database_url``.
        host: Interface to listen on.
        port: Port to listen on (0: any free port).
        public_url: How clients reach the API, for its absolute links (paging, SensorThings);
            empty: the address it listens on (set it behind a proxy). Never the request's
            ``Host`` header.
        pool_size: Database connections kept open (an export holds one while it streams).
        log_level: Python logging level name.
    """

    database_url: str = "postgresql:///smartcity"
    read_database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8060
    public_url: str = ""
    pool_size: int = 8
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65_536:
            raise ValueError("port must be within 0..65535 (0: any free port)")
        if self.pool_size < 2:
            raise ValueError("pool_size must be at least 2")

    @property
    def reads_url(self) -> str:
        """The URL reads go to."""
        return self.read_database_url or self.database_url

    def __repr__(self) -> str:  # the database URLs may carry a password
        return f"ApiConfig(host={self.host!r}, port={self.port}, pool_size={self.pool_size})"


def load(path: str | None = None, env: Mapping[str, str] | None = None) -> ApiConfig:
    """Load the settings from ``path`` (TOML, ``[api]`` table) and the environment."""
    return load_section(ApiConfig, "api", ENV_PREFIX, path, env)
