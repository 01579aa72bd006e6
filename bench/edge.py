"""The store agent (`tillflow edge`, a real process) beside same-run baselines.

(a) Durable acknowledgement latency: a till posts one transaction a request to the agent's local
    API, RATE a second for SECONDS seconds, open loop: each request leaves at its scheduled
    moment whether or not the ones before were answered, and its latency runs from that moment
    to the answer. Meanwhile the agent forwards to a running hub. Baseline: a single-row INSERT
    and COMMIT of the same records into a SQLite WAL file with synchronous=FULL (an fsync each,
    as each acknowledgement of the agent's), at the same pace. p50 and p99; the ratio is
    baseline / ours.
(b) Draining a backlog: with its hub stopped, the agent takes BACKLOG transactions of its store
    in batches of BATCH through its local API; then the hub starts again, and the drain rate is
    the transactions delivered from the first delivery seen to an empty outbox over that time
    (the agent's pause before it tries the hub again is left out). Baseline: the same batches
    posted straight to a fresh hub over CONNECTIONS connections (the hub's own ingest). The
    agent's intake of the batches is shown beside the same baseline. The ratio is ours / baseline.
"""

from __future__ import annotations

import http.client
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from tillflow.bootstrap import bootstrap
from tillflow.config import HubSettings, TillflowConfig, dump_config
from tillflow.hub.runtime import tune_gc
from tillflow.processes import EdgeAgentProcess, HubProcess, free_port
from tillflow.sim.pos import PosTrafficGenerator, demo_stores
from tillflow.storage.stats import percentile

RATE, SECONDS, WARM_UP = 100, 10, 10  # transactions a second, one a request; for how long
BACKLOG, BATCH, CONNECTIONS = 100_000, 500, 2
STORE = demo_stores(1)[0]
# while the hub is away the agent tries it again at least every 2 s; otherwise its defaults
AGENT = ("--max-backoff", "2")


class _Hub:
    """A hub for STORE (its config, data directory and the store's key), started on demand."""

    def __init__(self, directory: Path) -> None:
        port = free_port()
        config = TillflowConfig(hub=HubSettings(data_dir=directory, port=port), stores=[STORE])
        directory.mkdir(parents=True, exist_ok=True)
        self.config_path = directory / "tillflow.yaml"
        self.config_path.write_text(dump_config(config))
        services = bootstrap(config)
        try:
            self.key = services.keys.create_key(store_id=STORE.store_id)
        finally:
            services.close()
        self.url = f"http://127.0.0.1:{port}"
        self.log = directory / "hub.log"

    def start(self) -> HubProcess:
        """The hub process, once it answers /readyz."""
        process = HubProcess(self.config_path, self.log, self.url)
        try:
            process.wait_ready()
        except BaseException:
            process.stop()
            raise
        return process


class _Poster:
    """POSTs bodies to a `/v1/transactions`, over a keep-alive connection per thread."""

    def __init__(self, url: str, key: str | None = None) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.headers = {"content-type": "application/json"}
        if key is not None:
            self.headers["authorization"] = f"Bearer {key}"
        self._local = threading.local()

    def post(self, body: bytes) -> int:
        """Send one batch; returns how many records were accepted (any answer but 200 raises)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(*self.address, timeout=120)
        conn.request("POST", "/v1/transactions", body, self.headers)
        response = conn.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"{self.address} answered {response.status}: {payload[:300]!r}")
        accepted: int = orjson.loads(payload)["summary"]["accepted"]
        return accepted


def _traffic(n: int) -> list[dict[str, Any]]:
    gen = PosTrafficGenerator([STORE], business_day=datetime.now(UTC).date(), seed=17)
    return [orjson.loads(tx.model_dump_json()) for tx in gen.transactions(n)]


def _bodies(records: list[dict[str, Any]], size: int) -> list[bytes]:
    return [orjson.dumps({"transactions": records[i : i + size]}) for i in range(0, len(records), size)]


def _paced(work: Callable[[int], None], count: int, rate: float) -> list[float]:
    """Run `work(i)` for each i below `count`, the i-th `i / rate` seconds after the start, on a
    pool of threads (open loop); each one's seconds from its scheduled moment to its end, sorted."""
    latencies = [0.0] * count

    def timed(i: int, due: float) -> None:
        work(i)
        latencies[i] = time.perf_counter() - due

    with ThreadPoolExecutor(max_workers=32) as pool:
        started = time.perf_counter()
        futures = []
        for i in range(count):
            due = started + i / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            futures.append(pool.submit(timed, i, due))
        for future in futures:
            future.result()
    return sorted(latencies)


