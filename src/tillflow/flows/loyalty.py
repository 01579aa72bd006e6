"""Loyalty flow: the hub orchestrates the loyalty platform so that points are never doubled,
never spent twice and never kept after the goods came back.

The platform owns the rules (points per currency unit, category and tier multipliers); the hub
sends what earns and records, in its own points ledger, every move the platform answered.
Each step carries an idempotency key made from what caused it, so a redelivered event or a
retried batch gets the platform's first answer back and the ledger records it once:

- **accrual** `accrue:<tx>`: a member's completed sale or exchange earns (each sold line's net
  amount and department). Transactions captured offline earn when they arrive.
- **return** `return:<tx>:<original>`: a return takes back the share of what its original sale
  earned that the returned value is of the sale's earning value (rounded down).
- **post-void** `void:<tx>`: takes back everything the voided sale still holds.
- **redemption** (a saga with holds): the till reserves points during checkout
  (`reserve_points`: a hold with a TTL on the platform, the saga kept by the hub); the
  completed transaction's loyalty tender names the hold and commits it `commit:<hold>`; a
  cancelled checkout or the TTL releases it `release:<hold>`; a post-void of the sale gives
  the spent points back `refund:<hold>`. A step that comes too late (a commit after a release)
  is recorded on the saga as a conflict, never passed off as a success.

Moves the hub does not cause (welcome bonuses, expiry) are read from the platform's statement,
so the ledger's outstanding points per program can be reconciled with the platform's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

from tillflow.errors import DownstreamRejectedError, FlowError, PoisonEventError
from tillflow.model import LineAction, LoggedEvent, TenderKind, Transaction, TransactionKind
from tillflow.model.events import TRANSACTION_COMPLETED
from tillflow.model.transaction import TRUSTED_CONTEXT
from tillflow.ports import (
    Accrual,
    EarningLine,
    HoldState,
    LoyaltyBook,
    LoyaltyPlatform,
    PointsEntry,
    PointsMove,
    Redemption,
    RedemptionState,
    TransactionStore,
)

FLOW: Final = "loyalty"
EARNING_KINDS = frozenset({TransactionKind.SALE, TransactionKind.EXCHANGE})
PLATFORM_KINDS: Final = ("bonus", "expiry")  # moves the platform makes on its own
STATEMENT_PAGE: Final = 1000

_STATE_OF_HOLD = {
    HoldState.HELD: RedemptionState.HELD,
    HoldState.COMMITTED: RedemptionState.COMMITTED,
    HoldState.RELEASED: RedemptionState.RELEASED,
    HoldState.EXPIRED: RedemptionState.EXPIRED,
    HoldState.REFUNDED: RedemptionState.REFUNDED,
}


def earning_lines(tx: Transaction) -> list[EarningLine]:
    """What earns: each sold line's amount net of its own price modifiers, by department."""
    return [
        EarningLine(amount=line.net_amount, category=line.department)
        for line in tx.lines
        if line.action is LineAction.SALE and line.net_amount > 0
    ]


def accrual_of(tx: Transaction) -> Accrual | None:
    """What a completed transaction earns, if anything: a member's sale or exchange with lines
    that earn. The transaction id makes the idempotency key."""
    if tx.customer is None or tx.kind not in EARNING_KINDS:
        return None
    lines = earning_lines(tx)
    if not lines:
        return None
    return Accrual(
        member_id=tx.customer.member_id,
        program=tx.customer.program,
        transaction_id=tx.transaction_id,
        currency=tx.currency,
        lines=tuple(lines),
        idempotency_key=f"accrue:{tx.transaction_id}",
    )


def returned_value(ret: Transaction) -> dict[str, Decimal]:
    """The value a return brings back, per original transaction its lines name."""
    out: dict[str, Decimal] = defaultdict(Decimal)
    for line in ret.lines:
        if line.action is not LineAction.SALE and line.original is not None:
            out[line.original.transaction.transaction_id] += -line.net_amount
    return dict(out)


