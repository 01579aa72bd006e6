"""The store agent: for each store it serves, an outbox and a forwarder, and the lookups the
tills need while the link is down; and the local API.

`tillflow edge --store S [--store S2 ...] --hub URL` runs it. One agent may serve several
stores (a franchise back office), each with its own outbox file (`outbox-<store>.db` in the
data directory) and its own key: `TILLFLOW_API_KEY_<STORE>` (the store id upper-cased, `-` and
`.` as `_`), or `TILLFLOW_API_KEY` for an agent of one store. SIGTERM stops it cleanly: the local
API finishes its requests, each forwarder the request it has in flight.

The lookups (`edge.lookups`): each store's master data in its own file (`master-<store>.db`),
kept from the hub's deltas by one thread of the agent every `master_sync_seconds` (and once at
start); members' balances (`members.db`, kept `member_ttl_seconds`); the offline redemption
policy's grants (`grants.db`), settled with the hub by that thread whenever the hub answers it,
and by a forwarder before it sends a sale that spends one. A store's time zone, region and
currency (which prices and promotions apply when) come from the config file's `stores`; a store
not there gets the defaults of `Store`. A sync the hub did not answer keeps the cache as it was,
and its error is shown in the status and reported in the heartbeat.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import ValidationError

import tillflow
from tillflow.connectors.http import segment
from tillflow.edge.cache import MasterCache, MasterSync
from tillflow.edge.dropfolder import DropFolder, OutboxSink
from tillflow.edge.forwarder import JSON, Forwarder
from tillflow.edge.members import MemberCache, OfflineRedemptions
from tillflow.edge.outbox import SQLiteOutbox
from tillflow.errors import ConfigError, DownstreamUnavailableError
from tillflow.flows.z_report import z_reports
from tillflow.formats.records import ImportContext
from tillflow.formats.settings import PoslogSettings
from tillflow.model import DayClose, Store, Transaction
from tillflow.observe import tracing
from tillflow.ports import IncomingTransaction, StoredTransaction, Verdict

log = logging.getLogger(__name__)

LOCAL_KEY = "TILLFLOW_EDGE_LOCAL_KEY"
PAGE_SIZE = 4096  # SQLite's default page size
HELD_SHOWN = 20  # held transactions the status names, per store


@dataclass(frozen=True)
class AgentSettings:
    """How the agent forwards: batch size and linger, retention of delivered transactions,
    heartbeat period; the local API's limits (the hub's by default); and its lookups: how long a
    member's balance is kept, the offline redemption policy, how often master data is synced and
    how long a till's lookup waits on the hub before it is answered locally."""

    hub_url: str
    data_dir: Path
    batch: int = 500
    linger: float = 0.2  # seconds a batch waits to fill
    retention: timedelta = timedelta(days=7)
    heartbeat_seconds: float = 5.0
    max_backoff: float = 30.0  # seconds, the longest pause while the hub is unreachable
    max_outbox_bytes: int | None = None  # each outbox file at most (a full one answers 507)
    max_batch_records: int = 1000
    max_body_bytes: int = 8 * 1024 * 1024
    member_ttl_seconds: float = 300.0
    offline_redemptions: Literal["deny", "cap"] = "deny"
    offline_cap_points: int = 500  # with `cap`: points a member may be granted a day offline
    master_sync_seconds: float = 30.0
    lookup_timeout: float = 3.0  # seconds
    drop_folder: Path | None = None  # watched for POSLog / CSV / JSON files (default: data_dir/drop)


