"""The ports: what flows, the gateway and the runners depend on. Adapters implement them.

Each port is a small Protocol with verb-noun methods. Values crossing a port are model
objects or the small frozen records defined here; no driver type ever does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from tillflow.errors import DownstreamRejectedError
from tillflow.model import (
    CloudEvent,
    DayClose,
    InventoryMovement,
    Journal,
    LoggedEvent,
    Product,
    Store,
    StoreHeartbeat,
    Transaction,
)
from tillflow.model.masterdata import MasterKind, Price, Promotion


class EventLog(Protocol):
    """An append-only log of CloudEvents read by consumer groups, each with its own position.

    Contract for consumers: every fetched event is settled once — acked (handled), nak'ed
    (deliver again after a delay) or dead-lettered (set aside with a reason) — before the
    group's next fetch. Delivery is at least once; effects are made idempotent by the flows.
    """

    def append_events(self, events: Sequence[CloudEvent]) -> list[int | None]:
        """Append events; one whose source+id is already logged is skipped (None)."""
        ...

    def fetch_batch(self, group: str, *, limit: int) -> list[LoggedEvent]:
        """Due redeliveries and then the events past the group's position, oldest first."""
        ...

    def ack_events(self, group: str, events: Sequence[LoggedEvent]) -> None:
        """Settle these events as handled: the group moves past them."""
        ...

    def nak_event(self, group: str, event: LoggedEvent, *, delay: float, error: str) -> None:
        """Settle an event for now: deliver it again (attempt + 1) after `delay` seconds."""
        ...

    def dead_letter(self, group: str, event: LoggedEvent, *, reason: str) -> None:
        """Settle an event by setting it aside with its payload, attempts and `reason`."""
        ...

    def read_position(self, group: str) -> int:
        """The last sequence the group has settled (0 before its first)."""
        ...

    def read_head(self) -> int:
        """The sequence of the newest event in the log (0 when empty)."""
        ...

    def record_failure(self, group: str, error: str) -> None:
        """Note that the group's next batch failed again (cleared by the next ack)."""
        ...

    def read_groups(self) -> dict[str, GroupState]:
        """Every consumer group's position, lag, pending redeliveries, dead letters, failures."""
        ...

    def reset_group(
        self, group: str, *, from_seq: int | None = None, since: datetime | None = None, actor: str, why: str
    ) -> int:
        """Replay: (re)start a group so its next event is `from_seq`, or the first logged at or
        after `since`; drops its pending redeliveries; audited; returns the new position."""
        ...

    def list_dead_letters(
        self, *, group: str | None = None, ids: Sequence[int] = (), limit: int = 100
    ) -> list[DeadLetter]:
        """Dead letters, oldest first (of one group, or all; only `ids` when given)."""
        ...

    def replay_dead_letters(self, selection: DeadLetterSelection, *, actor: str, why: str) -> int:
        """Deliver the selected dead letters to their group again; audited; returns how many."""
        ...

    def purge_dead_letters(self, selection: DeadLetterSelection, *, actor: str, why: str) -> int:
        """Delete the selected dead letters for good; audited; returns how many."""
        ...

    def list_audit(self, *, limit: int = 100) -> list[AuditEntry]:
        """What operators did to dead letters and positions, newest first."""
        ...

    def trim_events(self, *, max_age: timedelta | None = None, max_events: int | None = None) -> int:
        """Retention: drop events logged longer than `max_age` ago or beyond the newest
        `max_events`; returns how many were dropped."""
        ...


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One operator action: a dead-letter replay or purge, or a consumer group reset."""

    action: str  # "replay-dead-letters" | "purge-dead-letters" | "reset-group"
    group: str | None
    count: int
    actor: str
    why: str
    at: datetime
    detail: str = ""  # the ids, filter or position it applied to


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event set aside by a consumer group, with why and after how many attempts."""

    id: int
    group: str
    event: LoggedEvent
    attempts: int
    reason: str
    dead_at: datetime


@dataclass(frozen=True, slots=True)
class DeadLetterSelection:
    """Which dead letters an operation applies to: some ids, those whose reason contains a
    text, or (neither given) every dead letter of the group (or of every group)."""

    group: str | None = None
    ids: tuple[int, ...] = ()
    reason_contains: str | None = None


@dataclass(frozen=True, slots=True)
class GroupState:
    """Where a consumer group stands: its committed position, lag and failure streak."""

    position: int
    lag: int
    pending: int = 0  # nak'ed, waiting for redelivery
    dead_letters: int = 0
    oldest_dead_letter_at: datetime | None = None
    failures: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None


class Verdict(StrEnum):
    """The gateway's answer for one record of a batch."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    INVALID = "invalid"
    NOT_POSTED = "not_posted"  # read and kept in the answer, never posted (a POSLog sign-on, a no-sale)


@dataclass(frozen=True, slots=True)
class IncomingTransaction:
    """A validated transaction on its way into the store, with its canonical bytes and, when a
    store agent forwarded it, when the agent acknowledged it (its `edge.accepted` hop)."""

    transaction: Transaction
    data: bytes
    digest: str
    traceparent: str | None
    edge_accepted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TraceHop:
    """One step a transaction took: received, logged, or a flow's applied step."""

    hop: str
    at: datetime
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class StoredTransaction:
    """An accepted transaction as stored: its canonical bytes, times, event and timeline."""

    transaction_id: str
    store_id: str
    data: bytes
    received_at: datetime
    logged_at: datetime
    event_seq: int | None
    traceparent: str | None
    conflicts: int = 0
    hops: tuple[TraceHop, ...] = field(default=())


