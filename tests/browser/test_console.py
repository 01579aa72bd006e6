"""The operations console as an operator sees it, in Chromium against a running hub: the page
loads cleanly with the key from its address, the store grid shows the run's stores by health and
one store's detail, a poison record shows up in dead letters (and raises an alert the operator
acknowledges) and the Replay button clears it once the ERP is fixed, and a transaction's trace
shows every hop it took."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import BEATING, BEHIND, DAY, STORES, Console, ConsoleHub, send
from tillflow.model import Transaction
from tillflow.sim.pos import PosTrafficGenerator

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
expect.set_options(timeout=60_000)
DEADLINE = 90.0  # seconds a test waits for the hub to get somewhere before it gives up
POISON_DAY = DAY.replace(day=1) - timedelta(days=20)  # in last month's fiscal period
PERIOD = f"{POISON_DAY:%Y-%m}"


def eventually(check: Any, what: str) -> Any:
    """`check()` once it answers something true; fails naming `what` after DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def dead_letters_of(admin: httpx.Client, transaction_id: str) -> list[dict[str, Any]]:
    answer = admin.get("/v1/dead-letters", params={"limit": 500})
    assert answer.status_code == 200, answer.text
    return [dl for dl in answer.json()["dead_letters"] if dl["transaction_id"] == transaction_id]


def trace_of(admin: httpx.Client, transaction_id: str) -> list[str]:
    answer = admin.get(f"/v1/transactions/{transaction_id}/trace")
    assert answer.status_code == 200, answer.text
    return [hop["hop"] for hop in answer.json()["hops"]]


def posted(admin: httpx.Client, transaction_id: str) -> list[str] | None:
    """The transaction's hops once one of them is its ERP posting."""
    hops = trace_of(admin, transaction_id)
    return hops if any(h.startswith("erp.") for h in hops) else None


def loaded(console: Console) -> None:
    """Wait for the page's first full round of figures: every store in the grid, live."""
    expect(console.testid("store-cell")).to_have_count(len(STORES))
    expect(console.testid("live-label")).to_have_text("live")


class TestThePage:
    def test_is_served_without_a_key_and_allows_only_its_own_origin(self, console_hub: ConsoleHub) -> None:
        with console_hub.hub.client() as anonymous:
            page = anonymous.get("/")
            script = anonymous.get("/console/console.js")
            unknown = anonymous.get("/console/secrets.txt")
            api = anonymous.get("/v1/stores/health")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'data-testid="store-grid"' in page.text
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy
        assert "unsafe-inline" not in policy and "http" not in policy
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
        assert api.status_code == 401  # the data behind the page needs the key

    def test_loads_without_console_errors_and_takes_the_key_out_of_the_address(
        self, console: Console
    ) -> None:
        loaded(console)
        # two rounds of the summary give a rate, so every panel has been drawn at least once
        expect(console.testid("fig-rate").locator(".value")).not_to_have_text("–")
        expect(console.testid("chart-throughput").locator("svg path.series")).to_have_count(1)
        expect(console.testid("fig-accepted").locator(".value")).not_to_have_text("–")
        assert "#key" not in console.page.url and "key=" not in console.page.url
        assert console.errors == []

    def test_asks_for_a_key_and_says_why_one_is_refused(self, browser: Any, console_hub: ConsoleHub) -> None:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(console_hub.hub.url)
            expect(page.get_by_test_id("login")).to_be_visible()
            page.get_by_test_id("login-key").fill("not-a-key")
            page.get_by_test_id("login-submit").click()
            expect(page.get_by_test_id("login-error")).to_contain_text("unknown or revoked")
            page.get_by_test_id("login-key").fill(console_hub.hub.keys["S001"])  # a store's key
            page.get_by_test_id("login-submit").click()
            expect(page.get_by_test_id("login-error")).to_contain_text("needs an admin key")
            page.get_by_test_id("login-key").fill(console_hub.hub.admin)
            page.get_by_test_id("login-submit").click()
            expect(page.get_by_test_id("login")).to_be_hidden()
            expect(page.get_by_test_id("store-cell")).to_have_count(len(STORES))
        finally:
            context.close()

    def test_stops_asking_the_hub_while_the_tab_is_hidden(self, console: Console) -> None:
        loaded(console)
        asked: list[str] = []
        console.page.on("request", lambda request: asked.append(request.url))
        console.page.evaluate(
            """() => {
                Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
                document.dispatchEvent(new Event("visibilitychange"));
            }"""
        )
        expect(console.testid("live-label")).to_have_text("paused")
        asked.clear()  # a round already on its way may still finish
        console.page.wait_for_timeout(3 * 2000)  # three polling periods
        assert [url for url in asked if "/v1/" in url] == []
        console.page.evaluate(
            """() => {
                delete document.hidden;
                document.dispatchEvent(new Event("visibilitychange"));
            }"""
        )
        expect(console.testid("live-label")).to_have_text("live")
        assert any("/v1/metrics/summary" in url for url in asked)
        assert console.errors == []

    def test_the_reconciliation_report_is_fetched_with_the_key(self, console: Console) -> None:
        loaded(console)
        expect(console.testid("recon-row")).to_have_count(len(STORES))
        with console.page.expect_download() as downloading:
            console.testid("recon-report").click()
        report = downloading.value
        assert report.suggested_filename == f"reconciliation-{DAY}.html"
        html = Path(report.path()).read_text()
        assert f"Reconciliation {DAY}" in html and "S030" in html
        assert console.errors == []

    def test_a_screenshot_is_a_png(self, console: Console, tmp_path: Path) -> None:
        loaded(console)
        shot = tmp_path / "console.png"
        console.page.screenshot(path=str(shot), full_page=True)
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


