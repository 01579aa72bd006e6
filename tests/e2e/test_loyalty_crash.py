"""A worker killed with SIGKILL in the middle of the loyalty flow's batches: on restart, every
member sale has earned exactly once, every points tender spent its hold exactly once, and the
hub's points ledger equals the platform's outstanding points. On the embedded SQL log and on
NATS JetStream (fed by the outbox relay), against the reference loyalty platform (a process)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_worker_crash import STORES, wait_for, worker
from tests.integration.test_sim_loyalty import LoyaltyProcess
from tests.nats_server import nats_server
from tillflow.bootstrap import bootstrap
from tillflow.config import BusSettings, HubSettings, TillflowConfig, dump_config
from tillflow.connectors.settings import ConnectorSettings, HttpConnectorSettings
from tillflow.errors import DownstreamRejectedError
from tillflow.flows.loyalty import FLOW, Reservation, accrual_of, read_statement, reserve_points
from tillflow.hub.ingest import ingest_records
from tillflow.model import TenderKind, TransactionKind
from tillflow.ports import RedemptionState
from tillflow.sim.loyalty import LoyaltySimSettings
from tillflow.sim.pos import PosTrafficGenerator

MEMBERS = [f"M{i:04d}" for i in range(1, 101)]  # the platform's seeded members, 1,000 points each


@pytest.fixture(params=["sqlite", "jetstream"])
def bus(request: pytest.FixtureRequest) -> Iterator[BusSettings]:
    if request.param == "sqlite":
        yield BusSettings()
        return
    with nats_server() as server:
        yield BusSettings(kind="jetstream", servers=[server.url], stream="LOYALTYCRASH")


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[LoyaltyProcess]:
    process = LoyaltyProcess(tmp_path / "loyalty.db", LoyaltySimSettings())
    try:
        yield process
    finally:
        process.stop()


def test_sigkill_mid_batch_never_doubles_points(
    tmp_path: Path, bus: BusSettings, platform: LoyaltyProcess
) -> None:
    data_dir = tmp_path / "hub"
    data_dir.mkdir()
    config = TillflowConfig(
        hub=HubSettings(data_dir=data_dir),
        bus=bus,
        stores=STORES,
        connectors=ConnectorSettings(loyalty=HttpConnectorSettings(url=platform.url)),
    )
    config_path = data_dir / "tillflow.yaml"
    config_path.write_text(dump_config(config))
    services = bootstrap(config)
    loyalty = services.loyalty()
    assert loyalty is not None
    holds: list[str] = []

    def reserve(store_id: str, member_id: str, points: int) -> str | None:
        try:
            saga, _ = reserve_points(
                Reservation(store_id, member_id, "default", points, timedelta(hours=1)),
                request_key=f"{store_id}:checkout-{len(holds)}-{member_id}",
                loyalty=loyalty,
                book=services.loyalty_book,
                now=datetime.now(UTC),
            )
        except DownstreamRejectedError:  # not enough points: the customer pays another way
            return None
        holds.append(saga.hold_id)
        return saga.hold_id

    try:
        gen = PosTrafficGenerator(
            STORES, business_day=date(2026, 11, 29), seed=5, members=MEMBERS, reserve=reserve
        )
        txs = gen.transactions(3000)
        records = [tx.model_dump(mode="json") for tx in txs]
        for i in range(0, len(records), 500):
            ingest_records(records[i : i + 500], services.transactions, traceparent=None)

        def handled() -> int:
            state = services.event_log.read_groups().get(FLOW)
            return 0 if state is None else state.position

        first = worker(config_path)
        wait_for(lambda: handled() > 0)
        os.kill(first.pid, signal.SIGKILL)  # mid-run, most likely mid-batch
        first.wait()
        killed_at = handled()

        second = worker(config_path)
        try:
            wait_for(lambda: (s := services.event_log.read_groups().get(FLOW)) is not None and s.lag == 0)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=60)

        with httpx.Client(base_url=platform.url, timeout=30) as admin:
            state = admin.get("/admin/state").json()
        read_statement("default", loyalty=loyalty, book=services.loyalty_book, now=datetime.now(UTC))
        ledger = services.loyalty_book.points_by_kind()["default"]
        earning = {tx.transaction_id for tx in txs if tx.kind is not TransactionKind.VOID and accrual_of(tx)}
        tendered = [
            (t.reference, t.points) for tx in txs for t in tx.tenders if t.kind is TenderKind.LOYALTY_POINTS
        ]
        sagas = services.loyalty_book.find_redemptions(holds)
        group = services.event_log.read_groups()[FLOW]

        assert 0 < killed_at < len(txs)  # the crash really happened part-way
        assert second.returncode == 0
        assert (group.dead_letters, group.pending) == (0, 0)
        assert state["accruals"] == len(earning)  # each earning sale once, whatever was redelivered
        assert holds and len(tendered) == len(holds)
        assert {s.state for s in sagas.values()} <= {RedemptionState.COMMITTED, RedemptionState.REFUNDED}
        assert state["holds_committed"] + state["holds_refunded"] == len(holds)
        assert state["points_redeemed"] == -ledger["redemption"] == sum(p or 0 for _, p in tendered)
        assert sum(ledger.values()) == state["outstanding"]
    finally:
        services.close()
