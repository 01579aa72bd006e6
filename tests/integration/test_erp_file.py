"""The file ERP adapter against real files: what a polling ERP finds in each store-day folder.

A journal becomes a CSV and a JSON file listed, with checksums, in the folder's manifest;
repeats write nothing; a changed document is refused; a restart still knows what was posted;
a crash never leaves a listed file missing; a disk that cannot take the files is unavailable.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tillflow.connectors.erp_file import FileErp
from tillflow.errors import DownstreamRejectedError, DownstreamUnavailableError
from tillflow.model import InventoryMovement, Journal, JournalLine, MovementReason
from tillflow.ports import ErpSystem, TrialBalanceLine

DAY = date(2026, 11, 29)
JOURNAL_HEADER = [
    "journal_id",
    "document_number",
    "store_id",
    "business_day",
    "line_no",
    "account",
    "debit",
    "credit",
    "currency",
    "description",
    "dimensions",
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "erp-drop"


@pytest.fixture
def erp(root: Path) -> FileErp:
    return FileErp(root)


def sale(
    journal_id: str,
    *,
    store: str = "S001",
    day: date = DAY,
    gross: str = "11.90",
    net: str = "10.00",
    tax: str = "1.90",
    revenue_account: str = "4000",
    currency: str = "EUR",
) -> Journal:
    return Journal(
        journal_id=journal_id,
        store_id=store,
        business_day=day,
        lines=(
            JournalLine(account="1000", debit=Decimal(gross), currency=currency, description="cash"),
            JournalLine(
                account=revenue_account,
                credit=Decimal(net),
                currency=currency,
                description="sales, grocery",
                dimensions={"department": "grocery", "store": store},
            ),
            JournalLine(account="2200", credit=Decimal(tax), currency=currency, description="VAT 19%"),
        ),
        source_transactions=(f"{store}-R01-{day.isoformat()}-000001",),
    )


def movement(quantity: str, n: int, *, store: str = "S500") -> InventoryMovement:
    return InventoryMovement(
        store_id=store,
        sku="GRO-0001",
        quantity=Decimal(quantity),
        reason=MovementReason.SALE if quantity.startswith("-") else MovementReason.RETURN,
        transaction_id=f"{store}-R01-{DAY.isoformat()}-{n:06d}",
        line_no=1,
        occurred_at=datetime(2026, 11, 29, 10, 15, tzinfo=UTC),
    )


def folder(root: Path, store: str = "S001", day: date = DAY) -> Path:
    return root / store / day.isoformat()


def manifest(root: Path, store: str = "S001", day: date = DAY) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder(root, store, day) / "manifest.json").read_bytes())
    return data


def documents(root: Path, store: str = "S001", day: date = DAY) -> dict[str, dict[str, Any]]:
    return {doc["external_id"]: doc for doc in manifest(root, store, day)["documents"]}


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under the root, by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_bytes().decode("utf-8"))))


def test_it_is_an_erp_system(erp: FileErp) -> None:
    port: ErpSystem = erp
    assert port is erp


class TestPostJournal:
    def test_a_journal_becomes_a_csv_a_json_and_a_manifest_entry(self, erp: FileErp, root: Path) -> None:
        receipt = erp.post_journal(sale("J-1"), idempotency_key="k-1")

        assert receipt.external_id == "J-1"
        assert receipt.document_number == "F-S001-20261129-0001"
        assert receipt.repeated is False
        assert receipt.posted_at.tzinfo is not None
        doc = documents(root)["J-1"]
        names = sorted(p.name for p in folder(root).iterdir())
        assert names == sorted(["manifest.json", doc["files"]["csv"]["name"], doc["files"]["json"]["name"]])
        assert doc["files"]["csv"]["name"].startswith("journal-J-1")
        assert {
            k: doc[k] for k in ("kind", "document_number", "line_count", "totals", "idempotency_key")
        } == {
            "kind": "journal",
            "document_number": "F-S001-20261129-0001",
            "line_count": 3,
            "totals": {"EUR": {"debit": "11.90", "credit": "11.90"}},
            "idempotency_key": "k-1",
        }
        assert doc["posted_at"] == receipt.posted_at.isoformat()

    def test_the_manifest_checksums_and_sizes_match_the_files(self, erp: FileErp, root: Path) -> None:
        erp.post_journal(sale("J-SUM"), idempotency_key="k-sum")

        for listed in documents(root)["J-SUM"]["files"].values():
            data = (folder(root) / listed["name"]).read_bytes()
            assert (listed["sha256"], listed["bytes"]) == (hashlib.sha256(data).hexdigest(), len(data))

    def test_the_csv_reads_back_as_the_same_lines(self, erp: FileErp, root: Path) -> None:
        journal = sale("J-CSV")
        receipt = erp.post_journal(journal, idempotency_key="k-csv")

        path = folder(root) / documents(root)["J-CSV"]["files"]["csv"]["name"]
        raw = path.read_bytes()
        assert b"\r" not in raw
        assert raw.decode("utf-8").splitlines()[0].split(",") == JOURNAL_HEADER
        rows = read_csv(path)
        assert {(r["journal_id"], r["document_number"], r["store_id"], r["business_day"]) for r in rows} == {
            ("J-CSV", receipt.document_number, "S001", "2026-11-29")
        }
        assert [r["line_no"] for r in rows] == ["1", "2", "3"]
        assert [(r["debit"], r["credit"]) for r in rows] == [
            ("11.90", "0.00"),
            ("0.00", "10.00"),
            ("0.00", "1.90"),
        ]
        parsed = tuple(
            JournalLine(
                account=r["account"],
                debit=Decimal(r["debit"]),
                credit=Decimal(r["credit"]),
                currency=r["currency"],
                description=r["description"],
                dimensions=json.loads(r["dimensions"]) if r["dimensions"] else {},
            )
            for r in rows
        )
        assert parsed == journal.lines

    def test_the_json_carries_the_http_adapters_fields(self, erp: FileErp, root: Path) -> None:
        erp.post_journal(sale("J-JSON"), idempotency_key="k-json")

        data = json.loads((folder(root) / documents(root)["J-JSON"]["files"]["json"]["name"]).read_bytes())
        assert data["external_id"] == "J-JSON"
        assert data["document_number"] == "F-S001-20261129-0001"
        assert data["source_transactions"] == ["S001-R01-2026-11-29-000001"]
        assert data["lines"][:2] == [
            {"account": "1000", "debit": "11.90", "currency": "EUR", "description": "cash", "dimensions": {}},
            {
                "account": "4000",
                "credit": "10.00",
                "currency": "EUR",
                "description": "sales, grocery",
                "dimensions": {"department": "grocery", "store": "S001"},
            },
        ]

    def test_document_numbers_count_up_per_store_day(self, erp: FileErp) -> None:
        numbers = [
            erp.post_journal(sale("J-A"), idempotency_key="k-a").document_number,
            erp.post_journal(sale("J-B"), idempotency_key="k-b").document_number,
            erp.post_journal(sale("J-C", day=date(2026, 11, 30)), idempotency_key="k-c").document_number,
            erp.post_journal(sale("J-D", store="S002"), idempotency_key="k-d").document_number,
        ]

        assert numbers == [
            "F-S001-20261129-0001",
            "F-S001-20261129-0002",
            "F-S001-20261130-0001",
            "F-S002-20261129-0001",
        ]


class TestIdempotency:
    def test_the_same_key_again_repeats_the_first_receipt_and_writes_nothing(
        self, erp: FileErp, root: Path
    ) -> None:
        first = erp.post_journal(sale("J-REPEAT"), idempotency_key="k-repeat")
        before = snapshot(root)

        again = erp.post_journal(sale("J-REPEAT"), idempotency_key="k-repeat")

        assert again == replace(first, repeated=True)
        assert snapshot(root) == before

    def test_the_same_journal_under_another_key_is_the_same_document(self, erp: FileErp, root: Path) -> None:
        first = erp.post_journal(sale("J-OTHER-KEY"), idempotency_key="k-other-1")
        before = snapshot(root)

        again = erp.post_journal(sale("J-OTHER-KEY"), idempotency_key="k-other-2")

        assert again == replace(first, repeated=True)
        assert snapshot(root) == before

    def test_the_same_id_with_other_lines_is_refused(self, erp: FileErp, root: Path) -> None:
        erp.post_journal(sale("J-CONFLICT"), idempotency_key="k-conflict")
        before = snapshot(root)

        with pytest.raises(DownstreamRejectedError) as caught:
            erp.post_journal(
                sale("J-CONFLICT", gross="23.80", net="20.00", tax="3.80"), idempotency_key="k-2"
            )

        assert "J-CONFLICT" in caught.value.reason
        assert "F-S001-20261129-0001" in caught.value.reason
        assert caught.value.system == "erp-file"
        assert snapshot(root) == before

    def test_a_key_used_for_another_journal_is_refused(self, erp: FileErp, root: Path) -> None:
        erp.post_journal(sale("J-KEY-1"), idempotency_key="k-shared")
        before = snapshot(root)

        with pytest.raises(DownstreamRejectedError, match="k-shared"):
            erp.post_journal(sale("J-KEY-2"), idempotency_key="k-shared")

        assert snapshot(root) == before

    def test_a_restarted_adapter_still_knows_what_was_posted(self, erp: FileErp, root: Path) -> None:
        first = erp.post_journal(sale("J-RESTART"), idempotency_key="k-restart")
        batch = erp.post_movements(
            "S500", DAY, [movement("-2", 1, store="S500")], batch_id="B-1", idempotency_key="k-b1"
        )
        before = snapshot(root)

        restarted = FileErp(root)

        assert restarted.posting_status("J-RESTART") == first
        assert restarted.posting_status("B-1") == batch
        assert restarted.posting_status("J-NEVER") is None
        assert restarted.post_journal(sale("J-RESTART"), idempotency_key="k-restart") == replace(
            first, repeated=True
        )
        with pytest.raises(DownstreamRejectedError):
            restarted.post_journal(sale("J-RESTART", net="9.00", tax="2.90"), idempotency_key="k-restart-2")
        assert snapshot(root) == before
        assert restarted.post_journal(sale("J-NEXT"), idempotency_key="k-next").document_number == (
            "F-S001-20261129-0002"
        )

    def test_posting_status_of_a_new_posting(self, erp: FileErp) -> None:
        assert erp.posting_status("J-STATUS") is None

        receipt = erp.post_journal(sale("J-STATUS"), idempotency_key="k-status")

        assert erp.posting_status("J-STATUS") == receipt


class TestConcurrentPosts:
    def test_threads_posting_one_store_day_get_distinct_numbers_all_listed(
        self, erp: FileErp, root: Path
    ) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            receipts = list(
                pool.map(lambda n: erp.post_journal(sale(f"J-T{n}"), idempotency_key=f"k-t{n}"), range(16))
            )

        assert sorted(r.document_number for r in receipts) == [
            f"F-S001-20261129-{n:04d}" for n in range(1, 17)
        ]
        assert set(documents(root)) == {f"J-T{n}" for n in range(16)}

    def test_threads_posting_the_same_journal_post_it_once(self, erp: FileErp, root: Path) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            receipts = list(
                pool.map(lambda _: erp.post_journal(sale("J-SAME"), idempotency_key="k-same"), range(8))
            )

        assert [r.repeated for r in receipts].count(False) == 1
        assert {r.document_number for r in receipts} == {"F-S001-20261129-0001"}
        assert len(manifest(root)["documents"]) == 1


class TestMovements:
    def test_a_batch_becomes_files_listed_in_the_manifest(self, erp: FileErp, root: Path) -> None:
        moves = [movement("-2", 1), movement("1.500", 2), movement("-1", 3)]

        receipt = erp.post_movements(
            "S500", DAY, moves, batch_id="S500:2026-11-29/inv 7", idempotency_key="k-m"
        )

        assert receipt.document_number == "F-S500-20261129-0001"
        doc = documents(root, "S500")["S500:2026-11-29/inv 7"]
        assert (doc["kind"], doc["line_count"], doc["totals"]) == ("movements", 3, {})
        names = [doc["files"][kind]["name"] for kind in ("csv", "json")]
        assert all(
            ":" not in n and "/" not in n and " " not in n and n.startswith("movements-") for n in names
        )
        rows = read_csv(folder(root, "S500") / names[0])
        assert [(r["line_no"], r["sku"], r["quantity"], r["reason"], r["transaction_id"]) for r in rows] == [
            ("1", "GRO-0001", "-2", "sale", "S500-R01-2026-11-29-000001"),
            ("2", "GRO-0001", "1.5", "return", "S500-R01-2026-11-29-000002"),
            ("3", "GRO-0001", "-1", "sale", "S500-R01-2026-11-29-000003"),
        ]
        assert {r["batch_id"] for r in rows} == {"S500:2026-11-29/inv 7"}
        data = json.loads((folder(root, "S500") / names[1]).read_bytes())
        assert data["movements"][0] == {
            "store_id": "S500",
            "sku": "GRO-0001",
            "quantity": "-2",
            "uom": "EA",
            "reason": "sale",
            "transaction_id": "S500-R01-2026-11-29-000001",
            "line_no": 1,
            "occurred_at": "2026-11-29T10:15:00+00:00",
        }
        assert erp.posting_status("S500:2026-11-29/inv 7") == receipt

    def test_ids_whose_slugs_agree_get_distinct_files(self, erp: FileErp, root: Path) -> None:
        erp.post_movements("S500", DAY, [movement("-1", 1)], batch_id="B:1", idempotency_key="k-colon")
        erp.post_movements("S500", DAY, [movement("-1", 2)], batch_id="B/1", idempotency_key="k-slash")

        docs = documents(root, "S500")
        assert docs["B:1"]["files"]["csv"]["name"] != docs["B/1"]["files"]["csv"]["name"]
        assert len(list(folder(root, "S500").iterdir())) == 5

    def test_a_repeated_batch_writes_nothing(self, erp: FileErp, root: Path) -> None:
        first = erp.post_movements("S500", DAY, [movement("-2", 1)], batch_id="B-R", idempotency_key="k-r")
        before = snapshot(root)

        again = erp.post_movements("S500", DAY, [movement("-2.0", 1)], batch_id="B-R", idempotency_key="k-r")

        assert again == replace(first, repeated=True)
        assert snapshot(root) == before

    def test_a_movement_of_another_store_is_refused(self, erp: FileErp, root: Path) -> None:
        with pytest.raises(DownstreamRejectedError, match="S777"):
            erp.post_movements(
                "S500",
                DAY,
                [movement("-1", 1), movement("-1", 2, store="S777")],
                batch_id="B-X",
                idempotency_key="k-x",
            )

        assert not root.exists()
        assert erp.posting_status("B-X") is None


class TestTrialBalance:
    def test_sums_per_account_and_currency_of_the_store_days_journals(self, erp: FileErp) -> None:
        erp.post_journal(sale("J-TB-1"), idempotency_key="k-tb-1")
        erp.post_journal(sale("J-TB-2", gross="23.80", net="20.00", tax="3.80"), idempotency_key="k-tb-2")
        erp.post_journal(
            sale("J-TB-3", gross="5.95", net="5.00", tax="0.95", revenue_account="4090"),
            idempotency_key="k-tb-3",
        )
        erp.post_journal(
            sale("J-TB-USD", gross="2.38", net="2.00", tax="0.38", currency="USD"), idempotency_key="k-usd"
        )
        erp.post_journal(sale("J-TB-OTHER-DAY", day=date(2026, 11, 30)), idempotency_key="k-tb-day")
        erp.post_journal(sale("J-TB-OTHER-STORE", store="S002"), idempotency_key="k-tb-store")
        erp.post_movements(
            "S001", DAY, [movement("-1", 1, store="S001")], batch_id="B-TB", idempotency_key="k-tb-m"
        )

        assert erp.trial_balance("S001", DAY) == [
            TrialBalanceLine("1000", "EUR", Decimal("41.65"), Decimal("0.00")),  # 11.90 + 23.80 + 5.95
            TrialBalanceLine("1000", "USD", Decimal("2.38"), Decimal("0.00")),
            TrialBalanceLine("2200", "EUR", Decimal("0.00"), Decimal("6.65")),  # 1.90 + 3.80 + 0.95
            TrialBalanceLine("2200", "USD", Decimal("0.00"), Decimal("0.38")),
            TrialBalanceLine("4000", "EUR", Decimal("0.00"), Decimal("30.00")),
            TrialBalanceLine("4000", "USD", Decimal("0.00"), Decimal("2.00")),
            TrialBalanceLine("4090", "EUR", Decimal("0.00"), Decimal("5.00")),
        ]

    def test_a_store_day_without_journals_is_empty(self, erp: FileErp) -> None:
        assert erp.trial_balance("S404", DAY) == []


class _Crash(BaseException):
    """The process dying mid-write: nothing after it runs, no except clause catches it."""


def fail_on_manifest(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    real = os.replace

    def replace_file(src: Any, dst: Any) -> None:
        if Path(dst).name == "manifest.json":
            raise error
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace_file)


class TestCrashes:
    def test_a_manifest_that_cannot_be_written_lists_nothing_and_a_retry_posts(
        self, erp: FileErp, root: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        erp.post_journal(sale("J-BEFORE"), idempotency_key="k-before")
        before = snapshot(root)
        fail_on_manifest(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))

        with pytest.raises(DownstreamUnavailableError, match="No space left"):
            erp.post_journal(sale("J-FULL"), idempotency_key="k-full")

        assert snapshot(root) == before  # no temp file, no unlisted data file, the old manifest
        assert erp.posting_status("J-FULL") is None
        monkeypatch.undo()
        receipt = erp.post_journal(sale("J-FULL"), idempotency_key="k-full")
        assert (receipt.document_number, receipt.repeated) == ("F-S001-20261129-0002", False)
        assert FileErp(root).posting_status("J-FULL") == receipt

    def test_a_crash_before_the_manifest_leaves_the_journal_unposted(
        self, erp: FileErp, root: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        erp.post_journal(sale("J-FIRST"), idempotency_key="k-first")
        listed_before = manifest(root)
        fail_on_manifest(monkeypatch, _Crash())
        with pytest.raises(_Crash):
            erp.post_journal(sale("J-CRASH"), idempotency_key="k-crash")
        monkeypatch.undo()
        (folder(root) / ".manifest.json.dead.tmp").write_bytes(b'{"documents": [')  # a half-written temp
        orphans = {p.name for p in folder(root).glob("journal-J-CRASH*")}
        assert len(orphans) == 2  # the data files made it, the manifest did not

        restarted = FileErp(root)

        assert restarted.posting_status("J-CRASH") is None
        assert manifest(root) == listed_before
        assert restarted.trial_balance("S001", DAY)[0] == TrialBalanceLine(
            "1000", "EUR", Decimal("11.90"), Decimal(0)
        )
        receipt = restarted.post_journal(sale("J-CRASH"), idempotency_key="k-crash")
        assert receipt.document_number == "F-S001-20261129-0002"
        assert not list(folder(root).glob(".*.tmp"))
        for listed in documents(root)["J-CRASH"]["files"].values():
            data = (folder(root) / listed["name"]).read_bytes()
            assert listed["sha256"] == hashlib.sha256(data).hexdigest()


class TestUnavailable:
    def test_a_root_that_cannot_hold_folders_is_unavailable(self, tmp_path: Path) -> None:
        root = tmp_path / "not-a-folder"
        root.write_text("a file where the drop folder should be\n")
        erp = FileErp(root)

        with pytest.raises(DownstreamUnavailableError) as caught:
            erp.post_journal(sale("J-NOWHERE"), idempotency_key="k-nowhere")

        assert caught.value.system == "erp-file"
        assert erp.posting_status("J-NOWHERE") is None
        assert root.read_text() == "a file where the drop folder should be\n"