class TransactionStore(Protocol):
    """Where accepted transactions live; accepting one also logs its event, in one commit."""

    def record_batch(self, batch: Sequence[IncomingTransaction], *, received_at: datetime) -> list[Verdict]:
        """Store the new transactions and append their events atomically; judge repeats."""
        ...

    def get_transaction(self, transaction_id: str) -> StoredTransaction | None:
        """One stored transaction with its trace timeline, or None."""
        ...

    def read_store_day(self, store_id: str, business_day: date) -> list[StoredTransaction]:
        """Every accepted transaction of a store's business day (no timelines), by register
        and sequence."""
        ...

    def list_sequences(self, store_id: str, business_day: date) -> dict[str, set[int]]:
        """The sequences accepted for a store's business day, per register."""
        ...

    def list_store_days(self, business_day: date) -> list[str]:
        """The stores with accepted transactions on a business day."""
        ...


class InventoryLedger(Protocol):
    """Stock positions per store and SKU, and the movements that made them."""

    def find_processed(self, flow: str, event_keys: Sequence[str]) -> set[str]:
        """Those of these events that `flow` has already applied."""
        ...

    def find_movements(self, transaction_ids: Sequence[str]) -> dict[str, list[InventoryMovement]]:
        """The movements already recorded for these transactions."""
        ...

    def find_voided(self, transaction_ids: Sequence[str]) -> set[str]:
        """Those of these transactions that a post-void has already cancelled."""
        ...

    def record_movements(self, plan: InventoryPlan, *, flow: str) -> int:
        """Record a plan's movements, positions and processed events in one commit."""
        ...

    def read_position(self, store_id: str, sku: str) -> Decimal | None:
        """The store's stock of `sku`, or None when it never moved."""
        ...


@dataclass(frozen=True, slots=True)
class InventoryPlan:
    """What one batch of transaction events does to stock, computed by the inventory flow."""

    event_keys: tuple[str, ...]
    movements: tuple[InventoryMovement, ...]
    voids: tuple[tuple[str, str], ...]  # (voided transaction id, void transaction id)
    hops: tuple[tuple[str, str, str | None], ...]  # (transaction id, hop, detail)
    # per movement, the store's business day it is booked on (empty: none known)
    business_days: tuple[date | None, ...] = ()
    # (index into movements, why): recorded, but the position stays as it is (a sale a count
    # already reflects, a unit with no conversion to the stock unit)
    excluded: tuple[tuple[int, str], ...] = ()
    counts: tuple[CountApplied, ...] = ()  # the latest count now applied per store and SKU
    alerts: tuple[StockAlert, ...] = ()  # raised by this batch (some cleared again within it)
    cleared: tuple[ClearedAlert, ...] = ()  # alerts open before this batch that it clears


@dataclass(frozen=True, slots=True)
class CountApplied:
    """A count line that set a position: the count, when it was taken, what it found."""

    store_id: str
    sku: str
    count_id: str
    counted_at: datetime
    quantity: Decimal  # in the stock unit


class AlertKind(StrEnum):
    NEGATIVE_STOCK = "negative_stock"  # a movement took the position below zero
    NO_CONVERSION = "no_conversion"  # a line's unit has no conversion to the SKU's stock unit


@dataclass(frozen=True, slots=True)
class StockAlert:
    """Something about a store's stock of one SKU that a person should look at."""

    kind: AlertKind
    store_id: str
    sku: str
    quantity: Decimal  # the position left (negative stock), the line's quantity (no conversion)
    uom: str  # the stock unit (negative stock), the line's unit (no conversion)
    transaction_id: str  # what caused it
    at: datetime  # when that movement occurred
    detail: str = ""
    cleared_at: datetime | None = None
    cleared_by: str | None = None
    id: int | None = None

    @property
    def key(self) -> str:
        """One alert of a key is open at a time per store and SKU."""
        return alert_key(self.kind, self.uom)


def alert_key(kind: AlertKind, uom: str) -> str:
    return kind.value if kind is AlertKind.NEGATIVE_STOCK else f"{kind.value}.{uom}"


@dataclass(frozen=True, slots=True)
class ClearedAlert:
    store_id: str
    sku: str
    key: str
    cleared_by: str  # the transaction (or count) that cleared it
    at: datetime


@dataclass(frozen=True, slots=True)
class StockState:
    """Where a store's stock of one SKU stands before a batch."""

    quantity: Decimal = Decimal(0)
    count_id: str | None = None  # the latest count applied
    counted_at: datetime | None = None
    open_alerts: frozenset[str] = frozenset()  # their keys


