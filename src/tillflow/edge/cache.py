"""A store's master data on the store's own disk: kept from the hub's deltas, and answered
locally (prices, promotions, items) whether the link to the hub is up or not.

`MasterCache` is one SQLite file (WAL) per store. It holds the store's records by (kind, key),
each as the JSON the hub sent with the version of the change that set it, and the version it
applied. `apply` takes one delta answer of the hub (`GET /v1/stores/{id}/masterdata`, see
`tillflow.hub.api.masterdata`) in one transaction: a record replaces the one under its (kind,
key), `record: null` deletes it, and the cache's version becomes the delta's. A delta must follow
on from that version: one that starts after it (a gap) is refused, and so is one that starts
before it and ends after it (a withdrawal in between would be missed); one that ends at or
before it was applied already and changes nothing, so applying an answer twice changes nothing.

Lookups read only what they need: the prices of one SKU (an index by SKU), one item, and the
promotions running at an instant (by their local start and end, and by the SKUs and departments
they name). The rules are those of `tillflow.flows.masterdata`, so the store answers as the hub
does for the same store, SKU and instant; prices of a SKU and promotions are taken in version
order, as the hub takes them.

`MasterSync` keeps a cache current over the hub's API with the store's key: it pages through the
delta since the cache's version, applies each page, then acknowledges the version reached. When
the hub answers that the cache is ahead of it (409 `version-ahead`: the hub was restored from a
backup), it loads the full snapshot into a fresh set of tables and swaps it in at once. A page
that failed to arrive leaves the cache at the last page it applied, each page being a consistent
version; a failure of the network is `DownstreamUnavailableError`, a refusal of the hub
`DownstreamRejectedError`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
import orjson

from tillflow.edge.sqlite import SQLiteFile
from tillflow.errors import (
    ConfigError,
    DownstreamRejectedError,
    DownstreamUnavailableError,
    MasterDeltaError,
)
from tillflow.flows.masterdata import active_promotions, local_time, price_at
from tillflow.model import Product, Store
from tillflow.model.masterdata import MasterKind, Price, Promotion

__all__ = [
    "MasterCache",
    "MasterDeltaError",
    "MasterSync",
    "SyncResult",
    "hub_problem",
    "request_hub",
]

LIVE, STAGED = "", "staged_"  # the table sets: the one answered from, the one a reload fills
PAGE = 1000  # changes per delta page

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {p}records (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    sku TEXT,
    starts TEXT,
    ends TEXT,
    record TEXT NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {p}records_by_sku ON {p}records (kind, sku, version);
CREATE TABLE IF NOT EXISTS {p}promotion_terms (
    term TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (term, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {p}promotion_terms_by_key ON {p}promotion_terms (key);
"""
_META = "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"

