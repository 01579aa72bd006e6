"""Day close and reconciliation over HTTP and from the command line, against a real hub
process posting to the reference ERP: one store posts line by line, the other per day."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from pathlib import Path

import orjson
import pytest

from tests.e2e.conftest import RunningHub, hub_process, reference_service
from tillflow.config import PostingSettings, TillflowConfig
from tillflow.connectors.settings import ConnectorSettings, HttpConnectorSettings
from tillflow.flows.store_day import StorePolicy
from tillflow.model import Transaction
from tillflow.sim.pos import PosTrafficGenerator, demo_stores, z_reports

DAY = date(2026, 11, 29)
CLI = [sys.executable, "-m", "tillflow.cli"]
STORES = demo_stores(2)


@pytest.fixture(scope="module")
def txs() -> list[Transaction]:
    """The day's traffic of both stores, as the tills rang it up."""
    return PosTrafficGenerator(STORES, business_day=DAY, seed=11).transactions(300)


@pytest.fixture(scope="module")
def books(tmp_path_factory: pytest.TempPathFactory, txs: list[Transaction]) -> Iterator[RunningHub]:
    """A hub posting to the reference ERP (S001 line by line, S002 per day) that has been sent
    the day's traffic."""
    data_dir = tmp_path_factory.mktemp("books")
    with reference_service("erp", data_dir / "erp") as erp:
        config = TillflowConfig(
            stores=STORES,
            connectors=ConnectorSettings(erp=HttpConnectorSettings(url=erp.url)),
            posting=PostingSettings(stores={"S002": StorePolicy(policy="aggregated")}, day_close_grace=2),
        )
        with hub_process(data_dir, config) as hub:
            for store in ("S001", "S002"):
                with hub.client(hub.keys[store]) as client:
                    records = [tx.model_dump(mode="json") for tx in txs if tx.store_id == store]
                    answer = client.post("/v1/transactions", json={"transactions": records})
                    assert answer.status_code == 200, answer.text
                    assert answer.json()["summary"]["accepted"] == len(records)
            yield hub


def z_of(txs: list[Transaction], store: str) -> dict[str, object]:
    closed_at = datetime(2026, 11, 29, 23, 30, tzinfo=UTC)  # the same report every time
    [report] = z_reports([tx for tx in txs if tx.store_id == store], closed_at=closed_at)
    body: dict[str, object] = orjson.loads(report.model_dump_json())
    return body


def close_all(books: RunningHub, txs: list[Transaction]) -> list[tuple[int, int, str]]:
    """Each store sends its Z report twice: (first status, second status, second verdict)."""
    answers = []
    for store in ("S001", "S002"):
        body = z_of(txs, store)
        with books.client(books.keys[store]) as client:
            first = client.post("/v1/day-closes", json=body)
            again = client.post("/v1/day-closes", json=body)
        answers.append((first.status_code, again.status_code, again.json()["verdict"]))
    return answers


def wait_posted(books: RunningHub) -> list[dict[str, object]]:
    with books.client(books.admin) as client:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            closes = client.get("/v1/day-closes", params={"day": DAY.isoformat()}).json()["day_closes"]
            # S002's day is posted as a whole; S001's sales go line by line through the posting
            # flow, which must have caught up too before the books can be compared
            posting = client.get("/v1/flows").json()["consumer_groups"].get("posting", {})
            caught_up = posting.get("lag") == 0 and not posting.get("pending")
            if len(closes) == 2 and all(c["state"] == "posted" for c in closes) and caught_up:
                return list(closes)
            time.sleep(0.2)
    raise AssertionError(f"day closes not posted: {closes}")


