"""A real PostgreSQL server with TimescaleDB preloaded, in a temporary directory."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql

from tests.services._process import (
    INSTALL_HINT,
    ServiceUnavailableError,
    free_port,
    hand_over,
    service_user,
    tail,
)

SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{directory}'
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
max_connections = 200
log_min_messages = warning
"""
# Tests do not survive power cuts, so they skip the disk flushes; benchmarks keep them.
FAST = "fsync = off\n"


def find_bindir() -> Path:
    """The newest PostgreSQL server binaries that have TimescaleDB installed beside them."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), reverse=True)
    for postgres in candidates:
        bindir = postgres.parent
        pg_config = bindir / "pg_config"
        share = Path("/usr/share/postgresql") / bindir.parent.name
        if pg_config.exists():
            share = Path(
                subprocess.run(
                    [pg_config, "--sharedir"], capture_output=True, text=True, check=True
                ).stdout.strip()
            )
        if (share / "extension" / "timescaledb.control").exists():
            return bindir
    if candidates:
        raise ServiceUnavailableError(
            f"TimescaleDB is not installed for PostgreSQL: {INSTALL_HINT}"
        )
    raise ServiceUnavailableError(f"PostgreSQL server is not installed: {INSTALL_HINT}")


class PostgresServer:
    """One PostgreSQL cluster with TimescaleDB, run as ``postgres`` when the tests run as root."""

    def __init__(self, extra_settings: str = "", *, durable: bool = False) -> None:
        self.extra_settings = extra_settings if durable else FAST + extra_settings
        self.bindir = find_bindir()
        self.user = service_user("postgres")
        self.directory = Path(tempfile.mkdtemp(prefix="smartcity-pg-"))
        hand_over(self.directory, self.user)
        self.data = self.directory / "data"
        self.log_path = self.directory / "postgres.log"
        self.port = free_port()

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            user=self.user,
            capture_output=True,
            text=True,
            check=False,
            cwd=self.directory,
        )
        if result.returncode != 0:
            raise ServiceUnavailableError(
                f"{args[0]} failed ({result.returncode}): {result.stderr.strip()}\n"
                f"{tail(self.log_path)}"
            )

    def start(self) -> None:
        """initdb (first time), then start and wait until it accepts connections."""
        if not self.data.exists():
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            )
            with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
                conf.write(SETTINGS.format(port=self.port, directory=self.directory))
                conf.write(self.extra_settings)
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "60", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate`` is a crash as far as PostgreSQL knows)."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        """A libpq connection string for ``dbname`` over TCP loopback."""
        return f"host=127.0.0.1 port={self.port} user={user} dbname={dbname}"

    def cleanup(self) -> None:
        """Stop and remove the cluster."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def create_database(admin_dsn: str, name: str) -> None:
    """Create an empty database."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(admin_dsn: str, name: str) -> None:
    """Drop a database even if connections are still open."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def replace_dbname(dsn: str, dbname: str) -> str:
    """The same connection string pointing at another database."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})
