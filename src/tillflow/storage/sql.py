"""Small SQL helpers shared by the SQL adapters: time codec and dialect-neutral upserts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def to_us(at: datetime) -> int:
    """UTC epoch microseconds of an aware datetime (exact: no float on the way)."""
    return (at - EPOCH) // _US


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def insert_for(conn: Connection, table: Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT (SQLite and PostgreSQL alike)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def insert_rows(conn: Connection, stmt: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Run an INSERT for many rows through the driver's executemany.

    The hot path writes thousands of rows a second; SQLAlchemy's per-row parameter processing
    costs more than the insert itself. The statement is compiled once for the dialect and the
    rows go straight to the driver (no Python-side column defaults: give every value).
    """
    if not rows:
        return
    compiled = stmt.compile(dialect=conn.dialect, column_keys=list(rows[0]))
    order = compiled.positiontup
    params: Sequence[Any] = [tuple(row[k] for k in order) for row in rows] if order else list(rows)
    conn.exec_driver_sql(str(compiled), params)


def rows_by_pairs(
    conn: Connection,
    select_sql: str,
    columns: tuple[str, str],
    keys: Sequence[tuple[str, str]],
    *,
    where: str = "",
) -> list[Any]:
    """The rows of `select_sql` (a `SELECT ... FROM t` of trusted text) whose two `columns`
    equal one of `keys`, as `(a, b) IN (VALUES ...)` through the driver: a batch asks for
    thousands of (store, sku) pairs, and SQLAlchemy's rendering of an expanding tuple IN costs
    more than the query. `where` adds a trusted condition."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    extra = f" AND {where}" if where else ""
    out: list[Any] = []
    for start in range(0, len(keys), _PAIRS):
        chunk = keys[start : start + _PAIRS]
        values = ", ".join([f"({mark}, {mark})"] * len(chunk))
        sql = f"{select_sql} WHERE ({columns[0]}, {columns[1]}) IN (VALUES {values}){extra}"
        out.extend(conn.exec_driver_sql(sql, tuple(v for key in chunk for v in key)).fetchall())
    return out


_PAIRS = 400  # pairs per query: 800 parameters, under SQLite's limit
