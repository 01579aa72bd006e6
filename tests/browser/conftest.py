"""The operations console in a real browser: the system's Chromium, driven by Playwright, against
a hub process that posts to the reference ERP.

`console_hub` is a hub for thirty stores with a day's traffic sent and a heartbeat from some of
its stores; `console` opens the page with the admin key in the address's fragment and collects
every console error and uncaught exception the page raises."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import RunningHub, hub_process, reference_service
from tests.servers import unavailable
from tillflow.config import HubSettings, TillflowConfig
from tillflow.connectors.settings import ConnectorSettings, HttpConnectorSettings
from tillflow.model import Transaction
from tillflow.observe.alert_rules import AlertSettings
from tillflow.processes import ReferenceService
from tillflow.sim.pos import PosTrafficGenerator, demo_stores

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
STORES = demo_stores(30)
DAY = datetime.now(UTC).date()
BEATING = [f"S{n:03d}" for n in range(1, 11)]  # the stores that sent a heartbeat
BEHIND = "S003"  # a store whose agent still holds sales it has not sent


@dataclass
class ConsoleHub:
    """The hub, the reference ERP it posts to, and the day's transactions it was sent."""

    hub: RunningHub
    erp: ReferenceService
    sent: list[Transaction]


@dataclass
class Console:
    """An open console page and what went wrong in it: console errors and uncaught exceptions."""

    page: Any
    errors: list[str] = field(default_factory=list)

    def testid(self, name: str) -> Any:
        return self.page.get_by_test_id(name)


def heartbeat(**fields: Any) -> dict[str, Any]:
    return {
        "agent_version": "1.0.0",
        "sent_at": datetime.now(UTC).isoformat(),
        "buffer_depth": 0,
        "oldest_unsent_age_seconds": None,
        "last_error": None,
        "delivered_total": 0,
        "conflicts": 0,
    } | fields


def send(hub: RunningHub, txs: list[Transaction]) -> None:
    """Send `txs` to the hub, each store's with its own key; every one must be accepted."""
    for store in sorted({tx.store_id for tx in txs}):
        records = [tx.model_dump(mode="json") for tx in txs if tx.store_id == store]
        with hub.client(hub.keys[store]) as client:
            answer = client.post("/v1/transactions", json={"transactions": records})
        assert answer.status_code == 200, answer.text
        assert answer.json()["summary"]["accepted"] == len(records), answer.text


def beat(hub: RunningHub) -> None:
    """A heartbeat from each of `BEATING`; `BEHIND` says five sales wait in its outbox."""
    for store in BEATING:
        fields: dict[str, Any] = {}
        if store == BEHIND:
            fields = {"buffer_depth": 5, "oldest_unsent_age_seconds": 42.0, "last_error": "hub answered 503"}
        with hub.client(hub.keys[store]) as client:
            answer = client.post(f"/v1/stores/{store}/heartbeat", json=heartbeat(**fields))
        assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")  # not the session: Playwright's sync API runs an event loop in
def browser() -> Iterator[Any]:  # this thread while it is open, and later tests run their own
    """Chromium from the system, headless."""
    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if executable is None:
        unavailable(f"Chromium is not installed ({CHROMIUM})")
        return
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed")
        return
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def console_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleHub]:
    """A hub for thirty stores posting to the reference ERP, sent today's sales of every store,
    with a heartbeat from the first ten (store S003 holds five sales it has not sent yet). A store
    stays online for an hour after its heartbeat; alert rules are evaluated every second."""
    data_dir = tmp_path_factory.mktemp("console")
    txs = PosTrafficGenerator(STORES, business_day=DAY, seed=10).transactions(90)
    with reference_service("erp", data_dir / "erp") as erp:
        config = TillflowConfig(
            hub=HubSettings(store_offline_seconds=3600),
            stores=STORES,
            connectors=ConnectorSettings(erp=HttpConnectorSettings(url=erp.url)),
            alerts=AlertSettings(evaluate_seconds=1),
        )
        with hub_process(data_dir, config) as hub:
            send(hub, txs)
            beat(hub)
            yield ConsoleHub(hub, erp, txs)


@pytest.fixture
def console(browser: Any, console_hub: ConsoleHub) -> Iterator[Console]:
    """The console page, opened with the admin key in the address's fragment."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    opened = Console(page)
    page.on("console", lambda message: message.type == "error" and opened.errors.append(message.text))
    page.on("pageerror", lambda error: opened.errors.append(f"uncaught: {error}"))
    page.goto(f"{console_hub.hub.url}/#key={console_hub.hub.admin}")
    try:
        yield opened
    finally:
        context.close()
