"""The loyalty flow against a fake platform that keeps a ledger by idempotency key (the hub's
book is a real SQLite file), and the pure rules of what a return takes back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.builders import completed, customer_return, incoming, line, post_void, returned, sale
from tillflow.errors import DownstreamRejectedError, FlowError
from tillflow.flows.loyalty import LoyaltyOrchestrator, points_to_return, returned_value
from tillflow.model import Customer, LoggedEvent, Transaction
from tillflow.ports import Accrual, LoyaltyBook, PointsHold, PointsMove, StoredTransaction
from tillflow.storage.db import create_state_engine, sqlite_url
from tillflow.storage.loyalty import SQLLoyaltyBook
from tillflow.storage.migrate import upgrade_schema


class FakePlatform:
    """Points = whole euros; a key already seen changes nothing (like the real platform)."""

    def __init__(self, refuse: set[str] | None = None) -> None:
        self.keys: dict[str, PointsMove] = {}
        self.earned: dict[str, int] = {}  # transaction -> points still held by it
        self.refuse = refuse or set()

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
            taken, self.earned[transaction_id] = self.earned[transaction_id], 0
            self.keys[idempotency_key] = PointsMove(idempotency_key, member_id, -taken, 0)
        return self.keys[idempotency_key]

    def find_member(self, member_id: str, *, program: str = "default") -> None:
        return None

    def accrue(self, *args: object, **kwargs: object) -> PointsMove:
        raise NotImplementedError

    def reserve(self, *args: object, **kwargs: object) -> PointsHold:
        raise NotImplementedError

    def commit(self, *args: object, **kwargs: object) -> PointsHold:
        raise NotImplementedError

    def release(self, *args: object, **kwargs: object) -> PointsHold:
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


@pytest.fixture
def book(tmp_path: Path) -> LoyaltyBook:
    engine = create_state_engine(sqlite_url(tmp_path / "state.db"), sqlite_synchronous="NORMAL")
    upgrade_schema(engine)
    return SQLLoyaltyBook(engine)


def accrue_points(
    events: Sequence[LoggedEvent], *, loyalty: FakePlatform, transactions: FakeStore, book: LoyaltyBook
) -> int:
    flow = LoyaltyOrchestrator(
        loyalty=loyalty,  # type: ignore[arg-type]  # only what the flow calls is faked
        transactions=transactions,  # type: ignore[arg-type]
        book=book,
        clock=lambda: NOW,
    )
    return flow.handle(events)


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
