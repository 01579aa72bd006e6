"""Posting is idempotent under redelivery, on both policies (a property over random traffic,
redeliveries and closer runs): whatever is handled twice, the reference ERP (its own process)
ends with one document per journal and the books of the transactions, once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import completed, incoming
from tests.integration.test_sim_erp import ErpProcess
from tests.integration.test_sim_erp import start as start_erp
from tests.integration.test_store_day_posting import balance, expected_balance
from tillflow.connectors.erp_http import HttpErp
from tillflow.flows.posting import PostingAccounts, postings_for
from tillflow.flows.store_day import StoreDayPoster, StorePolicy
from tillflow.ports import CloseState
from tillflow.sim.pos import PosTrafficGenerator, demo_stores, z_reports
from tillflow.storage.db import create_state_engine, sqlite_url
from tillflow.storage.migrate import upgrade_schema
from tillflow.storage.store_days import SQLStoreDays
from tillflow.storage.transactions import SQLTransactionStore

FIRST_DAY = date(2026, 6, 1)


@pytest.fixture(scope="module")
def erp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ErpProcess]:
    process = start_erp(tmp_path_factory.mktemp("erp"))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def days() -> Iterator[Iterator[date]]:
    """A fresh business day for every example: its books in the ERP are its own."""
    yield (FIRST_DAY + timedelta(days=n) for n in range(10_000))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    count=st.integers(20, 120),
    policy=st.sampled_from(
        [StorePolicy(), StorePolicy(policy="aggregated"), StorePolicy(policy="aggregated", per_register=True)]
    ),
    batch=st.integers(1, 50),
    again=st.sets(st.integers(0, 20), max_size=6),  # which batches are delivered twice
    late=st.integers(0, 10),  # how many of the last transactions arrive after the day close
)
def test_posting_twice_changes_nothing(
    erp: ErpProcess,
    days: Iterator[date],
    tmp_path_factory: pytest.TempPathFactory,
    seed: int,
    count: int,
    policy: StorePolicy,
    batch: int,
    again: set[int],
    late: int,
) -> None:
    day = next(days)
    txs = [tx for tx in PosTrafficGenerator(demo_stores(1), business_day=day, seed=seed).transactions(count)]
    late = min(late, len(txs) - 1)
    engine = create_state_engine(sqlite_url(Path(tmp_path_factory.mktemp("state")) / "state.db"))
    upgrade_schema(engine)
    connector = HttpErp(erp.url, timeout=10)
    store_days = SQLStoreDays(engine)
    transactions = SQLTransactionStore(engine)
    poster = StoreDayPoster(
        erp=connector,
        transactions=transactions,
        days=store_days,
        accounts=PostingAccounts(),
        policy_of=lambda _store: policy,
        max_lines=15,
    )
    posted_before = erp.state()["journals_posted"]
    try:
        on_time, after = txs[: len(txs) - late], txs[len(txs) - late :]
        events = [completed(tx, seq) for seq, tx in enumerate(txs, 1)]
        transactions.record_batch([incoming(tx) for tx in on_time], received_at=datetime.now(UTC))
        batches = [events[i : i + batch] for i in range(0, len(on_time), batch)]
        for n, chunk in enumerate(batches):
            for _ in range(2 if n in again else 1):
                poster.handle(chunk)
        [report] = z_reports(txs, closed_at=datetime.now(UTC))
        store_days.record_day_close(
            report, received_at=datetime.now(UTC) - timedelta(hours=1), grace=timedelta(0)
        )
        poster.close_days()
        poster.close_days()  # a closer run again finds nothing to do
        if after:
            transactions.record_batch([incoming(tx) for tx in after], received_at=datetime.now(UTC))
            late_events = events[len(on_time) :]
            poster.handle(late_events)
            poster.handle(late_events)  # redelivered

        assert balance(connector.trial_balance("S001", day)) == expected_balance(txs)
        journals = store_days.find_journals("S001", day)
        by_id = {tx.transaction_id: tx for tx in txs}
        moving = {  # the transactions with a journal of their own: those that move money
            tx.transaction_id
            for tx in txs
            if postings_for(by_id[tx.voided.transaction_id] if tx.voided else tx, PostingAccounts())
        }
        expected_documents = len(journals) if policy.aggregated else len(moving)
        assert erp.state()["journals_posted"] - posted_before == expected_documents
        if policy.aggregated:
            close = store_days.find_day_close("S001", day)
            assert close is not None and close.state is CloseState.POSTED
            assert sorted(t for j in journals for t in j.transaction_ids) == sorted(moving)
    finally:
        connector.close()
        engine.dispose()
