"""Shared fixtures: state engines on SQLite and on a real PostgreSQL, and a session server."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from tests.servers import postgres_server
from tillflow.storage.db import create_state_engine, sqlite_url
from tillflow.storage.migrate import upgrade_schema


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A PostgreSQL to create test databases in: TILLFLOW_TEST_PG_DSN, or one we start."""
    given = os.environ.get("TILLFLOW_TEST_PG_DSN")
    if given:
        yield given
        return
    with postgres_server() as url:
        yield url


def _fresh_pg_database(admin_url: str) -> str:
    name = f"tillflow_test_{secrets.token_hex(6)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty state store URL on each backend."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "state.db")
    return _fresh_pg_database(request.getfixturevalue("pg_admin_url"))


@pytest.fixture
def engine(state_url: str) -> Iterator[Engine]:
    """A migrated state store on each backend."""
    eng = create_state_engine(state_url, sqlite_synchronous="NORMAL")
    upgrade_schema(eng)
    yield eng
    eng.dispose()
