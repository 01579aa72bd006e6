"""The reference ERP's books in one SQLite file: journals, stock movements, idempotency, periods.

One connection behind a lock serves every request thread: writes to SQLite are serial anyway,
and the lock makes "look up the key, check, post, remember the answer" one atomic step, so two
concurrent repeats of a request can never both post. Amounts are kept as integers in minor
units, so that the trial balance is an exact SQL sum.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from tillflow.errors import StorageError
from tillflow.model import MINOR_UNITS
from tillflow.sim.erp.documents import JournalIn, MovementBatchIn, to_minor

__all__ = ["ErpStore", "Posted", "StoredAnswer"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, request_hash TEXT NOT NULL, status INTEGER NOT NULL, body TEXT NOT NULL,
    created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS periods (period TEXT PRIMARY KEY, status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rejections (reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS journals (
    external_id TEXT PRIMARY KEY, document_number TEXT NOT NULL UNIQUE, store_id TEXT NOT NULL,
    business_day TEXT NOT NULL, content_hash TEXT NOT NULL, posted_at TEXT NOT NULL,
    source_transactions TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS journal_lines (
    external_id TEXT NOT NULL REFERENCES journals, line_no INTEGER NOT NULL, store_id TEXT NOT NULL,
    business_day TEXT NOT NULL, account TEXT NOT NULL, currency TEXT NOT NULL,
    debit_minor INTEGER NOT NULL, credit_minor INTEGER NOT NULL, description TEXT NOT NULL,
    dimensions TEXT NOT NULL, PRIMARY KEY (external_id, line_no));
CREATE INDEX IF NOT EXISTS journal_lines_by_day ON journal_lines (store_id, business_day);
CREATE TABLE IF NOT EXISTS movement_batches (
    batch_id TEXT PRIMARY KEY, document_number TEXT NOT NULL UNIQUE, store_id TEXT NOT NULL,
    business_day TEXT NOT NULL, content_hash TEXT NOT NULL, posted_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS movements (
    batch_id TEXT NOT NULL REFERENCES movement_batches, n INTEGER NOT NULL, store_id TEXT NOT NULL,
    sku TEXT NOT NULL, quantity TEXT NOT NULL, uom TEXT NOT NULL, reason TEXT NOT NULL,
    transaction_id TEXT NOT NULL, line_no INTEGER NOT NULL, PRIMARY KEY (batch_id, n));
CREATE INDEX IF NOT EXISTS movements_by_sku ON movements (store_id, sku);
"""


@dataclass(frozen=True)
class StoredAnswer:
    request_hash: str
    status: int
    body: str


@dataclass(frozen=True)
class Posted:
    """A document the ERP holds: its number and when it was posted, and what it said."""

    external_id: str
    document_number: str
    posted_at: str
    content_hash: str

    def as_json(self) -> dict[str, str]:
        return {
            "external_id": self.external_id,
            "document_number": self.document_number,
            "posted_at": self.posted_at,
        }