def points_to_return(earned: int, basis: Decimal, returned: Decimal, already: int) -> int:
    """The points a return takes back: the returned share of the earning value, rounded down,
    never more than the sale still holds."""
    if earned <= 0 or basis <= 0 or returned <= 0:
        return 0
    share = int(earned * min(returned, basis) / basis)
    return max(min(share, earned - already), 0)


def loyalty_tenders(tx: Transaction) -> list[str]:
    """The holds a transaction's loyalty tenders name."""
    return [t.reference for t in tx.tenders if t.kind is TenderKind.LOYALTY_POINTS and t.reference]


@dataclass(frozen=True)
class Reservation:
    """What a till asks for at checkout."""

    store_id: str
    member_id: str
    program: str
    points: int
    ttl: timedelta


def reserve_points(
    ask: Reservation, *, request_key: str, loyalty: LoyaltyPlatform, book: LoyaltyBook, now: datetime
) -> tuple[Redemption, bool]:
    """Open a redemption saga: hold the points on the platform and keep the saga. The till's
    request key makes it idempotent end to end: asked again, the platform answers with the
    same hold and the hub with the same saga (True only the first time). A different request
    under a key already used is refused. Raises the platform's refusal or unavailability."""
    earlier = book.find_request(request_key)
    if earlier is not None:
        _same_request(earlier, ask, request_key)
        return earlier, False
    hold = loyalty.reserve(
        ask.member_id,
        program=ask.program,
        points=ask.points,
        ttl=ask.ttl,
        idempotency_key=f"reserve:{request_key}",
    )
    saga = Redemption(
        hold_id=hold.hold_id,
        program=ask.program,
        member_id=ask.member_id,
        store_id=ask.store_id,
        points=hold.points,
        state=_STATE_OF_HOLD[hold.state],
        created_at=now,
        expires_at=hold.expires_at,
        updated_at=now,
    )
    kept, new = book.open_redemption(saga, request_key=request_key)
    if not new:
        _same_request(kept, ask, request_key)
    return kept, new


def _same_request(saga: Redemption, ask: Reservation, request_key: str) -> None:
    if (saga.store_id, saga.member_id, saga.program, saga.points) != (
        ask.store_id,
        ask.member_id,
        ask.program,
        ask.points,
    ):
        raise ValueError(
            f"Idempotency-Key: {request_key.split(':', 1)[-1]} already reserved {saga.points} points of"
            f" {saga.member_id} ({saga.hold_id}); a different request needs a new key"
        )


def release_points(
    hold_id: str, *, reason: str, loyalty: LoyaltyPlatform, book: LoyaltyBook, now: datetime
) -> Redemption:
    """The compensating step: give held points back (a cancelled checkout, an ended TTL). The
    platform's answer decides the state (expired when its TTL had passed). Raises the
    platform's refusal (a committed hold cannot be released) or unavailability."""
    hold = loyalty.release(hold_id, idempotency_key=f"release:{hold_id}")
    book.settle_redemption(hold_id, state=_STATE_OF_HOLD[hold.state], at=now, reason=reason)
    saga = book.find_redemption(hold_id)
    assert saga is not None
    return saga


