"""A store's outbox: every transaction the agent acknowledged, on the store's disk first.

One SQLite file per store, written with group commit (`edge.sqlite.GroupCommitFile`): a
transaction is acknowledged only once its commit is on disk, concurrent submissions share one
fsync, and one that fails (a full disk: `DiskFullError`) is rolled back alone, touching nothing
committed before.

The outbox judges as the hub does (`TransactionStore`): the same identity with the same content
is a duplicate; with other content a conflict, refused and recorded, the original kept. Each
entry is `pending` until the hub answers for it, then `delivered` (accepted or duplicate),
`conflict` (the hub holds other content for its identity) or `refused` (the hub found it
invalid); neither of the last two is sent again. An entry `held` waits for an operator (its
reason kept) and is sent only once released. `seq` gives the forwarding order, so each
register's transactions reach the hub in till order. Delivered entries are kept for a
retention period, so a gap the hub's reconciliation finds can be sent again (`requeue`).

The bytes the till sent (`data`) are what a resend of the till is judged against, always. The
forwarder may send other bytes (a loyalty tender's offline grant replaced by the hub's hold):
those are kept too (`sent_data`) before the first send, so every send, and every re-send the
hub asks for, carries the same bytes.

A day close (the Z report) waits in a second table, to be sent after every transaction of its
store-day that was pending when it arrived.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from tillflow.edge.sqlite import GroupCommitFile
from tillflow.errors import DiskFullError, StorageError
from tillflow.flows.ingest import judge_batch, to_compare
from tillflow.model import DayClose, Transaction
from tillflow.model.transaction import TRUSTED_CONTEXT
from tillflow.ports import IncomingTransaction, StoredTransaction, Verdict
from tillflow.storage.sql import from_us, to_us

__all__ = [
    "DiskFullError",
    "EntryState",
    "HeldEntry",
    "OutboxEntry",
    "OutboxStats",
    "PendingDayClose",
    "SQLiteOutbox",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS transactions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_id TEXT NOT NULL UNIQUE,
    register_id TEXT NOT NULL,
    business_day TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    data BLOB NOT NULL,
    digest TEXT NOT NULL,
    traceparent TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    received_us INTEGER NOT NULL,
    delivered_us INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    sent_data BLOB
);
CREATE INDEX IF NOT EXISTS transactions_state ON transactions (state, seq);
CREATE INDEX IF NOT EXISTS transactions_day ON transactions (business_day, register_id, sequence);
CREATE TABLE IF NOT EXISTS conflicts (
    id INTEGER PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    received_us INTEGER NOT NULL,
    digest TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS day_closes (
    business_day TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    after_seq INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    received_us INTEGER NOT NULL,
    delivered_us INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
"""


class EntryState(StrEnum):
    """Where a transaction (or a day close) of the outbox stands with the hub."""

    PENDING = "pending"  # not yet acknowledged by the hub
    DELIVERED = "delivered"  # the hub answered accepted or duplicate
    CONFLICT = "conflict"  # the hub holds other content for this identity: never sent again
    REFUSED = "refused"  # the hub found it invalid: never sent again
    HELD = "held"  # kept back for an operator (its reason kept): sent once released


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A transaction waiting in the outbox, with the bytes the till sent (keys sorted) and,
    once the forwarder chose other bytes to send, those."""

    seq: int
    transaction_id: str
    register_id: str
    business_day: date
    sequence: int
    data: bytes
    digest: str
    traceparent: str | None
    received_at: datetime
    attempts: int
    sent_data: bytes | None = None

    @property
    def to_send(self) -> bytes:
        """The bytes the hub gets: those chosen before the first send, else the till's."""
        return self.data if self.sent_data is None else self.sent_data


@dataclass(frozen=True, slots=True)
class HeldEntry:
    """A transaction kept back for an operator, and why."""

    transaction_id: str
    business_day: date
    reason: str


@dataclass(frozen=True, slots=True)
class PendingDayClose:
    """A day close due to be sent: every transaction that was pending before it is delivered."""

    business_day: date
    data: bytes
    attempts: int


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """How far the store is behind the hub, and what the outbox keeps."""

    depth: int  # transactions pending
    oldest_unsent_age_seconds: float | None
    delivered: int  # delivered and still kept for re-sends
    conflicts: int  # refused by the hub as conflicts
    refused: int  # refused by the hub as invalid
    held: int  # kept back for an operator
    local_conflicts: int  # refused here: a sequence reused with other content
    day_closes_pending: int


