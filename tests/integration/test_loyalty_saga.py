"""The loyalty orchestration against the reference loyalty platform (a process) and the hub's
loyalty book on SQLite and PostgreSQL: every path of the redemption saga, returns and voids
taking points back, the platform's own moves read on the tick, and the hub's ledger agreeing
with the platform's outstanding points.

The platform runs its defaults: a point per euro for a basic member; members M0001..M0100 are
seeded with 1,000 welcome points. Each test has a platform of its own, so figures are exact."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from tests.builders import STORE, completed, customer_return, incoming, line, post_void, returned, sale
from tests.integration.test_sim_loyalty import LoyaltyProcess
from tillflow.connectors.loyalty_http import HttpLoyalty
from tillflow.errors import DownstreamRejectedError, DownstreamUnavailableError, PoisonEventError
from tillflow.flows.loyalty import (
    LoyaltyOrchestrator,
    Reservation,
    read_statement,
    release_points,
    reserve_points,
)
from tillflow.model import Customer, LoggedEvent, Transaction
from tillflow.ports import PointsEntry, RedemptionState
from tillflow.sim.loyalty import LoyaltySimSettings
from tillflow.storage.loyalty import SQLLoyaltyBook
from tillflow.storage.transactions import SQLTransactionStore

_seq = itertools.count(1)


class Story:
    """A platform of its own, the hub's book and transaction store, and the orchestrator whose
    clock is the platform's (so a TTL can pass without waiting)."""

    def __init__(self, platform: LoyaltyProcess, engine: Engine) -> None:
        self.admin = httpx.Client(base_url=platform.url, timeout=30)
        self.loyalty = HttpLoyalty(platform.url)
        self.book = SQLLoyaltyBook(engine)
        self.transactions = SQLTransactionStore(engine)
        self.flow = LoyaltyOrchestrator(
            loyalty=self.loyalty, transactions=self.transactions, book=self.book, clock=self.now
        )
        self.logged = itertools.count(1)

    def now(self) -> datetime:
        return datetime.fromisoformat(self.admin.get("/admin/clock").json()["now"])

    def move_clock(self, by: timedelta) -> None:
        self.admin.post("/admin/clock", json={"now": (self.now() + by).isoformat()})

    def reserve(self, points: int, member: str = "M0001", key: str | None = None, ttl: int = 300) -> str:
        saga, _ = reserve_points(
            Reservation(STORE, member, "default", points, timedelta(seconds=ttl)),
            request_key=f"{STORE}:{key or f'k{next(_seq)}'}",
            loyalty=self.loyalty,
            book=self.book,
            now=self.now(),
        )
        return saga.hold_id

    def arrive(self, *txs: Transaction) -> list[LoggedEvent]:
        """The transactions reach the hub: kept, and their events as the log hands them out."""
        self.transactions.record_batch([incoming(tx) for tx in txs], received_at=datetime.now(UTC))
        return [completed(tx, next(self.logged)) for tx in txs]

    def member(self, member_id: str = "M0001") -> dict[str, Any]:
        body: dict[str, Any] = self.admin.get(f"/api/members/{member_id}").json()
        return {k: body[k] for k in ("balance", "held")}

    def entries(self, member_id: str = "M0001") -> list[tuple[str, int]]:
        body = self.admin.get(f"/api/members/{member_id}/ledger").json()
        return [(e["kind"], e["points"]) for e in body["entries"]]

    def platform_outstanding(self) -> int:
        return self.loyalty.outstanding("default").outstanding

    def hub_outstanding(self) -> int:
        read_statement("default", loyalty=self.loyalty, book=self.book, now=self.now())
        return sum(self.book.points_by_kind().get("default", {}).values())

    def close(self) -> None:
        self.admin.close()
        self.loyalty.close()


@pytest.fixture
def story(tmp_path: Path, engine: Engine) -> Iterator[Story]:
    settings = LoyaltySimSettings(seed_members=3)
    platform = LoyaltyProcess(tmp_path / "loyalty.db", settings)
    made = Story(platform, engine)
    try:
        yield made
    finally:
        made.close()
        platform.stop()