class StockBook(Protocol):
    """What the inventory flow reads beside the ledger (positions, counts, open alerts), the
    alerts it raised, and the gateway's way in for stock counts."""

    def find_stock(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], StockState]:
        """The state of these (store, sku); those never moved, counted or alerted are left out."""
        ...

    def sum_moved_after(self, store_id: str, skus: Sequence[str], after: datetime) -> dict[str, Decimal]:
        """Per SKU, the net of the store's movements that moved its position and occurred after
        `after` (SKUs with none are left out)."""
        ...

    def list_alerts(
        self, *, store_id: str | None = None, include_cleared: bool = False, limit: int = 1000
    ) -> list[StockAlert]:
        """Alerts, newest first: open ones (and cleared ones too with `include_cleared`)."""
        ...

    def record_count(self, event: CloudEvent, *, received_at: datetime) -> Verdict:
        """Append a stock count's event to the log through the state store's outbox: ACCEPTED,
        DUPLICATE (the same count again) or CONFLICT (the same count id with other content)."""
        ...


class ProductCatalog(Protocol):
    """The product master: what each SKU is and the unit its stock is kept in."""

    def find_products(self, skus: Sequence[str]) -> dict[str, Product]:
        """The products of these SKUs that the master holds, by SKU (one query)."""
        ...


class BatchState(StrEnum):
    PENDING = "pending"  # recorded with its movements, not yet answered by the ERP
    POSTED = "posted"
    FAILED = "failed"  # refused by the ERP, with its reason; not posted again by itself
    EMPTY = "empty"  # its movements net to nothing: nothing to post


@dataclass(frozen=True, slots=True)
class GoodsBatch:
    """One batch of a store-day's goods movements for the ERP, aggregated per (sku, uom,
    reason); `number` counts the store-day's batches from 1 (later movements, later batches)."""

    batch_id: str
    store_id: str
    business_day: date
    number: int
    lines: int  # aggregated lines posted
    movements: int  # movements carried
    state: BatchState = BatchState.PENDING
    document_number: str | None = None
    reason: str | None = None
    recorded_at: datetime | None = None
    settled_at: datetime | None = None


class GoodsMovementLog(Protocol):
    """Which goods movements went to the ERP in which batch (each movement in one at most)."""

    def list_due_days(self, *, now: datetime) -> list[tuple[str, date]]:
        """Store-days with movements in no batch whose day close is posted or past its deadline."""
        ...

    def find_unbatched(self, store_id: str, business_day: date) -> list[tuple[int, InventoryMovement]]:
        """The store-day's movements that moved stock and are in no batch yet, with their ids."""
        ...

    def record_batches(self, batches: Sequence[tuple[GoodsBatch, Sequence[int]]], *, at: datetime) -> None:
        """Record batches as pending with the movement ids each carries, in one commit (raises
        StorageError when a movement is already in a batch: nothing is recorded then)."""
        ...

    def read_batch(self, batch_id: str) -> list[InventoryMovement]:
        """The movements a recorded batch carries."""
        ...

    def settle_batch(
        self,
        batch_id: str,
        *,
        state: BatchState,
        document_number: str | None,
        reason: str | None,
        at: datetime,
    ) -> None: ...

    def find_batches(
        self,
        *,
        business_day: date | None = None,
        store_id: str | None = None,
        state: BatchState | None = None,
    ) -> list[GoodsBatch]:
        """Recorded batches, by store, day and number."""
        ...

    def retry_batch(self, batch_id: str) -> bool:
        """Set a refused batch pending again, to be posted anew; False when it is not refused."""
        ...


@dataclass(frozen=True, slots=True)
class Principal:
    """Who an API key speaks for: one store, or an admin (every store)."""

    key_id: str
    store_id: str | None
    is_admin: bool

    def may_act_for(self, store_id: str) -> bool:
        """True for an admin, or for the store the key is bound to."""
        return self.is_admin or self.store_id == store_id


class KeyStore(Protocol):
    """API keys, kept hashed."""

    def create_key(self, *, store_id: str | None = None, admin: bool = False) -> str:
        """Make a key for one store (or an admin key); the key is returned once, never stored."""
        ...

    def authenticate(self, key: str) -> Principal | None:
        """The principal of a valid, unrevoked key, or None."""
        ...

    def revoke_key(self, key_id: str) -> bool:
        """Revoke a key by its id; False when there is no such key."""
        ...


class StatsReader(Protocol):
    """Operational figures and the health of the state store."""

    def read_stats(self) -> dict[str, Any]:
        """Counts, consumer positions and lag, end-to-end latency percentiles."""
        ...

    def ping_store(self) -> None:
        """Return when the state store answers; raise StorageError when it does not."""
        ...


# --- downstream systems: the loyalty platform and the ERP ------------------------------------
# Every write takes an idempotency key: the same key again returns the first answer (marked
# `repeated`), never a second effect. Adapters raise `DownstreamRejectedError` when the system
# refuses a request for good (its reason kept) and `DownstreamUnavailableError` when it is
# away, throttling or slow (with its Retry-After when it gave one).


@dataclass(frozen=True)
class Member:
    member_id: str
    program: str
    tier: str
    balance: int  # points available now (holds already subtracted)
    held: int = 0  # points reserved by open holds


