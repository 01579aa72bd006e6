"""`tillflow import` and the gateway's POSLog endpoint against real processes and real samples.

One `tillflow hub` process serves the module, configured with the stores the samples come
from; the CLI runs as a subprocess in the test's own directory (where the default quarantine
report lands).

The samples, as they are: the NCR file is store "9" (business day 2017-10-01; SMALL.xml is
2017-09-30 and shares no identity with it); the ROQQIO files are store "100" except
retoure.xml (store "300"), and sale_floatprice.xml and sale_with_customer.xml carry the same
till identity (register 10001, 2024-07-31, sequence 2) with different amounts.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningHub, hub_process
from tests.servers import free_port
from tests.shared_data import sample
from tillflow.config import TillflowConfig
from tillflow.formats.policy import PolicyMaps
from tillflow.model import Store, Transaction

CLI = [sys.executable, "-m", "tillflow.cli", "import"]
PROBLEM = "application/problem+json"
XML = {"content-type": "application/xml"}
REPORT_HEADER = ["file", "record", "locator", "stage", "field", "reason", "numbers"]

NCR = sample("poslog", "ncr-acs-2.1", "POSLog.xml")
NCR_SMALL = sample("poslog", "ncr-acs-2.1", "SMALL.xml")
ROQQIO = sorted(sample("poslog", "roqqio-6.0").glob("*.xml"))
ROQQIO_TENDER_CHANGE = sample("poslog", "roqqio-6.0", "sale_with_tenderChange.xml")
ROQQIO_SALE = sample("poslog", "roqqio-6.0", "sale_floatprice.xml")
ROQQIO_SAME_IDENTITY = sample("poslog", "roqqio-6.0", "sale_with_customer.xml")  # as ROQQIO_SALE
CSV_FIRST_100 = sample("online-retail", "online_retail_first_100rows.csv")
CSV_DEDUP = sample("online-retail", "online_retail_dedup_sample_4792rows.csv")


# -- the hub ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def import_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """A hub whose stores are those of the samples: NCR store 9 is S009, ROQQIO 100 and 300
    are S100 and S300, the online-retail CSV is ONLINE. S009 and S100 have keys."""
    config = TillflowConfig(
        stores=[
            Store(store_id="S009", timezone="America/New_York", currency="USD"),
            Store(store_id="S100", timezone="Europe/Berlin", currency="EUR"),
            Store(store_id="S300", timezone="Europe/Berlin", currency="EUR"),
            Store(store_id="ONLINE", timezone="Europe/London", currency="GBP"),
        ],
        policy=PolicyMaps(store_aliases={"9": "S009", "100": "S100", "300": "S300"}),
    )
    with hub_process(tmp_path_factory.mktemp("import-hub"), config, keyed_stores=("S009", "S100")) as hub:
        yield hub


# -- helpers ---------------------------------------------------------------------------------


def run_import(*args: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`tillflow import ARGS` in `cwd`; a wide terminal so the summary table is not cut short."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILLFLOW_")}
    env["COLUMNS"] = "250"
    return subprocess.run(
        [*CLI, *(str(a) for a in args)], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )


def summary_rows(stderr: str) -> dict[str, dict[str, str]]:
    """The summary table printed on stderr: file name -> column -> cell."""
    header: list[str] | None = None
    rows: dict[str, dict[str, str]] = {}
    for line in stderr.splitlines():
        line = line.strip()
        if line.startswith("┃") and header is None:
            header = [cell.strip() for cell in line.strip("┃").split("┃")]
        elif line.startswith("│") and header is not None:
            cells = [cell.strip() for cell in line.strip("│").split("│")]
            row = dict(zip(header, cells, strict=True))
            rows[row["file"]] = row
    assert header is not None, f"no summary table in:\n{stderr}"
    return rows


def flat(text: str) -> str:
    """Text with every run of whitespace (line wraps included) as one space."""
    return " ".join(text.split())


def dry_transactions(hub: RunningHub, *files: Path, cwd: Path) -> list[Transaction]:
    """The canonical transactions `files` hold, as the hub's configuration maps them."""
    done = run_import("--dry-run", "--json", "--config", hub.config_path, *files, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return [Transaction.model_validate_json(line) for line in done.stdout.splitlines()]


def eventually(probe: Callable[[], Any], *, within: float = 60.0) -> Any:
    """Poll `probe` until it returns something truthy (the flows are asynchronous)."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def inventory_settled(client: httpx.Client) -> dict[str, Any] | None:
    """The flows' state once the inventory group has caught up with the log head."""
    flows: dict[str, Any] = client.get("/v1/flows").json()
    return flows if flows["consumer_groups"]["inventory"]["lag"] == 0 else None


def stock(client: httpx.Client, store: str, sku: str) -> Decimal:
    answer = client.get(f"/v1/inventory/{store}/{sku}")
    if answer.status_code == 404:
        return Decimal(0)
    answer.raise_for_status()
    return Decimal(answer.json()["quantity"])


def stock_delta(transactions: list[Transaction], store: str, sku: str) -> Decimal:
    """What the transactions (none of them post-voids) do to the stock of one SKU."""
    delta = Decimal(0)
    for tx in transactions:
        assert tx.voided is None
        if tx.store_id != store:
            continue
        for line in tx.lines:
            if line.sku != sku or line.item_type.value != "stock":
                continue
            if line.action.value == "sale":
                delta -= line.quantity
            elif line.restock:
                delta += line.quantity
    return delta


def report_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


# -- dry runs --------------------------------------------------------------------------------


class TestDryRun:
    @pytest.mark.parametrize(
        ("path", "fmt", "count"), [(ROQQIO_TENDER_CHANGE, "poslog", 1), (CSV_FIRST_100, "csv", 14)]
    )
    def test_json_prints_one_canonical_transaction_per_line(
        self, path: Path, fmt: str, count: int, tmp_path: Path
    ) -> None:
        done = run_import("--dry-run", "--json", path, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert len(lines) == count
        transactions = [Transaction.model_validate_json(line) for line in lines]
        assert len({tx.transaction_id for tx in transactions}) == count
        row = summary_rows(done.stderr)[path.name]
        assert row["format"] == fmt
        assert row["imported"] == str(count)
        assert "dry run" in done.stderr
        assert not (tmp_path / "quarantine.csv").exists()

    def test_a_quarantined_record_lands_in_the_report_and_exits_3(self, tmp_path: Path) -> None:
        done = run_import("--dry-run", CSV_DEDUP, cwd=tmp_path)
        assert done.returncode == 3, done.stderr
        assert done.stdout == ""
        row = summary_rows(done.stderr)[CSV_DEDUP.name]
        assert (row["imported"], row["quarantined"], row["not posted"]) == ("1629", "1", "463")
        report = tmp_path / "quarantine.csv"
        assert report.is_file()
        header, *rows = report_rows(report)
        assert header == REPORT_HEADER
        assert len(rows) == 1
        entry = dict(zip(header, rows[0], strict=True))
        assert entry["file"] == CSV_DEDUP.name
        assert "550193" in entry["locator"]
        assert (entry["stage"], entry["field"]) == ("parse", "UnitPrice")
        assert "0.001" in entry["numbers"]
        assert "quarantine.csv" in flat(done.stderr)

    def test_a_file_in_no_known_format_exits_2(self, tmp_path: Path) -> None:
        picture = tmp_path / "shelf.png"
        picture.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
        done = run_import("--dry-run", picture, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert "shelf.png: not a format tillflow reads" in flat(done.stderr)
        assert done.stdout == ""


# -- into a real hub -------------------------------------------------------------------------


class TestImportIntoTheHub:
    def test_every_transaction_lands_once_and_moves_stock(
        self, import_hub: RunningHub, tmp_path: Path
    ) -> None:
        # all ROQQIO files but the one that reuses another's till identity (see the next test)
        files = [NCR, *(p for p in ROQQIO if p != ROQQIO_SAME_IDENTITY), CSV_FIRST_100]
        expected = dry_transactions(import_hub, *files, cwd=tmp_path)
        assert len(expected) == 42 + 5 + 14
        ncr_tx = next(tx for tx in expected if tx.store_id == "S009" and tx.register_id == "34")
        assert ncr_tx.transaction_id.startswith("S009:34:2017-10-01:")
        sku = "85123A"  # in three of the online orders
        moved = stock_delta(expected, "ONLINE", sku)
        assert moved == Decimal(-18)

        with import_hub.client(import_hub.admin) as admin:
            eventually(lambda: inventory_settled(admin))
            stats_before = admin.get("/v1/stats").json()
            stock_before = stock(admin, "ONLINE", sku)

            done = run_import("--hub", import_hub.url, "--api-key", import_hub.admin,
                              "--config", import_hub.config_path, *files, cwd=tmp_path)  # fmt: skip
            assert done.returncode == 0, done.stderr
            rows = summary_rows(done.stderr)
            assert set(rows) == {p.name for p in files}
            for path in files:
                row = rows[path.name]
                assert row["accepted"] == row["imported"] != "0", row
                assert (row["duplicate"], row["conflict"], row["invalid"]) == ("0", "0", "0"), row
            assert sum(int(r["accepted"]) for r in rows.values()) == len(expected)
            assert (rows[NCR.name]["not posted"], rows[NCR.name]["format"]) == ("9", "poslog")
            assert not (tmp_path / "quarantine.csv").exists()

            stored = admin.get(f"/v1/transactions/{ncr_tx.transaction_id}")
            assert stored.status_code == 200, stored.text
            assert Transaction.model_validate(stored.json()["transaction"]) == ncr_tx

            flows = eventually(lambda: inventory_settled(admin))
            assert flows is not None, "the inventory flow did not catch up"
            stats = admin.get("/v1/stats").json()
            assert stats["transactions"] - stats_before["transactions"] == len(expected)
            assert stats["inventory_movements"] > stats_before["inventory_movements"]
            assert stock(admin, "ONLINE", sku) == stock_before + moved
            hops = admin.get(f"/v1/transactions/{ncr_tx.transaction_id}/trace").json()["hops"]
            assert [h["hop"] for h in hops] == ["received", "logged", "inventory.applied"]

            # the same files again: every record a duplicate, no effect twice
            again = run_import("--hub", import_hub.url, "--api-key", import_hub.admin,
                               "--config", import_hub.config_path, *files, cwd=tmp_path)  # fmt: skip
            assert again.returncode == 0, again.stderr
            rows_again = summary_rows(again.stderr)
            assert set(rows_again) == set(rows)
            for name, row in rows_again.items():
                assert row["accepted"] == "0", (name, row)
                assert row["duplicate"] == row["imported"] == rows[name]["imported"], (name, row)
            settled = eventually(lambda: inventory_settled(admin))
            stats_again = admin.get("/v1/stats").json()
            assert settled is not None and settled["head"] == flows["head"]
            assert stats_again["transactions"] == stats["transactions"]
            assert stats_again["inventory_movements"] == stats["inventory_movements"]
            assert stock(admin, "ONLINE", sku) == stock_before + moved

    def test_a_transaction_that_conflicts_with_a_stored_one_is_reported_as_refused(
        self, import_hub: RunningHub, tmp_path: Path
    ) -> None:
        # README: a conflict is "refused, recorded, original kept"; `tillflow import` exits 3
        # when "some refused" and writes refused records to the quarantine report.
        # The two samples sharing an identity, moved to a sequence no other test uses.
        sale, same_identity = tmp_path / ROQQIO_SALE.name, tmp_path / ROQQIO_SAME_IDENTITY.name
        for source, copy in ((ROQQIO_SALE, sale), (ROQQIO_SAME_IDENTITY, same_identity)):
            text = source.read_bytes()
            assert text.count(b"<SequenceNumber>2</SequenceNumber>") == 1
            copy.write_bytes(text.replace(b"<SequenceNumber>2<", b"<SequenceNumber>7002<"))
        (original,) = dry_transactions(import_hub, sale, cwd=tmp_path)
        (clash,) = dry_transactions(import_hub, same_identity, cwd=tmp_path)
        assert original.transaction_id == clash.transaction_id == "S100:10001:2024-07-31:00007002"
        assert original != clash
        auth = ("--hub", import_hub.url, "--api-key", import_hub.admin, "--config", import_hub.config_path)
        first = run_import(*auth, sale, cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        assert summary_rows(first.stderr)[sale.name]["accepted"] == "1"
        done = run_import(*auth, same_identity, cwd=tmp_path)
        row = summary_rows(done.stderr)[same_identity.name]
        assert (row["accepted"], row["conflict"]) == ("0", "1"), row
        with import_hub.client(import_hub.admin) as admin:
            kept = admin.get(f"/v1/transactions/{original.transaction_id}").json()
        assert Transaction.model_validate(kept["transaction"]) == original
        assert kept["conflicts"] >= 1
        assert done.returncode == 3, done.stderr
        report = tmp_path / "quarantine.csv"
        assert report.is_file(), "the conflicting record is missing from the quarantine report"
        header, *rows = report_rows(report)
        assert header == REPORT_HEADER
        assert [(r[0], r[3]) for r in rows] == [(same_identity.name, "hub")]

    def test_a_store_key_cannot_import_another_stores_file(
        self, import_hub: RunningHub, tmp_path: Path
    ) -> None:
        done = run_import("--hub", import_hub.url, "--api-key", import_hub.keys["S100"],
                          "--config", import_hub.config_path, NCR, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 2, done.stderr
        message = flat(done.stderr)
        assert "the hub answered 403" in message
        assert "S009" in message and "S100" in message

    def test_an_unreachable_hub_exits_2_naming_its_url(self, tmp_path: Path) -> None:
        url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        done = run_import("--hub", url, "--api-key", "tf_0000_unused", ROQQIO_TENDER_CHANGE, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert f"the hub at {url} cannot be reached" in flat(done.stderr)


# -- the gateway's POSLog endpoint -----------------------------------------------------------


def laughs(body: bytes) -> bytes:
    """`body` (a POSLog document without an XML declaration) behind a billion-laughs DTD, the
    entity used in a description."""
    entities = ['<!ENTITY lol0 "lol">']
    entities += [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    doctype = f"<!DOCTYPE POSLog [{''.join(entities)}]>".encode()
    assert body.count(b"<Description>APPLE HONEYCRISP ORG</Description>") == 1
    body = body.replace(b"<Description>APPLE HONEYCRISP ORG", b"<Description>&lol9;")
    return b'<?xml version="1.0"?>\n' + doctype + body


class TestPoslogOverHttp:
    def test_a_poslog_document_is_answered_per_transaction_in_document_order(
        self, import_hub: RunningHub
    ) -> None:
        body = NCR_SMALL.read_bytes()
        with import_hub.client(import_hub.admin) as admin:
            first = admin.post("/v1/transactions", content=body, headers=XML)
            again = admin.post("/v1/transactions", content=body, headers=XML)
            assert first.status_code == 200, first.text
            results = first.json()["results"]
            assert [(r["index"], r["status"]) for r in results] == [(0, "not_posted"), (1, "accepted")]
            assert results[0]["errors"] == [{"field": "$", "reason": "sign-on"}]
            assert results[1]["transaction_id"] == "S009:34:2017-09-30:00000161"
            assert first.json()["summary"] == {
                "accepted": 1, "duplicate": 0, "conflict": 0, "invalid": 0, "not_posted": 1,
            }  # fmt: skip
            assert [r["status"] for r in again.json()["results"]] == ["not_posted", "duplicate"]
            assert again.json()["summary"]["duplicate"] == 1
            stored = admin.get("/v1/transactions/S009:34:2017-09-30:00000161")
        assert stored.status_code == 200
        assert stored.json()["transaction"]["currency"] == "USD"

    def test_a_document_with_a_dtd_is_refused_and_nothing_is_stored(self, import_hub: RunningHub) -> None:
        # SMALL.xml as another sale (sequence 9161), so that nothing of it can be stored already
        assert NCR_SMALL.read_bytes().count(b"<SequenceNumber>161</SequenceNumber>") == 1
        body = NCR_SMALL.read_bytes().replace(
            b"<SequenceNumber>161</SequenceNumber>", b"<SequenceNumber>9161</SequenceNumber>"
        )
        tx_id = "S009:34:2017-09-30:00009161"
        with import_hub.client(import_hub.admin) as admin:
            before = admin.get("/v1/stats").json()["transactions"]
            answer = admin.post("/v1/transactions", content=laughs(body), headers=XML)
            after = admin.get("/v1/stats").json()["transactions"]
            lookup = admin.get(f"/v1/transactions/{tx_id}")
            # the same document without the DTD is taken, under that id
            plain = admin.post("/v1/transactions", content=body, headers=XML)
        assert answer.status_code == 400, answer.text
        assert answer.headers["content-type"] == PROBLEM
        assert answer.json()["type"].endswith("malformed-xml")
        assert after == before
        assert lookup.status_code == 404
        assert [(r["status"], r.get("transaction_id")) for r in plain.json()["results"]] == [
            ("not_posted", None),
            ("accepted", tx_id),
        ]

    def test_totals_that_do_not_add_up_are_invalid_with_the_numbers(self, import_hub: RunningHub) -> None:
        original = ROQQIO_TENDER_CHANGE.read_bytes()
        grand = b'<Total TotalType="TransactionGrandAmount" CurrencyCode="EUR">26.990</Total>'
        assert original.count(grand) == 1
        body = original.replace(grand, grand.replace(b"26.990", b"27.990"))
        with import_hub.client(import_hub.admin) as admin:
            answer = admin.post("/v1/transactions", content=body, headers=XML)
        assert answer.status_code == 200, answer.text
        (result,) = answer.json()["results"]
        assert result["status"] == "invalid"
        assert answer.json()["summary"]["invalid"] == 1
        assert result["errors"][0]["field"] == "Total[TransactionGrandAmount]"
        reason = result["errors"][0]["reason"]
        assert "27.99" in reason and "26.99" in reason, reason

    def test_a_store_key_cannot_post_another_stores_poslog(self, import_hub: RunningHub) -> None:
        with import_hub.client(import_hub.keys["S100"]) as client:
            answer = client.post("/v1/transactions", content=NCR_SMALL.read_bytes(), headers=XML)
        assert answer.status_code == 403
        assert answer.headers["content-type"] == PROBLEM
        assert answer.json()["type"].endswith("forbidden-store")
        assert "S009" in answer.json()["detail"]