def member_sale(sequence: int, euros: str, *, hold: str | None = None, points: int = 0) -> Transaction:
    """M0001 buys for `euros`, paying `points` (worth a cent each) with the hold `hold`."""
    tx = sale(sequence, line(1, unit_price=euros))
    if hold is None:
        return tx.model_copy(update={"customer": Customer(member_id="M0001")})
    value = Decimal(points) / 100
    body = tx.model_dump(mode="json") | {
        "customer": {"member_id": "M0001"},
        "tenders": [
            {"kind": "loyalty_points", "amount": str(value), "reference": hold, "points": points},
            {"kind": "cash", "amount": str(Decimal(euros) - value)},
        ],
    }
    return Transaction.model_validate(body)


def member_return(sequence: int, original: Transaction, euros: str) -> Transaction:
    row = returned(1, unit_price=euros) | {"original": {"transaction": original.ref, "line_no": 1}}
    return customer_return(sequence, row).model_copy(update={"customer": Customer(member_id="M0001")})


class TestRedemptionSaga:
    def test_reserve_then_the_sale_commits_the_hold(self, story: Story) -> None:
        hold = story.reserve(200)
        held = story.member()
        events = story.arrive(member_sale(1, "20.00", hold=hold, points=200))

        story.flow.handle(events)

        saga = story.book.find_redemption(hold)
        assert held == {"balance": 800, "held": 200}
        assert saga is not None and saga.state is RedemptionState.COMMITTED
        assert saga.transaction_id == events[0].event.id and saga.conflict is None
        assert story.member() == {"balance": 820, "held": 0}  # 1,000 - 200 + 20 earned
        assert story.entries() == [("bonus", 1000), ("accrual", 20), ("redemption", -200)]
        assert story.hub_outstanding() == story.platform_outstanding() == 3000 - 200 + 20

    def test_a_commit_delivered_twice_spends_once(self, story: Story) -> None:
        hold = story.reserve(150)
        events = story.arrive(member_sale(1, "10.00", hold=hold, points=150))

        story.flow.handle(events)
        story.flow.handle(events)  # redelivered after a crash before the ack

        assert story.entries() == [("bonus", 1000), ("accrual", 10), ("redemption", -150)]
        assert story.hub_outstanding() == story.platform_outstanding() == 3000 - 150 + 10

    def test_a_cancelled_checkout_releases_and_a_late_commit_is_a_recorded_conflict(
        self, story: Story
    ) -> None:
        hold = story.reserve(300)
        released = release_points(
            hold, reason="checkout cancelled", loyalty=story.loyalty, book=story.book, now=story.now()
        )
        after_release = story.member()
        events = story.arrive(member_sale(1, "5.00", hold=hold, points=300))

        story.flow.handle(events)

        saga = story.book.find_redemption(hold)
        assert released.state is RedemptionState.RELEASED and after_release == {"balance": 1000, "held": 0}
        assert saga is not None and saga.state is RedemptionState.RELEASED
        assert saga.conflict == f"{events[0].event.id} tendered hold {hold} after it was released"
        assert story.entries() == [("bonus", 1000), ("accrual", 5)]  # earned, spent nothing
        assert story.hub_outstanding() == story.platform_outstanding() == 3005

    def test_an_abandoned_hold_is_released_once_its_ttl_ends(self, story: Story) -> None:
        hold = story.reserve(400, ttl=60)
        story.flow.sweep()
        still = story.book.find_redemption(hold)
        story.move_clock(timedelta(seconds=61))

        story.flow.sweep()
        events = story.arrive(member_sale(1, "5.00", hold=hold, points=400))
        story.flow.handle(events)

        saga = story.book.find_redemption(hold)
        assert still is not None and still.state is RedemptionState.HELD
        assert saga is not None and saga.state is RedemptionState.EXPIRED
        assert saga.conflict is not None and "after it was expired" in saga.conflict
        assert story.member() == {"balance": 1005, "held": 0}
        assert story.hub_outstanding() == story.platform_outstanding()

    def test_the_platform_down_during_the_commit_is_retried_until_it_is_back(self, story: Story) -> None:
        hold = story.reserve(250)
        events = story.arrive(member_sale(1, "10.00", hold=hold, points=250))
        until = datetime.now(UTC) + timedelta(hours=1)
        story.admin.put("/admin/faults", json={"outage_until": until.isoformat()})

        with pytest.raises(DownstreamUnavailableError):
            story.flow.handle(events)
        during = story.book.find_redemption(hold)
        story.admin.delete("/admin/faults")
        story.flow.handle(events)  # the runner's retry

        saga = story.book.find_redemption(hold)
        assert during is not None and during.state is RedemptionState.HELD
        assert saga is not None and saga.state is RedemptionState.COMMITTED
        assert story.entries() == [("bonus", 1000), ("accrual", 10), ("redemption", -250)]
        assert story.hub_outstanding() == story.platform_outstanding()

    def test_a_post_void_refunds_the_spent_points_and_takes_the_earned_back(self, story: Story) -> None:
        hold = story.reserve(100)
        bought = member_sale(1, "30.00", hold=hold, points=100)
        story.flow.handle(story.arrive(bought))

        story.flow.handle(story.arrive(post_void(2, bought)))

        saga = story.book.find_redemption(hold)
        assert saga is not None and saga.state is RedemptionState.REFUNDED
        assert story.member() == {"balance": 1000, "held": 0}
        assert sorted(story.entries()) == sorted(
            [("bonus", 1000), ("accrual", 30), ("redemption", -100), ("refund", 100), ("reversal", -30)]
        )
        assert story.hub_outstanding() == story.platform_outstanding() == 3000

    def test_a_post_void_handled_before_its_sale_releases_the_hold_for_it(self, story: Story) -> None:
        hold = story.reserve(100)
        bought = member_sale(1, "30.00", hold=hold, points=100)
        sale_event, void_event = story.arrive(bought, post_void(2, bought))

        story.flow.handle([void_event])
        story.flow.handle([sale_event])

        saga = story.book.find_redemption(hold)
        assert saga is not None and saga.state is RedemptionState.RELEASED
        assert saga.conflict is None and saga.void_id == void_event.event.id
        assert story.member() == {"balance": 1000, "held": 0}
        assert story.hub_outstanding() == story.platform_outstanding() == 3000

    def test_a_reservation_asked_again_is_the_same_hold_and_another_request_under_its_key_is_refused(
        self, story: Story
    ) -> None:
        first = story.reserve(100, key="checkout-1")
        again = story.reserve(100, key="checkout-1")

        with pytest.raises(ValueError, match="checkout-1 already reserved 100 points"):
            story.reserve(900, key="checkout-1")
        assert first == again
        assert story.member() == {"balance": 900, "held": 100}

    def test_the_same_points_cannot_be_held_twice(self, story: Story) -> None:
        story.reserve(700)

        with pytest.raises(DownstreamRejectedError, match="insufficient points"):
            story.reserve(700)
        assert story.member() == {"balance": 300, "held": 700}

    def test_a_tender_naming_a_hold_the_hub_never_reserved_is_poison(self, story: Story) -> None:
        events = story.arrive(member_sale(1, "10.00", hold="H-unknown", points=100))

        with pytest.raises(PoisonEventError, match="H-unknown, which the hub never reserved"):
            story.flow.handle(events)


