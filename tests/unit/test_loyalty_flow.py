"""The loyalty flow against a fake platform that keeps a ledger by idempotency key."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from tests.builders import completed, incoming, line, post_void, sale
from tillflow.errors import DownstreamRejectedError, FlowError
from tillflow.flows.loyalty import accrue_points
from tillflow.model import Customer, Transaction
from tillflow.ports import Accrual, PointsHold, PointsMove, StoredTransaction


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


class TestAccrual:
    def test_a_member_sale_earns_once_however_often_it_is_delivered(self) -> None:
        platform, tx = FakePlatform(), member_sale(1)
        for _ in range(3):
            accrue_points([completed(tx, 1)], loyalty=platform, transactions=FakeStore(tx))
        assert platform.earned == {tx.transaction_id: 12}
        assert len(platform.keys) == 1

    def test_a_sale_without_a_member_earns_nothing(self) -> None:
        platform, tx = FakePlatform(), sale(1, line(1))
        assert accrue_points([completed(tx, 1)], loyalty=platform, transactions=FakeStore(tx)) == 0
        assert platform.keys == {}


class TestPostVoid:
    def test_a_void_takes_back_what_the_sale_earned(self) -> None:
        platform, tx = FakePlatform(), member_sale(1)
        void = post_void(2, tx)
        store = FakeStore(tx, void)
        accrue_points([completed(tx, 1), completed(void, 2)], loyalty=platform, transactions=store)
        assert platform.earned == {tx.transaction_id: 0}

    def test_a_void_that_arrives_before_its_sale_still_nets_to_nothing(self) -> None:
        platform, tx = FakePlatform(), member_sale(1)
        void = post_void(2, tx)
        store = FakeStore(tx, void)  # both accepted; the void's event comes first in the log
        accrue_points([completed(void, 1)], loyalty=platform, transactions=store)
        accrue_points([completed(tx, 2)], loyalty=platform, transactions=store)
        assert platform.earned == {tx.transaction_id: 0}
        assert sorted(platform.keys) == [f"accrue:{tx.transaction_id}", f"void:{void.transaction_id}"]

    def test_a_void_whose_sale_has_not_arrived_waits_for_it(self) -> None:
        platform, tx = FakePlatform(), member_sale(1)
        void = post_void(2, tx)
        with pytest.raises(FlowError, match="has not arrived"):
            accrue_points([completed(void, 1)], loyalty=platform, transactions=FakeStore(void))
        assert platform.keys == {}


class TestRefusals:
    def test_a_refused_accrual_is_raised_after_the_others_earned(self) -> None:
        good, bad = member_sale(1), member_sale(2)
        platform = FakePlatform(refuse={bad.transaction_id})
        with pytest.raises(DownstreamRejectedError, match="no member"):
            accrue_points(
                [completed(good, 1), completed(bad, 2)],
                loyalty=platform,
                transactions=FakeStore(good, bad),
            )
        assert platform.earned == {good.transaction_id: 12}
