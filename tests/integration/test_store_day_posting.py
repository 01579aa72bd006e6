"""The `aggregated` posting policy of a real hub state against the reference ERP (its own
process): a store-day waits for its day close, posts once complete, flags its gap after the
grace, takes a late sale as an adjustment without reopening the day, survives the ERP being
away while it closes, and names the ERP's refusal; line and aggregated give the same books."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.integration.test_downstream_faults import Hub, erp_connector, hubs, processes, traffic
from tests.integration.test_sim_erp import ErpProcess
from tests.integration.test_sim_erp import start as start_erp
from tillflow.flows.posting import PostingAccounts, journal_for, void_journal
from tillflow.model import DayClose, Transaction, TransactionKind
from tillflow.ports import CloseState, DeadLetterSelection, JournalState, TrialBalanceLine
from tillflow.reconciling import reconcile
from tillflow.sim.pos import z_reports

__all__ = ["hubs", "processes"]  # fixtures

DAY = date(2026, 11, 29)


def aggregated_hub(
    tmp: Path, erp: ErpProcess, *, grace: float = 60, per_register: bool = False, **conn: Any
) -> Hub:
    policy = {"policy": "aggregated", "per_register": per_register}
    return Hub(
        tmp,
        {"erp": erp_connector(erp, **conn)},
        posting={"default": policy, "day_close_grace": grace, "max_lines": 12},
    )


def close_day(hub: Hub, report: DayClose, grace: float = 60) -> None:
    hub.services.store_days.record_day_close(
        report, received_at=datetime.now(UTC), grace=timedelta(seconds=grace)
    )


def wait_for_close(hub: Hub, store_id: str, *, state: CloseState, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = hub.services.store_days.find_day_close(store_id, DAY)
        if found is not None and found.state is state:
            return
        time.sleep(0.1)
    raise AssertionError(
        f"day close of {store_id} not {state}: {hub.services.store_days.find_day_close(store_id, DAY)}"
    )


def expected_balance(txs: list[Transaction]) -> dict[tuple[str, str], Decimal]:
    """Debits less credits per account of the line journals of `txs` (the books both policies
    must end with)."""
    accounts = PostingAccounts()
    by_id = {tx.transaction_id: tx for tx in txs}
    net: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for tx in txs:
        if tx.kind is TransactionKind.VOID:
            assert tx.voided is not None
            original = journal_for(by_id[tx.voided.transaction_id], accounts)
            journal = None if original is None else void_journal(tx, original, accounts)
        else:
            journal = journal_for(tx, accounts)
        for line in journal.lines if journal else ():
            net[(line.account, line.currency)] += line.debit - line.credit
    return {k: v for k, v in net.items() if v}


def balance(lines: list[TrialBalanceLine]) -> dict[tuple[str, str], Decimal]:
    return {(b.account, b.currency): b.debit - b.credit for b in lines if b.debit - b.credit}


def day_traffic(n: int, store: str = "S001") -> list[Transaction]:
    return [tx for tx in traffic(n, stores=2) if tx.store_id == store]


class TestDayClose:
    def test_a_day_waits_for_its_close_then_posts_once_complete(
        self, tmp_path: Path, hubs: list[Hub], processes: list[Any]
    ) -> None:
        erp = start_erp(tmp_path)
        processes.append(erp)
        hub = aggregated_hub(tmp_path, erp)
        hubs.append(hub)
        txs = day_traffic(400)
        hub.accept(txs)
        hub.run("posting")
        hub.settled("posting", timeout=60)

        assert erp.state()["journals_posted"] == 0  # the day is open: nothing posted yet
        [report] = z_reports(txs, closed_at=datetime.now(UTC))
        close_day(hub, report)
        wait_for_close(hub, "S001", state=CloseState.POSTED)

        journals = hub.services.store_days.find_journals("S001", DAY)
        assert len(journals) > 1  # split: 12 lines a journal
        assert all(j.state is JournalState.POSTED and j.document_number for j in journals)
        assert sorted(t for j in journals for t in j.transaction_ids) == sorted(
            tx.transaction_id for tx in txs
        )
        assert erp.state()["journals_posted"] == len(journals)
        erp_books = hub.services.erp().trial_balance("S001", DAY)  # type: ignore[union-attr]
        assert balance(erp_books) == expected_balance(txs)
        [(rec, state)] = reconcile(hub.services, DAY, "S001")
        assert rec.status == "matched", rec.differences
        assert (state.posted, state.pending, state.failed) == (len(txs), 0, 0)

    def test_a_missing_sale_is_flagged_after_the_grace_and_posted_late_as_an_adjustment(
        self, tmp_path: Path, hubs: list[Hub], processes: list[Any]
    ) -> None:
        erp = start_erp(tmp_path)
        processes.append(erp)
        hub = aggregated_hub(tmp_path, erp, grace=1.5)
        hubs.append(hub)
        txs = day_traffic(200)
        voided = {tx.voided.transaction_id for tx in txs if tx.voided is not None}
        late = next(
            tx for tx in reversed(txs) if tx.kind is TransactionKind.SALE and tx.transaction_id not in voided
        )
        hub.accept([tx for tx in txs if tx is not late])
        [report] = z_reports(txs, closed_at=datetime.now(UTC))
        close_day(hub, report, grace=1.5)
        hub.run("posting")

        wait_for_close(hub, "S001", state=CloseState.POSTED)
        record = hub.services.store_days.find_day_close("S001", DAY)
        assert record is not None and record.gap == (late.transaction_id,)
        [(rec, _)] = reconcile(hub.services, DAY, "S001")
        assert rec.status == "mismatched"
        assert any(late.transaction_id in d for d in rec.differences), rec.differences
        day_journals = {
            j.journal_id: j.document_number for j in hub.services.store_days.find_journals("S001", DAY)
        }

        hub.accept([late])  # the store's link comes back
        hub.settled("posting", timeout=60)

        journals = hub.services.store_days.find_journals("S001", DAY)
        adjustments = [j for j in journals if j.adjustment]
        assert [(j.journal_id, j.transaction_ids, j.state) for j in adjustments] == [
            ("adj.S001.2026-11-29.1.1", (late.transaction_id,), JournalState.POSTED)
        ]
        # the day journal was not reopened: same journals, same document numbers
        assert {j.journal_id: j.document_number for j in journals if not j.adjustment} == day_journals
        erp_books = hub.services.erp().trial_balance("S001", DAY)  # type: ignore[union-attr]
        assert balance(erp_books) == expected_balance(txs)
        [(rec, state)] = reconcile(hub.services, DAY, "S001")
        assert rec.status == "matched", rec.differences
        assert state.posted == len(txs)

    def test_the_erp_away_while_the_day_closes_posts_the_recorded_journals_once_it_is_back(
        self, tmp_path: Path, hubs: list[Hub], processes: list[Any]
    ) -> None:
        erp = start_erp(tmp_path)
        processes.append(erp)
        hub = aggregated_hub(tmp_path, erp, breaker={"failure_threshold": 2, "open_seconds": 1})
        hubs.append(hub)
        txs = day_traffic(200)
        hub.accept(txs)
        hub.run("posting")
        hub.settled("posting", timeout=60)
        erp.stop()
        [report] = z_reports(txs, closed_at=datetime.now(UTC))
        close_day(hub, report)
        deadline = time.monotonic() + 30
        while not hub.services.store_days.find_journals("S001", DAY) and time.monotonic() < deadline:
            time.sleep(0.1)
        recorded = hub.services.store_days.find_journals("S001", DAY)
        assert recorded and all(j.state is JournalState.PENDING for j in recorded)
        assert hub.services.store_days.find_day_close("S001", DAY).state is CloseState.WAITING  # type: ignore[union-attr]

        erp.start()  # same database, same port
        wait_for_close(hub, "S001", state=CloseState.POSTED)
        journals = hub.services.store_days.find_journals("S001", DAY)
        assert [j.journal_id for j in journals] == [j.journal_id for j in recorded]
        assert all(j.state is JournalState.POSTED for j in journals)
        assert erp.state()["journals_posted"] == len(journals)
        assert balance(hub.services.erp().trial_balance("S001", DAY)) == expected_balance(txs)  # type: ignore[union-attr]

    def test_a_closed_erp_period_fails_the_day_with_the_erps_reason_until_retried(
        self, tmp_path: Path, hubs: list[Hub], processes: list[Any]
    ) -> None:
        erp = start_erp(tmp_path, closed_periods=["2026-11"])
        processes.append(erp)
        hub = aggregated_hub(tmp_path, erp)
        hubs.append(hub)
        txs = day_traffic(100)
        voided = {tx.voided.transaction_id for tx in txs if tx.voided is not None}
        late = next(
            tx for tx in reversed(txs) if tx.kind is TransactionKind.SALE and tx.transaction_id not in voided
        )
        hub.accept([tx for tx in txs if tx is not late])
        [report] = z_reports(txs, closed_at=datetime.now(UTC))
        close_day(hub, report, grace=0.5)
        hub.run("posting")

        wait_for_close(hub, "S001", state=CloseState.FAILED)
        hub.settled("posting", timeout=60)
        record = hub.services.store_days.find_day_close("S001", DAY)
        assert record is not None and record.reason is not None and "closed" in record.reason
        assert all(j.state is JournalState.FAILED for j in hub.services.store_days.find_journals("S001", DAY))
        assert erp.state()["journals_posted"] == 0
        # the day's failure is the day close's, not one dead letter per transaction
        assert hub.services.event_log.list_dead_letters(group="posting") == []
        [(rec, state)] = reconcile(hub.services, DAY, "S001")
        assert rec.status == "mismatched"
        assert state.failed == len(txs) - 1
        assert any("refused" in d and "closed" in d for d in rec.differences), rec.differences

        # the late sale's adjustment is refused too: its event is dead-lettered with the reason
        hub.accept([late])
        hub.settled("posting", timeout=60)
        [dead] = hub.services.event_log.list_dead_letters(group="posting")
        assert dead.event.event.subject == late.transaction_id and "closed" in dead.reason

        # the controller reopens the period; the operator retries the day and replays the sale
        assert erp.http.put("/admin/periods/2026-11", json={"status": "open"}).status_code == 200
        day_journals = [j for j in hub.services.store_days.find_journals("S001", DAY) if not j.adjustment]
        assert hub.services.store_days.retry_failed("S001", DAY, [j.journal_id for j in day_journals]) == len(
            day_journals
        )
        wait_for_close(hub, "S001", state=CloseState.POSTED)
        assert (
            hub.services.event_log.replay_dead_letters(
                DeadLetterSelection(group="posting"), actor="t", why="t"
            )
            == 1
        )
        hub.settled("posting", timeout=60)
        assert hub.services.event_log.list_dead_letters(group="posting") == []
        adjustments = [j for j in hub.services.store_days.find_journals("S001", DAY) if j.adjustment]
        assert [(j.transaction_ids, j.state) for j in adjustments] == [
            ((late.transaction_id,), JournalState.POSTED)
        ]
        assert balance(hub.services.erp().trial_balance("S001", DAY)) == expected_balance(txs)  # type: ignore[union-attr]
        [(rec, state)] = reconcile(hub.services, DAY, "S001")
        assert rec.status == "matched", rec.differences

    def test_a_transaction_no_journal_can_carry_fails_its_day_with_the_reason(
        self, tmp_path: Path, hubs: list[Hub], processes: list[Any]
    ) -> None:
        erp = start_erp(tmp_path)
        processes.append(erp)
        hub = Hub(
            tmp_path,
            {"erp": erp_connector(erp)},
            posting={"default": {"policy": "aggregated"}, "max_lines": 2},  # no sale fits in 2 lines
        )
        hubs.append(hub)
        txs = day_traffic(20)
        hub.accept(txs)
        close_day(hub, z_reports(txs, closed_at=datetime.now(UTC))[0])
        hub.run("posting")

        wait_for_close(hub, "S001", state=CloseState.FAILED)
        record = hub.services.store_days.find_day_close("S001", DAY)
        assert record is not None and record.reason is not None and "the ERP takes 2" in record.reason
        assert erp.state()["journals_posted"] == 0


class TestBothPolicies:
    def test_line_and_aggregated_per_register_post_the_same_books(
        self, tmp_path: Path, hubs: list[Hub], processes: list[Any]
    ) -> None:
        txs = day_traffic(300)
        books = []
        for policy in ("line", "aggregated"):
            (tmp_path / policy).mkdir()
            erp = start_erp(tmp_path / policy)
            processes.append(erp)
            hub = Hub(
                tmp_path / policy,
                {"erp": erp_connector(erp)},
                posting={"default": {"policy": policy, "per_register": True}, "max_lines": 60},
            )
            hubs.append(hub)
            hub.accept(txs)
            [report] = z_reports(txs, closed_at=datetime.now(UTC))
            close_day(hub, report)
            hub.run("posting")
            hub.settled("posting", timeout=60)
            wait_for_close(hub, "S001", state=CloseState.POSTED)
            books.append(balance(hub.services.erp().trial_balance("S001", DAY)))  # type: ignore[union-attr]
            [(rec, _)] = reconcile(hub.services, DAY, "S001")
            assert rec.status == "matched", (policy, rec.differences)
        line_books, day_books = books
        assert line_books == day_books == expected_balance(txs)
