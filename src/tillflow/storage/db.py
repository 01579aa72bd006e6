"""Engines for the state store: SQLite (embedded, WAL) or PostgreSQL, with the same SQL.

SQLite gets WAL, a busy timeout and `BEGIN IMMEDIATE` for write transactions, so that two
writers queue instead of failing on a lock upgrade. PostgreSQL serialises writers where
ordering matters with transaction-scoped advisory locks (see `lock_for_append`).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Literal
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError

from tillflow.errors import StorageError

_WRITE = "tillflow_write"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


def create_state_engine(url: str, *, sqlite_synchronous: Synchronous = "NORMAL") -> Engine:
    """An engine for `url` (``sqlite:///file.db`` or ``postgresql+psycopg://...``)."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        _configure_sqlite(engine, sqlite_synchronous)
        return engine
    return create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)


def _configure_sqlite(engine: Engine, synchronous: Synchronous) -> None:
    if sqlite3.sqlite_version_info < (3, 35):
        raise StorageError(f"SQLite {sqlite3.sqlite_version} is too old: tillflow needs 3.35+ (RETURNING)")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")


class SQLiteWriterLock:
    """One writer at a time across threads and processes, handed over without polling.

    SQLite's own busy handler sleeps up to 100 ms between tries, which starves a busy hub.
    Writers of this process queue on a thread lock; processes queue on `flock` of a lock
    file beside the database (released by the kernel if a process dies).
    """

    def __init__(self, database: str) -> None:
        self._thread_lock = threading.Lock()
        self._path = f"{database}-writer.lock"
        self._fd: int | None = None

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        try:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError:
            self._thread_lock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


_writer_locks: WeakKeyDictionary[Engine, SQLiteWriterLock] = WeakKeyDictionary()
_registry_lock = threading.Lock()


def _writer_lock(engine: Engine) -> SQLiteWriterLock | None:
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    with _registry_lock:
        lock = _writer_locks.get(engine)
        if lock is None:
            lock = _writer_locks[engine] = SQLiteWriterLock(database)
    return lock


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """One write transaction: committed when the block ends, rolled back on error."""
    lock = _writer_lock(engine)
    try:
        with (
            lock or nullcontext(),
            engine.connect().execution_options(**{_WRITE: True}) as conn,
            conn.begin(),
        ):
            yield conn
    except SQLAlchemyError as exc:
        raise StorageError(f"state store write failed: {exc}") from exc


@contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    """One read-only transaction (a consistent snapshot on both backends)."""
    try:
        with engine.connect() as conn, conn.begin():
            yield conn
    except SQLAlchemyError as exc:
        raise StorageError(f"state store read failed: {exc}") from exc


def lock_for_append(conn: Connection, name: str) -> None:
    """Serialise writers of `name` until commit (so sequence order equals commit order, and
    two writers never judge the same thing at once).

    SQLite already has one writer at a time (BEGIN IMMEDIATE); PostgreSQL takes a
    transaction-scoped advisory lock.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})