def _sqlite_latencies(records: list[dict[str, Any]], directory: Path) -> list[float]:
    """Single-row INSERT + COMMIT into a WAL file with synchronous=FULL, paced as the till."""
    conn = sqlite3.connect(directory / "baseline.db", isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE transactions (seq INTEGER PRIMARY KEY, id TEXT UNIQUE, data BLOB)")
    rows = [(f"{r['register_id']}:{r['sequence']}", orjson.dumps(r)) for r in records]
    lock = threading.Lock()  # one writer, as the agent's outbox has

    def insert(i: int) -> None:
        with lock:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO transactions (id, data) VALUES (?, ?)", rows[i])
            conn.execute("COMMIT")

    try:
        return _paced(insert, len(rows), RATE)
    finally:
        conn.close()


def _ack_latencies(agent: EdgeAgentProcess, records: list[dict[str, Any]]) -> list[float]:
    """One transaction a request to the agent, paced at RATE a second (after a few unpaced, to
    open a connection)."""
    poster = _Poster(agent.url)
    bodies = _bodies(records, 1)
    for body in bodies[:WARM_UP]:
        poster.post(body)
    paced = bodies[WARM_UP:]

    def send(i: int) -> None:
        if poster.post(paced[i]) != 1:
            raise RuntimeError(f"the agent did not accept transaction {i}")

    return _paced(send, len(paced), RATE)


def _post_all(poster: _Poster, bodies: list[bytes], connections: int) -> tuple[float, int]:
    """Every body over `connections` threads; (seconds, records accepted)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=connections) as pool:
        accepted = sum(pool.map(poster.post, bodies))
    return time.perf_counter() - started, accepted


def _store_status(agent: EdgeAgentProcess) -> dict[str, Any]:
    status: dict[str, Any] = agent.status()[STORE.store_id]
    return status


def _wait_empty(agent: EdgeAgentProcess) -> dict[str, Any]:
    """The agent's status once its outbox holds nothing pending."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = _store_status(agent)
        if status["buffer_depth"] == 0:
            return status
        time.sleep(0.1)
    raise RuntimeError("the agent's outbox was not drained within 10 minutes")


def _drain(agent: EdgeAgentProcess, before: int, every: float = 0.5) -> tuple[float, int]:
    """Watch the outbox until it is empty; (seconds, transactions delivered) from the first
    delivery seen, `before` being the delivered count until then."""
    deadline = time.monotonic() + 3600
    first: tuple[float, int] | None = None
    while time.monotonic() < deadline:
        now = time.perf_counter()
        status = _store_status(agent)
        if first is None and status["delivered_total"] > before:
            first = (now, status["delivered_total"])
        if first is not None and status["buffer_depth"] == 0:
            return now - first[0], status["delivered_total"] - first[1]
        time.sleep(every)
    raise RuntimeError("the agent's outbox was not drained within an hour")


def edge_figures() -> list[dict[str, Any]]:
    """Acknowledgement latency at RATE/s and the drain of a BACKLOG, each beside its baseline."""
    tune_gc()  # the generated records stay alive throughout
    paced_count = WARM_UP + RATE * SECONDS
    records = _traffic(paced_count + BACKLOG)
    paced, backlog = records[:paced_count], records[paced_count:]
    bodies = _bodies(backlog, BATCH)
    directory = Path(tempfile.mkdtemp(prefix="tillflow-bench-edge-"))
    try:
        base = _sqlite_latencies(paced[WARM_UP:], directory)
        linked = _Hub(directory / "hub")
        agent = EdgeAgentProcess({STORE.store_id: linked.key}, linked.url, directory / "edge", options=AGENT)
        try:
            agent.wait_ready()
            hub = linked.start()
            try:
                ours = _ack_latencies(agent, paced)
                before = _wait_empty(agent)["delivered_total"]
            finally:
                hub.stop()
            intake_seconds, taken = _post_all(_Poster(agent.url), bodies, 1)
            held = _store_status(agent)["buffer_depth"]
            hub = linked.start()
            try:
                drain_seconds, drained = _drain(agent, before)
                delivered = _store_status(agent)["delivered_total"] - before
            finally:
                hub.stop()
        finally:
            agent.stop()
        fresh = _Hub(directory / "hub-ingest")
        hub = fresh.start()
        try:
            ingest_seconds, ingested = _post_all(_Poster(fresh.url, fresh.key), bodies, CONNECTIONS)
        finally:
            hub.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if not ingested == taken == held == delivered == BACKLOG:
        raise RuntimeError(
            f"of {BACKLOG} transactions the hub accepted {ingested}; the agent {taken}, held {held}"
            f" and delivered {delivered}"
        )
    ingest_tps = BACKLOG / ingest_seconds
    return [
        _latency(f"durable acknowledgement p50 ({RATE}/s, one a request)", ours, base, 0.50),
        _latency(f"durable acknowledgement p99 ({RATE}/s, one a request)", ours, base, 0.99),
        _rate(f"agent intake of {BACKLOG} (batches of {BATCH})", BACKLOG / intake_seconds, ingest_tps),
        _rate(f"agent drain of a {BACKLOG} backlog to the hub", drained / drain_seconds, ingest_tps),
    ]


def _latency(name: str, ours: list[float], base: list[float], q: float) -> dict[str, Any]:
    mine, theirs = percentile(ours, q) or 0.0, percentile(base, q) or 0.0
    return {
        "name": name,
        "value": round(mine * 1000, 2),
        "unit": "ms",
        "baseline": round(theirs * 1000, 2),
        "ratio": round(theirs / mine, 3),
    }


def _rate(name: str, ours: float, base: float) -> dict[str, Any]:
    return {
        "name": name,
        "value": round(ours),
        "unit": "transactions/s",
        "baseline": round(base),
        "ratio": round(ours / base, 3),
    }
