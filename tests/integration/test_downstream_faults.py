"""The posting and loyalty flows of a real hub state against the reference ERP and loyalty
platform, each in its own process, while they fail: an outage, a storm of 429s, postings the
ERP refuses, a parallel run of two ERPs. Every posting must land exactly once, and nothing may
be lost or block what comes after it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.builders import incoming
from tests.integration.test_sim_erp import ErpProcess
from tests.integration.test_sim_erp import start as start_erp
from tests.integration.test_sim_loyalty import LoyaltyProcess
from tests.servers import ServiceProcess
from tillflow.bootstrap import bootstrap
from tillflow.bus.runner import ConsumerRunner
from tillflow.config import TillflowConfig
from tillflow.connectors.erp_file import FileErp
from tillflow.connectors.erp_http import HttpErp
from tillflow.flows.migration import compare_balances, compare_targets
from tillflow.flows.posting import PostingAccounts, journal_for, journal_id_for
from tillflow.model import Journal, JournalLine, Transaction, TransactionKind
from tillflow.ports import DeadLetterSelection
from tillflow.services import Services
from tillflow.sim.loyalty import LoyaltySimSettings
from tillflow.sim.pos import PosTrafficGenerator, demo_stores

DAY = date(2026, 11, 29)
CLI = [sys.executable, "-m", "tillflow.cli"]
FAST_RETRIES = {"base_delay": 0.2, "max_delay": 2.0, "max_attempts": 8}


def traffic(n: int, *, stores: int = 2, seed: int = 5) -> list[Transaction]:
    gen = PosTrafficGenerator(demo_stores(stores), business_day=DAY, seed=seed)
    return list(gen.transactions(n))


def journals_expected(txs: list[Transaction], accounts: PostingAccounts | None = None) -> set[str]:
    """The journal ids the flow must post: one per transaction that moves money; a post-void
    posts the reversal of its sale."""
    accounts = accounts or PostingAccounts()
    ids = set()
    for tx in txs:
        if tx.kind is TransactionKind.VOID:
            ids.add(journal_id_for(tx.transaction_id, prefix="void"))
        elif journal_for(tx, accounts) is not None:
            ids.add(journal_id_for(tx.transaction_id))
    return ids


class Hub:
    """The state store and flows of a hub (SQLite file), with the given connectors."""

    def __init__(self, tmp: Path, connectors: dict[str, Any], **config: Any) -> None:
        flows = {"posting": FAST_RETRIES, "loyalty": FAST_RETRIES}
        self.services: Services = bootstrap(
            TillflowConfig(hub={"data_dir": tmp / "hub"}, connectors=connectors, flows=flows, **config)
        )
        self.stop = threading.Event()
        self.runners: list[ConsumerRunner] = []
        self.threads: list[threading.Thread] = []

    def accept(self, txs: list[Transaction]) -> None:
        self.services.transactions.record_batch([incoming(tx) for tx in txs], received_at=datetime.now(UTC))

    def run(self, *groups: str) -> dict[str, ConsumerRunner]:
        runners = {r.group: r for r in self.services.consumers() if r.group in groups}
        for runner in runners.values():
            runner.idle_wait = 0.05
            self.runners.append(runner)
            self.threads.append(runner.start(self.stop))
        return runners

    def settled(self, group: str, *, timeout: float) -> None:
        """Wait until the group has handled every event (acked or dead-lettered)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.services.event_log.read_groups().get(group)
            if state is not None and state.lag == 0 and state.pending == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"{group} did not settle: {self.services.event_log.read_groups().get(group)}")

    def close(self) -> None:
        self.stop.set()
        for runner in self.runners:
            runner.wake.set()
        for thread in self.threads:
            thread.join(timeout=30)
        self.services.close()


@pytest.fixture
def hubs() -> Iterator[list[Hub]]:
    made: list[Hub] = []
    yield made
    for hub in made:
        hub.close()


@pytest.fixture
def processes() -> Iterator[list[ErpProcess | LoyaltyProcess]]:
    made: list[ErpProcess | LoyaltyProcess] = []
    yield made
    for process in made:
        process.stop()


def erp_connector(erp: ErpProcess, **resilience: Any) -> dict[str, Any]:
    return {"url": erp.url, "timeout": 5, "resilience": resilience}