class TestFlows:
    def test_shows_each_flow_s_progress_and_the_erp_s_breaker(
        self, console: Console, console_hub: ConsoleHub
    ) -> None:
        loaded(console)
        with console_hub.hub.client(console_hub.hub.admin) as admin:
            groups = admin.get("/v1/flows").json()["consumer_groups"]
        rows = console.testid("flow-row")
        expect(rows).to_have_count(len(groups))
        inventory = console.page.locator('[data-testid="flow-row"][data-flow="inventory"]')
        expect(inventory.locator(".flow-state")).to_have_text("running")
        sent = len(console_hub.sent)
        expect(inventory.locator("td").nth(4)).to_have_text(f"{sent:,}")  # every sale handled
        erp = console.page.locator('[data-testid="downstream-row"][data-system="erp"]')
        expect(erp.locator(".pill")).to_have_text("closed")
        assert console.errors == []


class TestStoreGrid:
    def test_shows_every_store_of_the_run_coloured_by_health(self, console: Console) -> None:
        loaded(console)
        cells = console.testid("store-cell")
        ids = cells.evaluate_all("cells => cells.map(c => c.dataset.storeId)")
        assert ids == [s.store_id for s in STORES]
        status = dict(cells.evaluate_all("cells => cells.map(c => [c.dataset.storeId, c.dataset.status])"))
        assert status[BEHIND] == "behind"
        assert {status[s] for s in BEATING if s != BEHIND} == {"online"}
        assert {status[s.store_id] for s in STORES if s.store_id not in BEATING} == {"unknown"}
        expect(console.testid("store-count-online").locator("b")).to_have_text(str(len(BEATING) - 1))
        unknown = len(STORES) - len(BEATING)
        expect(console.testid("store-count-unknown").locator("b")).to_have_text(str(unknown))

    def test_a_filter_narrows_the_grid(self, console: Console) -> None:
        loaded(console)
        console.testid("store-filter").fill("S01")
        expect(console.page.locator('[data-testid="store-cell"]:visible')).to_have_count(10)
        console.testid("store-count-unknown").click()
        expect(console.page.locator('[data-testid="store-cell"]:visible')).to_have_count(9)  # S011 to S019

    def test_a_click_on_a_store_shows_its_buffer_heartbeat_and_last_error(self, console: Console) -> None:
        loaded(console)
        console.page.locator(f'[data-testid="store-cell"][data-store-id="{BEHIND}"]').click()
        panel = console.testid("store-panel")
        expect(panel).to_be_visible()
        expect(console.testid("store-panel-title")).to_have_text(f"Store {BEHIND}")
        expect(console.testid("detail-buffer")).to_have_text("5")
        expect(console.testid("detail-oldest")).to_have_text("42 s")
        expect(console.testid("detail-error")).to_have_text("hub answered 503")
        expect(console.testid("detail-heartbeat")).to_contain_text("ago")
        console.testid("store-panel-close").click()
        expect(panel).to_be_hidden()
        assert console.errors == []


@pytest.fixture(scope="module")
def poison(console_hub: ConsoleHub) -> Transaction:
    """A sale of last month, sent while the ERP's period for it is closed: the ERP refuses its
    journal, so the posting flow sets it aside as a dead letter."""
    erp = httpx.Client(base_url=console_hub.erp.url, timeout=30)
    with erp:
        assert erp.put(f"/admin/periods/{PERIOD}", json={"status": "closed"}).status_code == 200
    gen = PosTrafficGenerator(STORES[:1], business_day=POISON_DAY, seed=77)
    sale = next(tx for tx in gen.transactions(20) if tx.kind.value == "sale")
    send(console_hub.hub, [sale])
    with console_hub.hub.client(console_hub.hub.admin) as admin:
        eventually(lambda: dead_letters_of(admin, sale.transaction_id), "the poison's dead letter")
    return sale


