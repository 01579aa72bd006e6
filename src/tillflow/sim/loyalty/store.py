"""The loyalty platform's SQLite file: schema, the service clock, and idempotent writes.

One connection behind a lock serves every request. SQLite takes one writer at a time anyway,
and since reads settle lazily (expired holds and points are written when a member is looked
at), nearly every request writes. Each request runs in one `BEGIN IMMEDIATE` transaction, and a
write stores its answer under its idempotency key in the same transaction as its effect: the
effect and the remembered answer are durable together or not at all.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson

from tillflow.errors import TillflowError
from tillflow.sim.loyalty.settings import LoyaltySimSettings

T = TypeVar("T")
Body = dict[str, Any]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS members (
    program TEXT NOT NULL, member_id TEXT NOT NULL, tier TEXT NOT NULL,
    lifetime INTEGER NOT NULL DEFAULT 0, debt INTEGER NOT NULL DEFAULT 0, enrolled_at TEXT NOT NULL,
    PRIMARY KEY (program, member_id)
);
CREATE TABLE IF NOT EXISTS lots (
    lot_id INTEGER PRIMARY KEY, program TEXT NOT NULL, member_id TEXT NOT NULL,
    transaction_id TEXT, points INTEGER NOT NULL, remaining INTEGER NOT NULL,
    earned_at TEXT NOT NULL, expires_at TEXT
);
CREATE INDEX IF NOT EXISTS lots_by_member ON lots (program, member_id, earned_at, lot_id);
CREATE TABLE IF NOT EXISTS accruals (
    program TEXT NOT NULL, transaction_id TEXT NOT NULL, member_id TEXT NOT NULL,
    entry_id TEXT NOT NULL, points INTEGER NOT NULL, reversed INTEGER NOT NULL DEFAULT 0,
    lot_id INTEGER NOT NULL, PRIMARY KEY (program, transaction_id)
);
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY, entry_id TEXT NOT NULL UNIQUE, program TEXT NOT NULL,
    member_id TEXT NOT NULL, kind TEXT NOT NULL, points INTEGER NOT NULL, balance INTEGER NOT NULL,
    transaction_id TEXT, hold_id TEXT, lot_id INTEGER, at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_member ON entries (program, member_id, seq);
CREATE TABLE IF NOT EXISTS holds (
    hold_id TEXT PRIMARY KEY, program TEXT NOT NULL, member_id TEXT NOT NULL,
    points INTEGER NOT NULL, state TEXT NOT NULL, created_at TEXT NOT NULL, expires_at TEXT NOT NULL,
    closed_at TEXT, transaction_id TEXT, entry_id TEXT
);
CREATE INDEX IF NOT EXISTS holds_by_member ON holds (program, member_id, state);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, status INTEGER NOT NULL, body BLOB NOT NULL,
    created_at TEXT NOT NULL
);
"""


class Refusal(TillflowError):
    """Raised when the platform answers a request with an HTTP error (problem+json); `extra`
    goes into the body, so a refusal carries its numbers (available, requested...)."""

    def __init__(self, status: int, title: str, detail: str, *, type_: str = "about:blank", **extra: Any):
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.type_ = type_
        self.extra = extra


def iso(moment: datetime) -> str:
    """The one text form of a time in the file: UTC, microseconds, so text order is time order."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What identifies a request for idempotency: its method, path and JSON body (key order and
    whitespace aside, so a client re-serialising the same body is not taken for another)."""
    try:
        canonical = orjson.dumps(orjson.loads(body or b"null"), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONDecodeError:
        canonical = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


Operation = Callable[[sqlite3.Connection, datetime], tuple[int, Body]]
Seeder = Callable[[sqlite3.Connection, LoyaltySimSettings, datetime], None]


class LoyaltyStore:
    """The SQLite file of one loyalty platform, with its service clock."""

    def __init__(self, db_path: Path, settings: LoyaltySimSettings, *, seed: Seeder) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)
        self._offset = timedelta(seconds=float(self._meta("clock_offset") or 0))
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                if self._meta("seeded") is None:
                    seed(self._conn, settings, self.now())
                    self._set_meta("seeded", iso(self.now()))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- the service clock: wall time plus an offset that tests move (kept across restarts)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def set_clock(self, now: datetime | None) -> datetime:
        """Move the service clock to `now` (None: back to wall time); expiry and TTLs follow it."""
        with self._lock:
            self._offset = timedelta(0) if now is None else now - datetime.now(UTC)
            self._set_meta("clock_offset", str(self._offset.total_seconds()))
            return self.now()

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- transactions

    def run(self, fn: Callable[[sqlite3.Connection, datetime], T]) -> T:
        """`fn` in one write transaction (reads settle expired holds and points as they go)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._conn, self.now())
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return result

    def write(self, key: str, print_: str, operation: Operation) -> tuple[int, Body, bool]:
        """Run `operation` once per idempotency key: (status, body, replayed). A refusal is an
        answer too and is remembered like a success; its partial effects are rolled back."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute(
                    "SELECT fingerprint, status, body FROM idempotency WHERE key = ?", (key,)
                ).fetchone()
                if row is not None:
                    self._conn.execute("COMMIT")
                    if row["fingerprint"] != print_:
                        raise Refusal(
                            422,
                            "idempotency key reused with another request",
                            f"Idempotency-Key {key!r} was first used with another request",
                            type_="idempotency-key-reused",
                        )
                    return int(row["status"]), orjson.loads(row["body"]), True
                now = self.now()
                self._conn.execute("SAVEPOINT effect")
                try:
                    status, body = operation(self._conn, now)
                    self._conn.execute("RELEASE effect")
                except Refusal as refusal:
                    self._conn.execute("ROLLBACK TO effect")
                    self._conn.execute("RELEASE effect")
                    status, body = refusal.status, problem_body(refusal)
                self._conn.execute(
                    "INSERT INTO idempotency (key, fingerprint, status, body, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (key, print_, status, orjson.dumps(body), iso(now)),
                )
                self._conn.execute("COMMIT")
                return status, body, False
            except Refusal:
                raise
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise


def problem_body(refusal: Refusal) -> Body:
    """The RFC 9457 body of a refusal (without `instance`, which the app adds)."""
    body: Body = {
        "type": refusal.type_
        if refusal.type_ == "about:blank"
        else f"https://tillflow.dev/problems/{refusal.type_}",
        "title": refusal.title,
        "status": refusal.status,
        "detail": refusal.detail,
    }
    body.update(refusal.extra)
    return body