class TestErpOutage:
    def test_down_for_a_minute_then_back_every_posting_lands_once(
        self, tmp_path: Path, hubs: list[Hub], processes: list[Any]
    ) -> None:
        erp = start_erp(tmp_path)
        processes.append(erp)
        breaker = {"failure_threshold": 3, "open_seconds": 5}
        hub = Hub(tmp_path, {"erp": erp_connector(erp, breaker=breaker)})
        hubs.append(hub)
        txs = traffic(60)
        hub.accept(txs[:30])
        runners = hub.run("posting")
        hub.settled("posting", timeout=60)
        posted_before = erp.state()["journals_posted"]

        ServiceProcess.stop(erp)  # the ERP goes away: connections refused
        hub.accept(txs[30:])
        time.sleep(60)
        assert hub.services.event_log.read_groups()["posting"].lag > 0  # nothing could post
        erp.start()  # back, on the same books
        hub.settled("posting", timeout=120)

        state = erp.state()
        expected = journals_expected(txs)
        assert state["journals_posted"] == len(expected) > posted_before
        for journal_id in sorted(expected)[:: max(1, len(expected) // 10)]:
            assert erp.http.get(f"/api/journals/{journal_id}").status_code == 200
        group = hub.services.event_log.read_groups()["posting"]
        assert (group.dead_letters, group.pending) == (0, 0)
        # the breaker paused the flow: it opened, probed (again and again) and closed
        figures = hub.services.downstream_figures()["erp"]
        assert figures["breaker"] == "closed"
        transitions = figures["breaker_transitions"]
        assert transitions["open"] >= 2 and transitions["half_open"] >= 2 and transitions["closed"] >= 1
        # while paused the flow burnt no attempts: nothing was nak'ed, nothing counted
        assert runners["posting"].stats.pauses >= transitions["open"]
        assert runners["posting"].stats.naks == 0
        # the hub's posting state names every document the ERP gave
        outcomes = hub.services.postings.find_outcomes(DAY)
        assert {o.external_id for o in outcomes if o.accepted} == expected

    def test_an_outage_that_says_when_it_ends_is_waited_out_not_hammered(
        self, tmp_path: Path, hubs: list[Hub], processes: list[Any]
    ) -> None:
        erp = start_erp(tmp_path)
        processes.append(erp)
        hub = Hub(tmp_path, {"erp": erp_connector(erp)})
        hubs.append(hub)
        txs = traffic(30)
        down_until = datetime.now(UTC) + timedelta(seconds=8)
        erp.http.put("/admin/faults", json={"outage_until": down_until.isoformat()})
        hub.accept(txs)

        hub.run("posting")
        hub.settled("posting", timeout=120)

        state = erp.state()
        assert state["journals_posted"] == len(journals_expected(txs))
        assert 1 <= state["answers"]["503"] <= 3  # each 503's Retry-After was obeyed
        assert hub.services.event_log.read_groups()["posting"].dead_letters == 0


class TestMaintenanceWindows:
    def test_posting_pauses_through_a_configured_window_without_calling_the_erp(
        self, tmp_path: Path, hubs: list[Hub], processes: list[Any]
    ) -> None:
        erp = start_erp(tmp_path)
        processes.append(erp)
        start = datetime.now(UTC) + timedelta(seconds=2)
        window = {"start": start.isoformat(), "end": (start + timedelta(seconds=6)).isoformat()}
        hub = Hub(tmp_path, {"erp": erp_connector(erp, maintenance=[{**window, "lead_seconds": 5}])})
        hubs.append(hub)
        txs = traffic(20)
        hub.accept(txs)

        runners = hub.run("posting")
        time.sleep(4)  # inside the lead and the window
        assert erp.state()["answers"] == {}  # not one call: the flow paused ahead of the window
        hub.settled("posting", timeout=60)

        assert datetime.now(UTC) >= start + timedelta(seconds=6)
        assert erp.state()["journals_posted"] == len(journals_expected(txs))
        assert runners["posting"].stats.pauses >= 1 and runners["posting"].stats.naks == 0
        assert hub.services.downstream_figures()["erp"]["paused_by_maintenance"] >= 1


class TestThrottling:
    def test_a_storm_of_429s_loses_nothing_and_posts_nothing_twice(
        self, tmp_path: Path, hubs: list[Hub], processes: list[Any]
    ) -> None:
        # an ERP that allows 20 requests a second, and throttles a third of them on top
        erp = start_erp(tmp_path, rate_limit={"per_second": 20, "burst": 5})
        processes.append(erp)
        erp.http.put("/admin/faults", json={"throttle": {"rate": 0.3, "retry_after": 1}})
        hub = Hub(tmp_path, {"erp": {"url": erp.url, "max_batch": 1}})  # a request per journal
        hubs.append(hub)
        txs = traffic(80)
        hub.accept(txs)

        hub.run("posting")
        hub.settled("posting", timeout=180)

        state = erp.state()
        assert state["journals_posted"] == len(journals_expected(txs))
        assert state["answers"]["429"] >= 1
        figures = hub.services.downstream_figures()["erp"]
        assert figures["throttled"] == state["answers"]["429"]  # each one was waited out
        assert figures["breaker"] == "closed"  # throttling is not an outage
        assert hub.services.event_log.read_groups()["posting"].dead_letters == 0


class TestRejectedPostings:
    def test_an_invalid_posting_is_dead_lettered_with_the_erp_reason_and_blocks_nothing(
        self, tmp_path: Path, hubs: list[Hub], processes: list[Any]
    ) -> None:
        erp = start_erp(tmp_path)
        processes.append(erp)
        # a chart-of-accounts map with a mistake: bakery sales go to an account the ERP lacks
        accounts = PostingAccounts(revenue={"BAKERY": "4999"})
        hub = Hub(
            tmp_path,
            {"erp": erp_connector(erp)},
            posting={"accounts": accounts.model_dump(mode="json")},
        )
        hubs.append(hub)
        txs = [tx for tx in traffic(60) if tx.kind is not TransactionKind.VOID]
        bad = {
            journal_id_for(tx.transaction_id)
            for tx in txs
            if any(line.department == "BAKERY" for line in tx.lines)
        }
        assert bad and len(bad) < len(txs)
        hub.accept(txs)

        hub.run("posting")
        hub.settled("posting", timeout=120)

        dead = hub.services.event_log.list_dead_letters(group="posting")
        assert {journal_id_for(d.event.event.id) for d in dead} == bad
        for letter in dead:
            assert "DownstreamRejectedError" in letter.reason and "4999" in letter.reason, letter.reason
            assert letter.attempts == 1  # not retried: no retry can fix it
        assert erp.state()["journals_posted"] == len(journals_expected(txs, accounts) - bad)
        rejected = [o for o in hub.services.postings.find_outcomes(DAY) if not o.accepted]
        assert {o.external_id for o in rejected} == bad
        assert all("4999" in (o.reason or "") for o in rejected)

        # the map is fixed and the hub restarted: replaying the dead letters posts them, once
        hub.close()
        hubs.remove(hub)
        fixed = Hub(tmp_path, {"erp": erp_connector(erp)})
        hubs.append(fixed)
        selection = DeadLetterSelection(group="posting")
        replayed = fixed.services.event_log.replay_dead_letters(
            selection, actor="ops", why="bakery account fixed"
        )
        assert replayed == len(bad)
        fixed.run("posting")
        fixed.settled("posting", timeout=120)
        assert erp.state()["journals_posted"] == len(journals_expected(txs))
        assert fixed.services.event_log.read_groups()["posting"].dead_letters == 0


class TestParallelRun:
    def test_both_erps_get_every_posting_and_the_comparison_shows_agreement(
        self, tmp_path: Path, hubs: list[Hub], processes: list[Any]
    ) -> None:
        erp = start_erp(tmp_path)
        processes.append(erp)
        legacy_dir = tmp_path / "legacy"
        connectors = {
            "erp": erp_connector(erp),
            "erp_legacy": {"directory": str(legacy_dir)},
            "erp_routing": {"default": "legacy", "stores": {"S001": "both"}, "primary": "legacy"},
        }
        hub = Hub(tmp_path, connectors)
        hubs.append(hub)
        txs = traffic(40, stores=2)
        hub.accept(txs)

        hub.run("posting")
        hub.settled("posting", timeout=120)

        s001 = journals_expected([tx for tx in txs if tx.store_id == "S001"])
        s002 = journals_expected([tx for tx in txs if tx.store_id == "S002"])
        assert erp.state()["journals_posted"] == len(s001)  # only the parallel-run store
        legacy = FileErp(legacy_dir)
        assert all(legacy.posting_status(j) is not None for j in s001 | s002)

        report = compare_targets(hub.services.postings.find_outcomes(DAY))
        by_store = {r.store_id: r for r in report}
        assert by_store["S001"].matched and by_store["S001"].accepted == {
            "cloud": len(s001),
            "legacy": len(s001),
        }
        assert by_store["S001"].differences == []
        assert by_store["S002"].accepted == {"legacy": len(s002)}
        # what both sides booked for the store-day agrees account by account
        with HttpErp(erp.url) as cloud:
            cloud_tb = cloud.trial_balance("S001", DAY)
        legacy_tb = legacy.trial_balance("S001", DAY)
        assert cloud_tb and compare_balances(cloud_tb, legacy_tb) == []

        # the operator's view: `tillflow erp compare`, then a journal booked by hand in one ERP
        config = tmp_path / "tillflow.yaml"
        config.write_text(
            yaml.safe_dump({"hub": {"data_dir": str(tmp_path / "hub")}, "connectors": connectors})
        )
        compare = [
            *CLI,
            "erp",
            "compare",
            "--day",
            DAY.isoformat(),
            "--balances",
            "--json",
            "-c",
            str(config),
        ]
        done = subprocess.run(compare, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert {r["store"]: r["result"] for r in json.loads(done.stdout)} == {
            "S001": "matched",
            "S002": "single target",
        }
        by_hand = Journal(
            journal_id="MANUAL-1",
            store_id="S001",
            business_day=DAY,
            lines=(
                JournalLine(account="1000", debit=Decimal("5.00"), currency="EUR"),
                JournalLine(account="6900", credit=Decimal("5.00"), currency="EUR"),
            ),
        )
        with HttpErp(erp.url) as cloud:
            cloud.post_journal(by_hand, idempotency_key="manual-1")
        done = subprocess.run(compare, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stderr
        [s001] = [r for r in json.loads(done.stdout) if r["store"] == "S001"]
        assert s001["result"] == "MISMATCHED"
        gaps = {d["posting"]: (d["cloud"], d["legacy"]) for d in s001["differences"]}
        assert gaps["account 6900 EUR"][0] != gaps["account 6900 EUR"][1]


SEEDED = LoyaltySimSettings()


class TestLoyaltyAccrual:
    def test_every_member_sale_earns_once_through_an_outage(
        self, tmp_path: Path, hubs: list[Hub], processes: list[Any]
    ) -> None:
        platform = LoyaltyProcess(tmp_path / "loyalty.db", SEEDED)
        processes.append(platform)
        hub = Hub(tmp_path, {"loyalty": {"url": platform.url}})
        hubs.append(hub)
        txs = traffic(60)
        members = [tx for tx in txs if tx.customer is not None and tx.kind is TransactionKind.SALE]
        assert members
        until = datetime.now(UTC) + timedelta(seconds=6)
        platform_http = httpx.Client(base_url=platform.url, timeout=30)
        platform_http.put("/admin/faults", json={"outage_until": until.isoformat()})
        hub.accept(txs)

        hub.run("loyalty")
        hub.settled("loyalty", timeout=120)

        state = platform_http.get("/admin/state").json()
        platform_http.close()
        voided = {tx.voided.transaction_id for tx in txs if tx.voided is not None}
        returned = {
            line.original.transaction.transaction_id
            for tx in txs
            for line in tx.lines
            if line.original is not None
        }
        earned = {tx.transaction_id for tx in members}
        assert state["accruals"] == len(earned)
        # points go back only for an earning sale that was voided or had goods returned
        assert (state["points_reversed"] > 0) == bool(earned & (voided | returned))
        ledger = hub.services.loyalty_book.points_by_kind()["default"]
        assert (ledger["accrual"], ledger.get("reversal", 0)) == (
            state["points_issued"] - SEEDED.seed_members * SEEDED.seed_points,  # less the welcome bonus
            -state["points_reversed"],
        )
        group = hub.services.event_log.read_groups()["loyalty"]
        assert (group.dead_letters, group.pending) == (0, 0)
        figures = hub.services.downstream_figures()["loyalty"]
        assert figures["failures"] >= 1 and figures["breaker"] == "closed"  # it waited the outage out