class TestReturns:
    def test_a_return_takes_back_its_share_of_what_the_sale_earned(self, story: Story) -> None:
        bought = member_sale(1, "20.00")
        story.flow.handle(story.arrive(bought))
        first = member_return(2, bought, "5.00")

        story.flow.handle(story.arrive(first))
        story.flow.handle([completed(first, 99)])  # redelivered
        story.flow.handle(story.arrive(member_return(3, bought, "15.00")))
        story.flow.handle(story.arrive(member_return(4, bought, "15.00")))  # more than is left

        assert story.entries() == [("bonus", 1000), ("accrual", 20), ("reversal", -5), ("reversal", -15)]
        assert story.hub_outstanding() == story.platform_outstanding() == 3000

    def test_returns_of_one_sale_in_one_batch_take_back_what_it_earned_and_no_more(
        self, story: Story
    ) -> None:
        bought = member_sale(1, "20.00")
        story.flow.handle(story.arrive(bought))
        batch = story.arrive(
            member_return(2, bought, "15.00"),
            member_return(3, bought, "15.00"),
            member_return(4, bought, "5.00"),
        )

        story.flow.handle(batch)
        story.flow.handle(batch)  # redelivered

        assert story.entries() == [("bonus", 1000), ("accrual", 20), ("reversal", -15), ("reversal", -5)]
        assert story.hub_outstanding() == story.platform_outstanding() == 3000

    def test_a_return_after_the_void_of_its_sale_in_one_batch_takes_nothing(self, story: Story) -> None:
        bought = member_sale(1, "20.00")
        story.flow.handle(story.arrive(bought))

        story.flow.handle(story.arrive(post_void(2, bought), member_return(3, bought, "5.00")))

        assert story.entries() == [("bonus", 1000), ("accrual", 20), ("reversal", -20)]
        assert story.hub_outstanding() == story.platform_outstanding() == 3000

    def test_the_book_answers_what_was_taken_back_per_transaction_and_move(self, story: Story) -> None:
        def entry(key: str, kind: str, points: int, tx_id: str) -> PointsEntry:
            return PointsEntry(key, "default", "M0001", kind, points, tx_id)

        story.book.record_entries(
            [
                entry("accrue:T1", "accrual", 20, "T1"),
                entry("return:R1:T1", "reversal", -5, "T1"),
                entry("return:R2:T1", "reversal", -3, "T1"),
                entry("accrue:T2", "accrual", 10, "T2"),
                entry("void:V3:T3", "reversal", -7, "T3"),
            ],
            at=datetime.now(UTC),
        )

        assert story.book.find_reversals(["T1", "T2", "T4"]) == {
            "T1": {"return:R1:T1": -5, "return:R2:T1": -3}
        }
        assert story.book.find_reversals([]) == {}

    def test_a_return_without_its_sale_at_the_hub_takes_nothing(self, story: Story) -> None:
        unknown = sale(7, line(1, unit_price="9.00"))

        story.flow.handle(story.arrive(member_return(8, unknown, "9.00")))

        assert story.entries() == [("bonus", 1000)]

    def test_a_sale_captured_offline_earns_when_it_arrives(self, story: Story) -> None:
        old = member_sale(1, "12.00").model_copy(
            update={"ended_at": datetime(2026, 11, 20, 9, tzinfo=UTC)}  # nine days on a till
        )

        story.flow.handle(story.arrive(old))

        assert story.entries() == [("bonus", 1000), ("accrual", 12)]


class TestPlatformMoves:
    def test_the_tick_reads_the_statement_at_most_every_interval_and_releases_holds_every_time(
        self, story: Story
    ) -> None:
        flow = LoyaltyOrchestrator(
            loyalty=story.loyalty,
            transactions=story.transactions,
            book=story.book,
            clock=story.now,
            statement_every=timedelta(days=400).total_seconds(),
        )
        flow.sweep()
        welcome = story.book.points_by_kind()
        hold = story.reserve(400, ttl=60)
        story.move_clock(timedelta(days=365, seconds=1))  # the welcome points expire

        flow.sweep()
        between, saga = story.book.points_by_kind(), story.book.find_redemption(hold)
        story.move_clock(timedelta(days=36))
        flow.sweep()

        assert welcome == between == {"default": {"bonus": 3000}}  # the expiries waited for a read
        assert saga is not None and saga.state is RedemptionState.EXPIRED  # the hold did not
        assert story.book.points_by_kind() == {"default": {"bonus": 3000, "expiry": -3000}}
        assert story.platform_outstanding() == 0