@dataclass(frozen=True)
class EarningLine:
    """What a line of a transaction contributes to earning: its net amount and category."""

    amount: Decimal
    category: str | None = None


@dataclass(frozen=True)
class PointsMove:
    """One entry of a member's points ledger, as the platform answered it."""

    entry_id: str
    member_id: str
    points: int  # signed: accruals positive, reversals and redemptions negative
    balance: int  # after this entry
    repeated: bool = False  # the answer to an idempotency key already used


@dataclass(frozen=True)
class Accrual:
    """One completed transaction's earning, as `LoyaltyPlatform.accrue` takes it."""

    member_id: str
    program: str
    transaction_id: str
    currency: str
    lines: tuple[EarningLine, ...]
    idempotency_key: str


class HoldState(StrEnum):
    HELD = "held"
    COMMITTED = "committed"
    RELEASED = "released"
    EXPIRED = "expired"
    REFUNDED = "refunded"  # committed, then its points given back (the sale was post-voided)


@dataclass(frozen=True)
class PointsHold:
    hold_id: str
    member_id: str
    points: int
    state: HoldState
    expires_at: datetime
    transaction_id: str | None = None  # the transaction that committed it
    repeated: bool = False


@dataclass(frozen=True)
class ProgramPoints:
    """The points a program owes its members, as the platform counts them (the hub's liability
    ledger is reconciled against `outstanding`)."""

    program: str
    outstanding: int  # every member's points, less debts; open holds not subtracted
    held: int  # of which reserved by open holds
    members: int
    as_of: datetime  # the platform's clock


@dataclass(frozen=True)
class LedgerEntry:
    """One entry of a program's points ledger, in the platform's order (`seq`)."""

    seq: int
    entry_id: str
    member_id: str
    kind: str  # accrual, bonus, reversal, redemption, refund, expiry
    points: int  # signed
    transaction_id: str | None
    hold_id: str | None
    at: datetime


class LoyaltyPlatform(Protocol):
    """The loyalty SaaS: rules, tiers and the points ledger live there; the hub orchestrates."""

    def find_member(self, member_id: str, *, program: str = "default") -> Member | None: ...

    def accrue(
        self,
        member_id: str,
        *,
        program: str,
        transaction_id: str,
        currency: str,
        lines: Sequence[EarningLine],
        idempotency_key: str,
    ) -> PointsMove:
        """Earn points for a completed transaction; the platform's rules decide how many."""
        ...

    def accrue_many(self, accruals: Sequence[Accrual]) -> list[PointsMove | DownstreamRejectedError]:
        """Earn for many transactions in as few requests as the platform takes; each answered
        on its own, in order. The platform away fails the whole call."""
        ...

    def reverse(
        self, member_id: str, *, program: str, transaction_id: str, points: int | None, idempotency_key: str
    ) -> PointsMove:
        """Take back points a transaction earned (`points`, or all of them when None)."""
        ...

    def reserve(
        self, member_id: str, *, program: str, points: int, ttl: timedelta, idempotency_key: str
    ) -> PointsHold:
        """Hold points during checkout; they cannot be held or spent twice while held."""
        ...

    def commit(self, hold_id: str, *, transaction_id: str, idempotency_key: str) -> PointsHold:
        """Spend a held reservation for a completed transaction."""
        ...

    def release(self, hold_id: str, *, idempotency_key: str) -> PointsHold:
        """Give held points back (a void, an abandoned checkout)."""
        ...

    def refund(self, hold_id: str, *, transaction_id: str, idempotency_key: str) -> PointsMove:
        """Give back the points a committed hold spent (`transaction_id`: the post-void's)."""
        ...

    def outstanding(self, program: str) -> ProgramPoints:
        """The points the program's members hold now, expired points and holds settled."""
        ...

    def statement(
        self, program: str, *, after: int = 0, limit: int = 1000, kinds: Sequence[str] = ()
    ) -> list[LedgerEntry]:
        """The program's ledger entries past seq `after`, in order: `limit` at most, `kinds` only."""
        ...


@dataclass(frozen=True)
class PostingReceipt:
    external_id: str  # tillflow's id of what was posted (the journal id, the movements batch id)
    document_number: str  # the ERP's
    posted_at: datetime
    repeated: bool = False


@dataclass(frozen=True)
class TrialBalanceLine:
    account: str
    currency: str
    debit: Decimal
    credit: Decimal


class ErpSystem(Protocol):
    """The ERP: a general ledger with a chart of accounts, fiscal periods and stock."""

    def post_journal(self, journal: Journal, *, idempotency_key: str) -> PostingReceipt: ...

    def post_journals(
        self, journals: Sequence[Journal], *, idempotency_keys: Sequence[str]
    ) -> list[PostingReceipt | DownstreamRejectedError]:
        """Post many journals in as few requests as the ERP takes; each is answered on its own,
        in order: its receipt or its rejection. The system away fails the whole call."""
        ...

    def posting_status(self, external_id: str) -> PostingReceipt | None:
        """What the ERP holds under one of our ids (None: never posted)."""
        ...

    def post_movements(
        self,
        store_id: str,
        business_day: date,
        movements: Sequence[InventoryMovement],
        *,
        batch_id: str,
        idempotency_key: str,
    ) -> PostingReceipt: ...

    def trial_balance(self, store_id: str, business_day: date) -> list[TrialBalanceLine]: ...


