"""The agent's SQLite files: one written by one thread with group commit, and one shared simply.

`GroupCommitFile` (the outboxes) is durable before it answers. Submissions (functions of a
connection) queue up; the writer thread takes everything queued, runs it in one transaction
and commits once (with `synchronous=FULL`, one fsync), then answers each submitter. Each
submission runs in its own savepoint, so one that fails (a full disk) is rolled back alone and
the others of the group still commit; a commit that fails fails the whole group, and nothing
committed before is touched. Reads share one connection of their own and see what is
committed (WAL: readers never wait for the writer).

A full disk, or the file's size limit (`max_pages`, SQLite's `max_page_count`), is
`DiskFullError`; other driver errors are `StorageError`.

`SQLiteFile` (the lookup caches and the offline grants): one connection shared by the threads
of a process, one at a time; driver errors are `StorageError`.
"""

from __future__ import annotations

import contextlib
import errno
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from tillflow.errors import DiskFullError, StorageError

__all__ = ["DiskFullError", "GroupCommitFile", "SQLiteFile", "translate"]

T = TypeVar("T")
SQLITE_FULL = 13


@dataclass(slots=True)
class _Job:
    work: Callable[[sqlite3.Connection], Any]
    future: Future[Any]


class GroupCommitFile:
    """A SQLite file (WAL, `synchronous=FULL`) with one writer thread; safe to share between
    threads. `schema` is run once at opening; `commits` counts the commits made."""

    def __init__(
        self, path: Path, schema: str, *, max_pages: int | None = None, busy_timeout: float = 30.0
    ) -> None:
        self.path = path
        self.commits = 0
        self._busy_timeout = busy_timeout
        self._writer = self._connect()
        try:
            self._reader = self._connect()
        except StorageError:
            self._writer.close()
            raise
        self._read_lock = threading.Lock()
        try:
            self._writer.executescript(schema)
            if max_pages is not None:
                self._writer.execute(f"PRAGMA max_page_count = {int(max_pages)}")
        except sqlite3.Error as exc:
            self._close_connections()
            raise translate(exc, path) from exc
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closing = False
        self._submit_lock = threading.Lock()
        self._thread = threading.Thread(target=self._write_loop, name=f"writer-{path.stem}", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        except (sqlite3.Error, OSError) as exc:
            raise translate(exc, self.path) from exc
        return conn

    def submit(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in the writer's next commit; returns its result once that commit is on
        disk, or raises what it (or the commit) raised."""
        future: Future[T] = Future()
        with self._submit_lock:
            if self._closing:
                raise StorageError(f"{self.path} is closed")
            self._queue.put(_Job(work, future))
        return future.result()

    def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in a read transaction (one consistent view of what is committed)."""
        with self._read_lock:
            try:
                self._reader.execute("BEGIN")
                try:
                    return work(self._reader)
                finally:
                    self._reader.execute("COMMIT")
            except sqlite3.Error as exc:
                raise translate(exc, self.path) from exc

    def close(self) -> None:
        """Commit what is queued, then close the file."""
        with self._submit_lock:
            if self._closing:
                return
            self._closing = True
            self._queue.put(None)
        self._thread.join()
        self._close_connections()

    def _close_connections(self) -> None:
        self._writer.close()
        with self._read_lock:
            self._reader.close()

    def _write_loop(self) -> None:
        closing = False
        while not closing:
            job = self._queue.get()
            if job is None:
                break
            jobs = [job]
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    closing = True
                    break
                jobs.append(more)
            self._commit(jobs)

    def _commit(self, jobs: list[_Job]) -> None:
        conn = self._writer
        done: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for i, job in enumerate(jobs):
                conn.execute("SAVEPOINT submission")
                try:
                    value = job.work(conn)
                except Exception as exc:
                    if not conn.in_transaction:
                        # SQLite rolled the whole transaction back (it may, on a full disk):
                        # this submission fails, the others of the group are written again
                        job.future.set_exception(_translated(exc, self.path))
                        self._commit([j for j, _, _ in done] + jobs[i + 1 :])
                        return
                    conn.execute("ROLLBACK TO submission")  # this submission alone is undone
                    conn.execute("RELEASE submission")
                    done.append((job, None, exc))
                    continue
                conn.execute("RELEASE submission")
                done.append((job, value, None))
            conn.execute("COMMIT")
        except Exception as exc:  # the commit failed: nothing of this group stands
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(_translated(exc, self.path))
            return
        self.commits += 1
        for job, value, failure in done:
            if failure is None:
                job.future.set_result(value)
            else:
                job.future.set_exception(_translated(failure, self.path))


def translate(exc: BaseException, path: Path) -> StorageError:
    """A driver or disk error as our own: a full disk (or size limit) is `DiskFullError`."""
    code = getattr(exc, "sqlite_errorcode", None)
    full = (isinstance(code, int) and code & 0xFF == SQLITE_FULL) or (
        isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    )
    if full:
        return DiskFullError(f"{path.name} is full ({exc})")
    return StorageError(f"{path}: {type(exc).__name__}: {exc}")


def _translated(exc: BaseException, path: Path) -> BaseException:
    """What a submitter is raised: driver and disk errors translated (caused by the original),
    anything else as it was."""
    if not isinstance(exc, sqlite3.Error | OSError):
        return exc
    error = translate(exc, path)
    error.__cause__ = exc
    return error


class SQLiteFile:
    """One SQLite file (WAL) shared by the threads of a process: one connection, one at a time.
    `synchronous` NORMAL: a commit survives a crash of the process, not a power cut (what can be
    asked for again); FULL: it survives both (what cannot)."""

    def __init__(
        self, path: str | Path, schema: str, *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    ) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        try:
            if self.path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
            self._conn.execute("PRAGMA busy_timeout=10000")
            self._conn.executescript(schema)
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection, for reads; driver errors become StorageError."""
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise StorageError(f"{self.path}: {exc}") from exc

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """The connection in one write transaction, committed when the block ends, rolled back
        when it raises; driver errors become StorageError."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StorageError(f"{self.path}: {exc}") from exc
