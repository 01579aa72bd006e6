"""The store agent: for each store it serves, an outbox and a forwarder; and the local API.

`tillflow edge --store S [--store S2 ...] --hub URL` runs it. One agent may serve several
stores (a franchise back office), each with its own outbox file (`outbox-<store>.db` in the
data directory) and its own key: `TILLFLOW_API_KEY_<STORE>` (the store id upper-cased, `-` and
`.` as `_`), or `TILLFLOW_API_KEY` for an agent of one store. SIGTERM stops it cleanly: the local
API finishes its requests, each forwarder the request it has in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from tillflow.connectors.http import segment
from tillflow.edge.forwarder import JSON, Forwarder
from tillflow.edge.outbox import SQLiteOutbox
from tillflow.errors import ConfigError
from tillflow.flows.z_report import z_reports
from tillflow.formats.records import ImportContext
from tillflow.formats.settings import PoslogSettings
from tillflow.model import DayClose, Store, Transaction
from tillflow.ports import IncomingTransaction, StoredTransaction, Verdict

LOCAL_KEY = "TILLFLOW_EDGE_LOCAL_KEY"
PAGE_SIZE = 4096  # SQLite's default page size


@dataclass(frozen=True)
class AgentSettings:
    """How the agent forwards: batch size and linger, retention of delivered transactions,
    heartbeat period; and the local API's limits (the hub's by default)."""

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


class EdgeAgent:
    """The outboxes and forwarders of the stores served, and what the local API needs."""

    def __init__(
        self,
        store_ids: Sequence[str],
        keys: Mapping[str, str],
        settings: AgentSettings,
        *,
        import_context: ImportContext | None = None,
        poslog_settings: PoslogSettings | None = None,
        local_key: str | None = None,
    ) -> None:
        check_store_ids(store_ids)
        self.settings = settings
        self.import_context = import_context or ImportContext()
        self.poslog_settings = poslog_settings or PoslogSettings()
        self.local_key = local_key or None
        opened: dict[str, SQLiteOutbox] = {}
        try:
            for store in store_ids:
                opened[store] = SQLiteOutbox(
                    settings.data_dir / f"outbox-{store}.db",
                    store,
                    max_pages=_pages(settings.max_outbox_bytes),
                )
        except Exception:
            for outbox in opened.values():
                outbox.close()
            raise
        self.outboxes = StoreOutboxes(opened)
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
            )
            for store, outbox in opened.items()
        }
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start a forwarder thread per store."""
        self._threads = [f.start(self._stop) for f in self.forwarders.values()]

    def stop(self) -> None:
        """Stop the forwarders (each finishes the request in flight), then close the outboxes."""
        self._stop.set()
        for outbox in self.outboxes:
            outbox.wake.set()
        for thread, forwarder in zip(self._threads, self.forwarders.values(), strict=True):
            thread.join(timeout=forwarder.timeout + 10)
        for forwarder in self.forwarders.values():
            forwarder.close()
        for outbox in self.outboxes:
            outbox.close()

    def status(self) -> dict[str, Any]:
        """Per store: the outbox (depth, oldest unsent age, what is kept) and the link to the hub."""
        stores = {}
        for store, forwarder in self.forwarders.items():
            stats = forwarder.outbox.stats()
            error_at = forwarder.last_error_at
            stores[store] = {
                "buffer_depth": stats.depth,
                "oldest_unsent_age_seconds": stats.oldest_unsent_age_seconds,
                "delivered_kept": stats.delivered,
                "delivered_total": forwarder.delivered_total,
                "conflicts": stats.conflicts,
                "refused": stats.refused,
                "local_conflicts": stats.local_conflicts,
                "day_closes_pending": stats.day_closes_pending,
                "last_error": forwarder.last_error,
                "last_error_at": None if error_at is None else error_at.isoformat(),
                "clock_skew_seconds": forwarder.clock_skew_seconds,
            }
        return {"hub": self.settings.hub_url, "stores": stores}


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