@dataclass(frozen=True)
class PostingOutcome:
    """What one ERP target answered for one posting: accepted (its document number) or
    rejected (its reason). `amounts`: the posting's debits per currency (journals)."""

    external_id: str
    target: str  # "cloud", "legacy"...
    store_id: str
    business_day: date
    kind: str  # "journal" or "movements"
    accepted: bool
    document_number: str | None = None
    reason: str | None = None
    lines: int = 0
    amounts: tuple[tuple[str, Decimal], ...] = ()
    transaction_ids: tuple[str, ...] = ()  # for the trace of each


class PostingLog(Protocol):
    """Where the hub keeps what the ERP targets answered (the posting state)."""

    def record_outcomes(self, outcomes: Sequence[PostingOutcome], *, at: datetime) -> None:
        """Record (or replace) each target's answer for each posting, with a trace hop."""
        ...

    def find_outcomes(self, business_day: date, store_id: str | None = None) -> list[PostingOutcome]:
        """Every recorded answer for the day (of one store), by store, posting and target."""
        ...


# --- the aggregated posting policy: day closes and the journals of each store-day -------------


class CloseState(StrEnum):
    WAITING = "waiting"  # for the transactions its Z report counts, or for its grace to pass
    POSTED = "posted"  # the day journal is posted (with a gap, when the grace ran out)
    FAILED = "failed"  # the ERP refused the day journal


@dataclass(frozen=True)
class DayCloseRecord:
    close: DayClose
    received_at: datetime
    deadline: datetime  # after this the day is posted with what is there, its gap flagged
    state: CloseState = CloseState.WAITING
    gap: tuple[str, ...] = ()  # the transactions the Z report counts that never came
    reason: str | None = None
    posted_at: datetime | None = None


class JournalState(StrEnum):
    PENDING = "pending"  # recorded, not yet answered by the ERP
    POSTED = "posted"
    FAILED = "failed"  # refused by the ERP, with its reason


@dataclass(frozen=True)
class DayJournal:
    """A merged journal of a store-day as recorded before it is posted: the day journal (or
    one part of it) or an adjustment, and the transactions it carries."""

    journal_id: str
    store_id: str
    business_day: date
    register_id: str | None
    adjustment: int
    transaction_ids: tuple[str, ...]
    state: JournalState = JournalState.PENDING
    document_number: str | None = None
    reason: str | None = None


class StoreDays(Protocol):
    """Day closes and the merged journals of each store-day (the `aggregated` posting policy)."""

    def record_day_close(self, close: DayClose, *, received_at: datetime, grace: timedelta) -> Verdict:
        """Keep a Z report: ACCEPTED (new, or replacing one not yet posted), DUPLICATE (the same
        again) or CONFLICT (different from one whose day is already posted: kept out)."""
        ...

    def find_day_close(self, store_id: str, business_day: date) -> DayCloseRecord | None: ...

    def list_day_closes(
        self,
        *,
        business_day: date | None = None,
        state: CloseState | None = None,
        store_id: str | None = None,
        since: date | None = None,
    ) -> list[DayCloseRecord]:
        """Day closes by business day and store (of one day, state, store; from `since` on)."""
        ...

    def settle_day_close(
        self,
        store_id: str,
        business_day: date,
        *,
        state: CloseState,
        gap: Sequence[str] = (),
        reason: str | None = None,
        at: datetime,
    ) -> None: ...

    def record_journals(self, journals: Sequence[DayJournal], *, at: datetime) -> None:
        """Record merged journals as pending with their transactions, in one commit."""
        ...

    def settle_journal(
        self,
        journal_id: str,
        *,
        state: JournalState,
        document_number: str | None,
        reason: str | None,
        at: datetime,
    ) -> None: ...

    def find_journals(self, store_id: str, business_day: date) -> list[DayJournal]:
        """The store-day's merged journals with their transactions, day journal first."""
        ...

    def find_memberships(self, transaction_ids: Sequence[str]) -> dict[str, str]:
        """The journal each of these transactions went into (those in none are left out)."""
        ...

    def retry_failed(
        self, store_id: str, business_day: date, journal_ids: Sequence[str] | None = None
    ) -> int:
        """Set the store-day's refused journals (or those of `journal_ids`) pending again, and a
        refused day close waiting again, so they are posted anew; returns how many journals."""
        ...


# --- the hub's loyalty book: redemption sagas and the points ledger --------------------------


class RedemptionState(StrEnum):
    HELD = "held"  # reserved on the platform; the checkout has not completed
    COMMITTED = "committed"  # spent by the transaction that tendered it
    RELEASED = "released"  # given back: the checkout was cancelled, or its sale voided first
    EXPIRED = "expired"  # the TTL passed before a commit
    REFUNDED = "refunded"  # spent, then given back by a post-void of the sale


