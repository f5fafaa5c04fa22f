"""Numbered SQL migrations and the runner that applies them: the single owner of DDL."""

from ingest.schema.migrate import Migration, MigrationError, applied, available, migrate

__all__ = ["Migration", "MigrationError", "applied", "available", "migrate"]