class LoyaltyOrchestrator:
    """Handler of the loyalty consumer group, and the sweeper of holds its tick runs. The tick
    reads the platform's statement at most every `statement_every` seconds (0: on every tick)."""

    def __init__(
        self,
        *,
        loyalty: LoyaltyPlatform,
        transactions: TransactionStore,
        book: LoyaltyBook,
        programs: Sequence[str] = ("default",),
        clock: Callable[[], datetime],
        statement_every: float = 30.0,
    ) -> None:
        self.loyalty = loyalty
        self.transactions = transactions
        self.book = book
        self.programs = tuple(programs)
        self.clock = clock
        self.statement_every = timedelta(seconds=statement_every)
        self._statement_read: datetime | None = None  # when this sweeper last read the statements

    # -- the consumer's batches

    def handle(self, events: Sequence[LoggedEvent]) -> int:
        """The batch's accruals in one call (with those of the sales its returns and voids
        refer to, repeats if they already earned, so what is taken back was always earned
        first), then what was taken back already from the sales its returns refer to, in one
        read, then per transaction in log order: its redemptions, and what a return or a void
        takes back. A refused accrual is raised after the others were recorded (the runner then
        settles the batch event by event). Returns how many steps it took."""
        txs = [
            Transaction.model_validate_json(e.event.data, context=TRUSTED_CONTEXT)
            for e in events
            if e.event.type == TRANSACTION_COMPLETED
        ]
        originals = self._originals(txs)
        earned = self._accrue(txs, originals)
        taken = self._taken_back(txs, earned)
        steps = len(earned)
        for tx in txs:
            if tx.kind is TransactionKind.VOID:
                steps += self._void(tx, originals, earned, taken)
            else:
                steps += self._redeem(tx)
                if tx.kind is not TransactionKind.SALE:
                    steps += self._return(tx, originals, earned, taken)
        return steps

    def _originals(self, txs: Sequence[Transaction]) -> dict[str, Transaction]:
        """The sales the batch's voids cancel (which must have arrived) and the sales its
        returns bring goods back from (those the hub has: a return without its receipt takes
        nothing back)."""
        out: dict[str, Transaction] = {}
        for tx in txs:
            wanted = [tx.voided.transaction_id] if tx.voided is not None else list(returned_value(tx))
            for tx_id in wanted:
                if tx_id in out:
                    continue
                stored = self.transactions.get_transaction(tx_id)
                if stored is not None:
                    out[tx_id] = Transaction.model_validate_json(stored.data, context=TRUSTED_CONTEXT)
                elif tx.voided is not None:  # retried: the voided sale may still be on its way
                    raise FlowError(
                        f"post-void {tx.transaction_id}: the voided transaction {tx_id} has not arrived"
                    )
        return out

    def _accrue(self, txs: Sequence[Transaction], originals: dict[str, Transaction]) -> dict[str, PointsMove]:
        """Accrue and record; what each earning transaction earned, by transaction id."""
        accruals: dict[str, tuple[Accrual, Transaction]] = {}
        for tx in [*txs, *originals.values()]:
            if tx.kind is TransactionKind.VOID:
                continue
            accrual = accrual_of(tx)
            if accrual is not None:
                accruals[accrual.transaction_id] = (accrual, tx)
        if not accruals:
            return {}
        answers = self.loyalty.accrue_many([a for a, _ in accruals.values()])
        earned: dict[str, PointsMove] = {}
        entries: list[PointsEntry] = []
        refused: DownstreamRejectedError | None = None
        for (accrual, tx), answer in zip(accruals.values(), answers, strict=True):
            if isinstance(answer, DownstreamRejectedError):
                refused = refused or answer
                continue
            earned[accrual.transaction_id] = answer
            entries.append(_entry(accrual.idempotency_key, "accrual", accrual, tx, answer.points))
        self.book.record_entries(entries, at=self.clock())
        if refused is not None:
            raise refused
        return earned

    def _taken_back(
        self, txs: Sequence[Transaction], earned: dict[str, PointsMove]
    ) -> dict[str, dict[str, int]]:
        """What was taken back already from the earning sales the batch's returns refer to, by
        the key of each move: one read for the batch. The batch's returns and voids add their
        own moves as they go, so a later return of the same sale sees what they took."""
        wanted = {
            original_id
            for tx in txs
            if tx.kind not in (TransactionKind.SALE, TransactionKind.VOID)
            for original_id in returned_value(tx)
            if original_id in earned
        }
        return self.book.find_reversals(sorted(wanted)) if wanted else {}

    def _return(
        self,
        ret: Transaction,
        originals: dict[str, Transaction],
        earned: dict[str, PointsMove],
        taken: dict[str, dict[str, int]],
    ) -> int:
        steps = 0
        for original_id, value in returned_value(ret).items():
            original = originals.get(original_id)
            accrual = None if original is None else accrual_of(original)
            if original is None or accrual is None or original_id not in earned:
                continue  # the sale earned nothing (or is unknown to the hub): nothing to take back
            key = f"return:{ret.transaction_id}:{original_id}"
            moves = taken.setdefault(original_id, {})  # with its own move when it is redelivered
            already = -sum(points for k, points in moves.items() if k != key)
            basis = sum((line.amount for line in accrual.lines), Decimal(0))
            points = points_to_return(earned[original_id].points, basis, value, already)
            if points == 0:
                continue
            move = self.loyalty.reverse(
                accrual.member_id,
                program=accrual.program,
                transaction_id=original_id,
                points=points,
                idempotency_key=key,
            )
            self.book.record_entries([_entry(key, "reversal", accrual, ret, move.points)], at=self.clock())
            moves.setdefault(key, move.points)  # as the ledger: a key keeps its first move
            steps += 1
        return steps

    def _void(
        self,
        void: Transaction,
        originals: dict[str, Transaction],
        earned: dict[str, PointsMove],
        taken: dict[str, dict[str, int]],
    ) -> int:
        assert void.voided is not None
        sale = originals[void.voided.transaction_id]
        steps = self._unredeem(void, sale)
        accrual = accrual_of(sale)
        if accrual is None or sale.transaction_id not in earned:
            return steps
        key = f"void:{void.transaction_id}"
        move = self.loyalty.reverse(
            accrual.member_id,
            program=accrual.program,
            transaction_id=sale.transaction_id,
            points=None,
            idempotency_key=key,
        )
        self.book.record_entries([_entry(key, "reversal", accrual, void, move.points)], at=self.clock())
        taken.setdefault(sale.transaction_id, {}).setdefault(key, move.points)
        return steps + 1

    # -- redemption sagas

    def _redeem(self, tx: Transaction) -> int:
        """Commit each hold the transaction's loyalty tenders name; a hold that can no longer be
        spent is recorded as a conflict on its saga."""
        holds = loyalty_tenders(tx)
        if not holds:
            return 0
        sagas = self.book.find_redemptions(holds)
        steps = 0
        for hold_id in holds:
            saga = sagas.get(hold_id)
            if saga is None:
                raise PoisonEventError(
                    f"{tx.transaction_id} tenders loyalty hold {hold_id}, which the hub never reserved"
                )
            steps += self._commit(saga, tx)
        return steps

    def _commit(self, saga: Redemption, tx: Transaction) -> int:
        now, tx_id = self.clock(), tx.transaction_id
        if saga.transaction_id == tx_id and saga.state in (
            RedemptionState.COMMITTED,
            RedemptionState.REFUNDED,
        ):
            return 0  # delivered again
        if saga.transaction_id == tx_id and saga.void_id is not None:
            return 0  # the sale was post-voided before its commit: the hold was released for it
        if saga.state is not RedemptionState.HELD:
            by = f" by {saga.transaction_id}" if saga.transaction_id else ""
            self.book.record_conflict(
                saga.hold_id, f"{tx_id} tendered hold {saga.hold_id} after it was {saga.state}{by}", at=now
            )
            return 1
        try:
            hold = self.loyalty.commit(
                saga.hold_id, transaction_id=tx_id, idempotency_key=f"commit:{saga.hold_id}"
            )
        except DownstreamRejectedError as exc:
            self.book.record_conflict(saga.hold_id, f"{tx_id} could not commit: {exc.reason}", at=now)
            if now >= saga.expires_at:
                self.book.settle_redemption(saga.hold_id, state=RedemptionState.EXPIRED, at=now, reason="ttl")
            return 1
        entry = PointsEntry(
            entry_key=f"redeem:{saga.hold_id}",
            program=saga.program,
            member_id=saga.member_id,
            kind="redemption",
            points=-hold.points,
            transaction_id=tx_id,
            hold_id=saga.hold_id,
            store_id=tx.store_id,
            business_day=tx.business_day,
        )
        self.book.settle_redemption(
            saga.hold_id, state=RedemptionState.COMMITTED, at=now, transaction_id=tx_id, entry=entry
        )
        return 1

    def _unredeem(self, void: Transaction, sale: Transaction) -> int:
        """The compensating steps of a post-void: a hold its sale committed is refunded; one its
        sale has not committed yet (the void came first) is released for it."""
        holds = loyalty_tenders(sale)
        sagas = self.book.find_redemptions(holds)
        steps = 0
        for hold_id in holds:
            saga = sagas.get(hold_id)
            if saga is None or saga.void_id is not None:
                continue  # never reserved through the hub (its sale dead-lettered), or done already
            now = self.clock()
            if saga.state is RedemptionState.HELD:
                hold = self.loyalty.release(hold_id, idempotency_key=f"release:{hold_id}")
                self.book.settle_redemption(
                    hold_id,
                    state=_STATE_OF_HOLD[hold.state],
                    at=now,
                    transaction_id=sale.transaction_id,
                    void_id=void.transaction_id,
                    reason=f"sale post-voided by {void.transaction_id}",
                )
            elif saga.state is RedemptionState.COMMITTED and saga.transaction_id == sale.transaction_id:
                move = self.loyalty.refund(
                    hold_id, transaction_id=void.transaction_id, idempotency_key=f"refund:{hold_id}"
                )
                entry = PointsEntry(
                    entry_key=f"refund:{hold_id}",
                    program=saga.program,
                    member_id=saga.member_id,
                    kind="refund",
                    points=move.points,
                    transaction_id=void.transaction_id,
                    hold_id=hold_id,
                    store_id=void.store_id,
                    business_day=void.business_day,
                )
                self.book.settle_redemption(
                    hold_id, state=RedemptionState.REFUNDED, at=now, void_id=void.transaction_id, entry=entry
                )
            else:
                continue  # released or expired before the sale could spend it: a conflict already
            steps += 1
        return steps

    # -- the tick: holds past their TTL, and the platform's own moves

    def sweep(self) -> int:
        """Release the holds whose TTL ended without a commit (the platform has expired them:
        the saga learns it), then, when `statement_every` has passed since it last did, read the
        platform's statement for the moves it made on its own. Returns how many sagas and
        entries changed."""
        changed = 0
        for saga in self.book.list_redemptions(states=[RedemptionState.HELD], expired_by=self.clock()):
            try:
                release_points(
                    saga.hold_id, reason="checkout abandoned: TTL ended", loyalty=self.loyalty,
                    book=self.book, now=self.clock(),
                )  # fmt: skip
            except DownstreamRejectedError as exc:  # committed meanwhile: its sale's event settles it
                self.book.record_conflict(
                    saga.hold_id, f"release after the TTL refused: {exc.reason}", at=self.clock()
                )
            changed += 1
        now, last = self.clock(), self._statement_read
        if last is not None and last <= now < last + self.statement_every:
            return changed  # read recently: the platform's own moves wait for a later tick
        self._statement_read = now  # an attempt counts: a platform away is asked again only later
        for program in self.programs:
            changed += read_statement(program, loyalty=self.loyalty, book=self.book, now=now)
        return changed