@dataclass(frozen=True)
class Redemption:
    """One redemption saga: points held on the platform for a checkout, and what became of them.
    `conflict` keeps a step that came too late (a commit after a release), never dropped."""

    hold_id: str
    program: str
    member_id: str
    store_id: str
    points: int
    state: RedemptionState
    created_at: datetime
    expires_at: datetime
    updated_at: datetime
    transaction_id: str | None = None
    void_id: str | None = None
    reason: str | None = None
    conflict: str | None = None


@dataclass(frozen=True)
class PointsEntry:
    """A move of a member's points as the hub recorded it; `entry_key` is the idempotency key
    of the step that caused it (or the platform's entry id for moves the hub did not cause)."""

    entry_key: str
    program: str
    member_id: str
    kind: str  # accrual | reversal | redemption | refund | bonus | expiry
    points: int  # signed
    transaction_id: str | None = None
    hold_id: str | None = None
    store_id: str | None = None
    business_day: date | None = None


@dataclass(frozen=True)
class PointsJournal:
    """An IFRS 15 journal of the points a store-day's transactions issued, net (`points`)."""

    journal_id: str
    store_id: str
    business_day: date
    currency: str
    points: int
    state: JournalState = JournalState.PENDING
    document_number: str | None = None
    reason: str | None = None


