"""Bring a state store's schema to the current version with Alembic."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from tillflow.errors import MigrationError, StorageError
from tillflow.storage.db import lock_for_append, write_tx

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade_schema(engine: Engine, revision: str = "head") -> None:
    """Apply every migration up to `revision` (idempotent; safe to run at each start)."""
    config = alembic_config()
    try:
        with write_tx(engine) as conn:
            lock_for_append(conn, "tillflow.schema")  # one migrator at a time, across processes
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    except (SQLAlchemyError, StorageError) as exc:
        raise MigrationError(f"schema migration failed: {exc}") from exc
