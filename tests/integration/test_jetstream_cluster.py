"""A real three-node NATS cluster with an R3 stream: a node dies while events are published and
consumed; nothing is lost and no effect is applied twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.nats_server import NatsServer, nats_server
from tests.servers import free_port
from tillflow.bus.jetstream import JetStreamEventLog
from tillflow.bus.runner import ConsumerRunner
from tillflow.errors import EventLogError
from tillflow.flows.inventory import FLOW, apply_inventory
from tillflow.model import ItemType, Transaction
from tillflow.model.events import transaction_completed
from tillflow.sim.pos import PosTrafficGenerator, demo_stores
from tillflow.storage.db import create_state_engine, sqlite_url
from tillflow.storage.inventory import SQLInventoryLedger
from tillflow.storage.migrate import upgrade_schema


@pytest.fixture
def cluster() -> Iterator[list[NatsServer]]:
    routes_ports = [free_port() for _ in range(3)]
    routes = ",".join(f"nats://127.0.0.1:{p}" for p in routes_ports)
    with ExitStack() as stack:
        nodes = [
            stack.enter_context(
                nats_server(
                    "-n",
                    f"node{i}",
                    "--cluster_name",
                    "tillflow",
                    "--cluster",
                    f"nats://127.0.0.1:{port}",
                    "--routes",
                    routes,
                )
            )
            for i, port in enumerate(routes_ports)
        ]
        yield nodes


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Engine]:
    engine = create_state_engine(sqlite_url(tmp_path / "state.db"))
    upgrade_schema(engine)
    yield engine
    engine.dispose()


def open_log(nodes: list[NatsServer], engine: Engine) -> JetStreamEventLog:
    """The R3 stream, once the cluster has elected its JetStream leader."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return JetStreamEventLog([n.url for n in nodes], engine, stream="CLUSTER", replicas=3)
        except EventLogError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def sales(n: int) -> list[Transaction]:
    gen = PosTrafficGenerator(demo_stores(2), business_day=date(2026, 11, 29), seed=31)
    return [tx for tx in gen.transactions(n * 2) if tx.kind.value == "sale"][:n]


class TestClusterNodeLoss:
    def test_a_node_dies_mid_stream_and_every_sale_moves_stock_exactly_once(
        self, cluster: list[NatsServer], state: Engine
    ) -> None:
        txs = sales(400)
        events = [transaction_completed(tx, tx.model_dump_json().encode(), traceparent=None) for tx in txs]
        publisher_log, consumer_log = open_log(cluster, state), open_log(cluster, state)
        ledger = SQLInventoryLedger(state)
        runner = ConsumerRunner(
            consumer_log, FLOW, lambda b: apply_inventory(b, ledger=ledger), max_backoff=0.5
        )
        stop = threading.Event()
        consumer = runner.start(stop)
        try:
            published = 0
            for i in range(0, len(events), 20):
                while True:  # the producer retries a batch the cluster could not take
                    try:
                        publisher_log.append_events(events[i : i + 20])
                        break
                    except EventLogError:
                        time.sleep(0.2)
                published += 20
                if published == 140:
                    cluster[0].process.kill()  # a node dies, no goodbye
            deadline = time.monotonic() + 120
            ids = [tx.transaction_id for tx in txs]
            while len(ledger.find_processed(FLOW, [f"{e.source} {e.id}" for e in events])) < len(events):
                assert time.monotonic() < deadline, "the flow did not catch up after the node loss"
                time.sleep(0.2)
        finally:
            stop.set()
            runner.wake.set()
            consumer.join(timeout=30)
            publisher_log.close()
            consumer_log.close()

        moved = ledger.find_movements(ids)
        for tx in txs:  # every stock line moved once: nothing lost, nothing doubled
            stock = sorted(line.line_no for line in tx.lines if line.item_type is ItemType.STOCK)
            assert sorted(m.line_no for m in moved.get(tx.transaction_id, [])) == stock