def _marks(values: Sequence[Any]) -> str:
    """As many placeholders as `values`."""
    return ",".join("?" * len(values))


class SQLiteOutbox:
    """The outbox of one store in one SQLite file (`GroupCommitFile`); safe to share between
    threads. `max_pages` caps the file: past it a submission fails as `DiskFullError`, as it
    would on a full disk. `wake` is set whenever transactions (or a day close) are ready to be
    forwarded."""

    def __init__(
        self, path: Path, store_id: str, *, max_pages: int | None = None, busy_timeout: float = 30.0
    ) -> None:
        self.path = path
        self.store_id = store_id
        self.wake = threading.Event()
        self._file = GroupCommitFile(path, _SCHEMA, max_pages=max_pages, busy_timeout=busy_timeout)
        try:
            owner = self._file.submit(_open(store_id))
        except Exception:
            self._file.close()
            raise
        if owner != store_id:
            self._file.close()
            raise StorageError(f"outbox {path} belongs to store {owner}, not {store_id}")
        self._submit = self._file.submit
        self._read = self._file.read

    @property
    def commits(self) -> int:
        """The commits made so far (each one fsync; concurrent submissions share one)."""
        return self._file.commits

    def close(self) -> None:
        """Commit what is queued, then close the file."""
        self._file.close()

    # -- TransactionStore -------------------------------------------------------------------

    def record_batch(self, batch: Sequence[IncomingTransaction], *, received_at: datetime) -> list[Verdict]:
        """Keep the new transactions, judge repeats; returns once the batch is on disk."""
        if not batch:
            return []
        others = {r.transaction.store_id for r in batch} - {self.store_id}
        if others:
            raise ValueError(f"the outbox of {self.store_id} cannot take transactions of {sorted(others)}")
        received_us = to_us(received_at)

        def work(conn: sqlite3.Connection) -> list[Verdict]:
            ids = sorted({r.transaction.transaction_id for r in batch})
            where = f"FROM transactions WHERE transaction_id IN ({_marks(ids)})"
            known = dict(conn.execute(f"SELECT transaction_id, digest {where}", ids).fetchall())
            differing = to_compare(batch, known)
            originals = {
                tx_id: Transaction.model_validate_json(data, context=TRUSTED_CONTEXT)
                for tx_id, data in conn.execute(f"SELECT transaction_id, data {where}", ids)
                if tx_id in differing
            }
            judgement = judge_batch(batch, known, originals)
            conn.executemany(
                "INSERT INTO transactions (transaction_id, register_id, business_day, sequence, data,"
                " digest, traceparent, received_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.transaction.transaction_id,
                        r.transaction.register_id,
                        r.transaction.business_day.isoformat(),
                        r.transaction.sequence,
                        r.data,
                        r.digest,
                        r.traceparent,
                        received_us,
                    )
                    for r in judgement.new
                ],
            )
            conn.executemany(
                "INSERT INTO conflicts (transaction_id, received_us, digest, data) VALUES (?, ?, ?, ?)",
                [(r.transaction.transaction_id, received_us, r.digest, r.data) for r in judgement.conflicts],
            )
            return judgement.verdicts

        verdicts = self._submit(work)
        if Verdict.ACCEPTED in verdicts:
            self.wake.set()
        return verdicts

    def get_transaction(self, transaction_id: str) -> StoredTransaction | None:
        """One transaction the outbox holds (in any state), or None."""
        found = self._stored("WHERE transaction_id = ?", (transaction_id,))
        return found[0] if found else None

    def read_store_day(self, store_id: str, business_day: date) -> list[StoredTransaction]:
        """Every transaction the outbox holds for a business day (in any state), by register
        and sequence; delivered ones purged after the retention are no longer there."""
        if store_id != self.store_id:
            return []
        return self._stored(
            "WHERE business_day = ? ORDER BY register_id, sequence", (business_day.isoformat(),)
        )

    def list_sequences(self, store_id: str, business_day: date) -> dict[str, set[int]]:
        """The sequences the outbox holds for a business day, per register."""
        out: dict[str, set[int]] = {}
        if store_id != self.store_id:
            return out
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT register_id, sequence FROM transactions WHERE business_day = ?",
                (business_day.isoformat(),),
            ).fetchall()
        )
        for register_id, sequence in rows:
            out.setdefault(register_id, set()).add(sequence)
        return out

    def list_store_days(self, business_day: date) -> list[str]:
        """This store, when the outbox holds transactions of the business day."""
        found = self._read(
            lambda conn: conn.execute(
                "SELECT 1 FROM transactions WHERE business_day = ? LIMIT 1", (business_day.isoformat(),)
            ).fetchone()
        )
        return [self.store_id] if found else []

    def _stored(self, where: str, params: tuple[Any, ...]) -> list[StoredTransaction]:
        def work(conn: sqlite3.Connection) -> list[StoredTransaction]:
            rows = conn.execute(
                "SELECT transaction_id, data, received_us, traceparent,"
                " (SELECT count(*) FROM conflicts c WHERE c.transaction_id = t.transaction_id)"
                f" FROM transactions t {where}",
                params,
            ).fetchall()
            return [
                StoredTransaction(
                    transaction_id=tx_id,
                    store_id=self.store_id,
                    data=bytes(data),
                    received_at=from_us(received_us),
                    logged_at=from_us(received_us),
                    event_seq=None,
                    traceparent=traceparent,
                    conflicts=int(conflicts),
                )
                for tx_id, data, received_us, traceparent, conflicts in rows
            ]

        return self._read(work)

    # -- forwarding --------------------------------------------------------------------------

    def pending(self, limit: int) -> list[OutboxEntry]:
        """Up to `limit` pending transactions, oldest first (the forwarding order)."""

        def work(conn: sqlite3.Connection) -> list[OutboxEntry]:
            rows = conn.execute(
                "SELECT seq, transaction_id, register_id, business_day, sequence, data, digest,"
                " traceparent, received_us, attempts, sent_data FROM transactions"
                " WHERE state = 'pending' ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
            return [
                OutboxEntry(
                    seq=r[0],
                    transaction_id=r[1],
                    register_id=r[2],
                    business_day=date.fromisoformat(r[3]),
                    sequence=r[4],
                    data=bytes(r[5]),
                    digest=r[6],
                    traceparent=r[7],
                    received_at=from_us(r[8]),
                    attempts=r[9],
                    sent_data=None if r[10] is None else bytes(r[10]),
                )
                for r in rows
            ]

        return self._read(work)

    def mark_delivered(self, transaction_ids: Sequence[str], *, at: datetime | None = None) -> int:
        """The hub acknowledged these (accepted or duplicate); returns how many were pending."""
        if not transaction_ids:
            return 0
        at_us = to_us(at or datetime.now(UTC))
        ids = list(transaction_ids)
        return self._submit(
            lambda conn: (
                conn.execute(
                    # `+state`: SQLite then finds the rows by transaction id; through the (state, seq)
                    # index it would read every pending row, a cost growing with the backlog
                    "UPDATE transactions SET state = 'delivered', delivered_us = ?, attempts = attempts + 1,"
                    f" last_error = NULL WHERE +state = 'pending' AND transaction_id IN ({_marks(ids)})",
                    [at_us, *ids],
                ).rowcount
            )
        )

    def mark_failed(self, transaction_id: str, state: EntryState, reason: str) -> bool:
        """The hub refused this one for good (`conflict` or `refused`, with its reason): it is
        kept, and never sent again unless requeued."""
        if state not in (EntryState.CONFLICT, EntryState.REFUSED):
            raise ValueError(f"a transaction fails as conflict or refused, not {state}")
        changed: int = self._submit(
            lambda conn: (
                conn.execute(
                    "UPDATE transactions SET state = ?, attempts = attempts + 1, last_error = ?"
                    " WHERE +state = 'pending' AND transaction_id = ?",
                    (state.value, reason, transaction_id),
                ).rowcount
            )
        )
        return changed == 1

    def note_attempt(self, transaction_ids: Sequence[str], error: str) -> None:
        """A send of these failed as a whole (the hub away, throttling, refusing the key): they
        stay pending; the attempt and its error are kept."""
        if not transaction_ids:
            return
        ids = list(transaction_ids)
        self._submit(
            lambda conn: conn.execute(
                "UPDATE transactions SET attempts = attempts + 1, last_error = ?"
                f" WHERE +state = 'pending' AND transaction_id IN ({_marks(ids)})",
                [error, *ids],
            )
        )

    def keep_sent_data(self, transaction_id: str, data: bytes) -> bytes:
        """Keep the bytes to send for a pending transaction in place of the till's, unless some
        were kept before; returns the bytes kept (the hub must get the same ones every time)."""

        def work(conn: sqlite3.Connection) -> bytes:
            conn.execute(
                "UPDATE transactions SET sent_data = ?"
                " WHERE transaction_id = ? AND +state = 'pending' AND sent_data IS NULL",
                (data, transaction_id),
            )
            row = conn.execute(
                "SELECT coalesce(sent_data, data) FROM transactions WHERE transaction_id = ?",
                (transaction_id,),
            ).fetchone()
            if row is None:
                raise StorageError(f"the outbox holds no transaction {transaction_id}")
            return bytes(row[0])

        return self._submit(work)

    def hold(self, transaction_id: str, reason: str) -> bool:
        """Keep a pending transaction back for an operator, with the reason; False when it was
        not pending."""
        changed: int = self._submit(
            lambda conn: (
                conn.execute(
                    "UPDATE transactions SET state = 'held', last_error = ?"
                    " WHERE +state = 'pending' AND transaction_id = ?",
                    (reason, transaction_id),
                ).rowcount
            )
        )
        return changed == 1

    def release(self, transaction_id: str) -> str | None:
        """An operator lets a held transaction go: it is sent as the till sent it. Returns its
        state before (None when the outbox does not hold it); only a held one changes."""

        def work(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT state FROM transactions WHERE transaction_id = ?", (transaction_id,)
            ).fetchone()
            if row is None:
                return None
            if row[0] == EntryState.HELD.value:
                conn.execute(
                    "UPDATE transactions SET state = 'pending', sent_data = data, last_error = NULL"
                    " WHERE transaction_id = ?",
                    (transaction_id,),
                )
            return str(row[0])

        before = self._submit(work)
        if before == EntryState.HELD.value:
            self.wake.set()
        return before

    def held(self, limit: int = 100) -> list[HeldEntry]:
        """Up to `limit` transactions kept back for an operator, oldest first, with why."""
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT transaction_id, business_day, last_error FROM transactions"
                " WHERE state = 'held' ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        )
        return [HeldEntry(tx_id, date.fromisoformat(day), reason or "") for tx_id, day, reason in rows]

    def find_states(self, transaction_ids: Sequence[str]) -> dict[str, str]:
        """The state of each of these the outbox holds (those it does not are left out)."""
        ids = list(dict.fromkeys(transaction_ids))
        if not ids:
            return {}
        rows = self._read(
            lambda conn: conn.execute(
                f"SELECT transaction_id, state FROM transactions WHERE transaction_id IN ({_marks(ids)})",
                ids,
            ).fetchall()
        )
        return dict(rows)

    def requeue(
        self, transaction_ids: Sequence[str] | None = None, *, business_day: date | None = None
    ) -> int:
        """Send delivered transactions again (those named, or every one of a business day kept):
        the hub asked for a gap it does not have. Returns how many were requeued."""
        if transaction_ids is not None and business_day is None:
            ids = list(transaction_ids)
            where, params = f"transaction_id IN ({_marks(ids)})", ids
        elif business_day is not None and transaction_ids is None:
            where, params = "business_day = ?", [business_day.isoformat()]
        else:
            raise ValueError("requeue names transactions or a business day")
        count: int = self._submit(
            lambda conn: (
                conn.execute(
                    "UPDATE transactions SET state = 'pending', delivered_us = NULL, last_error = NULL"
                    f" WHERE state = 'delivered' AND {where}",
                    params,
                ).rowcount
            )
        )
        if count:
            self.wake.set()
        return count

    def purge_delivered(self, older_than: datetime) -> int:
        """Forget transactions and day closes delivered before `older_than`; returns how many
        transactions."""
        cut = to_us(older_than)

        def work(conn: sqlite3.Connection) -> int:
            conn.execute("DELETE FROM day_closes WHERE state = 'delivered' AND delivered_us < ?", (cut,))
            count: int = conn.execute(
                "DELETE FROM transactions WHERE state = 'delivered' AND delivered_us < ?", (cut,)
            ).rowcount
            return count

        return self._submit(work)

    def stats(self, *, now: datetime | None = None) -> OutboxStats:
        """Depth, the age of the oldest pending transaction, and what is kept."""

        def work(conn: sqlite3.Connection) -> OutboxStats:
            counts = {
                state: (int(n), oldest)
                for state, n, oldest in conn.execute(
                    "SELECT state, count(*), min(received_us) FROM transactions GROUP BY state"
                )
            }
            (local,) = conn.execute("SELECT count(*) FROM conflicts").fetchone()
            (closes,) = conn.execute("SELECT count(*) FROM day_closes WHERE state = 'pending'").fetchone()
            depth, oldest = counts.get(EntryState.PENDING.value, (0, None))
            age = None
            if oldest is not None:
                age = max(0.0, (to_us(now or datetime.now(UTC)) - oldest) / 1_000_000)
            return OutboxStats(
                depth=depth,
                oldest_unsent_age_seconds=age,
                delivered=counts.get(EntryState.DELIVERED.value, (0, None))[0],
                conflicts=counts.get(EntryState.CONFLICT.value, (0, None))[0],
                refused=counts.get(EntryState.REFUSED.value, (0, None))[0],
                held=counts.get(EntryState.HELD.value, (0, None))[0],
                local_conflicts=int(local),
                day_closes_pending=int(closes),
            )

        return self._read(work)

    def states(self) -> dict[str, str]:
        """The state of every transaction held (transaction id -> state)."""
        rows = self._read(
            lambda conn: conn.execute("SELECT transaction_id, state FROM transactions").fetchall()
        )
        return dict(rows)

    # -- day closes --------------------------------------------------------------------------

    def record_day_close(self, close: DayClose, *, received_at: datetime) -> Verdict:
        """Keep a Z report of this store to send after the transactions of its day that are
        pending now. The same report again is a duplicate; another one for the same day
        replaces it (the hub decides whether the day can still change)."""
        if close.store_id != self.store_id:
            raise ValueError(f"the outbox of {self.store_id} cannot take a day close of {close.store_id}")
        data = close.model_dump_json().encode()
        day = close.business_day.isoformat()

        def work(conn: sqlite3.Connection) -> Verdict:
            row = conn.execute("SELECT data FROM day_closes WHERE business_day = ?", (day,)).fetchone()
            if row is not None and DayClose.model_validate_json(row[0]) == close:
                return Verdict.DUPLICATE
            (after,) = conn.execute("SELECT coalesce(max(seq), 0) FROM transactions").fetchone()
            conn.execute(
                "INSERT INTO day_closes (business_day, data, after_seq, received_us) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (business_day) DO UPDATE SET data = excluded.data,"
                " after_seq = excluded.after_seq, received_us = excluded.received_us, state = 'pending',"
                " delivered_us = NULL, attempts = 0, last_error = NULL",
                (day, data, after, to_us(received_at)),
            )
            return Verdict.ACCEPTED

        verdict = self._submit(work)
        if verdict is Verdict.ACCEPTED:
            self.wake.set()
        return verdict

    def due_day_closes(self) -> list[PendingDayClose]:
        """Pending day closes none of whose earlier transactions is still pending."""
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT business_day, data, attempts FROM day_closes d WHERE state = 'pending'"
                " AND NOT EXISTS (SELECT 1 FROM transactions t WHERE t.state = 'pending'"
                " AND t.business_day = d.business_day AND t.seq <= d.after_seq)"
                " ORDER BY business_day"
            ).fetchall()
        )
        return [PendingDayClose(date.fromisoformat(d), bytes(data), attempts) for d, data, attempts in rows]

    def mark_day_close(self, business_day: date, state: EntryState, reason: str | None = None) -> None:
        """The hub's answer for a day close: delivered, conflict or refused (with the reason);
        `pending` keeps it waiting and counts the attempt."""
        delivered_us = to_us(datetime.now(UTC)) if state is EntryState.DELIVERED else None
        self._submit(
            lambda conn: conn.execute(
                "UPDATE day_closes SET state = ?, delivered_us = ?, attempts = attempts + 1, last_error = ?"
                " WHERE business_day = ?",
                (state.value, delivered_us, reason, business_day.isoformat()),
            )
        )

    def day_close_state(self, business_day: date) -> tuple[str, str | None] | None:
        """A day close's state and last error, or None when there is none."""
        row = self._read(
            lambda conn: conn.execute(
                "SELECT state, last_error FROM day_closes WHERE business_day = ?", (business_day.isoformat(),)
            ).fetchone()
        )
        return None if row is None else (row[0], row[1])


def _open(store_id: str) -> Callable[[sqlite3.Connection], str]:
    """Bring a file written by an earlier agent to this schema, and mark a new file as this
    store's outbox; returns the store the file belongs to."""

    def work(conn: sqlite3.Connection) -> str:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(transactions)")}
        if "sent_data" not in columns:
            conn.execute("ALTER TABLE transactions ADD COLUMN sent_data BLOB")
        conn.execute("INSERT OR IGNORE INTO outbox_meta (key, value) VALUES ('store_id', ?)", (store_id,))
        (owner,) = conn.execute("SELECT value FROM outbox_meta WHERE key = 'store_id'").fetchone()
        return str(owner)

    return work
