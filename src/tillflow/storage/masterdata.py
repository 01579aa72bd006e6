"""Master data in the state store (SQLite or PostgreSQL): versioned changes, store deltas, acks.

Writing: each accepted change of an item, price or promotion gets the next global version, in
the same commit as the current state it sets (items in `products`, `prices`, `promotions`).
Writers are serialised (`lock_for_append`), so versions commit in order: a reader that saw
version V has seen every version below it. A record equal to the current one (canonical JSON)
gets no version.

Each change is indexed by its targets with two sides: where the record before it applied (1)
and where the record after it applies (2). A store's targets are ``*``, ``store:ID``,
``region:ID`` and ``brand:ID`` — the scopes of `flows.masterdata.applies_to`, in SQL. Each change
also links to the key's change before it (`previous`) and after it (`superseded_by`).

A store's delta since V up to W, per key changed in (V, W]:
- the key's change current at W (not superseded by W) applies to the store: its record;
- else, when the store had the record at V (the key's first change after V has a "before" side
  for the store): a withdrawal (record None), under the version of the key's change current at W;
- else nothing: keys that came and went inside (V, W], or never concerned the store.
Both are index ranges over the store's targets in (V, W]: a snapshot reads no history it does
not return, and a delta reads nothing up to V.

A store's status counts the changes that name one of its targets after the version it
acknowledged. Each target's range is counted once for all the stores, cut at the versions they
acknowledged; a change that names several of a store's targets (only a promotion's can) counts
once for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Engine, Table, delete, func, select

from tillflow.model import Product, Store
from tillflow.model.masterdata import MasterKind, Price, Promotion, key_of
from tillflow.ports import MasterDelta, MasterEntry, MasterOutcome, MasterSyncState
from tillflow.storage.db import lock_for_append, read_tx, write_tx
from tillflow.storage.sql import from_us, insert_for, insert_rows, to_us
from tillflow.storage.tables import master_acks, master_changes, master_targets, prices, products, promotions

CHUNK = 5000  # keys per IN (...) list
BEFORE, AFTER = 1, 2
ALL = "*"
_LOCK = "master_changes"
Change = tuple[str, str | None, set[str], set[str]]  # key, record, targets before, targets after


def record_targets(record: Product | Price | Promotion) -> set[str]:
    """The targets through which `record` applies to a store (see `store_targets`)."""
    if isinstance(record, Price):
        if record.store_id is not None:
            return {f"store:{record.store_id}"}
        return {f"region:{record.region}"} if record.region is not None else {ALL}
    if isinstance(record, Promotion):
        found = {f"store:{s}" for s in record.stores}
        found.update(f"region:{r}" for r in record.regions)
        found.update(f"brand:{b}" for b in record.brands)
        return found or {ALL}
    return {ALL}


def store_targets(store: Store) -> tuple[str, ...]:
    """The targets of a store: a record applies to it when one of its targets is among these."""
    return (ALL, f"store:{store.store_id}", f"region:{store.region}", f"brand:{store.brand}")


class _Kind:
    """Where one kind of master data keeps its current state."""

    def __init__(
        self,
        kind: MasterKind,
        table: Table,
        columns: tuple[str, str],
        parse: Callable[[str], Product | Price | Promotion],
        extra: Callable[[Any], dict[str, Any]] = lambda _: {},
    ) -> None:
        self.kind, self.table, self.parse, self.extra = kind, table, parse, extra
        self.key_col, self.text_col = table.c[columns[0]], table.c[columns[1]]
        self.versioned = "version" in table.c


def _price_columns(p: Price) -> dict[str, Any]:
    return {"sku": p.sku, "region": p.region, "store_id": p.store_id}


ITEMS = _Kind(MasterKind.ITEM, products, ("sku", "product"), Product.model_validate_json)
PRICES = _Kind(MasterKind.PRICE, prices, ("price_key", "price"), Price.model_validate_json, _price_columns)
PROMOTIONS = _Kind(
    MasterKind.PROMOTION, promotions, ("promotion_id", "promotion"), Promotion.model_validate_json
)
KINDS = {k.kind: k for k in (ITEMS, PRICES, PROMOTIONS)}


class SQLMasterData:
    """The MasterData port on a SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- writing -------------------------------------------------------------------------------

    def record_items(self, items: Sequence[Product], *, at: datetime) -> list[MasterOutcome]:
        return self._record(ITEMS, items, at)

    def record_prices(self, records: Sequence[Price], *, at: datetime) -> list[MasterOutcome]:
        return self._record(PRICES, records, at)

    def record_promotions(self, records: Sequence[Promotion], *, at: datetime) -> list[MasterOutcome]:
        return self._record(PROMOTIONS, records, at)

    def withdraw_records(self, kind: MasterKind, keys: Sequence[str], *, at: datetime) -> list[MasterOutcome]:
        if kind is MasterKind.ITEM:
            raise ValueError("items are not withdrawn: they stay in the product master")
        spec = KINDS[kind]
        if not keys:
            return []
        with write_tx(self.engine) as conn:
            lock_for_append(conn, _LOCK)
            known = _current(conn, spec, sorted(set(keys)))
            gone = [k for k in dict.fromkeys(keys) if k in known]
            _append(conn, kind, [(k, None, record_targets(spec.parse(known[k])), set()) for k in gone], at)
            for start in range(0, len(gone), CHUNK):
                conn.execute(delete(spec.table).where(spec.key_col.in_(gone[start : start + CHUNK])))
        seen: set[str] = set()
        out = []
        for key in keys:
            out.append(MasterOutcome.WITHDRAWN if key in known and key not in seen else MasterOutcome.ABSENT)
            seen.add(key)
        return out

    def _record(
        self, spec: _Kind, records: Sequence[Product | Price | Promotion], at: datetime
    ) -> list[MasterOutcome]:
        if not records:
            return []
        last = {key_of(r): r for r in records}  # the last of a repeated key wins
        data = {key: r.model_dump_json(exclude_defaults=True) for key, r in last.items()}
        with write_tx(self.engine) as conn:
            lock_for_append(conn, _LOCK)
            known = _current(conn, spec, sorted(data))
            changes: list[Change] = []
            for key, text in data.items():
                before = known.get(key)
                if before == text:
                    continue
                new = record_targets(last[key])
                if before is None:
                    old: set[str] = set()
                elif spec is PROMOTIONS:
                    old = record_targets(spec.parse(before))
                else:  # a price's key holds its scope, an item applies everywhere: neither moves
                    old = new
                changes.append((key, text, old, new))
            versions = _append(conn, spec.kind, changes, at)
            rows = []
            for (key, written, _, _), version in zip(changes, versions, strict=True):
                row: dict[str, Any] = {spec.key_col.name: key, spec.text_col.name: written}
                row["updated_us"] = to_us(at)
                row.update(spec.extra(last[key]))
                if spec.versioned:
                    row["version"] = version
                rows.append(row)
            if rows:
                upsert = insert_for(conn, spec.table)
                fresh = {c: upsert.excluded[c] for c in rows[0] if c != spec.key_col.name}
                insert_rows(
                    conn, upsert.on_conflict_do_update(index_elements=[spec.key_col], set_=fresh), rows
                )
        answers: dict[str, MasterOutcome] = {}
        for key, text in data.items():
            if key not in known:
                answers[key] = MasterOutcome.CREATED
            else:
                answers[key] = MasterOutcome.UNCHANGED if known[key] == text else MasterOutcome.UPDATED
        return [answers[key_of(r)] for r in records]  # a repeat: the answer of its key

    # --- reading -------------------------------------------------------------------------------

    def read_head(self) -> int:
        with read_tx(self.engine) as conn:
            return _head(conn)

    def read_delta(self, store: Store, *, since: int, limit: int | None = None) -> MasterDelta:
        if limit is not None and limit < 1:
            raise ValueError("limit: at least 1")
        targets = store_targets(store)
        t = master_targets.c
        with read_tx(self.engine) as conn:
            upto, complete = _head(conn), True
            if limit is not None:  # the window ends at the limit-th version that concerns the store
                cut = conn.execute(
                    select(t.version)
                    .distinct()
                    .where(t.target.in_(targets), t.version > since)
                    .order_by(t.version)
                    .offset(limit - 1)
                    .limit(2)
                ).all()
                if len(cut) == 2:
                    upto, complete = cut[0].version, False
            mark = _mark(conn)
            mine = f"t.target IN ({', '.join([mark] * len(targets))})"
            window = (*targets, since, upto)
            # each key's change current at `upto` where it applies to the store
            rows: list[MasterEntry] = _fetch(
                conn,
                "SELECT c.version, c.kind, c.record_key, c.record"
                " FROM master_targets t JOIN master_changes c ON c.version = t.version"
                f" WHERE {mine} AND t.version > {mark} AND t.version <= {mark} AND t.sides >= {AFTER}"
                f" AND (c.superseded_by IS NULL OR c.superseded_by > {mark})",
                (*window, upto),
            )
            rows.sort(key=itemgetter(0))  # a few sorted runs, one per target: a merge
            if len({r[0] for r in rows}) != len(rows):  # a promotion for the store and its region
                rows = list({r[0]: r for r in rows}.values())
            if since > 0:
                gone = _withdrawals(conn, mine, window, {(r[1], r[2]) for r in rows})
                if gone:
                    rows = sorted([*rows, *gone], key=itemgetter(0))
        return MasterDelta(store.store_id, since, upto, complete, rows)

    def find_price_lists(self, skus: Sequence[str]) -> dict[str, list[Price]]:
        found: dict[str, list[Price]] = {}
        with read_tx(self.engine) as conn:
            for start in range(0, len(skus), CHUNK):
                rows = conn.execute(
                    select(prices.c.price)
                    .where(prices.c.sku.in_(skus[start : start + CHUNK]))
                    .order_by(prices.c.version)
                )
                for r in rows:
                    price = Price.model_validate_json(r.price)
                    found.setdefault(price.sku, []).append(price)
        return found

    def list_promotions(self) -> list[Promotion]:
        with read_tx(self.engine) as conn:
            rows = conn.execute(select(promotions.c.promotion).order_by(promotions.c.version))
            return [Promotion.model_validate_json(r.promotion) for r in rows]

    # --- acknowledgements ----------------------------------------------------------------------

    def record_ack(self, store_id: str, version: int, *, at: datetime) -> int | None:
        with write_tx(self.engine) as conn:
            if version > _head(conn):
                return None
            upsert = insert_for(conn, master_acks).values(
                store_id=store_id, version=version, acked_us=to_us(at)
            )
            greatest = func.max if conn.dialect.name == "sqlite" else func.greatest
            conn.execute(
                upsert.on_conflict_do_update(
                    index_elements=[master_acks.c.store_id],
                    set_={
                        "version": greatest(master_acks.c.version, upsert.excluded.version),
                        "acked_us": upsert.excluded.acked_us,
                    },
                )
            )
            acked = conn.execute(select(master_acks.c.version).where(master_acks.c.store_id == store_id))
            return int(acked.scalar_one())

    def read_sync(self, stores: Sequence[Store]) -> list[MasterSyncState]:
        with read_tx(self.engine) as conn:
            acks = {r.store_id: r for r in conn.execute(select(master_acks))}
            acked = {s.store_id: int(acks[s.store_id].version) if s.store_id in acks else 0 for s in stores}
            since: dict[str, set[int]] = {}  # per target: the versions its stores acknowledged
            for store in stores:
                for target in store_targets(store):
                    since.setdefault(target, set()).add(acked[store.store_id])
            counts, latest = _count_after(conn, since)
            several = _several_targets(conn, min(acked.values(), default=0))
        out = []
        for store in stores:
            ack, version, mine = acks.get(store.store_id), acked[store.store_id], store_targets(store)
            # a change counts once even when several of the store's targets name it
            named = [v for target in mine for v in several.get(target, ()) if v > version]
            out.append(
                MasterSyncState(
                    store_id=store.store_id,
                    acked_version=version,
                    acked_at=None if ack is None else from_us(ack.acked_us),
                    latest_version=max(latest[target] for target in mine),
                    behind=sum(counts[(target, version)] for target in mine) - len(named) + len(set(named)),
                )
            )
        return out