Change = tuple[int, str, str, Mapping[str, Any] | None]  # version, kind, key, record


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one `MasterSync.sync` did."""

    applied: int  # changes applied (records replaced or deleted)
    version: int  # the version the cache runs now, acknowledged to the hub
    reloaded: bool  # the hub was behind the cache: its snapshot replaced the cache


class MasterCache:
    """The master data of one store in a SQLite file (``":memory:"``: in memory). Thread-safe."""

    def __init__(self, path: str | Path, store: Store) -> None:
        self.store = store
        self._db = SQLiteFile(path, _META + _SCHEMA.format(p=LIVE) + _SCHEMA.format(p=STAGED))
        with self._db.write() as conn:
            owner = _meta(conn, "store_id")
            if owner is None:
                _set_meta(conn, "store_id", store.store_id)
            elif owner != store.store_id:
                raise ConfigError(f"{path} holds the master data of store {owner}, not {store.store_id}")

    def close(self) -> None:
        self._db.close()

    # --- applying deltas -----------------------------------------------------------------------

    @property
    def version(self) -> int:
        """The version of the last delta applied (0: none)."""
        with self._db.read() as conn:
            return _version(conn, LIVE)

    def apply(self, delta: Mapping[str, Any]) -> int:
        """Apply one delta answer of the hub in one transaction; returns how many changes it
        applied (0 when the cache had applied it already)."""
        since, version, changes = _read_delta(delta)
        with self._db.write() as conn:
            return _apply(conn, LIVE, since, version, changes)

    def reload(self, pages: Iterable[Mapping[str, Any]]) -> int:
        """Replace everything with a snapshot: `pages` are the delta answers from version 0 on,
        applied to a fresh set of tables as they come; once the last one is in, that set
        replaces the cache's in one transaction. When `pages` raises, the cache is as it was.
        Returns how many records the snapshot held."""
        with self._db.write() as conn:
            _clear(conn, STAGED)
        held = 0
        for page in pages:
            since, version, changes = _read_delta(page)
            with self._db.write() as conn:
                held += _apply(conn, STAGED, since, version, changes)
        with self._db.write() as conn:
            _clear(conn, LIVE)
            for table in ("records", "promotion_terms"):
                conn.execute(f"INSERT INTO {table} SELECT * FROM {STAGED}{table}")
            _set_meta(conn, "version", str(_version(conn, STAGED)))
            _clear(conn, STAGED)
        return held

    # --- lookups -------------------------------------------------------------------------------

    def price_list(self, sku: str) -> list[Price]:
        """Every price of `sku` the store has, in version order."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT record FROM records WHERE kind = ? AND sku = ? ORDER BY version",
                (MasterKind.PRICE.value, sku),
            ).fetchall()
        return [_price(text) for (text,) in rows]

    def price(self, sku: str, at: datetime) -> Price | None:
        """The price the store charges for `sku` at the aware instant `at`, or None."""
        return price_at(self.price_list(sku), self.store, at)

    def item(self, sku: str) -> Product | None:
        """The item (product) `sku`, or None."""
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT record FROM records WHERE kind = ? AND key = ?", (MasterKind.ITEM.value, sku)
            ).fetchone()
        return None if row is None else _product(row[0])

    def promotions(
        self,
        at: datetime,
        *,
        sku: str | None = None,
        department: str | None = None,
        member: bool | None = None,
    ) -> list[Promotion]:
        """The promotions running at the store at instant `at`, in version order; with `sku`
        and/or `department` only those naming it, as `flows.masterdata.active_promotions`."""
        local = _wall(local_time(self.store, at))
        terms = [t for t in (sku and f"sku:{sku}", department and f"department:{department}") if t]
        named = ""
        if terms:
            marks = ", ".join("?" * len(terms))
            named = f" AND key IN (SELECT key FROM promotion_terms WHERE term IN ({marks}))"
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT record FROM records WHERE kind = ? AND starts <= ? AND ends > ?"
                f"{named} ORDER BY version",
                (MasterKind.PROMOTION.value, local, local, *terms),
            ).fetchall()
        found = [_promotion(text) for (text,) in rows]
        return active_promotions(found, self.store, at, sku=sku, department=department, member=member)

    def records(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Every record by (kind, key): the whole cache, for inspection."""
        with self._db.read() as conn:
            rows = conn.execute("SELECT kind, key, record FROM records").fetchall()
        return {(kind, key): orjson.loads(text) for kind, key, text in rows}


# --- the tables ------------------------------------------------------------------------------


def _meta(conn: sqlite3.Connection, name: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


def _set_meta(conn: sqlite3.Connection, name: str, value: str) -> None:
    conn.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))


def _version(conn: sqlite3.Connection, tables: str) -> int:
    return int(_meta(conn, f"{tables}version") or 0)


def _clear(conn: sqlite3.Connection, tables: str) -> None:
    conn.execute(f"DELETE FROM {tables}records")
    conn.execute(f"DELETE FROM {tables}promotion_terms")
    conn.execute("DELETE FROM meta WHERE name = ?", (f"{tables}version",))


def _read_delta(delta: Mapping[str, Any]) -> tuple[int, int, list[Change]]:
    """(since, version, changes) of a delta answer, its changes as arrays under `fields` (as the
    hub serves them) or as objects."""
    try:
        since, version = int(delta["since"]), int(delta["version"])
        fields, entries = delta.get("fields"), delta["changes"]
        if fields:
            entries = [dict(zip(fields, change, strict=True)) for change in entries]
        changes = [(int(e["version"]), str(e["kind"]), str(e["key"]), e["record"]) for e in entries]
    except (KeyError, TypeError, ValueError) as exc:
        raise MasterDeltaError(f"not a master data delta: {type(exc).__name__}: {exc}") from exc
    return since, version, changes


def _apply(conn: sqlite3.Connection, p: str, since: int, version: int, changes: list[Change]) -> int:
    current = _version(conn, p)
    if since > current:
        raise MasterDeltaError(
            f"the delta starts at version {since} but the cache runs {current}: the changes in"
            f" between are missing; ask for the delta since {current}"
        )
    if version <= current:
        return 0  # applied already
    if since < current:
        raise MasterDeltaError(
            f"the delta covers versions {since} to {version} but the cache runs {current}: ask for"
            f" the delta since {current}"
        )
    try:
        rows, terms, gone = _rows(changes)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise MasterDeltaError(f"a record of the delta is malformed: {type(exc).__name__}: {exc}") from exc
    changed = [(key,) for _, kind, key, _ in changes if kind == MasterKind.PROMOTION]
    conn.executemany(f"DELETE FROM {p}records WHERE kind = ? AND key = ?", gone)
    conn.executemany(f"DELETE FROM {p}promotion_terms WHERE key = ?", changed)
    conn.executemany(f"INSERT OR REPLACE INTO {p}records VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    conn.executemany(f"INSERT OR IGNORE INTO {p}promotion_terms VALUES (?, ?)", terms)
    _set_meta(conn, f"{p}version", str(version))
    return len(changes)


def _rows(
    changes: list[Change],
) -> tuple[list[tuple[Any, ...]], list[tuple[str, str]], list[tuple[str, str]]]:
    """The rows the changes write, the promotion terms they index, the (kind, key)s they delete."""
    rows: list[tuple[Any, ...]] = []
    terms: list[tuple[str, str]] = []
    gone: list[tuple[str, str]] = []
    for change_version, kind, key, record in changes:
        if record is None:
            gone.append((kind, key))
            continue
        sku = starts = ends = None
        if kind == MasterKind.ITEM:
            sku = key
        elif kind == MasterKind.PRICE:
            sku = str(record["sku"])
        elif kind == MasterKind.PROMOTION:
            starts = _wall(datetime.fromisoformat(record["starts"]))
            ends = _wall(datetime.fromisoformat(record["ends"]))
            terms += [(f"sku:{s}", key) for s in record.get("skus", ())]
            terms += [(f"department:{d}", key) for d in record.get("departments", ())]
        rows.append((kind, key, change_version, sku, starts, ends, orjson.dumps(record).decode()))
    return rows, terms, gone


def _wall(moment: datetime) -> str:
    """A naive wall-clock time as text that sorts as the time does."""
    return moment.isoformat(timespec="microseconds")


@lru_cache(maxsize=8192)
def _price(text: str) -> Price:
    return Price.model_validate_json(text)


@lru_cache(maxsize=4096)
def _promotion(text: str) -> Promotion:
    return Promotion.model_validate_json(text)


@lru_cache(maxsize=8192)
def _product(text: str) -> Product:
    return Product.model_validate_json(text)


# --- the hub ---------------------------------------------------------------------------------


def hub_problem(answer: httpx.Response) -> str:
    """What the hub said in a refusal: the problem's detail (or title), else the status."""
    try:
        body = answer.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and (body.get("detail") or body.get("title")):
        return str(body.get("detail") or body.get("title"))
    return f"HTTP {answer.status_code}"


def request_hub(client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """`client.request(...)`; raises DownstreamUnavailableError when the hub cannot be reached
    or answers 429 or 5xx (other answers are returned as they are)."""
    try:
        answer = client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise DownstreamUnavailableError("hub", f"{method} {url}: {type(exc).__name__}: {exc}") from exc
    if answer.status_code == 429 or answer.status_code >= 500:
        retry_after: float | None = None
        with suppress(ValueError):
            retry_after = float(answer.headers.get("retry-after", ""))
        reason = f"{method} {url}: {hub_problem(answer)}"
        raise DownstreamUnavailableError("hub", reason, retry_after=retry_after, status=answer.status_code)
    return answer


class MasterSync:
    """Keeps a `MasterCache` current over the hub's API with the store's key."""

    def __init__(
        self, cache: MasterCache, client: httpx.Client, store_id: str, key: str, *, page: int = PAGE
    ) -> None:
        self.cache = cache
        self.client = client
        self.store_id = store_id
        self.headers = {"authorization": f"Bearer {key}"}
        self.page = page

    def sync(self) -> SyncResult:
        """Apply what changed since the cache's version (the whole snapshot when the hub is
        behind the cache), then acknowledge the version reached. Raises DownstreamUnavailableError
        when the hub cannot be reached, DownstreamRejectedError when it refuses; the pages
        applied before stay applied."""
        applied, reloaded = 0, False
        while True:
            answer = self._delta(self.cache.version)
            if answer is None:
                applied, reloaded = self.cache.reload(self._snapshot()), True
                break
            applied += self.cache.apply(answer)
            if answer.get("complete", True):
                break
        version = self.cache.version
        url = f"/v1/stores/{self.store_id}/masterdata/ack"
        acked = request_hub(self.client, "POST", url, json={"version": version}, headers=self.headers)
        if acked.status_code != 200:
            raise DownstreamRejectedError("hub", hub_problem(acked), status=acked.status_code)
        return SyncResult(applied, version, reloaded)

    def _delta(self, since: int) -> dict[str, Any] | None:
        """One page of the delta since `since`; None when the hub is behind `since`."""
        answer = request_hub(
            self.client,
            "GET",
            f"/v1/stores/{self.store_id}/masterdata",
            params={"since": since, "limit": self.page},
            headers=self.headers,
        )
        if answer.status_code == 409 and since > 0 and _problem_type(answer).endswith("/version-ahead"):
            return None
        if answer.status_code != 200:
            raise DownstreamRejectedError("hub", hub_problem(answer), status=answer.status_code)
        try:
            body: dict[str, Any] = orjson.loads(answer.content)
        except orjson.JSONDecodeError as exc:
            raise DownstreamRejectedError("hub", f"the delta is not JSON: {exc}", status=200) from exc
        return body

    def _snapshot(self) -> Iterator[dict[str, Any]]:
        since = 0
        while True:
            page = self._delta(since)
            if page is None:
                raise DownstreamRejectedError("hub", "the hub moved back again during a reload", status=409)
            yield page
            if page.get("complete", True):
                return
            since = int(page["version"])


def _problem_type(answer: httpx.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return ""
    return str(body.get("type", "")) if isinstance(body, dict) else ""