def read_statement(program: str, *, loyalty: LoyaltyPlatform, book: LoyaltyBook, now: datetime) -> int:
    """Record the platform's own moves (bonus, expiry) from where its statement was read up to;
    returns how many were new."""
    new = 0
    while True:
        after = book.statement_cursor(program)
        page = loyalty.statement(program, after=after, limit=STATEMENT_PAGE, kinds=PLATFORM_KINDS)
        if not page:
            return new
        entries = [
            PointsEntry(
                entry_key=f"platform:{e.entry_id}",
                program=program,
                member_id=e.member_id,
                kind=e.kind,
                points=e.points,
                transaction_id=e.transaction_id,
                hold_id=e.hold_id,
            )
            for e in page
        ]
        new += book.record_statement(program, entries, after=max(e.seq for e in page), at=now)
        if len(page) < STATEMENT_PAGE:
            return new


def _entry(key: str, kind: str, accrual: Accrual, cause: Transaction, points: int) -> PointsEntry:
    """A ledger entry for a move on the accrual of `accrual`, caused by `cause`."""
    return PointsEntry(
        entry_key=key,
        program=accrual.program,
        member_id=accrual.member_id,
        kind=kind,
        points=points,
        transaction_id=accrual.transaction_id,
        store_id=cause.store_id,
        business_day=cause.business_day,
    )
