"""Posting throughput against a throttled ERP, beside the ERP's own limit (the baseline).

The reference ERP runs as its own process with a rate limit of `LIMIT` requests a second
(bursts of `BURST`). The posting flow of a real hub state posts the journals of `count`
transactions through the ERP connector, one journal a request, so the limit is a limit on
journals; the figure is journals posted per second, measured from the first post to the last,
and the ratio to the limit shows how close the connector runs to what the ERP grants:

- throttled: the connector's throttle set to the ERP's limit; no request is refused;
- unthrottled: no throttle of ours; the ERP's X-RateLimit-* headers (and its 429s with
  Retry-After, should the connector still overrun it) alone pace the connector.

(In production the flow posts up to 100 journals a request, so the same limit carries 100
times the journals; one a request is what makes the limit measurable here.)
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from tillflow.bootstrap import bootstrap
from tillflow.config import TillflowConfig
from tillflow.flows.posting import PostingAccounts, journal_for
from tillflow.model import Transaction
from tillflow.processes import ReferenceService
from tillflow.sim.pos import PosTrafficGenerator, demo_stores

LIMIT = 20  # requests a second the ERP grants
BURST = 5


def _traffic(count: int) -> list[Transaction]:
    gen = PosTrafficGenerator(demo_stores(4), business_day=datetime.now(UTC).date(), seed=3)
    return [tx for tx in gen.transactions(count) if tx.voided is None]


def _post_all(directory: Path, erp_url: str, txs: list[Transaction], connector: dict[str, Any]) -> float:
    """Seconds the posting flow takes to post every journal of `txs` (from a standing start)."""
    from tillflow.ports import IncomingTransaction

    config = TillflowConfig(hub={"data_dir": directory}, connectors={"erp": {"url": erp_url, **connector}})
    services = bootstrap(config)
    stop = threading.Event()
    try:
        payloads = [(tx, tx.model_dump_json().encode()) for tx in txs]
        incoming = [
            IncomingTransaction(tx, data, hashlib.sha256(data).hexdigest(), None) for tx, data in payloads
        ]
        services.transactions.record_batch(incoming, received_at=datetime.now(UTC))
        [runner] = services.consumers(["posting"])
        runner.idle_wait = 0.01
        started = time.perf_counter()
        thread = runner.start(stop)
        while True:
            state = services.event_log.read_groups().get("posting")
            if state is not None and state.lag == 0 and state.pending == 0:
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        stop.set()
        runner.wake.set()
        thread.join(timeout=30)
        if state.dead_letters:
            raise SystemExit(f"{state.dead_letters} postings were dead-lettered")
        return seconds
    finally:
        services.close()


def downstream_figures(count: int = 600) -> list[dict[str, Any]]:
    """Throttled and unthrottled posting against an ERP limited to LIMIT requests/s."""
    txs = _traffic(count)
    journals = sum(1 for tx in txs if journal_for(tx, PostingAccounts()) is not None)
    figures: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tillflow-bench-erp-") as tmp:
        root = Path(tmp)
        settings = root / "erp-settings.yaml"
        settings.write_text(yaml.safe_dump({"rate_limit": {"per_second": LIMIT, "burst": BURST}}))
        runs: dict[str, dict[str, Any]] = {
            "throttled at the limit": {"max_batch": 1, "resilience": {"rate": LIMIT, "burst": BURST}},
            "unthrottled (the ERP's headers pace it)": {"max_batch": 1},
        }
        for n, (name, connector) in enumerate(runs.items()):
            erp = ReferenceService("erp", root / f"erp-{n}", settings_path=settings)
            try:
                erp.wait_ready()
                seconds = _post_all(root / f"hub-{n}", erp.url, txs, connector)
                state = erp.state()
            finally:
                erp.stop()
            answers = state["answers"]
            assert isinstance(answers, dict)
            if state["journals_posted"] != journals:
                raise SystemExit(f"{name}: {state['journals_posted']} journals posted, {journals} expected")
            rate = journals / seconds
            requests = sum(answers.values())
            figures.append(
                {
                    "name": f"ERP posting, {name}",
                    "value": round(rate, 1),
                    "unit": f"journals/s ({answers.get('429', 0)}×429 in {requests} requests)",
                    "baseline": LIMIT,
                    "ratio": round(rate / LIMIT, 3),
                }
            )
    return figures


def aggregated_figure(count: int = 30_000) -> dict[str, Any]:
    """One store-day of `count` transactions: their amounts merged under the reference ERP's
    lines limit (`aggregate_transactions`, the aggregated policy's path) and posted to it (no
    rate limit), beside a plain-Python sum of the same amounts (revenue by department, tax by
    code, tenders by kind)."""
    from tillflow.connectors.erp_http import HttpErp
    from tillflow.flows.aggregation import aggregate_transactions

    day = datetime.now(UTC).date()
    gen = PosTrafficGenerator(demo_stores(1), business_day=day, seed=5)
    txs = [tx for tx in gen.transactions(count) if tx.voided is None]
    started = time.perf_counter()
    sums: dict[Any, Any] = {}
    for tx in txs:
        for line in tx.lines:
            sums[line.department] = sums.get(line.department, 0) + line.net_amount
        for tax in tx.taxes:
            sums[tax.code] = sums.get(tax.code, 0) + tax.amount
        for tender in tx.tenders:
            sums[tender.kind] = sums.get(tender.kind, 0) + tender.amount - tender.change
    baseline = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="tillflow-bench-erp-") as tmp:
        settings = Path(tmp) / "erp-settings.yaml"
        settings.write_text(yaml.safe_dump({"rate_limit": None}))
        erp = ReferenceService("erp", Path(tmp) / "erp", settings_path=settings)
        try:
            erp.wait_ready()
            with HttpErp(erp.url) as client:
                started = time.perf_counter()
                posting = aggregate_transactions(
                    txs, accounts=PostingAccounts(), store_id="S001", business_day=day, max_lines=500
                )
                keys = [j.journal_id for j in posting.journals]
                answers = client.post_journals(posting.journals, idempotency_keys=keys)
                seconds = time.perf_counter() - started
        finally:
            erp.stop()
    refused = [a for a in answers if isinstance(a, Exception)]
    if refused:
        raise SystemExit(f"the ERP refused an aggregated journal: {refused[0]}")
    return {
        "name": f"aggregated posting of a store-day ({len(txs)} transactions)",
        "value": round(seconds, 2),
        "unit": f"s to build and post ({len(posting.journals)} journals)",
        "baseline": round(baseline, 3),
        "ratio": round(seconds / baseline, 1),
    }
