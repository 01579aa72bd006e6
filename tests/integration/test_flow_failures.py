"""A flow over the real log: a corrupt event goes to dead letters, the rest is applied once."""

from __future__ import annotations

from datetime import date

from sqlalchemy import Engine

from tillflow.bus.runner import ConsumerRunner, RetryPolicy
from tillflow.bus.sql import SQLEventLog
from tillflow.flows.inventory import FLOW, apply_inventory
from tillflow.model import CloudEvent, ItemType
from tillflow.model.events import TRANSACTION_COMPLETED, transaction_completed
from tillflow.ports import DeadLetterSelection
from tillflow.sim.pos import PosTrafficGenerator, demo_stores
from tillflow.storage.inventory import SQLInventoryLedger


def sales(n: int) -> list:  # type: ignore[type-arg]
    gen = PosTrafficGenerator(demo_stores(1), business_day=date(2026, 11, 29), seed=9, basket_size=2)
    return [tx for tx in gen.transactions(n * 2) if tx.kind.value == "sale"][:n]


class TestPoisonInTheLog:
    def test_a_corrupt_body_is_dead_lettered_and_the_rest_moves_stock(self, engine: Engine) -> None:
        log, ledger = SQLEventLog(engine), SQLInventoryLedger(engine)
        good = sales(3)
        events = [transaction_completed(tx, tx.model_dump_json().encode(), traceparent=None) for tx in good]
        corrupt = CloudEvent(
            id="S001:R01:2026-11-29:99999999",
            source="/stores/S001/registers/R01",
            type=TRANSACTION_COMPLETED,
            time=good[0].ended_at,
            partitionkey="S001",
            data=b'{"store_id": "S001", "lines": [',
        )
        log.append_events([events[0], corrupt, events[1], events[2]])
        runner = ConsumerRunner(log, FLOW, lambda b: apply_inventory(b, ledger=ledger), policy=RetryPolicy())

        runner.run_once()

        [dead] = log.list_dead_letters(group=FLOW)
        assert dead.event.event.id == corrupt.id and dead.attempts == 1
        assert "ValidationError" in dead.reason and "Invalid JSON" in dead.reason
        state = log.read_groups()[FLOW]
        assert (state.lag, state.pending, state.dead_letters) == (0, 0, 1)
        for tx in good:  # every good sale moved its stock exactly once
            line = tx.lines[0]
            if line.item_type is ItemType.STOCK:
                moved = sum(
                    x.quantity for x in tx.lines if x.sku == line.sku and x.item_type is ItemType.STOCK
                )
                assert ledger.find_movements([tx.transaction_id])[tx.transaction_id]
                assert moved > 0

        # replaying the dead letter after a "fix" still cannot decode it: back to dead letters
        assert (
            log.replay_dead_letters(DeadLetterSelection(group=FLOW), actor="ops", why="retry after fix") == 1
        )
        runner.run_once()
        [again] = log.list_dead_letters(group=FLOW)
        assert again.event.event.id == corrupt.id
        assert [a.action for a in log.list_audit()] == ["replay-dead-letters"]
