"""`make bench`: ingest and end-to-end throughput of a real hub process, against a same-run baseline.

Baseline (measured first, same machine, same payloads): pydantic validation of each record
plus a batched append of the payloads to a SQLite WAL file, in-process, no HTTP. Every
figure is printed beside it with the ratio; absolute numbers drift on shared machines,
ratios hold. Results also go to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import platform
import queue
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import psutil
from rich.console import Console
from rich.table import Table

from bench.downstream import LIMIT, aggregated_figure, downstream_figures
from bench.edge import BACKLOG, CONNECTIONS, RATE, edge_figures
from bench.formats import format_figures
from bench.masterdata import masterdata_figures
from tillflow.config import BusSettings
from tillflow.demo import DemoSettings as _Settings
from tillflow.demo import local_nats, prepare
from tillflow.hub.runtime import tune_gc
from tillflow.model import Transaction
from tillflow.processes import HubProcess
from tillflow.sim.pos import PosTrafficGenerator

RESULTS = Path(__file__).parent / "results"
EDGE_START = (
    f"the store agent: acknowledgement latency at {RATE}/s, then a {BACKLOG:,} backlog drained to its hub"
    " (baselines: SQLite synchronous=FULL single inserts, the hub's own ingest)..."
)
EDGE_BASELINES = (
    "for the store agent's acknowledgement latency: single-row INSERT + COMMIT into SQLite (WAL,"
    " synchronous=FULL) at the same pace, the ratio time over time; for its intake and drain: the same"
    f" batches posted straight to a fresh hub over {CONNECTIONS} connections"
)


def payloads(
    stores: int, count: int, batch: int, lines: int, seed: int
) -> list[tuple[str, list[dict[str, Any]]]]:
    """Per-store batches of canonical records, `lines` lines per basket."""
    from tillflow.sim.pos import demo_stores

    gen = PosTrafficGenerator(
        demo_stores(stores), business_day=datetime.now(UTC).date(), seed=seed, basket_size=lines
    )
    per_store: dict[str, list[dict[str, Any]]] = {}
    for tx in gen.transactions(count):
        per_store.setdefault(tx.store_id, []).append(orjson.loads(tx.model_dump_json()))
    return [(s, r[i : i + batch]) for s, r in per_store.items() for i in range(0, len(r), batch)]


def baseline(work: list[tuple[str, list[dict[str, Any]]]], directory: Path) -> float:
    """Transactions/s for validation + batched SQLite append, in-process (GC tuned as in the hub)."""
    tune_gc()
    conn = sqlite3.connect(directory / "baseline.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT UNIQUE, data BLOB)")
    started = time.perf_counter()
    n = 0
    for _, records in work:
        rows = []
        for record in records:
            tx = Transaction.model_validate(record)
            rows.append((tx.transaction_id, orjson.dumps(record)))
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO events (id, data) VALUES (?, ?)", rows)
        conn.execute("COMMIT")
        n += len(records)
    elapsed = time.perf_counter() - started
    conn.close()
    return n / elapsed


def raw_publish_baseline(url: str, work: list[tuple[str, list[dict[str, Any]]]]) -> float:
    """Transactions/s for raw nats-py acknowledged publishes of the same payloads, batch by batch."""

    async def run() -> float:
        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.add_stream(name="BASELINE", subjects=["baseline.>"])
        bodies = [[orjson.dumps(r) for r in records] for _, records in work]
        started = time.perf_counter()
        for batch in bodies:
            pending = [await js.publish_async("baseline.tx", body) for body in batch]
            await asyncio.gather(*pending)
        elapsed = time.perf_counter() - started
        await js.delete_stream("BASELINE")
        await nc.close()
        return sum(len(b) for b in bodies) / elapsed

    return asyncio.run(run())


class RssSampler(threading.Thread):
    """Peak resident memory of a process and its children, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()

    def current(self) -> int:
        procs = [self.proc, *self.proc.children(recursive=True)]
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):  # a child may exit between the two calls
                total += p.memory_info().rss
        return total

    def run(self) -> None:
        while not self.stop.wait(0.05):
            self.peak = max(self.peak, self.current())