class LoyaltyBook(Protocol):
    """Where the hub keeps its redemption sagas, its points ledger and the journals of the
    points issued."""

    def open_redemption(self, redemption: Redemption, *, request_key: str) -> tuple[Redemption, bool]:
        """Keep a new saga under the till's request key; (the saga, False) when that key
        already opened one (which is returned instead)."""
        ...

    def find_redemption(self, hold_id: str) -> Redemption | None: ...

    def find_request(self, request_key: str) -> Redemption | None: ...

    def find_redemptions(self, hold_ids: Sequence[str]) -> dict[str, Redemption]: ...

    def list_redemptions(
        self, *, states: Sequence[RedemptionState] = (), expired_by: datetime | None = None, limit: int = 1000
    ) -> list[Redemption]:
        """Sagas in these states (all when empty), those whose TTL ended by `expired_by` only."""
        ...

    def settle_redemption(
        self,
        hold_id: str,
        *,
        state: RedemptionState,
        at: datetime,
        transaction_id: str | None = None,
        void_id: str | None = None,
        reason: str | None = None,
        entry: PointsEntry | None = None,
    ) -> None:
        """Move a saga to `state`, with the ledger entry of that step in the same commit."""
        ...

    def record_conflict(self, hold_id: str, conflict: str, *, at: datetime) -> None:
        """Keep a step that could not happen (appended to earlier ones)."""
        ...

    def record_entries(self, entries: Sequence[PointsEntry], *, at: datetime) -> int:
        """Record moves not recorded yet (by `entry_key`); returns how many were new."""
        ...

    def find_entries(self, transaction_ids: Sequence[str]) -> list[PointsEntry]:
        """The moves caused by (or taken back from) these transactions."""
        ...

    def find_reversals(self, transaction_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """The points taken back from each of these transactions, by the key of the move that took
        them; a transaction nothing was taken back from is absent."""
        ...

    def points_by_kind(self) -> dict[str, dict[str, int]]:
        """The ledger's points per program and kind of move; their sum is what is outstanding."""
        ...

    def unjournaled_entries(self, kinds: Sequence[str], *, limit: int = 100_000) -> list[PointsEntry]:
        """Moves of these kinds caused by a store's transaction and in no points journal yet."""
        ...

    def record_points_journals(
        self, journals: Sequence[tuple[PointsJournal, Sequence[str]]], *, at: datetime
    ) -> None:
        """Record journals as pending with the entry keys each carries, in one commit."""
        ...

    def settle_points_journal(
        self, journal_id: str, *, state: JournalState, document_number: str | None, reason: str | None
    ) -> None: ...

    def find_points_journals(
        self,
        *,
        store_id: str | None = None,
        business_day: date | None = None,
        state: JournalState | None = None,
    ) -> list[PointsJournal]: ...

    def statement_cursor(self, program: str) -> int:
        """Where the platform's statement was read up to (0: never)."""
        ...

    def record_statement(
        self, program: str, entries: Sequence[PointsEntry], *, after: int, at: datetime
    ) -> int:
        """Record the platform's own moves read from its statement and move the cursor to
        `after`, in one commit; returns how many were new."""
        ...


# --- master data: items, prices and promotions down to the stores -----------------------------


class MasterOutcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"  # equal to the current record: no new version
    WITHDRAWN = "withdrawn"
    ABSENT = "absent"  # nothing to withdraw under that key


# One entry of a store's delta, (version, kind, key, record): from `version` on, the record under
# (`kind`, `key`) is `record` (canonical JSON text), or, with None, the store has none: delete it.
# A plain tuple: a store's snapshot is hundreds of thousands of them.
MasterEntry = tuple[int, str, str, str | None]


@dataclass(frozen=True, slots=True)
class MasterDelta:
    """What changed for a store in (`since`, `version`], compacted to the latest entry per key,
    in version order. `complete` False: a limit cut it, ask again from `version`."""

    store_id: str
    since: int
    version: int
    complete: bool
    entries: list[MasterEntry]


@dataclass(frozen=True, slots=True)
class MasterSyncState:
    """Which master data a store runs: the version it acknowledged, the latest version that
    concerns it, and how many changes that concern it it has not acknowledged yet."""

    store_id: str
    acked_version: int
    acked_at: datetime | None
    latest_version: int
    behind: int


class PromotionCalendar(Protocol):
    """The promotion calendar and the price lists a till is judged against."""

    def list_promotions(self) -> list[Promotion]:
        """Every current promotion, oldest version first."""
        ...

    def find_price_lists(self, skus: Sequence[str]) -> dict[str, list[Price]]:
        """Every current price of each of `skus` (all scopes), in version order; a SKU without
        any is left out."""
        ...


class MasterData(PromotionCalendar, Protocol):
    """Items, prices and promotions, each accepted change under a global, increasing version."""

    def record_items(self, items: Sequence[Product], *, at: datetime) -> list[MasterOutcome]:
        """Create or replace items by SKU (the last of a repeated one wins), in one commit."""
        ...

    def record_prices(self, prices: Sequence[Price], *, at: datetime) -> list[MasterOutcome]:
        """Create or replace prices by `Price.key`, in one commit."""
        ...

    def record_promotions(self, promotions: Sequence[Promotion], *, at: datetime) -> list[MasterOutcome]:
        """Create or replace promotions by `promotion_id`, in one commit."""
        ...

    def withdraw_records(self, kind: MasterKind, keys: Sequence[str], *, at: datetime) -> list[MasterOutcome]:
        """Withdraw prices or promotions by key (a version each), in one commit."""
        ...

    def read_head(self) -> int:
        """The latest version (0 before the first change)."""
        ...

    def read_delta(self, store: Store, *, since: int, limit: int | None = None) -> MasterDelta:
        """What changed for `store` after `since` (0: its full snapshot), at most `limit` entries."""
        ...

    def record_ack(self, store_id: str, version: int, *, at: datetime) -> int | None:
        """Note that a store applied up to `version`; returns its acknowledged version (it never
        goes back), or None when `version` is beyond the latest."""
        ...

    def read_sync(self, stores: Sequence[Store]) -> list[MasterSyncState]:
        """Per store, the version it runs and how far behind it is."""
        ...


# --- promotion compliance -----------------------------------------------------------------------


class DeviationKind(StrEnum):
    UNAUTHORISED_DISCOUNT = "unauthorised_discount"
    PROMOTION_NOT_APPLIED = "promotion_not_applied"
    WRONG_PRICE = "wrong_price"  # a unit price that is not the price list's at that moment


@dataclass(frozen=True, slots=True)
class Deviation:
    """One way a transaction departs from the promotion calendar. `line_no` None: basket level."""

    transaction_id: str
    line_no: int | None
    kind: DeviationKind
    promotion_id: str | None
    expected: Decimal  # what the promotions allow (unauthorised) or give (not applied)
    actual: Decimal  # what the till took
    detail: str
    store_id: str
    business_day: date
    currency: str


class ComplianceLog(Protocol):
    """Where the hub keeps what departs from the promotion calendar."""

    def record_deviations(
        self, transaction_ids: Sequence[str], deviations: Sequence[Deviation], *, at: datetime
    ) -> None:
        """Replace what was recorded for these transactions with `deviations`, in one commit."""
        ...

    def find_deviations(self, business_day: date, store_id: str | None = None) -> list[Deviation]: ...


# --- store health -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LatestHeartbeat:
    """A store's latest heartbeat and when the hub received it (by the hub's clock)."""

    store_id: str
    beat: StoreHeartbeat
    received_at: datetime

    @property
    def clock_skew_seconds(self) -> float:
        """The hub's receive time minus the agent's send time (positive: the store's clock is
        behind the hub's, or the beat was long on the way)."""
        return (self.received_at - self.beat.sent_at).total_seconds()


class StoreHealthBook(Protocol):
    """Where the hub keeps the latest heartbeat of each store's edge agent."""

    def record_heartbeat(self, store_id: str, beat: StoreHeartbeat, received_at: datetime) -> None:
        """Keep `beat` as the store's latest heartbeat (it replaces the one before)."""
        ...

    def list_health(self) -> list[LatestHeartbeat]:
        """The latest heartbeat of every store heard from, by store id."""
        ...


# --- the operations console -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransactionMatch:
    """An accepted transaction a search found: its store-day, arrival, event and trace."""

    transaction_id: str
    store_id: str
    business_day: date
    received_at: datetime
    event_seq: int | None
    traceparent: str | None


@dataclass(frozen=True, slots=True)
class RecordedConflict:
    """A record refused as a conflict: an accepted transaction's identity with other content."""

    transaction_id: str
    received_at: datetime


class OperationsBook(Protocol):
    """What the operations console looks up in the state store, and the re-sends operators ask
    the stores for."""

    def find_transactions(
        self,
        *,
        id_prefix: str | None = None,
        trace_id: str | None = None,
        store_id: str | None = None,
        business_day: date | None = None,
        limit: int = 50,
    ) -> list[TransactionMatch]:
        """Transactions whose id starts with `id_prefix` or whose trace is `trace_id` (of one store
        and day, when given), newest first."""
        ...

    def list_conflicts(self, store_id: str, *, limit: int = 10) -> tuple[int, list[RecordedConflict]]:
        """How many records of a store were refused as conflicts, and the newest `limit` of them."""
        ...

    def request_resend(
        self, store_id: str, transaction_ids: Sequence[str], *, actor: str, why: str, at: datetime
    ) -> None:
        """Ask a store's agent to send these transactions again (audited with who and why)."""
        ...

    def list_resend_requests(self, store_id: str, *, since: datetime) -> list[str]:
        """The transactions operators asked the store for since `since` that the hub has still
        not received, in the order they were asked for."""
        ...


# --- process metrics ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessFigures:
    """One hub process's own counters as it last published them (`figures`: JSON values)."""

    process_id: str  # host:pid:start
    role: str
    started_at: datetime
    updated_at: datetime
    figures: dict[str, Any]


@dataclass(frozen=True, slots=True)
class EffectHop:
    """A transaction's effect as its trace records it (inventory applied, points accrued, ERP
    posted): when, when the till handed the sale over (its store agent had it on the store's
    disk; None when it did not come through an agent) and when it reached the hub, all in UTC
    epoch microseconds."""

    hop_id: int
    hop: str
    at_us: int
    edge_us: int | None
    received_us: int


@dataclass(frozen=True)
class EffectHopPage:
    """The effects found among the trace hops after a hop id; `scanned_to` is the last hop id
    looked at (the next page starts after it), `head` the last one ready to be looked at."""

    hops: list[EffectHop]
    scanned_to: int
    head: int


class ProcessMetrics(Protocol):
    """Where each hub process publishes its own counters, and the state store's own figures."""

    def publish_figures(self, figures: ProcessFigures) -> None:
        """Keep `figures` as the latest of its process (they replace the ones before)."""
        ...

    def list_figures(self) -> list[ProcessFigures]:
        """The latest figures of every process that ever published, by process id."""
        ...

    def count_transactions(self) -> tuple[int, int]:
        """How many transactions were accepted, and how many conflicting records refused."""
        ...

    def read_effect_hops(self, *, after_id: int, limit: int) -> EffectHopPage:
        """The effects among the next `limit` trace hops after `after_id` (ERP refusals left
        out); only hops written long enough ago that no earlier one can still appear."""
        ...


# --- alerts -------------------------------------------------------------------------------------


class AlertState(StrEnum):
    FIRING = "firing"  # its rule holds
    RESOLVED = "resolved"  # its rule stopped holding


@dataclass(frozen=True, slots=True)
class AlertFiring:
    """A rule that holds for one subject (a store, a consumer group, a path, a store-day), with
    the figure and the limit it was judged by."""

    rule: str
    kind: str
    severity: str
    subject: str
    value: float
    threshold: float
    summary: str


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert a rule raised: open (firing) until its rule stops holding for its subject.

    `notified` is the last state the webhook was told; `notify_until` is until when a process
    holds the right to tell it (None: nobody does)."""

    id: int
    rule: str
    kind: str
    subject: str
    severity: str
    summary: str
    value: float | None
    threshold: float | None
    fired_at: datetime
    resolved_at: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    notified: AlertState | None = None
    notify_until: datetime | None = None

    @property
    def state(self) -> AlertState:
        return AlertState.FIRING if self.resolved_at is None else AlertState.RESOLVED


class AlertBook(Protocol):
    """Where the hub keeps the alerts its rules raise; every transition is decided here, so
    several evaluating processes open and resolve each alert once."""

    def open_alert(self, firing: AlertFiring, *, at: datetime, notify_until: datetime | None) -> Alert | None:
        """Open an alert for the firing's (rule, subject) unless one is open; None when one was."""
        ...

    def resolve_alert(
        self, rule: str, subject: str, *, at: datetime, notify_until: datetime | None
    ) -> Alert | None:
        """Resolve the open alert of (rule, subject); None when none was open. The right to tell
        the webhook goes to `notify_until`, unless a process holds it past `at` (telling the
        firing); the resolution is then told after it."""
        ...

    def list_alerts(self, *, state: AlertState | None = None, limit: int = 500) -> list[Alert]:
        """Alerts in `state` (or all), firing first, then newest first."""
        ...

    def find_alert(self, alert_id: int) -> Alert | None:
        """One alert by id."""
        ...

    def acknowledge_alert(self, alert_id: int, *, by: str, at: datetime) -> Alert | None:
        """Record who acknowledged the alert and when (the first time only); None when unknown."""
        ...

    def claim_delivery(
        self, alert_id: int, *, now: datetime, until: datetime, held: datetime | None = None
    ) -> bool:
        """Take the right to tell the webhook about the alert until `until`: renew it when this
        process holds it until `held`, else take it when nobody holds it past `now`."""
        ...

    def record_delivery(self, alert_id: int, state: AlertState, *, held: datetime) -> bool:
        """Note that the webhook was told `state` and give the right up, if it is still held
        until `held`; False when another process took it over."""
        ...

    def list_undelivered(self, *, now: datetime, since: datetime) -> list[Alert]:
        """Alerts changed since `since` whose state the webhook has not been told and whose
        right to tell it nobody holds past `now`."""
        ...
