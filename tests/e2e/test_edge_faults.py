"""The store agent behind a faulty link, over real processes: tills post to a `tillflow edge`
whose hub sits behind a fault-injecting TCP proxy, which drops connections, delays every chunk,
resets connections after the hub has answered (the hub did the work, the agent never hears of
it) and goes down for seconds. Once the link is clean again and the outbox is drained, every
transaction the agent acknowledged is at the hub exactly once."""

from __future__ import annotations

import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import RunningHub, hub_process
from tests.e2e.test_edge_agent import batches, drained, edge_agent, eventually, hub_counts, post, tx_id
from tillflow.bootstrap import bootstrap
from tillflow.config import TillflowConfig
from tillflow.model import Transaction
from tillflow.ports import StoredTransaction
from tillflow.sim.faultproxy import FaultProxy
from tillflow.sim.pos import PosTrafficGenerator, demo_stores

pytestmark = pytest.mark.e2e

STORES = demo_stores(2)
DAY = date(2026, 11, 20)
COUNT = 3000
FAULTS = {"drop_rate": 0.2, "delay_ms": 5, "reset_mid_response_rate": 0.2}
# smaller batches than by default and short pauses after a failure, so that the faults meet many
# requests; rare heartbeats, so that nearly every request the proxy sees carries transactions
AGENT = ("--batch", "100", "--linger-ms", "50", "--max-backoff", "0.5", "--heartbeat-seconds", "60")
CUT_EVERY = 0.4  # seconds between two cuts of the open connections
OUTAGE_AT, OUTAGE = 3.0, 3.0  # seconds into the traffic; seconds down


def records(n: int) -> list[dict[str, Any]]:
    gen = PosTrafficGenerator(STORES, business_day=DAY, seed=9)
    return [tx.model_dump(mode="json") for tx in gen.transactions(n)]


def unsettle(proxy: FaultProxy, stop: threading.Event) -> None:
    """Cut the open connections every CUT_EVERY seconds and, once, OUTAGE_AT seconds in, keep the
    link down for OUTAGE seconds; until `stop` is set, and at least through the outage. The
    agent keeps its connections to the hub open, and the proxy draws a connection's fate when
    it is opened: the cuts make the agent open new ones, each dropped or reset at the rates set."""
    started = time.monotonic()
    outage_over = False
    while not (stop.is_set() and outage_over):
        if not outage_over and time.monotonic() - started >= OUTAGE_AT:
            proxy.set_faults(down=True)
            time.sleep(OUTAGE)
            proxy.set_faults(down=False)
            outage_over = True
        else:
            proxy.set_faults(down=True)  # resets every open connection
            proxy.set_faults(down=False)
            stop.wait(CUT_EVERY)


def logged(hub: RunningHub) -> list[StoredTransaction]:
    """Every transaction of DAY the hub holds, by store, register and sequence (read from its
    state once the process is stopped)."""
    services = bootstrap(hub.config)
    try:
        return [t for s in STORES for t in services.transactions.read_store_day(s.store_id, DAY)]
    finally:
        services.close()


def per_register(txs: list[StoredTransaction]) -> dict[str, list[str]]:
    """The transaction ids of each register (`store:register`), in the order given."""
    out: dict[str, list[str]] = {}
    for t in txs:
        out.setdefault(t.transaction_id.rsplit(":", 2)[0], []).append(t.transaction_id)
    return out


class TestAFaultyLinkToTheHub:
    def test_drops_delays_resets_and_an_outage_lose_and_repeat_nothing(self, tmp_path: Path) -> None:
        sent = records(COUNT)
        acknowledged: list[dict[str, Any]] = []
        (tmp_path / "hub").mkdir()
        with hub_process(tmp_path / "hub", TillflowConfig(stores=STORES)) as hub:
            port = int(hub.url.rpartition(":")[2])
            with FaultProxy(0, "127.0.0.1", port, seed=5) as proxy:
                proxy.set_faults(**FAULTS)
                link = f"http://127.0.0.1:{proxy.port}"
                with edge_agent(link, hub.keys, tmp_path / "edge", options=AGENT) as agent:
                    stop = threading.Event()
                    chaos = threading.Thread(target=unsettle, args=(proxy, stop))
                    chaos.start()
                    try:
                        for part in batches(sent, 20):
                            results = post(agent, part)["results"]
                            acknowledged += [
                                r for r, v in zip(part, results, strict=True) if v["status"] == "accepted"
                            ]
                            time.sleep(0.05)  # the tills' pace: the traffic spans the outage
                    finally:
                        stop.set()
                        chaos.join()
                    injected = proxy.counters
                    proxy.clear_faults()
                    assert eventually(lambda: drained(agent), within=60)
                    status = agent.status()["stores"]
            counts = hub_counts(hub)
        at_hub = logged(hub)
        assert len(acknowledged) == COUNT
        # every kind of fault happened
        assert injected["dropped"] > 0 and injected["reset_mid_response"] > 0
        assert injected["delayed_chunks"] > 0 and injected["refused"] > 0 and injected["cut"] > 0
        # each acknowledged transaction is at the hub, as the till sent it, and no conflict
        assert counts == {"transactions": COUNT, "conflicts": 0}
        assert {t.transaction_id: Transaction.model_validate_json(t.data) for t in at_hub} == {
            tx_id(r): Transaction.model_validate(r) for r in acknowledged
        }
        # logged once each, and every register's transactions in till order
        assert None not in {t.event_seq for t in at_hub}
        assert len({t.event_seq for t in at_hub}) == len(at_hub) == COUNT
        in_log_order = sorted(at_hub, key=lambda t: t.event_seq or 0)
        assert per_register(in_log_order) == per_register(at_hub)  # `at_hub` is in till order
        # the agent delivered each once and holds nothing refused
        for store in STORES:
            mine = status[store.store_id]
            assert mine["delivered_total"] == COUNT // len(STORES)
            assert (mine["conflicts"], mine["refused"], mine["local_conflicts"]) == (0, 0, 0)
