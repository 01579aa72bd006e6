"""The ERP adapter's contract, run against the reference ERP as a real process.

Every port method's happy path with exact values, idempotent repeats, the ERP's refusals as
`DownstreamRejectedError` with its reason, and its absences (maintenance, outage, throttling,
server errors, a slow answer, a closed port) as `DownstreamUnavailableError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_sim_erp import ErpProcess, start
from tillflow.connectors.erp_http import HttpErp
from tillflow.errors import DownstreamRejectedError, DownstreamUnavailableError
from tillflow.model import InventoryMovement, Journal, JournalLine, MovementReason
from tillflow.ports import ErpSystem, PostingReceipt, TrialBalanceLine
from tillflow.sim.erp import MaintenanceWindow, RateLimit

DAY = date(2026, 11, 29)
CLOSED = "2026-10"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ErpProcess]:
    process = start(tmp_path_factory.mktemp("erp-http"), closed_periods=[CLOSED])
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def erp(service: ErpProcess) -> Iterator[HttpErp]:
    with HttpErp(service.url) as adapter:
        yield adapter
    service.http.delete("/admin/faults")  # a test that injected faults leaves a healthy ERP


def sale(
    journal_id: str,
    *,
    store: str = "S001",
    day: date = DAY,
    gross: str = "11.90",
    net: str = "10.00",
    tax: str = "1.90",
    revenue_account: str = "4000",
) -> Journal:
    return Journal(
        journal_id=journal_id,
        store_id=store,
        business_day=day,
        lines=(
            JournalLine(account="1000", debit=Decimal(gross), currency="EUR", description="cash"),
            JournalLine(
                account=revenue_account,
                credit=Decimal(net),
                currency="EUR",
                description="sales",
                dimensions={"department": "grocery"},
            ),
            JournalLine(account="2200", credit=Decimal(tax), currency="EUR", description="VAT 19%"),
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


def set_faults(service: ErpProcess, **faults: Any) -> None:
    answer = service.http.put("/admin/faults", json=faults)
    assert answer.status_code == 200, answer.text


def test_it_is_an_erp_system(erp: HttpErp) -> None:
    port: ErpSystem = erp
    assert port is erp


class TestPostJournal:
    def test_a_balanced_journal_gets_a_document_number(self, erp: HttpErp, service: ErpProcess) -> None:
        receipt = erp.post_journal(sale("J-HTTP-1"), idempotency_key="k-http-1")

        assert receipt.external_id == "J-HTTP-1"
        assert re.fullmatch(r"JE-\d{6}", receipt.document_number)
        assert receipt.repeated is False
        assert receipt.posted_at.tzinfo is not None
        held = service.http.get("/api/journals/J-HTTP-1").json()
        assert (held["document_number"], held["posted_at"]) == (
            receipt.document_number,
            receipt.posted_at.isoformat(),
        )

    def test_the_lines_arrive_as_sent(self, erp: HttpErp, service: ErpProcess) -> None:
        erp.post_journal(sale("J-HTTP-LINES", store="S321"), idempotency_key="k-http-lines")

        balance = service.http.get(
            "/api/trial-balance", params={"store_id": "S321", "business_day": DAY.isoformat()}
        ).json()
        assert [(x["account"], x["debit"], x["credit"]) for x in balance["lines"]] == [
            ("1000", "11.90", "0.00"),
            ("2200", "0.00", "1.90"),
            ("4000", "0.00", "10.00"),
        ]

    def test_the_same_key_again_repeats_the_first_answer(self, erp: HttpErp, service: ErpProcess) -> None:
        first = erp.post_journal(sale("J-HTTP-REPEAT"), idempotency_key="k-http-repeat")
        posted = service.state()["journals_posted"]

        again = erp.post_journal(sale("J-HTTP-REPEAT"), idempotency_key="k-http-repeat")

        assert again == PostingReceipt(
            external_id="J-HTTP-REPEAT",
            document_number=first.document_number,
            posted_at=first.posted_at,
            repeated=True,
        )
        assert service.state()["journals_posted"] == posted

    def test_the_same_journal_under_another_key_is_the_same_document(
        self, erp: HttpErp, service: ErpProcess
    ) -> None:
        first = erp.post_journal(sale("J-HTTP-OTHER-KEY"), idempotency_key="k-http-other-1")
        posted = service.state()["journals_posted"]

        again = erp.post_journal(sale("J-HTTP-OTHER-KEY"), idempotency_key="k-http-other-2")

        assert (again.document_number, again.posted_at, again.repeated) == (
            first.document_number,
            first.posted_at,
            True,
        )
        assert service.state()["journals_posted"] == posted

    def test_an_unknown_account_is_refused_with_the_reason(self, erp: HttpErp) -> None:
        with pytest.raises(DownstreamRejectedError) as refused:
            erp.post_journal(sale("J-HTTP-UNKNOWN", revenue_account="4999"), idempotency_key="k-http-unknown")

        assert refused.value.system == "erp"
        assert refused.value.status == 422
        assert "account 4999 is not in the chart" in refused.value.reason
        assert erp.posting_status("J-HTTP-UNKNOWN") is None

    def test_a_closed_period_is_refused_with_the_reason(self, erp: HttpErp) -> None:
        with pytest.raises(DownstreamRejectedError) as refused:
            erp.post_journal(sale("J-HTTP-CLOSED", day=date(2026, 10, 31)), idempotency_key="k-http-closed")

        assert refused.value.status == 422
        assert f"fiscal period {CLOSED} is closed for posting" in refused.value.reason

    def test_the_same_journal_id_with_other_content_is_a_conflict(self, erp: HttpErp) -> None:
        first = erp.post_journal(sale("J-HTTP-CONFLICT"), idempotency_key="k-http-conflict-1")

        with pytest.raises(DownstreamRejectedError) as refused:
            erp.post_journal(
                sale("J-HTTP-CONFLICT", gross="23.80", net="20.00", tax="3.80"),
                idempotency_key="k-http-conflict-2",
            )

        assert refused.value.status == 409
        assert f"J-HTTP-CONFLICT was posted as {first.document_number}" in refused.value.reason

    def test_a_key_reused_for_another_journal_is_refused(self, erp: HttpErp) -> None:
        erp.post_journal(sale("J-HTTP-KEY-A"), idempotency_key="k-http-reused")

        with pytest.raises(DownstreamRejectedError) as refused:
            erp.post_journal(sale("J-HTTP-KEY-B"), idempotency_key="k-http-reused")

        assert (refused.value.status, refused.value.reason) == (
            422,
            "idempotency key reused with another request",
        )

    def test_an_empty_key_is_a_bad_request(self, erp: HttpErp) -> None:
        with pytest.raises(DownstreamRejectedError) as refused:
            erp.post_journal(sale("J-HTTP-NO-KEY"), idempotency_key="")

        assert refused.value.status == 400
        assert "Idempotency-Key" in refused.value.reason


class TestPostJournals:
    def test_a_batch_answers_each_journal_and_one_refusal_spares_the_rest(self, erp: HttpErp) -> None:
        journals = [sale("J-BATCH-1"), sale("J-BATCH-2", revenue_account="4999"), sale("J-BATCH-3")]
        keys = ["k-batch-1", "k-batch-2", "k-batch-3"]

        first, refused, third = erp.post_journals(journals, idempotency_keys=keys)

        assert isinstance(first, PostingReceipt) and isinstance(third, PostingReceipt)
        assert isinstance(refused, DownstreamRejectedError)
        assert "J-BATCH-2" in refused.reason and "4999" in refused.reason and refused.status == 422
        assert erp.posting_status("J-BATCH-2") is None
        assert erp.posting_status("J-BATCH-3") == third

    def test_a_batch_sent_again_answers_with_the_same_documents(self, service: ErpProcess) -> None:
        journals = [sale(f"J-AGAIN-{n}") for n in range(5)]
        keys = [f"k-again-{n}" for n in range(5)]
        with HttpErp(service.url, max_batch=2) as small_batches:  # three requests
            first = small_batches.post_journals(journals, idempotency_keys=keys)
            again = small_batches.post_journals(journals, idempotency_keys=keys)

        assert all(isinstance(r, PostingReceipt) and not r.repeated for r in first)
        assert all(isinstance(r, PostingReceipt) and r.repeated for r in again)
        assert [r.document_number for r in again] == [r.document_number for r in first]  # type: ignore[union-attr]

    def test_a_batch_posts_the_same_document_as_a_single_post(self, erp: HttpErp) -> None:
        single = erp.post_journal(sale("J-BOTH"), idempotency_key="k-both")
        [batched] = erp.post_journals([sale("J-BOTH")], idempotency_keys=["k-both"])

        assert isinstance(batched, PostingReceipt) and batched.repeated
        assert batched.document_number == single.document_number


class TestPostingStatus:
    def test_none_before_and_the_receipt_after(self, erp: HttpErp) -> None:
        before = erp.posting_status("J-HTTP-STATUS")
        posted = erp.post_journal(sale("J-HTTP-STATUS"), idempotency_key="k-http-status")
        after = erp.posting_status("J-HTTP-STATUS")

        assert before is None
        assert after == PostingReceipt(
            external_id="J-HTTP-STATUS", document_number=posted.document_number, posted_at=posted.posted_at
        )


class TestPostMovements:
    def test_a_batch_is_posted_once_and_moves_the_stock(self, erp: HttpErp, service: ErpProcess) -> None:
        moves = [movement("-2", 1), movement("-1.5", 2), movement("1", 3)]

        first = erp.post_movements("S500", DAY, moves, batch_id="B-HTTP-1", idempotency_key="k-http-b-1")
        again = erp.post_movements("S500", DAY, moves, batch_id="B-HTTP-1", idempotency_key="k-http-b-1")
        other = erp.post_movements("S500", DAY, moves, batch_id="B-HTTP-1", idempotency_key="k-http-b-2")

        assert first.external_id == "B-HTTP-1"
        assert re.fullmatch(r"IM-\d{6}", first.document_number)
        assert first.repeated is False
        assert again == PostingReceipt("B-HTTP-1", first.document_number, first.posted_at, repeated=True)
        assert (other.document_number, other.repeated) == (first.document_number, True)
        stock = service.http.get("/api/stock", params={"store_id": "S500", "sku": "GRO-0001"}).json()
        assert stock["positions"] == [{"sku": "GRO-0001", "uom": "EA", "quantity": "-2.5"}]

    def test_a_closed_period_is_refused_with_the_reason(self, erp: HttpErp) -> None:
        with pytest.raises(DownstreamRejectedError) as refused:
            erp.post_movements(
                "S500",
                date(2026, 10, 15),
                [movement("-1", 1)],
                batch_id="B-HTTP-CLOSED",
                idempotency_key="k-http-b-closed",
            )

        assert refused.value.status == 422
        assert f"fiscal period {CLOSED} is closed for posting" in refused.value.reason

    def test_a_movement_of_another_store_is_refused(self, erp: HttpErp) -> None:
        with pytest.raises(DownstreamRejectedError) as refused:
            erp.post_movements(
                "S600",
                DAY,
                [movement("-1", 1, store="S601")],
                batch_id="B-HTTP-STORE",
                idempotency_key="k-http-b-store",
            )

        assert "movement of store S601 in a batch of store S600" in refused.value.reason


class TestTrialBalance:
    def test_it_sums_the_journals_of_one_store_and_day(self, erp: HttpErp) -> None:
        erp.post_journal(sale("J-HTTP-TB-1", store="S777"), idempotency_key="k-http-tb-1")
        erp.post_journal(
            sale("J-HTTP-TB-2", store="S777", gross="23.80", net="20.00", tax="3.80"),
            idempotency_key="k-http-tb-2",
        )
        erp.post_journal(
            sale("J-HTTP-TB-3", store="S777", day=DAY - timedelta(days=1)), idempotency_key="k-tb-3"
        )

        lines = erp.trial_balance("S777", DAY)

        assert lines == [
            TrialBalanceLine("1000", "EUR", Decimal("35.70"), Decimal("0.00")),
            TrialBalanceLine("2200", "EUR", Decimal("0.00"), Decimal("5.70")),
            TrialBalanceLine("4000", "EUR", Decimal("0.00"), Decimal("30.00")),
        ]
        assert all(isinstance(x.debit, Decimal) and isinstance(x.credit, Decimal) for x in lines)

    def test_a_day_without_postings_is_empty(self, erp: HttpErp) -> None:
        assert erp.trial_balance("S777", date(2026, 1, 1)) == []

    def test_a_store_the_erp_cannot_read_is_a_bad_request(self, erp: HttpErp) -> None:
        with pytest.raises(DownstreamRejectedError) as refused:
            erp.trial_balance("", DAY)

        assert refused.value.status == 400
        assert "store_id" in refused.value.reason


class TestFaults:
    def test_an_outage_is_unavailable_with_retry_after(self, erp: HttpErp, service: ErpProcess) -> None:
        set_faults(service, outage_until=(datetime.now(UTC) + timedelta(seconds=90)).isoformat())

        with pytest.raises(DownstreamUnavailableError) as away:
            erp.post_journal(sale("J-HTTP-OUTAGE"), idempotency_key="k-http-outage")

        assert away.value.retry_after is not None
        assert 1 <= away.value.retry_after <= 90
        assert "the ERP is down until" in str(away.value)

    def test_throttling_is_unavailable_with_the_given_retry_after(
        self, erp: HttpErp, service: ErpProcess
    ) -> None:
        set_faults(service, throttle={"rate": 1, "retry_after": 7})

        with pytest.raises(DownstreamUnavailableError) as throttled:
            erp.trial_balance("S001", DAY)

        assert throttled.value.retry_after == 7.0

    def test_an_error_rate_of_one_is_unavailable(self, erp: HttpErp, service: ErpProcess) -> None:
        set_faults(service, error_rate=1)

        with pytest.raises(DownstreamUnavailableError) as failed:
            erp.post_journal(sale("J-HTTP-500"), idempotency_key="k-http-500")
        with pytest.raises(DownstreamUnavailableError):
            erp.posting_status("J-HTTP-500")  # an error is not "never posted"

        assert failed.value.retry_after is None
        assert "500" in str(failed.value)

    def test_the_same_key_posts_once_the_faults_are_cleared(self, erp: HttpErp, service: ErpProcess) -> None:
        set_faults(service, error_rate=1)
        with pytest.raises(DownstreamUnavailableError):
            erp.post_journal(sale("J-HTTP-CLEARED"), idempotency_key="k-http-cleared")
        service.http.delete("/admin/faults")

        receipt = erp.post_journal(sale("J-HTTP-CLEARED"), idempotency_key="k-http-cleared")

        assert receipt.repeated is False

    def test_an_answer_slower_than_the_timeout_is_unavailable_naming_the_url(
        self, service: ErpProcess
    ) -> None:
        set_faults(service, latency_ms=2000)
        try:
            with HttpErp(service.url, timeout=0.2) as slow, pytest.raises(DownstreamUnavailableError) as late:
                slow.trial_balance("S001", DAY)
        finally:
            service.http.delete("/admin/faults")

        assert f"{service.url}/api/trial-balance" in str(late.value)
        assert late.value.retry_after is None


class TestAway:
    def test_a_maintenance_window_is_unavailable_with_retry_after(self, tmp_path: Path) -> None:
        now = datetime.now(UTC)
        window = MaintenanceWindow(start=now - timedelta(minutes=1), end=now + timedelta(minutes=10))
        service = start(tmp_path, maintenance=[window.model_dump(mode="json")])
        try:
            with HttpErp(service.url) as erp:
                with pytest.raises(DownstreamUnavailableError) as posting:
                    erp.post_journal(sale("J-HTTP-MAINT"), idempotency_key="k-http-maint")
                with pytest.raises(DownstreamUnavailableError) as reading:
                    erp.posting_status("J-HTTP-MAINT")
        finally:
            service.stop()

        assert posting.value.retry_after is not None
        assert 0 < posting.value.retry_after <= 600
        assert "maintenance window" in str(posting.value)
        assert reading.value.retry_after is not None

    def test_the_rate_limit_is_unavailable_with_retry_after(self, tmp_path: Path) -> None:
        service = start(tmp_path, rate_limit=RateLimit(per_second=0.5, burst=2).model_dump())
        try:
            with HttpErp(service.url) as erp:
                erp.trial_balance("S001", DAY)
                erp.trial_balance("S001", DAY)
                with pytest.raises(DownstreamUnavailableError) as throttled:
                    for _ in range(5):
                        erp.trial_balance("S001", DAY)
        finally:
            service.stop()

        assert throttled.value.retry_after is not None
        assert throttled.value.retry_after >= 1
        assert "at most 0.5 requests a second" in str(throttled.value)

    def test_a_stopped_service_is_unavailable_naming_the_url(self, tmp_path: Path) -> None:
        service = start(tmp_path)
        with HttpErp(service.url, system="ledger") as erp:
            first = erp.post_journal(sale("J-HTTP-STOPPED"), idempotency_key="k-http-stopped")
            service.stop()
            try:
                with pytest.raises(DownstreamUnavailableError) as away:
                    erp.post_journal(sale("J-HTTP-STOPPED-2"), idempotency_key="k-http-stopped-2")
                with pytest.raises(DownstreamUnavailableError):
                    erp.posting_status("J-HTTP-STOPPED")

                service.start()  # the same port and books: the pooled client reconnects
                again = erp.post_journal(sale("J-HTTP-STOPPED"), idempotency_key="k-http-stopped")
            finally:
                service.stop()

        assert away.value.system == "ledger"
        assert f"{service.url}/api/journals" in str(away.value)
        assert away.value.retry_after is None
        assert (again.document_number, again.repeated) == (first.document_number, True)