def send_all(url: str, bodies: list[tuple[str, bytes]], connections: int) -> tuple[float, int]:
    """POST every body over `connections` keep-alive connections; returns (seconds, accepted)."""
    host, port = url.removeprefix("http://").split(":")
    jobs: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
    for item in bodies:
        jobs.put(item)
    accepted = [0] * connections
    errors: list[str] = []

    def worker(slot: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        while True:
            try:
                item = jobs.get_nowait()
            except queue.Empty:
                break
            if item is None:
                break
            key, body = item
            conn.request(
                "POST",
                "/v1/transactions",
                body,
                {"content-type": "application/json", "authorization": f"Bearer {key}"},
            )
            response = conn.getresponse()
            payload = response.read()
            if response.status != 200:
                errors.append(f"{response.status}: {payload[:200]!r}")
                break
            accepted[slot] += orjson.loads(payload)["summary"]["accepted"]
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"the hub refused a batch: {errors[0]}")
    return time.perf_counter() - started, sum(accepted)


def wait_inventory(url: str, admin: str, target: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {admin}"}) as client:
        while time.monotonic() < deadline:
            flows = client.get("/v1/flows").json()
            if flows["head"] >= target and flows["consumer_groups"]["inventory"]["lag"] == 0:
                # everything delivered; on JetStream delivery precedes applying: count applied
                stats = client.get("/v1/stats").json()
                if stats["latency_ms"]["received_to_inventory"]["count"] >= target:
                    return
            time.sleep(0.02)
    raise RuntimeError("inventory did not catch up in time")


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--transactions", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--lines", type=int, default=4)
    parser.add_argument("--stores", type=int, default=20)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--bus", choices=("sqlite", "jetstream"), default="sqlite")
    parser.add_argument(
        "--only",
        choices=("all", "formats", "downstream", "masterdata", "edge"),
        default="all",
        help="formats: the parsers only; downstream: posting against a throttled ERP only;"
        " masterdata: store snapshots, deltas and the status of 1,200 stores (100,000 items) only;"
        f" edge: the store agent's acknowledgement latency at {RATE}/s and its drain of a"
        f" {BACKLOG:,} backlog only",
    )
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 120)

    if args.only == "masterdata":
        console.print("master data: 100,000 items, prices for 1,200 stores (baseline: plain SQL reads)...")
        _report(console, "tillflow bench — master data to the stores", masterdata_figures(), "masterdata")
        return
    if args.only == "edge":
        console.print(EDGE_START)
        _report(console, "tillflow bench — the store agent", edge_figures(), "edge")
        console.print(f"baselines: {EDGE_BASELINES}")
        return
    console.print("format import rates on the real samples (baselines: plain lxml parse, plain csv read)...")
    format_results = format_figures()
    if args.only == "formats":
        _report(console, "tillflow bench — format parsers", format_results, "formats")
        return
    console.print(f"posting to a reference ERP limited to {LIMIT} requests/s (baseline: that limit)...")
    downstream_results = downstream_figures()
    console.print("aggregated posting of one store-day (baseline: a plain-Python sum of the same amounts)...")
    downstream_results.append(aggregated_figure())
    if args.only == "downstream":
        _report(
            console, "tillflow bench — ERP posting against its rate limit", downstream_results, "downstream"
        )
        return
    console.print("master data: 100,000 items, prices for 1,200 stores (baseline: plain SQL reads)...")
    masterdata_results = masterdata_figures()
    console.print(EDGE_START)
    edge_results = edge_figures()

    console.print(f"generating {args.transactions} transactions of {args.lines} lines...")
    work = payloads(args.stores, args.transactions, args.batch, args.lines, args.seed)
    n = sum(len(r) for _, r in work)
    directory = Path(tempfile.mkdtemp(prefix="tillflow-bench-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, directory, ignore_errors=True)  # runs last, after the servers stop
        console.print("baseline: validation + batched SQLite append, in-process...")
        base_tps = baseline(work, directory)
        bus, js_tps = None, None
        if args.bus == "jetstream":
            nats_url = stack.enter_context(local_nats(directory / "nats"))
            console.print("baseline: raw nats-py acknowledged publishes of the same payloads...")
            js_tps = raw_publish_baseline(nats_url, work)
            bus = BusSettings(kind="jetstream", servers=[nats_url])

        config_path, config, keys, admin = prepare(_Settings(stores=args.stores), directory / "hub", bus)
        url = f"http://{config.hub.host}:{config.hub.port}"
        hub = HubProcess(config_path, directory / "hub.log", url)
        try:
            hub.wait_ready()
            sampler = RssSampler(hub.proc.pid)
            idle_rss = sampler.current()
            sampler.start()
            bodies = [(keys[store], orjson.dumps({"transactions": records})) for store, records in work]
            console.print(
                f"sending {n} transactions in {len(bodies)} batches over {args.connections} connections..."
            )
            started = time.perf_counter()
            ingest_seconds, accepted = send_all(url, bodies, args.connections)
            wait_inventory(url, admin, accepted)
            e2e_seconds = time.perf_counter() - started
            sampler.stop.set()
            sampler.join()
            peak_rss = max(sampler.peak, sampler.current())
        finally:
            hub.stop()
    if accepted != n:
        raise SystemExit(f"expected {n} accepted, the hub accepted {accepted}")

    ingest_tps = n / ingest_seconds
    e2e_tps = n / e2e_seconds
    mib = 1024 * 1024
    results = [
        {
            "name": "ingest over HTTP",
            "value": round(ingest_tps),
            "unit": "transactions/s",
            "baseline": round(base_tps),
            "ratio": round(ingest_tps / base_tps, 3),
        },
        {
            "name": f"end-to-end to inventory ({args.bus})",
            "value": round(e2e_tps),
            "unit": "transactions/s",
            "baseline": round(base_tps),
            "ratio": round(e2e_tps / base_tps, 3),
        },
        {
            "name": "hub peak resident memory",
            "value": round(peak_rss / mib, 1),
            "unit": "MiB",
            "baseline": round(idle_rss / mib, 1),
            "ratio": round(peak_rss / idle_rss, 3),
        },
    ]
    if js_tps is not None:
        results.insert(
            2,
            {
                "name": "end-to-end vs raw JetStream publish",
                "value": round(e2e_tps),
                "unit": "transactions/s",
                "baseline": round(js_tps),
                "ratio": round(e2e_tps / js_tps, 3),
            },
        )
    _report(
        console,
        f"tillflow bench — {n} transactions, batches of {args.batch}, {args.lines} lines each",
        results + format_results + downstream_results + masterdata_results + edge_results,
        "sqlite" if args.bus == "sqlite" else args.bus,
    )
    console.print(
        "baseline: pydantic validation + batched SQLite append of the same payloads, in-process, no HTTP"
        " (for memory: the hub's resident memory when idle"
        + ("; for JetStream: raw nats-py acknowledged publishes of the same payloads" if js_tps else "")
        + "; for the formats: a plain lxml parse / plain csv read of the same sample"
        + f"; for ERP posting: the ERP's own limit of {LIMIT} requests/s"
        + "; for aggregated posting: a plain-Python sum of the same amounts, the ratio time over time"
        + "; for master data: plain SQL reads of the same rows, the ratio time over time"
        + f"; {EDGE_BASELINES})"
    )


def _report(console: Console, title: str, results: list[dict[str, Any]], kind: str) -> None:
    table = Table(title=title)
    for column in ("benchmark", "value", "unit", "baseline", "ratio"):
        table.add_column(column, justify="left" if column in ("benchmark", "unit") else "right")
    for r in results:
        table.add_row(
            str(r["name"]), str(r["value"]), str(r["unit"]), str(r["baseline"]), f"{r['ratio']:.3f}"
        )
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (RESULTS / ("latest.json" if kind == "sqlite" else f"latest-{kind}.json")).write_bytes(
        orjson.dumps({"benchmarks": results, "machine": machine}, option=orjson.OPT_INDENT_2)
    )


if __name__ == "__main__":
    main()
