"""The inventory flow and the gateway's judgement of a batch, with plain values and a fake ledger."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal

import pytest

from tests.builders import (
    STORE,
    cloud_event,
    completed,
    customer_return,
    exchange,
    incoming,
    line,
    post_void,
    returned,
    sale,
    weighed,
)
from tillflow.flows.ingest import judge_batch
from tillflow.flows.inventory import (
    FLOW,
    apply_inventory,
    event_key,
    movements_for,
    plan_inventory,
    reversal_of,
)
from tillflow.model import (
    InventoryMovement,
    ItemType,
    LoggedEvent,
    MovementReason,
    Transaction,
    UnitOfMeasure,
)
from tillflow.model.events import LOYALTY_POINTS_ACCRUED
from tillflow.ports import InventoryPlan, Verdict


class FakeInventoryLedger:
    """The InventoryLedger port in dicts, as strict as the SQL one about recording a cause twice."""

    def __init__(self) -> None:
        self.processed: set[tuple[str, str]] = set()
        self.movements: dict[tuple[str, int, MovementReason], InventoryMovement] = {}
        self.voids: dict[str, str] = {}
        self.positions: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        self.hops: list[tuple[str, str, str | None]] = []

    def find_processed(self, flow: str, event_keys: Sequence[str]) -> set[str]:
        return {k for k in event_keys if (flow, k) in self.processed}

    def find_movements(self, transaction_ids: Sequence[str]) -> dict[str, list[InventoryMovement]]:
        found: dict[str, list[InventoryMovement]] = defaultdict(list)
        for m in self.movements.values():
            if m.transaction_id in transaction_ids and m.reason is not MovementReason.VOID:
                found[m.transaction_id].append(m)
        return dict(found)

    def find_voided(self, transaction_ids: Sequence[str]) -> set[str]:
        return {t for t in transaction_ids if t in self.voids}

    def record_movements(self, plan: InventoryPlan, *, flow: str) -> int:
        for key in plan.event_keys:
            if (flow, key) in self.processed:
                raise AssertionError(f"event {key} recorded twice")
            self.processed.add((flow, key))
        for m in plan.movements:
            cause = (m.transaction_id, m.line_no, m.reason)
            if cause in self.movements:
                raise AssertionError(f"movement {cause} recorded twice")
            self.movements[cause] = m
            self.positions[(m.store_id, m.sku)] += m.quantity
        for voided, void in plan.voids:
            self.voids.setdefault(voided, void)
        self.hops.extend(plan.hops)
        return len(plan.movements)

    def read_position(self, store_id: str, sku: str) -> Decimal | None:
        return self.positions.get((store_id, sku))


@pytest.fixture
def ledger() -> FakeInventoryLedger:
    return FakeInventoryLedger()


def events_of(*txs: Transaction, first_seq: int = 1) -> list[LoggedEvent]:
    """The completed events of `txs` as the log hands them out, from seq `first_seq` on."""
    return [completed(tx, seq) for seq, tx in enumerate(txs, first_seq)]


def quantities(movements: Sequence[InventoryMovement]) -> list[tuple[str, Decimal, MovementReason]]:
    return [(m.sku, m.quantity, m.reason) for m in movements]


class TestMovementsOfATransaction:
    def test_a_sold_line_takes_its_quantity_out(self) -> None:
        tx = sale(7, line(1, "GRO-0001", quantity="3"))

        [movement] = movements_for(tx)

        assert movement == InventoryMovement(
            store_id=STORE,
            sku="GRO-0001",
            quantity=Decimal(-3),
            uom=UnitOfMeasure.EACH,
            reason=MovementReason.SALE,
            transaction_id=tx.transaction_id,
            line_no=1,
            occurred_at=tx.ended_at,
        )

    def test_a_weighed_line_moves_its_exact_weight(self) -> None:
        [movement] = movements_for(sale(1, weighed(1, "PRO-0001", "1.235")))

        assert movement.quantity == Decimal("-1.235")
        assert movement.uom is UnitOfMeasure.KILOGRAM

    def test_a_restocked_return_brings_its_quantity_back(self) -> None:
        movements = movements_for(customer_return(1, returned(1, "APP-0001", quantity="2")))

        assert quantities(movements) == [("APP-0001", Decimal(2), MovementReason.RETURN)]

    def test_a_damaged_return_moves_nothing(self) -> None:
        assert movements_for(customer_return(1, returned(1, "APP-0001", restock=False))) == []

    def test_non_stock_and_service_lines_move_nothing(self) -> None:
        tx = sale(
            1,
            line(1, "NSM-0001", item_type=ItemType.NON_STOCK),
            line(2, "SVC-0001", item_type=ItemType.SERVICE),
            line(3, "GRO-0001"),
        )

        assert quantities(movements_for(tx)) == [("GRO-0001", Decimal(-1), MovementReason.SALE)]

    def test_an_exchange_moves_both_ways(self) -> None:
        tx = exchange(1, returned(1, "APP-0004"), line(2, "APP-0003"))

        assert quantities(movements_for(tx)) == [
            ("APP-0004", Decimal(1), MovementReason.RETURN),
            ("APP-0003", Decimal(-1), MovementReason.SALE),
        ]

    def test_a_post_void_has_no_movements_of_its_own(self) -> None:
        assert movements_for(post_void(2, sale(1))) == []


class TestReversal:
    def test_a_reversal_undoes_each_movement_at_the_time_of_the_void(self) -> None:
        original = sale(1, line(1, "GRO-0001", quantity="2"), weighed(2, "PRO-0001", "0.765"))
        void = post_void(9, original)
        moved = movements_for(original)

        reversal = reversal_of(moved, void)

        assert [(m.sku, m.quantity) for m in reversal] == [
            ("GRO-0001", Decimal(2)),
            ("PRO-0001", Decimal("0.765")),
        ]
        assert {m.reason for m in reversal} == {MovementReason.VOID}
        assert {m.occurred_at for m in reversal} == {void.ended_at}
        assert [(m.transaction_id, m.line_no) for m in reversal] == [
            (m.transaction_id, m.line_no) for m in moved
        ]
        assert sum(m.quantity for m in [*moved, *reversal]) == 0

    def test_reversing_nothing_is_nothing(self) -> None:
        assert reversal_of([], post_void(2, sale(1))) == []


class TestPlanningABatch:
    def test_a_sale_is_planned_with_its_movements_event_and_trace_hop(
        self, ledger: FakeInventoryLedger
    ) -> None:
        tx = sale(1, line(1, "GRO-0001"), line(2, "BAK-0001"))
        events = events_of(tx)

        plan = plan_inventory(events, ledger=ledger)

        assert plan.event_keys == (event_key(events[0]),)
        assert plan.movements == tuple(movements_for(tx))
        assert plan.voids == ()
        assert plan.hops == ((tx.transaction_id, "inventory.applied", "2 movements"),)

    def test_events_already_applied_are_left_out(self, ledger: FakeInventoryLedger) -> None:
        first, second = sale(1), sale(2, line(1, "BAK-0001"))
        apply_inventory(events_of(first), ledger=ledger)

        plan = plan_inventory(events_of(first, second), ledger=ledger)

        assert plan.event_keys == (event_key(events_of(first, second)[1]),)
        assert quantities(plan.movements) == [("BAK-0001", Decimal(-1), MovementReason.SALE)]

    def test_other_event_types_are_marked_done_but_move_nothing(self, ledger: FakeInventoryLedger) -> None:
        other = LoggedEvent(seq=1, event=cloud_event(1, type=LOYALTY_POINTS_ACCRUED))

        plan = plan_inventory([other], ledger=ledger)

        assert plan.event_keys == (event_key(other),)
        assert plan.movements == ()
        assert plan.hops == ()

    def test_a_post_void_reverses_what_the_ledger_recorded_for_the_original(
        self, ledger: FakeInventoryLedger
    ) -> None:
        original = sale(1, line(1, "GRO-0001", quantity="2"))
        apply_inventory(events_of(original), ledger=ledger)
        void = post_void(2, original)

        plan = plan_inventory(events_of(void, first_seq=2), ledger=ledger)

        assert quantities(plan.movements) == [("GRO-0001", Decimal(2), MovementReason.VOID)]
        assert plan.voids == ((original.transaction_id, void.transaction_id),)
        assert plan.hops == (
            (void.transaction_id, "inventory.applied", f"1 movements reversed for {original.transaction_id}"),
        )

    def test_a_void_before_its_original_is_remembered_and_the_original_then_moves_nothing(
        self, ledger: FakeInventoryLedger
    ) -> None:
        original = sale(1, line(1, "GRO-0001", quantity="2"))
        void_plan = plan_inventory(events_of(post_void(2, original)), ledger=ledger)
        ledger.record_movements(void_plan, flow=FLOW)

        late = plan_inventory(events_of(original, first_seq=2), ledger=ledger)

        assert void_plan.movements == ()
        assert void_plan.voids == ((original.transaction_id, post_void(2, original).transaction_id),)
        assert late.movements == ()
        assert late.hops == (
            (original.transaction_id, "inventory.applied", "no movement: already post-voided"),
        )

    def test_an_original_and_its_void_in_one_batch_cancel_out(self, ledger: FakeInventoryLedger) -> None:
        original = sale(1, line(1, "GRO-0001", quantity="2"), weighed(2, "PRO-0002", "1.235"))

        plan = plan_inventory(events_of(original, post_void(2, original)), ledger=ledger)

        totals: dict[str, Decimal] = defaultdict(Decimal)
        for m in plan.movements:
            totals[m.sku] += m.quantity
        assert dict(totals) == {"GRO-0001": Decimal(0), "PRO-0002": Decimal(0)}

    def test_a_void_ahead_of_its_original_in_one_batch_leaves_the_original_without_effect(
        self, ledger: FakeInventoryLedger
    ) -> None:
        original = sale(1, line(1, "GRO-0001"))

        plan = plan_inventory(events_of(post_void(2, original), original), ledger=ledger)

        assert plan.movements == ()

    def test_a_second_post_void_of_the_same_transaction_reverses_nothing(
        self, ledger: FakeInventoryLedger
    ) -> None:
        original = sale(1, line(1, "GRO-0001", quantity="2"))
        apply_inventory(events_of(original, post_void(2, original)), ledger=ledger)

        again = plan_inventory(events_of(post_void(3, original), first_seq=3), ledger=ledger)

        assert again.movements == ()


class TestApplyingABatch:
    def test_applying_records_the_plan_once(self, ledger: FakeInventoryLedger) -> None:
        events = events_of(
            sale(1, line(1, "GRO-0001", quantity="2")), sale(2, weighed(1, "PRO-0001", "0.765"))
        )

        assert apply_inventory(events, ledger=ledger) == 2
        assert apply_inventory(events, ledger=ledger) == 0

        assert ledger.read_position(STORE, "GRO-0001") == Decimal(-2)
        assert ledger.read_position(STORE, "PRO-0001") == Decimal("-0.765")


class TestJudgingABatch:
    def test_an_unknown_transaction_is_accepted(self) -> None:
        record = incoming(sale(1))

        judgement = judge_batch([record], {})

        assert judgement.verdicts == [Verdict.ACCEPTED]
        assert judgement.new == [record]
        assert judgement.conflicts == []

    def test_a_known_transaction_with_the_same_digest_is_a_duplicate(self) -> None:
        record = incoming(sale(1))

        judgement = judge_batch([record], {record.transaction.transaction_id: record.digest})

        assert judgement.verdicts == [Verdict.DUPLICATE]
        assert judgement.new == []
        assert judgement.conflicts == []

    def test_a_known_transaction_with_another_digest_is_a_conflict(self) -> None:
        original, rewritten = incoming(sale(1)), incoming(sale(1, line(1, "GRO-0002")))

        judgement = judge_batch([rewritten], {original.transaction.transaction_id: original.digest})

        assert judgement.verdicts == [Verdict.CONFLICT]
        assert judgement.new == []
        assert judgement.conflicts == [rewritten]

    def test_a_repeat_inside_the_batch_is_a_duplicate_of_the_first(self) -> None:
        record = incoming(sale(1))

        judgement = judge_batch([record, record], {})

        assert judgement.verdicts == [Verdict.ACCEPTED, Verdict.DUPLICATE]
        assert judgement.new == [record]

    def test_other_content_inside_the_batch_conflicts_with_the_first(self) -> None:
        first, rewritten = incoming(sale(1)), incoming(sale(1, line(1, "GRO-0002")))

        judgement = judge_batch([first, rewritten, first], {})

        assert judgement.verdicts == [Verdict.ACCEPTED, Verdict.CONFLICT, Verdict.DUPLICATE]
        assert judgement.new == [first]
        assert judgement.conflicts == [rewritten]

    def test_verdicts_follow_the_batch_order(self) -> None:
        known, fresh = incoming(sale(1)), incoming(sale(2))
        clash = incoming(sale(1, line(1, "GRO-0002")))

        judgement = judge_batch([fresh, clash, known], {known.transaction.transaction_id: known.digest})

        assert judgement.verdicts == [Verdict.ACCEPTED, Verdict.CONFLICT, Verdict.DUPLICATE]

    def test_the_known_digests_are_left_as_they_were(self) -> None:
        known = {"S001:R01:2026-11-29:00000001": "digest"}

        judge_batch([incoming(sale(2)), incoming(sale(3))], known)

        assert known == {"S001:R01:2026-11-29:00000001": "digest"}
