"""A worker killed with SIGKILL mid-batch: on restart every event is handled, every effect once.
The same story on the embedded SQL log and on NATS JetStream (fed by the outbox relay)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from tests.nats_server import nats_server
from tillflow.bootstrap import bootstrap
from tillflow.config import BusSettings, HubSettings, TillflowConfig, dump_config
from tillflow.flows.inventory import FLOW, apply_inventory
from tillflow.hub.ingest import ingest_records
from tillflow.model.events import register_source
from tillflow.services import Services
from tillflow.sim.pos import PosTrafficGenerator, demo_stores

STORES = demo_stores(3)


def hub_state(data_dir: Path, bus: BusSettings | None = None) -> tuple[Path, Services]:
    config = TillflowConfig(hub=HubSettings(data_dir=data_dir), bus=bus or BusSettings(), stores=STORES)
    data_dir.mkdir(parents=True)
    path = data_dir / "tillflow.yaml"
    path.write_text(dump_config(config))
    return path, bootstrap(config)


def stock(services: Services, skus: list[str]) -> dict[tuple[str, str], object]:
    return {
        (st.store_id, sku): services.inventory.read_position(st.store_id, sku)
        for st in STORES
        for sku in skus
    }


def movements(services: Services, ids: list[str]) -> int:
    return sum(len(found) for found in services.inventory.find_movements(ids).values())


def worker(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tillflow.cli", "hub", "--role", "worker", "--config", str(config)]
    )


def wait_for(probe, within: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not probe():
        assert time.monotonic() < deadline, "the worker made no progress"
        time.sleep(0.01)


@pytest.fixture(params=["sqlite", "jetstream"])
def bus(request: pytest.FixtureRequest) -> Iterator[BusSettings]:
    if request.param == "sqlite":
        yield BusSettings()
        return
    with nats_server() as server:
        yield BusSettings(kind="jetstream", servers=[server.url], stream="CRASHTEST")


class TestWorkerCrash:
    def test_sigkill_mid_batch_loses_nothing_and_doubles_nothing(
        self, tmp_path: Path, bus: BusSettings
    ) -> None:
        txs = PosTrafficGenerator(STORES, business_day=date(2026, 11, 29), seed=21).transactions(4000)
        records = [tx.model_dump(mode="json") for tx in txs]
        keys = [f"{register_source(tx.store_id, tx.register_id)} {tx.transaction_id}" for tx in txs]
        config, services = hub_state(tmp_path / "crashed", bus)
        _, oracle = hub_state(tmp_path / "oracle")
        try:
            for i in range(0, len(records), 500):
                ingest_records(records[i : i + 500], services.transactions, traceparent=None)
                ingest_records(records[i : i + 500], oracle.transactions, traceparent=None)

            def applied() -> int:
                return len(services.inventory.find_processed(FLOW, keys))

            first = worker(config)
            wait_for(lambda: applied() > 0)
            os.kill(first.pid, signal.SIGKILL)  # mid-run, most likely mid-batch
            first.wait()
            killed_at = applied()

            second = worker(config)
            try:
                wait_for(lambda: applied() == len(txs))
            finally:
                second.send_signal(signal.SIGTERM)
                second.wait(timeout=60)

            # the oracle: the same events applied once, in-process, with no crash
            while batch := oracle.event_log.fetch_batch(FLOW, limit=1000):
                apply_inventory(batch, ledger=oracle.inventory)
                oracle.event_log.ack_events(FLOW, batch)

            assert 0 < killed_at < len(txs)  # the crash really happened part-way
            assert second.returncode == 0  # SIGTERM: finish the batch, exit cleanly
            skus = [p.sku for p in PosTrafficGenerator(STORES, business_day=date(2026, 11, 29)).catalog()]
            ids = [tx.transaction_id for tx in txs]
            assert stock(services, skus) == stock(oracle, skus)
            assert movements(services, ids) == movements(oracle, ids) > len(txs)
        finally:
            services.close()
            oracle.close()