class TestDeadLetters:
    def test_a_poison_record_raises_an_alert_the_operator_acknowledges(
        self, console: Console, poison: Transaction
    ) -> None:
        loaded(console)
        alert = console.page.locator('[data-testid="alert"]', has_text="dead")
        expect(alert.first).to_be_visible()
        alert.first.get_by_test_id("acknowledge").click()
        expect(alert.first.get_by_test_id("alert-acknowledged")).to_be_visible()
        console.page.reload()  # the hub keeps who acknowledged it
        loaded(console)
        expect(alert.first.get_by_test_id("alert-acknowledged")).to_contain_text("acknowledged by key")
        assert console.errors == []

    def test_a_poison_record_shows_its_reason_and_replay_clears_it_once_the_erp_is_fixed(
        self, console: Console, console_hub: ConsoleHub, poison: Transaction
    ) -> None:
        loaded(console)
        row = console.page.locator('[data-testid="dead-letter"]', has_text=poison.transaction_id)
        expect(row).to_have_count(1)
        expect(row).to_contain_text("closed")
        expect(row).to_contain_text("posting")
        # the controller reopens the period; the operator replays the sale from the console
        with httpx.Client(base_url=console_hub.erp.url, timeout=30) as erp:
            assert erp.put(f"/admin/periods/{PERIOD}", json={"status": "open"}).status_code == 200
        dead_letter_id = row.get_attribute("data-dead-letter-id")
        row.get_by_test_id("replay").click()
        asked = console.page.locator(f'[data-testid="replay-form"][data-dead-letter-id="{dead_letter_id}"]')
        expect(asked.get_by_test_id("replay-why")).to_have_value("replayed from the console")
        asked.get_by_test_id("replay-why").fill("period reopened by the controller")
        asked.get_by_test_id("replay-confirm").click()
        expect(row).to_have_count(0)
        expect(asked).to_have_count(0)
        with console_hub.hub.client(console_hub.hub.admin) as admin:
            hops = eventually(lambda: posted(admin, poison.transaction_id), "the replayed sale's posting")
            assert dead_letters_of(admin, poison.transaction_id) == []
        assert "received" in hops
        console.page.reload()
        loaded(console)
        expect(row).to_have_count(0)
        assert console.errors == []


class TestTrace:
    def test_a_transaction_s_trace_shows_every_hop(self, console: Console, console_hub: ConsoleHub) -> None:
        sale = next(tx for tx in console_hub.sent if tx.store_id == "S002" and tx.kind.value == "sale")
        with console_hub.hub.client(console_hub.hub.admin) as admin:
            hops = eventually(lambda: posted(admin, sale.transaction_id), "the sale's posting")
        assert {"received", "logged", "inventory.applied"} <= set(hops)
        loaded(console)
        console.testid("trace-query").fill(sale.transaction_id)
        console.testid("trace-go").click()
        expect(console.testid("trace-transaction")).to_have_text(sale.transaction_id)
        shown = console.testid("trace-hop")
        expect(shown).to_have_count(len(hops))
        assert shown.evaluate_all("rows => rows.map(r => r.dataset.hop)") == hops
        expect(shown.first.locator(".hop-ms")).to_contain_text("ms")
        assert console.errors == []

    def test_a_prefix_or_a_trace_id_lists_the_matching_transactions(
        self, console: Console, console_hub: ConsoleHub
    ) -> None:
        sale = next(tx for tx in console_hub.sent if tx.store_id == "S004" and tx.kind.value == "sale")
        of_store = sum(1 for tx in console_hub.sent if tx.store_id == "S004")
        loaded(console)
        console.testid("trace-query").fill("S004:")
        console.testid("trace-go").click()
        expect(console.testid("trace-result")).to_have_count(of_store)
        console.testid("trace-result").filter(has_text=sale.transaction_id).click()
        expect(console.testid("trace-transaction")).to_have_text(sale.transaction_id)
        trace_id = console.page.locator('[data-testid="trace"] .muted code').inner_text()
        console.testid("trace-query").fill(trace_id)
        console.testid("trace-go").click()
        # the store's sales came in one request: they share its trace
        expect(console.testid("trace-result")).to_have_count(of_store)
        expect(console.testid("trace-result").filter(has_text=sale.transaction_id)).to_have_count(1)
        assert console.errors == []