def _pages(max_bytes: int | None) -> int | None:
    """A size limit in SQLite's pages (4 KiB each)."""
    return None if max_bytes is None else max(1, max_bytes // PAGE_SIZE)


def check_store_ids(store_ids: Sequence[str]) -> None:
    """ConfigError unless there is a store and each id is a plain identifier (it names a file)."""
    if not store_ids:
        raise ConfigError("the agent serves at least one store (--store)")
    for store in store_ids:
        try:
            Store(store_id=store)
        except ValidationError as exc:
            raise ConfigError(f"--store {store!r}: {exc.errors()[0]['msg']}") from exc


def key_variable(store_id: str) -> str:
    """The environment variable holding a store's API key."""
    return "TILLFLOW_API_KEY_" + store_id.upper().replace("-", "_").replace(".", "_")


def api_keys(store_ids: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """Each store's key from the environment (its own variable wins over `TILLFLOW_API_KEY`,
    which serves only an agent of one store). ConfigError names what is missing."""
    check_store_ids(store_ids)
    keys: dict[str, str] = {}
    shared = environ.get("TILLFLOW_API_KEY") if len(store_ids) == 1 else None
    missing = []
    for store in store_ids:
        key = environ.get(key_variable(store)) or shared
        if key:
            keys[store] = key
        else:
            missing.append(key_variable(store))
    if missing:
        either = " (or TILLFLOW_API_KEY)" if len(store_ids) == 1 else ""
        raise ConfigError(f"no API key for the hub: set {', '.join(missing)}{either}")
    return keys


class StoreOutboxes:
    """The outboxes of the stores an agent serves, as one `TransactionStore`: each record goes
    to its store's outbox (one commit per store)."""

    def __init__(self, outboxes: Mapping[str, SQLiteOutbox]) -> None:
        self._outboxes = dict(outboxes)
        self.store_ids = frozenset(self._outboxes)

    def __iter__(self) -> Iterator[SQLiteOutbox]:
        return iter(self._outboxes.values())

    def get(self, store_id: str) -> SQLiteOutbox | None:
        return self._outboxes.get(store_id)

    def record_batch(self, batch: Sequence[IncomingTransaction], *, received_at: datetime) -> list[Verdict]:
        """Record each store's part in its outbox; the verdicts in the batch's order."""
        parts: dict[str, list[int]] = {}
        for i, record in enumerate(batch):
            parts.setdefault(record.transaction.store_id, []).append(i)
        verdicts: list[Verdict | None] = [None] * len(batch)
        for store, positions in parts.items():
            outbox = self._outboxes.get(store)
            if outbox is None:
                raise ValueError(f"store {store!r} is not served by this agent")
            judged = outbox.record_batch([batch[i] for i in positions], received_at=received_at)
            for i, verdict in zip(positions, judged, strict=True):
                verdicts[i] = verdict
        return [v for v in verdicts if v is not None]

    def get_transaction(self, transaction_id: str) -> StoredTransaction | None:
        for outbox in self._outboxes.values():
            found = outbox.get_transaction(transaction_id)
            if found is not None:
                return found
        return None

    def read_store_day(self, store_id: str, business_day: date) -> list[StoredTransaction]:
        outbox = self._outboxes.get(store_id)
        return [] if outbox is None else outbox.read_store_day(store_id, business_day)

    def list_sequences(self, store_id: str, business_day: date) -> dict[str, set[int]]:
        outbox = self._outboxes.get(store_id)
        return {} if outbox is None else outbox.list_sequences(store_id, business_day)

    def list_store_days(self, business_day: date) -> list[str]:
        return sorted(s for o in self._outboxes.values() for s in o.list_store_days(business_day))


@dataclass
class LookupSync:
    """How a store's lookups stand with the hub: the last sync and the last error (of the sync,
    or of settling the offline grants)."""

    synced_at: datetime | None = None  # the last sync the hub answered
    last_error: str | None = None
    last_error_at: datetime | None = None
    settle_error: str | None = None  # why the offline grants could not all be settled

    def error(self) -> str | None:
        """What the heartbeat reports of the lookups, when something failed."""
        parts = [
            None if self.last_error is None else f"master data sync: {self.last_error}",
            None if self.settle_error is None else f"offline grants: {self.settle_error}",
        ]
        return "; ".join(p for p in parts if p) or None


class EdgeAgent:
    """The outboxes and forwarders of the stores served, their lookups, and what the local API
    needs."""

    def __init__(
        self,
        store_ids: Sequence[str],
        keys: Mapping[str, str],
        settings: AgentSettings,
        *,
        import_context: ImportContext | None = None,
        poslog_settings: PoslogSettings | None = None,
        import_settings: Mapping[str, Any] | None = None,
        local_key: str | None = None,
    ) -> None:
        check_store_ids(store_ids)
        self.settings = settings
        self.import_context = import_context or ImportContext()
        self.poslog_settings = poslog_settings or PoslogSettings()
        self.local_key = local_key or None
        self.stores = {s: self.import_context.stores.get(s) or Store(store_id=s) for s in store_ids}
        closers: list[Callable[[], None]] = []
        try:
            opened: dict[str, SQLiteOutbox] = {}
            for store in store_ids:
                opened[store] = SQLiteOutbox(
                    settings.data_dir / f"outbox-{store}.db",
                    store,
                    max_pages=_pages(settings.max_outbox_bytes),
                )
                closers.append(opened[store].close)
            self.master_caches: dict[str, MasterCache] = {}
            for store in store_ids:
                self.master_caches[store] = MasterCache(
                    settings.data_dir / f"master-{store}.db", self.stores[store]
                )
                closers.append(self.master_caches[store].close)
            self.member_cache = MemberCache(
                settings.data_dir / "members.db", ttl_seconds=settings.member_ttl_seconds
            )
            closers.append(self.member_cache.close)
            self.offline_redemptions = OfflineRedemptions(
                settings.data_dir / "grants.db", settings.offline_redemptions, settings.offline_cap_points
            )
            closers.append(self.offline_redemptions.close)
        except Exception:
            for close in reversed(closers):
                close()
            raise
        self.outboxes = StoreOutboxes(opened)
        self.hub_clients = {  # the tills' lookups: short timeouts, then the offline answers
            store: _hub_client(settings.hub_url, keys[store], settings.lookup_timeout) for store in store_ids
        }
        self._sync_clients = {store: _hub_client(settings.hub_url, keys[store], 30.0) for store in store_ids}
        self.master_syncs = {
            store: MasterSync(self.master_caches[store], self._sync_clients[store], store, keys[store])
            for store in store_ids
        }
        self.lookups = {store: LookupSync() for store in store_ids}
        self.forwarders = {
            store: Forwarder(
                outbox,
                settings.hub_url,
                keys[store],
                batch=settings.batch,
                linger=settings.linger,
                retention=settings.retention,
                heartbeat_seconds=settings.heartbeat_seconds,
                backoff_cap=settings.max_backoff,
                grants=self.offline_redemptions,
                other_error=self.lookups[store].error,
            )
            for store, outbox in opened.items()
        }
        self.drop_folder = DropFolder(
            settings.drop_folder or settings.data_dir / "drop",
            OutboxSink(self.outboxes, self.outboxes.store_ids),
            self.import_context,
            {"poslog": self.poslog_settings, **(import_settings or {})},
        )
        self._closers = closers
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sync_thread: threading.Thread | None = None
        self._drop_thread: threading.Thread | None = None

    def start(self) -> None:
        """Start a forwarder thread per store, and the thread that keeps the lookups current."""
        self._threads = [f.start(self._stop) for f in self.forwarders.values()]
        self._sync_thread = threading.Thread(target=self._sync_loop, name="edge-lookups", daemon=True)
        self._sync_thread.start()
        drop = threading.Thread(
            target=self.drop_folder.run, args=(self._stop,), name="edge-drop", daemon=True
        )
        drop.start()
        self._drop_thread = drop

    def stop(self) -> None:
        """Stop the forwarders (each finishes the request in flight) and the lookups' thread,
        then close the files."""
        self._stop.set()
        for outbox in self.outboxes:
            outbox.wake.set()
        for thread, forwarder in zip(self._threads, self.forwarders.values(), strict=True):
            thread.join(timeout=forwarder.timeout + 10)
        if self._sync_thread is not None:
            self._sync_thread.join(timeout=40)
        if self._drop_thread is not None:
            self._drop_thread.join(timeout=60)
        for forwarder in self.forwarders.values():
            forwarder.close()
        tracing.flush_tracing()  # the forwarders' last spans, before the process ends
        for client in (*self.hub_clients.values(), *self._sync_clients.values()):
            client.close()
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):  # close the others even when one fails
                close()

    # -- the lookups ---------------------------------------------------------------------------

    def _sync_loop(self) -> None:
        while not self._stop.is_set():
            self.sync_lookups()
            self._stop.wait(self.settings.master_sync_seconds)

    def sync_lookups(self) -> None:
        """For each store: apply the hub's master data delta and acknowledge it, then, when the
        hub answered, settle the store's offline grants. Failures are kept, not raised."""
        for store, state in self.lookups.items():
            if self._stop.is_set():
                return
            reachable = True
            try:
                result = self.master_syncs[store].sync()
            except Exception as exc:  # kept for the status and the heartbeat; tried again later
                reachable = not isinstance(exc, DownstreamUnavailableError)
                error = f"{type(exc).__name__}: {exc}"
                if error != state.last_error:
                    log.warning("store %s: master data sync failed: %s", store, error)
                state.last_error, state.last_error_at = error, datetime.now(UTC)
            else:
                state.synced_at, state.last_error = datetime.now(UTC), None
                if result.applied:
                    log.info(
                        "store %s: master data at version %d (%d changes)",
                        store,
                        result.version,
                        result.applied,
                    )
            if reachable:
                self._settle(store, state)

    def _settle(self, store: str, state: LookupSync) -> None:
        try:
            if not self.offline_redemptions.list_grants(["pending"], store_id=store):
                state.settle_error = None
                return
            settlement = self.offline_redemptions.settle(self._sync_clients[store], store_id=store)
        except Exception as exc:  # the hub refused the key, or the file failed: tried again later
            state.settle_error = f"{type(exc).__name__}: {exc}"
            log.warning("store %s: settling offline grants failed: %s", store, state.settle_error)
            return
        state.settle_error = settlement.error
        for grant in settlement.refused:
            log.error("store %s: the hub refused offline grant %s: %s", store, grant.grant_id, grant.reason)

    # -- the local API's answers ---------------------------------------------------------------

    def release(self, transaction_id: str) -> tuple[str, str | None]:
        """Let a held transaction go to the hub as the till sent it: the store and its state
        before (None when no outbox holds it)."""
        for outbox in self.outboxes:
            before = outbox.release(transaction_id)
            if before is not None:
                return outbox.store_id, before
        return "", None

    def status(self) -> dict[str, Any]:
        """Per store: the outbox (depth, oldest unsent age, what is kept and held), the link to
        the hub, what the hub asked for again, and the lookups (master data, offline grants)."""
        stores = {}
        for store, forwarder in self.forwarders.items():
            stats = forwarder.outbox.stats()
            error_at = forwarder.last_error_at
            lookups = self.lookups[store]
            grants: dict[str, Any] = {**self.offline_redemptions.count_grants(store)}
            stores[store] = {
                "buffer_depth": stats.depth,
                "oldest_unsent_age_seconds": stats.oldest_unsent_age_seconds,
                "delivered_kept": stats.delivered,
                "delivered_total": forwarder.delivered_total,
                "conflicts": stats.conflicts,
                "refused": stats.refused,
                "local_conflicts": stats.local_conflicts,
                "held": stats.held,
                "held_transactions": [
                    {
                        "transaction_id": h.transaction_id,
                        "business_day": h.business_day.isoformat(),
                        "reason": h.reason,
                    }
                    for h in forwarder.outbox.held(HELD_SHOWN)
                ],
                "day_closes_pending": stats.day_closes_pending,
                "resent_total": forwarder.resent_total,
                "missing": forwarder.missing,
                "last_error": forwarder.last_error,
                "last_error_at": _iso(error_at),
                "clock_skew_seconds": forwarder.clock_skew_seconds,
                "master_data": {
                    "version": self.master_caches[store].version,
                    "synced_at": _iso(lookups.synced_at),
                    "last_error": lookups.last_error,
                    "last_error_at": _iso(lookups.last_error_at),
                },
                "offline_grants": grants | {"last_error": lookups.settle_error},
            }
        return {
            "hub": self.settings.hub_url,
            "offline_redemptions": {
                "policy": self.settings.offline_redemptions,
                "cap_points": self.settings.offline_cap_points,
            },
            "stores": stores,
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _hub_client(hub_url: str, key: str, timeout: float) -> httpx.Client:
    """A client to the hub with a store's key."""
    return httpx.Client(
        base_url=hub_url.rstrip("/"),
        timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)),
        headers={
            "authorization": f"Bearer {key}",
            "user-agent": f"tillflow-edge/{tillflow.__version__}",
        },
    )


def close_day(
    url: str,
    store_id: str,
    business_day: date,
    *,
    local_key: str | None = None,
    closed_at: datetime | None = None,
    transport: httpx.BaseTransport | None = None,
) -> tuple[DayClose, dict[str, Any]]:
    """Build a store-day's Z report from the transactions the agent at `url` holds, and queue
    it there (`POST /v1/edge/day-close`); the report and the agent's answer. Raises ValueError
    when the agent holds none of that day, httpx errors when it cannot be reached or refuses."""
    headers = {"authorization": f"Bearer {local_key}"} if local_key else {}
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=60, transport=transport) as client:
        day = f"/v1/edge/stores/{segment(store_id)}/days/{business_day.isoformat()}"
        answer = client.get(f"{day}/transactions")
        answer.raise_for_status()
        txs = [Transaction.model_validate(r) for r in answer.json()["transactions"]]
        if not txs:
            raise ValueError(f"the agent holds no transaction of {store_id} on {business_day}")
        [report] = z_reports(txs, closed_at=closed_at or datetime.now(UTC))
        queued = client.post("/v1/edge/day-close", content=report.model_dump_json(), headers=JSON)
        queued.raise_for_status()
        body: dict[str, Any] = queued.json()
        return report, body