class TestDayCloseApi:
    def test_a_store_key_closes_only_its_own_store(self, books: RunningHub, txs: list[Transaction]) -> None:
        with books.client(books.keys["S001"]) as client:
            answer = client.post("/v1/day-closes", json=z_of(txs, "S002"))
        assert answer.status_code == 403
        assert answer.headers["content-type"].startswith("application/problem+json")

    def test_a_malformed_z_report_is_refused_with_the_field(
        self, books: RunningHub, txs: list[Transaction]
    ) -> None:
        body = z_of(txs, "S001") | {"registers": []}
        with books.client(books.keys["S001"]) as client:
            answer = client.post("/v1/day-closes", json=body)
        assert answer.status_code == 400  # the hub's answer to a request that does not validate
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert any("registers" in e["field"] for e in answer.json()["errors"]), answer.json()

    def test_closing_the_day_posts_it_and_reconciles_it(
        self, books: RunningHub, txs: list[Transaction], tmp_path: Path
    ) -> None:
        answers = close_all(books, txs)
        assert all((status, verdict) == (200, "duplicate") for _, status, verdict in answers), answers
        closes = wait_posted(books)
        assert {c["store_id"]: c["gap"] for c in closes} == {"S001": [], "S002": []}

        with books.client(books.admin) as client:
            json_answer = client.get("/v1/reconciliation", params={"day": DAY.isoformat()}).json()
            csv_answer = client.get("/v1/reconciliation", params={"day": DAY.isoformat(), "format": "csv"})
            html_answer = client.get("/v1/reconciliation", params={"day": DAY.isoformat(), "format": "html"})
        assert json_answer["matched"] is True, [d["differences"] for d in json_answer["store_days"]]
        policies = {d["store_id"]: d["posting"]["policy"] for d in json_answer["store_days"]}
        assert policies == {"S001": "line", "S002": "aggregated"}
        s002 = next(d for d in json_answer["store_days"] if d["store_id"] == "S002")
        assert s002["posting"]["journals"] and all(
            j["state"] == "posted" for j in s002["posting"]["journals"]
        )
        assert csv_answer.headers["content-type"].startswith("text/csv")
        header, *rows = csv_answer.text.strip().splitlines()
        assert "store_id" in header and rows
        assert html_answer.headers["content-type"].startswith("text/html")
        parser = HTMLParser()
        parser.feed(html_answer.text)
        assert "S001" in html_answer.text and "S002" in html_answer.text

        html_file = tmp_path / "reconciliation.html"
        done = subprocess.run(
            [
                *CLI,
                "reconcile",
                "--day",
                DAY.isoformat(),
                "--config",
                str(books.config_path),
                "--format",
                "html",
                "--output",
                str(html_file),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr + done.stdout
        assert "S002" in html_file.read_text()
        table = subprocess.run(
            [
                *CLI,
                "reconcile",
                "--day",
                DAY.isoformat(),
                "--store",
                "S002",
                "--config",
                str(books.config_path),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert table.returncode == 0, table.stderr + table.stdout
        assert "S002" in table.stdout and "S001" not in table.stdout

        status = subprocess.run(
            [
                *CLI,
                "postings",
                "status",
                "--day",
                DAY.isoformat(),
                "--config",
                str(books.config_path),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert status.returncode == 0, status.stderr
        states = {row["store"]: row for row in orjson.loads(status.stdout)}
        for store in ("S001", "S002"):
            sent = sum(1 for tx in txs if tx.store_id == store)
            row = states[store]
            assert (row["transactions"], row["pending"], row["failed"], row["dead_lettered"]) == (
                sent,
                0,
                0,
                0,
            )
            assert row["posted"] + row["nothing_to_post"] == sent
        assert (states["S001"]["policy"], states["S002"]["policy"]) == ("line", "aggregated")

    def test_a_different_z_report_after_the_day_is_posted_is_a_conflict(
        self, books: RunningHub, txs: list[Transaction]
    ) -> None:
        close_all(books, txs)
        wait_posted(books)
        body = z_of(txs, "S002")
        body["registers"][0]["transaction_count"] += 1  # type: ignore[index]
        with books.client(books.keys["S002"]) as client:
            answer = client.post("/v1/day-closes", json=body)
        assert answer.status_code == 409, answer.text
        assert answer.json()["type"].endswith("day-close-conflict")
