"""The loyalty flow against a fake platform that keeps a ledger by idempotency key (the hub's
book is a real SQLite file), the pure rules of what a return takes back, and the tick that
releases holds and reads the platform's statement."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.builders import (
    completed,
    customer_return,
    exchange,
    incoming,
    line,
    post_void,
    returned,
    sale,
)
from tillflow.errors import DownstreamRejectedError, FlowError
from tillflow.flows.loyalty import LoyaltyOrchestrator, points_to_return, returned_value
from tillflow.model import Customer, LoggedEvent, Transaction
from tillflow.ports import (
    Accrual,
    HoldState,
    LedgerEntry,
    LoyaltyBook,
    PointsEntry,
    PointsHold,
    PointsMove,
    Redemption,
    RedemptionState,
    StoredTransaction,
)
from tillflow.storage.db import create_state_engine, sqlite_url
from tillflow.storage.loyalty import SQLLoyaltyBook
from tillflow.storage.migrate import upgrade_schema


class FakePlatform:
    """Points = whole euros; a key already seen changes nothing, and taking back more than a
    transaction still holds is refused (like the real platform)."""

    def __init__(self, refuse: set[str] | None = None) -> None:
        self.keys: dict[str, PointsMove] = {}
        self.earned: dict[str, int] = {}  # transaction -> points still held by it
        self.refuse = refuse or set()
        self.moves: list[LedgerEntry] = []  # the moves it made on its own (bonus, expiry)
        self.statement_reads = 0
        self.released: list[str] = []

    def accrue_many(self, accruals: Sequence[Accrual]) -> list[PointsMove | DownstreamRejectedError]:
        out: list[PointsMove | DownstreamRejectedError] = []
        for a in accruals:
            if a.transaction_id in self.refuse:
                out.append(DownstreamRejectedError("loyalty", f"no member {a.member_id}", status=404))
                continue
            if a.idempotency_key not in self.keys:
                points = int(sum(line.amount for line in a.lines))
                self.earned[a.transaction_id] = points
                self.keys[a.idempotency_key] = PointsMove(a.idempotency_key, a.member_id, points, 0)
            out.append(self.keys[a.idempotency_key])
        return out

    def reverse(
        self, member_id: str, *, program: str, transaction_id: str, points: int | None, idempotency_key: str
    ) -> PointsMove:
        if transaction_id not in self.earned:
            raise DownstreamRejectedError("loyalty", f"{transaction_id} earned nothing", status=422)
        if idempotency_key not in self.keys:
            left = self.earned[transaction_id]
            taken = left if points is None else points
            if taken > left:
                raise DownstreamRejectedError("loyalty", f"{taken} is more than the {left} left", status=422)
            self.earned[transaction_id] = left - taken
            self.keys[idempotency_key] = PointsMove(idempotency_key, member_id, -taken, 0)
        return self.keys[idempotency_key]

    def statement(
        self, program: str, *, after: int = 0, limit: int = 1000, kinds: Sequence[str] = ()
    ) -> list[LedgerEntry]:
        self.statement_reads += 1
        return [m for m in self.moves if m.seq > after and (not kinds or m.kind in kinds)][:limit]

    def release(self, hold_id: str, *, idempotency_key: str) -> PointsHold:
        self.released.append(hold_id)
        return PointsHold(hold_id, "M0001", 100, HoldState.EXPIRED, NOW)

    def find_member(self, member_id: str, *, program: str = "default") -> None:
        return None

    def accrue(self, *args: object, **kwargs: object) -> PointsMove:
        raise NotImplementedError

    def reserve(self, *args: object, **kwargs: object) -> PointsHold:
        raise NotImplementedError

    def commit(self, *args: object, **kwargs: object) -> PointsHold:
        raise NotImplementedError


class FakeStore:
    def __init__(self, *txs: Transaction) -> None:
        self.data = {tx.transaction_id: incoming(tx).data for tx in txs}

    def get_transaction(self, transaction_id: str) -> StoredTransaction | None:
        data = self.data.get(transaction_id)
        if data is None:
            return None
        at = datetime(2026, 11, 29, tzinfo=UTC)
        return StoredTransaction(transaction_id, "S001", data, at, at + timedelta(milliseconds=1), 1, None)


def member_sale(sequence: int, euros: str = "12.00") -> Transaction:
    tx = sale(sequence, line(1, unit_price=euros))
    return tx.model_copy(update={"customer": Customer(member_id="M0001")})


NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


def member_return(sequence: int, *taken: tuple[Transaction, str]) -> Transaction:
    """A return of goods worth `euros` from each (sale, euros)."""
    rows = [
        returned(i, unit_price=euros) | {"original": {"transaction": tx.ref, "line_no": 1}}
        for i, (tx, euros) in enumerate(taken, start=1)
    ]
    return customer_return(sequence, *rows)


class CountingBook(SQLLoyaltyBook):
    """The SQLite book, keeping which transactions each read of what was taken back asked for."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.reads: list[list[str]] = []

    def find_reversals(self, transaction_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        self.reads.append(list(transaction_ids))
        return super().find_reversals(transaction_ids)

    def find_entries(self, transaction_ids: Sequence[str]) -> list[PointsEntry]:
        self.reads.append(list(transaction_ids))
        return super().find_entries(transaction_ids)


@pytest.fixture
def book(tmp_path: Path) -> CountingBook:
    engine = create_state_engine(sqlite_url(tmp_path / "state.db"), sqlite_synchronous="NORMAL")
    upgrade_schema(engine)
    return CountingBook(engine)


def orchestrator(
    *,
    loyalty: FakePlatform,
    transactions: FakeStore,
    book: LoyaltyBook,
    clock: Callable[[], datetime] = lambda: NOW,
    **settings: Any,
) -> LoyaltyOrchestrator:
    return LoyaltyOrchestrator(
        loyalty=loyalty,  # type: ignore[arg-type]  # only what the flow calls is faked
        transactions=transactions,  # type: ignore[arg-type]
        book=book,
        clock=clock,
        **settings,
    )


def accrue_points(
    events: Sequence[LoggedEvent], *, loyalty: FakePlatform, transactions: FakeStore, book: LoyaltyBook
) -> int:
    return orchestrator(loyalty=loyalty, transactions=transactions, book=book).handle(events)


class TestAccrual:
    def test_a_member_sale_earns_once_however_often_it_is_delivered(self, book: LoyaltyBook) -> None:
        platform, tx = FakePlatform(), member_sale(1)
        for _ in range(3):
            accrue_points([completed(tx, 1)], loyalty=platform, transactions=FakeStore(tx), book=book)
        assert platform.earned == {tx.transaction_id: 12}
        assert len(platform.keys) == 1

    def test_a_sale_without_a_member_earns_nothing(self, book: LoyaltyBook) -> None:
        platform, tx = FakePlatform(), sale(1, line(1))
        assert accrue_points([completed(tx, 1)], loyalty=platform, transactions=FakeStore(tx), book=book) == 0
        assert platform.keys == {}


class TestPostVoid:
    def test_a_void_takes_back_what_the_sale_earned(self, book: LoyaltyBook) -> None:
        platform, tx = FakePlatform(), member_sale(1)
        void = post_void(2, tx)
        store = FakeStore(tx, void)
        accrue_points([completed(tx, 1), completed(void, 2)], loyalty=platform, transactions=store, book=book)
        assert platform.earned == {tx.transaction_id: 0}

    def test_a_void_that_arrives_before_its_sale_still_nets_to_nothing(self, book: LoyaltyBook) -> None:
        platform, tx = FakePlatform(), member_sale(1)
        void = post_void(2, tx)
        store = FakeStore(tx, void)  # both accepted; the void's event comes first in the log
        accrue_points([completed(void, 1)], loyalty=platform, transactions=store, book=book)
        accrue_points([completed(tx, 2)], loyalty=platform, transactions=store, book=book)
        assert platform.earned == {tx.transaction_id: 0}
        assert sorted(platform.keys) == [f"accrue:{tx.transaction_id}", f"void:{void.transaction_id}"]

    def test_a_void_whose_sale_has_not_arrived_waits_for_it(self, book: LoyaltyBook) -> None:
        platform, tx = FakePlatform(), member_sale(1)
        void = post_void(2, tx)
        with pytest.raises(FlowError, match="has not arrived"):
            accrue_points([completed(void, 1)], loyalty=platform, transactions=FakeStore(void), book=book)
        assert platform.keys == {}


class TestReturns:
    def test_two_returns_of_one_sale_in_a_batch_take_back_no_more_than_it_earned(
        self, book: CountingBook
    ) -> None:
        platform, bought = FakePlatform(), member_sale(1, "20.00")
        first, second = member_return(2, (bought, "15.00")), member_return(3, (bought, "15.00"))
        store = FakeStore(bought, first, second)
        accrue_points([completed(bought, 1)], loyalty=platform, transactions=store, book=book)

        accrue_points(
            [completed(first, 2), completed(second, 3)], loyalty=platform, transactions=store, book=book
        )

        assert platform.earned == {bought.transaction_id: 0}
        assert book.find_reversals([bought.transaction_id]) == {
            bought.transaction_id: {
                f"return:{first.transaction_id}:{bought.transaction_id}": -15,
                f"return:{second.transaction_id}:{bought.transaction_id}": -5,  # what was left
            }
        }

    def test_a_return_after_the_void_of_its_sale_in_the_same_batch_takes_nothing(
        self, book: CountingBook
    ) -> None:
        platform, bought = FakePlatform(), member_sale(1, "20.00")
        void, back = post_void(2, bought), member_return(3, (bought, "5.00"))
        store = FakeStore(bought, void, back)
        accrue_points([completed(bought, 1)], loyalty=platform, transactions=store, book=book)

        accrue_points(
            [completed(void, 2), completed(back, 3)], loyalty=platform, transactions=store, book=book
        )

        assert platform.earned == {bought.transaction_id: 0}
        assert sorted(platform.keys) == [f"accrue:{bought.transaction_id}", f"void:{void.transaction_id}"]

    def test_a_batch_reads_what_was_taken_back_once_for_all_its_returns(self, book: CountingBook) -> None:
        platform = FakePlatform()
        first, second, third = member_sale(1, "20.00"), member_sale(2, "10.00"), member_sale(3, "8.00")
        swap = exchange(
            6,
            returned(1, unit_price="4.00") | {"original": {"transaction": second.ref, "line_no": 1}},
            line(2, unit_price="4.00"),
        )
        batch = [
            member_return(4, (first, "5.00"), (second, "2.00")),
            member_return(5, (first, "5.00")),
            swap,
            member_return(7, (third, "8.00")),
        ]
        store = FakeStore(first, second, third, *batch)
        accrue_points(
            [completed(tx, i) for i, tx in enumerate([first, second], 1)],
            loyalty=platform,
            transactions=store,
            book=book,
        )
        sales_only = list(book.reads)

        accrue_points(
            [completed(third, 3), *[completed(tx, i) for i, tx in enumerate(batch, 4)]],
            loyalty=platform,
            transactions=store,
            book=book,
        )

        assert sales_only == []  # a batch without returns asks for nothing
        assert book.reads == [sorted([first.transaction_id, second.transaction_id, third.transaction_id])]
        assert platform.earned == {
            first.transaction_id: 10,
            second.transaction_id: 4,
            third.transaction_id: 0,
        }

    def test_a_redelivered_batch_of_returns_takes_back_what_it_took_the_first_time(
        self, book: CountingBook
    ) -> None:
        platform, bought = FakePlatform(), member_sale(1, "20.00")
        batch = [member_return(2, (bought, "5.00")), member_return(3, (bought, "15.00"))]
        store = FakeStore(bought, *batch)
        accrue_points([completed(bought, 1)], loyalty=platform, transactions=store, book=book)
        events = [completed(tx, i) for i, tx in enumerate(batch, 2)]

        accrue_points(events, loyalty=platform, transactions=store, book=book)
        first_time = book.find_reversals([bought.transaction_id])
        accrue_points(events, loyalty=platform, transactions=store, book=book)  # after a crash before the ack

        assert platform.earned == {bought.transaction_id: 0}
        assert len(platform.keys) == 3  # the accrual and the two returns, once each
        assert first_time == book.find_reversals([bought.transaction_id])
        assert sorted(first_time[bought.transaction_id].values()) == [-15, -5]


class TestRefusals:
    def test_a_refused_accrual_is_raised_after_the_others_earned(self, book: LoyaltyBook) -> None:
        good, bad = member_sale(1), member_sale(2)
        platform = FakePlatform(refuse={bad.transaction_id})
        with pytest.raises(DownstreamRejectedError, match="no member"):
            accrue_points(
                [completed(good, 1), completed(bad, 2)],
                loyalty=platform,
                transactions=FakeStore(good, bad),
                book=book,
            )
        assert platform.earned == {good.transaction_id: 12}


class TestReturnedShare:
    def test_the_value_a_return_brings_back_per_original(self) -> None:
        first, second = sale(1, line(1, unit_price="8.00")), sale(2, line(1, unit_price="4.00"))
        rows = [
            returned(i + 1, unit_price=price) | {"original": {"transaction": tx.ref, "line_no": 1}}
            for i, (tx, price) in enumerate([(first, "3.00"), (second, "4.00"), (first, "1.50")])
        ]
        ret = customer_return(3, *rows)
        assert returned_value(ret) == {
            first.transaction_id: Decimal("4.50"),
            second.transaction_id: Decimal("4.00"),
        }

    def test_half_the_value_takes_back_half_the_points_rounded_down(self) -> None:
        assert points_to_return(25, Decimal("20.00"), Decimal("10.00"), 0) == 12
        assert points_to_return(25, Decimal("20.00"), Decimal("20.00"), 12) == 13
        assert points_to_return(25, Decimal("20.00"), Decimal("5.00"), 25) == 0

    @given(
        earned=st.integers(0, 10_000),
        basis=st.decimals("0.01", "10000", places=2),
        returns=st.lists(st.decimals("0.01", "10000", places=2), max_size=6),
    )
    def test_returns_never_take_back_more_than_was_earned(
        self, earned: int, basis: Decimal, returns: list[Decimal]
    ) -> None:
        taken = 0
        for value in returns:
            step = points_to_return(earned, basis, value, taken)
            assert 0 <= step <= earned - taken
            taken += step
        assert taken <= earned
        if returns and returns[0] >= basis:
            assert taken == earned  # a return of the whole sale takes back everything


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def move(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def bonus(seq: int, points: int = 1000) -> LedgerEntry:
    return LedgerEntry(seq, f"E{seq}", "M0001", "bonus", points, None, None, NOW)


class TestTick:
    def test_the_statement_is_read_on_the_first_tick_then_at_most_every_thirty_seconds(
        self, book: LoyaltyBook
    ) -> None:
        platform, clock = FakePlatform(), Clock()
        platform.moves.append(bonus(1))
        flow = orchestrator(loyalty=platform, transactions=FakeStore(), book=book, clock=clock)

        reads = []
        flow.sweep()
        reads.append(platform.statement_reads)
        platform.moves.append(bonus(2, 500))
        for _ in range(29):
            clock.move(1)
            flow.sweep()
        reads.append(platform.statement_reads)
        before = book.points_by_kind()
        clock.move(1)
        flow.sweep()
        reads.append(platform.statement_reads)

        assert reads == [1, 1, 2]
        assert before == {"default": {"bonus": 1000}}  # the second bonus waits for the next read
        assert book.points_by_kind() == {"default": {"bonus": 1500}}

    def test_an_interval_of_zero_reads_the_statement_on_every_tick(self, book: LoyaltyBook) -> None:
        platform = FakePlatform()
        flow = orchestrator(loyalty=platform, transactions=FakeStore(), book=book, statement_every=0)

        for _ in range(3):
            flow.sweep()

        assert platform.statement_reads == 3

    def test_holds_past_their_ttl_are_released_on_every_tick_between_reads(self, book: LoyaltyBook) -> None:
        platform, clock = FakePlatform(), Clock()
        flow = orchestrator(
            loyalty=platform, transactions=FakeStore(), book=book, clock=clock, statement_every=60
        )
        flow.sweep()
        saga = Redemption(
            "H1", "default", "M0001", "S001", 100, RedemptionState.HELD, NOW, NOW + timedelta(seconds=5), NOW
        )
        book.open_redemption(saga, request_key="S001:k1")

        clock.move(4)
        unchanged = flow.sweep()
        clock.move(2)
        changed = flow.sweep()

        released = book.find_redemption("H1")
        assert (unchanged, changed) == (0, 1)
        assert released is not None and released.state is RedemptionState.EXPIRED
        assert platform.released == ["H1"]
        assert platform.statement_reads == 1  # the first tick's only
