"""Goods movements to the reference ERP (its own process) per store-day: nothing before the
day close, one batch once it is due, a late movement in a second batch, the ERP away while the
day closes and posted once it is back, nothing posted twice; the ERP's stock ends as the hub's."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.builders import line, sale
from tests.integration.test_downstream_faults import Hub, erp_connector, hubs, processes, traffic
from tests.integration.test_sim_erp import ErpProcess
from tests.integration.test_sim_erp import start as start_erp
from tests.servers import ServiceProcess
from tillflow.model import Transaction
from tillflow.ports import BatchState, GoodsBatch
from tillflow.sim.pos import z_reports

__all__ = ["hubs", "processes"]  # fixtures

STORE = "S001"


def goods_hub(tmp: Path, erp: ErpProcess) -> Hub:
    breaker = {"failure_threshold": 3, "open_seconds": 1}
    return Hub(tmp, {"erp": erp_connector(erp, breaker=breaker)}, inventory={"post_every": 0.1})


def close_day(hub: Hub, txs: list[Transaction]) -> None:
    [report] = z_reports(txs, closed_at=datetime.now(UTC))
    hub.services.store_days.record_day_close(
        report, received_at=datetime.now(UTC), grace=timedelta(seconds=0.01)
    )


def batches(hub: Hub) -> list[GoodsBatch]:
    return hub.services.goods_movements.find_batches(store_id=STORE)


def wait_for(
    hub: Hub, count: int, state: BatchState = BatchState.POSTED, timeout: float = 60
) -> list[GoodsBatch]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = batches(hub)
        if len(found) == count and all(b.state is state for b in found):
            return found
        time.sleep(0.1)
    raise AssertionError(f"not {count} batches {state}: {batches(hub)}")


def erp_stock(erp: ErpProcess) -> dict[str, Decimal]:
    body = erp.http.get("/api/stock", params={"store_id": STORE}).json()
    return {p["sku"]: Decimal(p["quantity"]) for p in body["positions"] if Decimal(p["quantity"])}


def hub_stock(hub: Hub, txs: list[Transaction]) -> dict[str, Decimal]:
    skus = {ln.sku for tx in txs for ln in tx.lines}
    out: dict[str, Decimal] = defaultdict(Decimal)
    for sku in skus:
        found = hub.services.inventory.read_position(STORE, sku)
        if found:
            out[sku] = found
    return dict(out)


def store_day(n: int) -> list[Transaction]:
    return [tx for tx in traffic(n) if tx.store_id == STORE]


class TestGoodsMovements:
    def test_one_batch_per_store_day_then_a_late_movement_in_the_next(
        self, tmp_path: Path, hubs: list[Hub], processes: list[Any]
    ) -> None:
        erp = start_erp(tmp_path)
        processes.append(erp)
        hub = goods_hub(tmp_path, erp)
        hubs.append(hub)
        txs = store_day(120)
        hub.accept(txs)
        hub.run("inventory")
        hub.settled("inventory", timeout=60)
        time.sleep(0.5)
        assert batches(hub) == []  # the day is open: nothing goes to the ERP
        assert erp.state()["movement_batches"] == 0

        close_day(hub, txs)
        [first] = wait_for(hub, 1)
        assert first.batch_id == f"gm.{STORE}.{txs[0].business_day.isoformat()}.1"
        assert erp_stock(erp) == hub_stock(hub, txs)

        late = sale(9000, line(1, "LATE-0001", quantity="3"))
        late = late.model_copy(update={"store_id": STORE, "business_day": txs[0].business_day})
        hub.accept([late])
        second = wait_for(hub, 2)[1]
        assert (second.number, second.movements, second.lines) == (2, 1, 1)
        assert erp_stock(erp)["LATE-0001"] == Decimal(-3)
        time.sleep(0.5)
        assert erp.state()["movement_batches"] == 2  # nothing posted twice

    def test_the_erp_away_while_the_day_closes_posts_once_it_is_back(
        self, tmp_path: Path, hubs: list[Hub], processes: list[Any]
    ) -> None:
        erp = start_erp(tmp_path)
        processes.append(erp)
        hub = goods_hub(tmp_path, erp)
        hubs.append(hub)
        txs = store_day(60)
        hub.accept(txs)
        hub.run("inventory")
        hub.settled("inventory", timeout=60)

        ServiceProcess.stop(erp)
        close_day(hub, txs)
        [pending] = wait_for(hub, 1, BatchState.PENDING)  # recorded before posting
        time.sleep(1.0)
        assert batches(hub)[0].state is BatchState.PENDING
        erp.start()

        [posted] = wait_for(hub, 1)
        assert posted.batch_id == pending.batch_id
        assert erp.state()["movement_batches"] == 1
        assert erp_stock(erp) == hub_stock(hub, txs)