class ErpStore:
    def __init__(self, db_path: Path, *, closed_periods: list[str]) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the ERP books: {exc}") from exc
        with self.transaction():
            for period in closed_periods:  # the configuration wins over a reopening at runtime
                self.set_period(period, closed=True)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic step under the lock; nested use joins the outer step."""
        with self._lock:
            if self._db.in_transaction:
                yield
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StorageError(f"the ERP books failed: {exc}") from exc

    def _one(self, sql: str, *args: Any) -> Any:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    # idempotency ---------------------------------------------------------------------------

    def find_answer(self, key: str) -> StoredAnswer | None:
        """The answer first given under `key`, if any."""
        row = self._one("SELECT request_hash, status, body FROM idempotency WHERE key = ?", key)
        return StoredAnswer(row[0], row[1], row[2]) if row else None

    def remember_answer(self, key: str, request_hash: str, status: int, body: str) -> None:
        self._db.execute(
            "INSERT INTO idempotency (key, request_hash, status, body, created_at) VALUES (?, ?, ?, ?, ?)",
            (key, request_hash, status, body, _now()),
        )

    # periods, rejections, numbering ---------------------------------------------------------

    def closed_periods(self) -> set[str]:
        rows = self._db.execute("SELECT period FROM periods WHERE status = 'closed'").fetchall()
        return {r[0] for r in rows}

    def set_period(self, period: str, *, closed: bool) -> None:
        self._db.execute(
            "INSERT INTO periods (period, status) VALUES (?, ?) "
            "ON CONFLICT (period) DO UPDATE SET status = excluded.status",
            (period, "closed" if closed else "open"),
        )

    def count_rejection(self, reason: str) -> None:
        self._db.execute(
            "INSERT INTO rejections (reason, count) VALUES (?, 1) "
            "ON CONFLICT (reason) DO UPDATE SET count = count + 1",
            (reason,),
        )

    def _next_number(self, prefix: str) -> str:
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, 1) "
            "ON CONFLICT (name) DO UPDATE SET value = value + 1",
            (prefix,),
        )
        (value,) = self._one("SELECT value FROM counters WHERE name = ?", prefix)
        return f"{prefix}-{value:06d}"

    # journals ------------------------------------------------------------------------------

    def find_journal(self, external_id: str) -> Posted | None:
        row = self._one(
            "SELECT external_id, document_number, posted_at, content_hash FROM journals "
            "WHERE external_id = ?",
            external_id,
        )
        return Posted(*row) if row else None

    def post_journal(self, journal: JournalIn, content_hash: str) -> Posted:
        """Book a journal already checked by the ledger rules; call inside `transaction()`."""
        posted = Posted(journal.external_id, self._next_number("JE"), _now(), content_hash)
        day = journal.business_day.isoformat()
        self._db.execute(
            "INSERT INTO journals VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                posted.external_id,
                posted.document_number,
                journal.store_id,
                day,
                content_hash,
                posted.posted_at,
                "\n".join(journal.source_transactions),
            ),
        )
        self._db.executemany(
            "INSERT INTO journal_lines VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    posted.external_id,
                    n,
                    journal.store_id,
                    day,
                    line.account,
                    line.currency,
                    to_minor(line.debit, line.currency),
                    to_minor(line.credit, line.currency),
                    line.description,
                    _json_dict(line.dimensions),
                )
                for n, line in enumerate(journal.lines)
            ],
        )
        return posted

    def trial_balance(self, store_id: str, business_day: date) -> list[tuple[str, str, Decimal, Decimal]]:
        """(account, currency, debit, credit) of the posted journals of one store and day."""
        with self._lock:
            rows = self._db.execute(
                "SELECT account, currency, SUM(debit_minor), SUM(credit_minor) FROM journal_lines "
                "WHERE store_id = ? AND business_day = ? "
                "GROUP BY account, currency ORDER BY account, currency",
                (store_id, business_day.isoformat()),
            ).fetchall()
        return [(a, c, _from_minor(d, c), _from_minor(k, c)) for a, c, d, k in rows]

    # stock ---------------------------------------------------------------------------------

    def find_batch(self, batch_id: str) -> Posted | None:
        row = self._one(
            "SELECT batch_id, document_number, posted_at, content_hash FROM movement_batches "
            "WHERE batch_id = ?",
            batch_id,
        )
        return Posted(*row) if row else None

    def post_movements(self, batch: MovementBatchIn, content_hash: str) -> Posted:
        """Book a checked batch of stock movements; call inside `transaction()`."""
        posted = Posted(batch.batch_id, self._next_number("IM"), _now(), content_hash)
        self._db.execute(
            "INSERT INTO movement_batches VALUES (?, ?, ?, ?, ?, ?)",
            (
                posted.external_id,
                posted.document_number,
                batch.store_id,
                batch.business_day.isoformat(),
                content_hash,
                posted.posted_at,
            ),
        )
        self._db.executemany(
            "INSERT INTO movements VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    batch.batch_id,
                    n,
                    batch.store_id,
                    m.sku,
                    str(m.quantity),
                    m.uom.value,
                    m.reason.value,
                    m.transaction_id,
                    m.line_no,
                )
                for n, m in enumerate(batch.movements)
            ],
        )
        return posted

    def stock(self, store_id: str, sku: str | None) -> list[tuple[str, str, Decimal]]:
        """(sku, uom, on hand relative to the first movement) of one store, or of one of its SKUs."""
        sql = "SELECT sku, uom, quantity FROM movements WHERE store_id = ?"
        args: tuple[str, ...] = (store_id,)
        if sku is not None:
            sql += " AND sku = ?"
            args += (sku,)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        totals: dict[tuple[str, str], Decimal] = {}
        for s, uom, quantity in rows:
            totals[(s, uom)] = totals.get((s, uom), Decimal(0)) + Decimal(quantity)
        return [(s, uom, q) for (s, uom), q in sorted(totals.items())]

    # figures -------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self._lock:

            def count(table: str) -> int:
                return int(self._one(f"SELECT COUNT(*) FROM {table}")[0])

            rejections = dict(self._db.execute("SELECT reason, count FROM rejections ORDER BY reason"))
            return {
                "journals_posted": count("journals"),
                "journal_lines": count("journal_lines"),
                "movement_batches": count("movement_batches"),
                "movements": count("movements"),
                "rejections": rejections,
                "rejected": sum(rejections.values()),
                "closed_periods": sorted(self.closed_periods()),
            }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _from_minor(value: int, currency: str) -> Decimal:
    return Decimal(value).scaleb(-MINOR_UNITS[currency])


def _json_dict(data: dict[str, str]) -> str:
    return json.dumps(data, sort_keys=True)