def _head(conn: Connection) -> int:
    return int(conn.execute(select(func.max(master_changes.c.version))).scalar_one() or 0)


def _mark(conn: Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def _fetch(conn: Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    """The rows of trusted SQL as the driver's plain tuples (no per-row wrapping)."""
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _count_after(
    conn: Connection, since: dict[str, set[int]]
) -> tuple[dict[tuple[str, int], int], dict[str, int]]:
    """Per target and each of its versions in `since`: how many changes name the target after
    that version; and per target, its latest version (0: none).

    Each target's range is read once, cut at those versions: one count per piece between two of
    them (or the head), summed from the end."""
    head, mark = _head(conn), _mark(conn)
    pieces: list[tuple[str, int, int]] = []  # (target, low, high): its changes in (low, high]
    for target, versions in since.items():
        edges = sorted(versions)
        ends = [*edges[1:], max(head, edges[-1])]
        pieces.extend((target, low, high) for low, high in zip(edges, ends, strict=True))
    found: dict[tuple[str, int], int] = {}
    latest: dict[str, int] = {}
    step = CHUNK // 3
    for start in range(0, len(pieces), step):
        chunk = pieces[start : start + step]
        rows = _fetch(
            conn,
            f"WITH p(target, low, high) AS (VALUES {', '.join([f'({mark}, {mark}, {mark})'] * len(chunk))})"
            " SELECT p.target, p.low,"
            " (SELECT COUNT(*) FROM master_targets t"
            "  WHERE t.target = p.target AND t.version > p.low AND t.version <= p.high),"
            " (SELECT MAX(t.version) FROM master_targets t WHERE t.target = p.target)"
            " FROM p",
            tuple(value for piece in chunk for value in piece),
        )
        for target, low, count, last in rows:
            found[(target, int(low))] = int(count)
            latest[target] = int(last or 0)
    counts: dict[tuple[str, int], int] = {}
    for target, versions in since.items():
        total = 0
        for after in sorted(versions, reverse=True):
            total += found[(target, after)]
            counts[(target, after)] = total
    return counts, latest


def _several_targets(conn: Connection, after: int) -> dict[str, list[int]]:
    """Per target: the changes after `after` that name it among others.

    Only a promotion's change has several targets (a price's key holds its scope, an item
    applies everywhere): those of its record and of the record before it, as `_record` and
    `withdraw_records` write them."""
    c, before = master_changes.c, master_changes.alias("before")
    rows = conn.execute(
        select(c.version, c.record, before.c.record)
        .select_from(master_changes.outerjoin(before, before.c.version == c.previous))
        .where(c.kind == MasterKind.PROMOTION.value, c.version > after)
    )
    parsed: dict[str, set[str]] = {}

    def targets(record: str | None) -> set[str]:
        if record is None:
            return set()
        if record not in parsed:
            parsed[record] = record_targets(PROMOTIONS.parse(record))
        return parsed[record]

    out: dict[str, list[int]] = {}
    for version, record, previous in rows:
        named = targets(record) | targets(previous)
        if len(named) > 1:
            for target in named:
                out.setdefault(target, []).append(int(version))
    return out


def _current(conn: Connection, spec: _Kind, keys: Sequence[str]) -> dict[str, str]:
    known: dict[str, str] = {}
    for start in range(0, len(keys), CHUNK):
        rows = conn.execute(
            select(spec.key_col, spec.text_col).where(spec.key_col.in_(keys[start : start + CHUNK]))
        )
        known.update((r[0], r[1]) for r in rows)
    return known


def _latest_versions(
    conn: Connection, kind: str, keys: Sequence[str], upto: int | None = None
) -> dict[str, int]:
    """The version of each key's latest change (up to `upto`), for the keys that have one."""
    c = master_changes.c
    found: dict[str, int] = {}
    for start in range(0, len(keys), CHUNK):
        query = select(c.record_key, func.max(c.version)).where(
            c.kind == kind, c.record_key.in_(keys[start : start + CHUNK])
        )
        if upto is not None:
            query = query.where(c.version <= upto)
        found.update((r[0], int(r[1])) for r in conn.execute(query.group_by(c.record_key)))
    return found


def _withdrawals(
    conn: Connection, mine: str, window: tuple[Any, ...], applying: set[tuple[str, str]]
) -> list[MasterEntry]:
    """Keys the store had at `since` (their first change after it has a "before" side for the
    store) and has no more at `upto`, each under its change current at `upto`."""
    mark = _mark(conn)
    since, upto = window[-2], window[-1]
    had = _fetch(
        conn,
        "SELECT DISTINCT c.kind, c.record_key FROM master_targets t"
        " JOIN master_changes c ON c.version = t.version"
        f" WHERE {mine} AND t.version > {mark} AND t.version <= {mark}"
        f" AND t.sides IN ({BEFORE}, {BEFORE | AFTER}) AND COALESCE(c.previous, 0) <= {mark}",
        (*window, since),
    )
    gone = {(kind, key) for kind, key in had} - applying
    out: list[MasterEntry] = []
    for kind in sorted({kind for kind, _ in gone}):
        keys = sorted(key for k, key in gone if k == kind)
        out.extend((v, kind, key, None) for key, v in _latest_versions(conn, kind, keys, upto).items())
    return out


def _append(conn: Connection, kind: MasterKind, changes: Sequence[Change], at: datetime) -> list[int]:
    """Log changes under the next versions, each linked to its key's change before; returns
    their versions. Under the append lock."""
    if not changes:
        return []
    previous = _latest_versions(conn, kind.value, [key for key, *_ in changes])
    head = _head(conn)
    rows: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    links: list[tuple[int, int]] = []
    for version, (key, text, before, after) in enumerate(changes, head + 1):
        prior = previous.get(key)
        rows.append(
            {
                "version": version,
                "kind": kind.value,
                "record_key": key,
                "record": text,
                "changed_us": to_us(at),
                "previous": prior,
                "superseded_by": None,
            }
        )
        if prior is not None:
            links.append((version, prior))
        targets.extend(
            {"target": t, "version": version, "sides": (t in before) * BEFORE | (t in after) * AFTER}
            for t in sorted(before | after)
        )
    insert_rows(conn, master_changes.insert(), rows)
    insert_rows(conn, master_targets.insert(), targets)
    if links:
        mark = _mark(conn)
        conn.exec_driver_sql(
            f"UPDATE master_changes SET superseded_by = {mark} WHERE version = {mark}", links
        )
    return list(range(head + 1, head + 1 + len(rows)))
