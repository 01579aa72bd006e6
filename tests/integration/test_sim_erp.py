"""The reference ERP as a real process on a free port with its own SQLite books, driven over HTTP.

Every refusal a real ERP makes is provoked here: unbalanced journals, unknown accounts, closed
periods, too many lines, amounts below the minor unit, a rate limit, a maintenance window and
injected faults; and every repeat (same key, same document under another key) must change nothing.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import ServiceProcess, free_port
from tillflow.sim.erp import ErpSimSettings, MaintenanceWindow, RateLimit

DAY = "2026-11-29"
CLOSED = "2026-10"
MAX_LINES = 6


class ErpProcess(ServiceProcess):
    """`python -m tillflow.sim.erp` on a free port; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, db_path: Path, settings: ErpSimSettings) -> None:
        port = free_port()
        argv = [sys.executable, "-m", "tillflow.sim.erp", "--port", str(port), "--db", str(db_path)]
        super().__init__(
            "the ERP", [*argv, "--settings", settings.model_dump_json()], port, db_path.with_suffix(".log")
        )
        self.db_path = db_path
        self.start()

    def start(self, timeout: float = 30.0) -> None:
        """Start (again, after `stop`: same port, same books)."""
        super().start(timeout)
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def stop(self) -> None:
        if hasattr(self, "http"):
            self.http.close()
        super().stop()

    def post(self, path: str, body: dict[str, Any], key: str | None) -> httpx.Response:
        headers = {"idempotency-key": key} if key is not None else {}
        return self.http.post(path, json=body, headers=headers)

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.http.get("/admin/state").json()
        return state


def start(tmp: Path, **settings: Any) -> ErpProcess:
    base: dict[str, Any] = {"rate_limit": None}
    return ErpProcess(tmp / "erp.sqlite", ErpSimSettings(**(base | settings)))


@pytest.fixture(scope="module")
def erp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ErpProcess]:
    process = start(tmp_path_factory.mktemp("erp"), closed_periods=[CLOSED], max_lines_per_journal=MAX_LINES)
    try:
        yield process
    finally:
        process.stop()


def line(
    account: str, *, debit: str | None = None, credit: str | None = None, cur: str = "EUR"
) -> dict[str, Any]:
    out: dict[str, Any] = {"account": account, "currency": cur, "description": "store day"}
    if debit is not None:
        out["debit"] = debit
    if credit is not None:
        out["credit"] = credit
    return out


def sale_lines(gross: str = "11.90", net: str = "10.00", tax: str = "1.90") -> list[dict[str, Any]]:
    return [line("1000", debit=gross), line("4000", credit=net), line("2200", credit=tax)]


def journal(
    external_id: str, lines: list[dict[str, Any]] | None = None, *, store: str = "S001", day: str = DAY
) -> dict[str, Any]:
    return {
        "external_id": external_id,
        "store_id": store,
        "business_day": day,
        "lines": sale_lines() if lines is None else lines,
        "source_transactions": [f"{store}-R01-{day}-000001"],
    }


def batch(batch_id: str, *quantities: str, store: str = "S001", day: str = DAY) -> dict[str, Any]:
    return {
        "batch_id": batch_id,
        "store_id": store,
        "business_day": day,
        "movements": [
            {
                "sku": "GRO-0001",
                "quantity": q,
                "uom": "EA",
                "reason": "sale" if q.startswith("-") else "return",
                "transaction_id": f"{store}-R01-{day}-{n:06d}",
                "line_no": 1,
            }
            for n, q in enumerate(quantities)
        ],
    }


class TestJournalPosting:
    def test_a_balanced_journal_gets_a_document_number_and_a_status(self, erp: ErpProcess) -> None:
        first = erp.post("/api/journals", journal("J-POST-1"), "k-post-1")
        second = erp.post("/api/journals", journal("J-POST-2"), "k-post-2")

        assert first.status_code == 201, first.text
        assert re.fullmatch(r"JE-\d{6}", first.json()["document_number"])
        assert int(second.json()["document_number"][3:]) == int(first.json()["document_number"][3:]) + 1
        assert "idempotent-replayed" not in first.headers
        status = erp.http.get("/api/journals/J-POST-1")
        assert status.status_code == 200
        assert status.json()["document_number"] == first.json()["document_number"]
        assert status.json()["posted_at"] == first.json()["posted_at"]

    def test_the_same_request_again_repeats_the_first_answer(self, erp: ErpProcess) -> None:
        first = erp.post("/api/journals", journal("J-REPEAT"), "k-repeat")
        again = erp.post("/api/journals", journal("J-REPEAT"), "k-repeat")

        assert (again.status_code, again.json()) == (201, first.json())
        assert again.headers["idempotent-replayed"] == "true"

    def test_the_same_journal_under_another_key_returns_the_first_document(self, erp: ErpProcess) -> None:
        first = erp.post("/api/journals", journal("J-OTHER-KEY"), "k-other-1")
        posted_before = erp.state()["journals_posted"]
        respelled = journal("J-OTHER-KEY", sale_lines(gross="11.9", net="10", tax="1.900"))
        again = erp.post("/api/journals", respelled, "k-other-2")

        assert again.status_code == 200, again.text
        assert again.json()["document_number"] == first.json()["document_number"]
        assert again.headers["idempotent-replayed"] == "true"
        assert erp.state()["journals_posted"] == posted_before

    def test_the_same_journal_id_with_other_content_is_a_conflict(self, erp: ErpProcess) -> None:
        first = erp.post("/api/journals", journal("J-CONFLICT"), "k-conflict-1")
        changed = erp.post(
            "/api/journals", journal("J-CONFLICT", sale_lines("23.80", "20.00", "3.80")), "k-conflict-2"
        )

        assert changed.status_code == 409
        assert changed.headers["content-type"] == "application/problem+json"
        assert changed.json()["document_number"] == first.json()["document_number"]
        assert "J-CONFLICT" in changed.json()["detail"]
        assert erp.state()["rejections"]["document_conflict"] >= 1

    def test_a_key_reused_for_another_request_is_refused(self, erp: ErpProcess) -> None:
        erp.post("/api/journals", journal("J-KEY-A"), "k-reused")
        reused = erp.post("/api/journals", journal("J-KEY-B"), "k-reused")

        assert reused.status_code == 422
        assert reused.json()["detail"] == "idempotency key reused with another request"
        assert erp.http.get("/api/journals/J-KEY-B").status_code == 404

    def test_a_write_without_an_idempotency_key_is_refused(self, erp: ErpProcess) -> None:
        answer = erp.post("/api/journals", journal("J-NO-KEY"), None)

        assert answer.status_code == 400
        assert "Idempotency-Key" in answer.json()["detail"]
        assert erp.http.get("/api/journals/J-NO-KEY").status_code == 404

    def test_a_malformed_journal_is_a_bad_request_naming_the_field(self, erp: ErpProcess) -> None:
        body = journal("J-FLOAT")
        body["lines"][0]["debit"] = 11.9

        answer = erp.post("/api/journals", body, "k-float")

        assert answer.status_code == 400
        assert "lines.0.debit" in answer.json()["detail"]

    def test_an_unknown_journal_has_no_status(self, erp: ErpProcess) -> None:
        answer = erp.http.get("/api/journals/NEVER-POSTED")

        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/problem+json"


REFUSALS = [
    pytest.param(
        sale_lines(tax="1.89"),
        DAY,
        "unbalanced",
        "EUR does not balance: debits 11.90, credits 11.89, difference 0.01",
        id="unbalanced",
    ),
    pytest.param(
        [*sale_lines(), line("1100", debit="5.00", cur="USD"), line("4000", credit="4.00", cur="USD")],
        DAY,
        "unbalanced",
        "USD does not balance: debits 5.00, credits 4.00, difference 1.00",
        id="unbalanced-in-one-of-two-currencies",
    ),
    pytest.param(
        [line("1000", debit="11.90"), line("9999", credit="10.00"), line("2200", credit="1.90")],
        DAY,
        "unknown_account",
        "account 9999 is not in the chart",
        id="unknown-account",
    ),
    pytest.param(
        sale_lines(), f"{CLOSED}-31", "closed_period", f"fiscal period {CLOSED} is closed", id="closed-period"
    ),
    pytest.param(
        [line("1000", debit=f"{MAX_LINES}.00"), *[line("4000", credit="1.00")] * MAX_LINES],
        DAY,
        "too_many_lines",
        f"exceed the limit of {MAX_LINES}",
        id="too-many-lines",
    ),
    pytest.param(
        sale_lines(gross="11.901", net="10.001"),
        DAY,
        "not_minor_units",
        "debit 11.901 has digits below the EUR minor unit",
        id="below-the-minor-unit",
    ),
    pytest.param(
        [line("1000", debit="100.5", cur="JPY"), line("4000", credit="100.5", cur="JPY")],
        DAY,
        "not_minor_units",
        "below the JPY minor unit (0 decimals)",
        id="yen-have-no-decimals",
    ),
    pytest.param(
        [line("1000", debit="11.90", credit="11.90"), *sale_lines()],
        DAY,
        "debit_and_credit",
        "a line is a debit or a credit, not both",
        id="debit-and-credit",
    ),
]


class TestLedgerRules:
    @pytest.mark.parametrize(("lines", "day", "code", "reason"), REFUSALS)
    def test_a_journal_breaking_a_rule_is_refused_with_the_reason(
        self, erp: ErpProcess, lines: list[dict[str, Any]], day: str, code: str, reason: str
    ) -> None:
        external_id = f"J-REFUSED-{code}-{len(lines)}-{day}"
        before = erp.state()["rejections"].get(code, 0)

        answer = erp.post("/api/journals", journal(external_id, lines, day=day), f"k-{external_id}")

        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert reason in answer.json()["detail"]
        assert code in [e["code"] for e in answer.json()["errors"]]
        assert erp.http.get(f"/api/journals/{external_id}").status_code == 404
        assert erp.state()["rejections"][code] == before + 1

    def test_every_reason_is_named_at_once(self, erp: ErpProcess) -> None:
        lines = [line("1000", debit="11.90"), line("8888", credit="10.00"), line("2200", credit="1.89")]

        answer = erp.post("/api/journals", journal("J-MANY-FAULTS", lines, day=f"{CLOSED}-02"), "k-many")

        codes = {e["code"] for e in answer.json()["errors"]}
        assert codes == {"unbalanced", "unknown_account", "closed_period"}
        assert "account 8888" in answer.json()["detail"]

    def test_a_refusal_is_not_remembered_so_a_corrected_retry_under_the_same_key_posts(
        self, erp: ErpProcess
    ) -> None:
        refused = erp.post("/api/journals", journal("J-FIXED", sale_lines(tax="1.80")), "k-fixed")
        # the same key again with the same (still wrong) request is refused again, not replayed
        still = erp.post("/api/journals", journal("J-FIXED", sale_lines(tax="1.80")), "k-fixed")

        assert (refused.status_code, still.status_code) == (422, 422)
        assert "idempotent-replayed" not in still.headers
        # a corrected body under a fresh key posts (the old key never held an answer)
        fixed = erp.post("/api/journals", journal("J-FIXED"), "k-fixed-2")
        assert fixed.status_code == 201

    def test_a_period_closed_at_runtime_refuses_postings_until_reopened(self, erp: ErpProcess) -> None:
        closing = erp.http.put("/admin/periods/2026-09", json={"status": "closed"})
        refused = erp.post("/api/journals", journal("J-SEPT", day="2026-09-30"), "k-sept-1")
        erp.http.put("/admin/periods/2026-09", json={"status": "open"})
        posted = erp.post("/api/journals", journal("J-SEPT", day="2026-09-30"), "k-sept-2")

        assert closing.status_code == 200
        assert refused.status_code == 422
        assert "fiscal period 2026-09 is closed" in refused.json()["detail"]
        assert posted.status_code == 201


class TestConcurrentRepeats:
    def test_simultaneous_repeats_post_one_document(self, erp: ErpProcess) -> None:
        before = erp.state()["journals_posted"]

        def send(n: int) -> httpx.Response:
            with httpx.Client(base_url=erp.url, timeout=30) as client:
                key = "k-race" if n % 2 else f"k-race-{n}"  # half repeat one key, half bring their own
                return client.post("/api/journals", json=journal("J-RACE"), headers={"idempotency-key": key})

        with ThreadPoolExecutor(max_workers=12) as pool:
            answers = list(pool.map(send, range(12)))

        assert {a.status_code for a in answers} <= {200, 201}
        assert len({a.json()["document_number"] for a in answers}) == 1
        assert sum("idempotent-replayed" not in a.headers for a in answers) == 1
        assert erp.state()["journals_posted"] == before + 1


class TestTrialBalance:
    def test_it_sums_the_posted_journals_of_one_store_and_day(self, erp: ErpProcess) -> None:
        erp.post("/api/journals", journal("J-TB-1", store="S777"), "k-tb-1")
        bigger = sale_lines("23.80", "20.00", "3.80")
        erp.post("/api/journals", journal("J-TB-2", bigger, store="S777"), "k-tb-2")
        erp.post("/api/journals", journal("J-TB-OTHER-DAY", store="S777", day="2026-11-28"), "k-tb-3")
        erp.post("/api/journals", journal("J-TB-OTHER-STORE", store="S778"), "k-tb-4")
        erp.post("/api/journals", journal("J-TB-REFUSED", sale_lines(tax="9.99"), store="S777"), "k-tb-5")

        answer = erp.http.get("/api/trial-balance", params={"store_id": "S777", "business_day": DAY})

        assert answer.status_code == 200
        lines = {(x["account"], x["currency"]): (x["debit"], x["credit"]) for x in answer.json()["lines"]}
        assert lines == {
            ("1000", "EUR"): ("35.70", "0.00"),
            ("2200", "EUR"): ("0.00", "5.70"),
            ("4000", "EUR"): ("0.00", "30.00"),
        }
        assert answer.json()["totals"] == [{"currency": "EUR", "debit": "35.70", "credit": "35.70"}]

    def test_a_day_without_postings_has_an_empty_trial_balance(self, erp: ErpProcess) -> None:
        answer = erp.http.get("/api/trial-balance", params={"store_id": "S777", "business_day": "2026-01-01"})

        assert answer.json()["lines"] == []

    def test_a_bad_day_is_a_bad_request(self, erp: ErpProcess) -> None:
        answer = erp.http.get("/api/trial-balance", params={"store_id": "S777", "business_day": "yesterday"})

        assert answer.status_code == 400
        assert "business_day" in answer.json()["detail"]


class TestInventoryMovements:
    def test_a_batch_is_posted_once_and_moves_the_stock(self, erp: ErpProcess) -> None:
        moves = batch("B-1", "-2", "-1.5", "1", store="S500")
        first = erp.post("/api/inventory-movements", moves, "k-b-1")
        again = erp.post("/api/inventory-movements", moves, "k-b-1")
        respelled = batch("B-1", "-2.0", "-1.50", "1", store="S500")
        other_key = erp.post("/api/inventory-movements", respelled, "k-b-2")

        assert first.status_code == 201, first.text
        assert re.fullmatch(r"IM-\d{6}", first.json()["document_number"])
        assert first.json()["batch_id"] == "B-1"
        assert (again.status_code, again.json()) == (201, first.json())
        assert again.headers["idempotent-replayed"] == "true"
        assert other_key.status_code == 200
        assert other_key.json()["document_number"] == first.json()["document_number"]
        stock = erp.http.get("/api/stock", params={"store_id": "S500", "sku": "GRO-0001"}).json()
        assert stock["positions"] == [{"sku": "GRO-0001", "uom": "EA", "quantity": "-2.5"}]
        assert (
            erp.http.get("/api/inventory-movements/B-1").json()["document_number"]
            == first.json()["document_number"]
        )

    def test_the_same_batch_id_with_other_movements_is_a_conflict(self, erp: ErpProcess) -> None:
        erp.post("/api/inventory-movements", batch("B-CONFLICT", "-1"), "k-bc-1")
        changed = erp.post("/api/inventory-movements", batch("B-CONFLICT", "-3"), "k-bc-2")

        assert changed.status_code == 409
        assert "B-CONFLICT" in changed.json()["detail"]

    def test_movements_in_a_closed_period_or_without_quantity_are_refused(self, erp: ErpProcess) -> None:
        closed = erp.post("/api/inventory-movements", batch("B-CLOSED", "-1", day=f"{CLOSED}-15"), "k-bx-1")
        zero = erp.post("/api/inventory-movements", batch("B-ZERO", "0"), "k-bx-2")
        empty = erp.post("/api/inventory-movements", batch("B-EMPTY"), "k-bx-3")

        assert closed.status_code == 422
        assert f"fiscal period {CLOSED} is closed" in closed.json()["detail"]
        assert (zero.status_code, zero.json()["errors"][0]["code"]) == (422, "zero_quantity")
        assert (empty.status_code, empty.json()["errors"][0]["code"]) == (422, "no_movements")

    def test_canonical_movements_are_accepted_with_their_store_and_time(self, erp: ErpProcess) -> None:
        body = batch("B-CANONICAL", "-1", store="S600")
        body["movements"][0] |= {"store_id": "S600", "occurred_at": "2026-11-29T10:15:00+01:00"}
        wrong = batch("B-WRONG-STORE", "-1", store="S600")
        wrong["movements"][0]["store_id"] = "S601"

        posted = erp.post("/api/inventory-movements", body, "k-canonical")
        refused = erp.post("/api/inventory-movements", wrong, "k-wrong-store")

        assert posted.status_code == 201, posted.text
        assert refused.status_code == 422
        assert "movement of store S601 in a batch of store S600" in refused.json()["detail"]

    def test_an_unknown_reason_is_a_bad_request(self, erp: ErpProcess) -> None:
        body = batch("B-BAD-REASON", "-1")
        body["movements"][0]["reason"] = "theft"

        answer = erp.post("/api/inventory-movements", body, "k-bad-reason")

        assert answer.status_code == 400
        assert "movements.0.reason" in answer.json()["detail"]


class TestState:
    def test_the_state_counts_postings_lines_movements_and_rejections(self, erp: ErpProcess) -> None:
        before = erp.state()
        erp.post("/api/journals", journal("J-STATE"), "k-state-1")
        erp.post("/api/journals", journal("J-STATE-BAD", sale_lines(tax="0.01")), "k-state-2")
        erp.post("/api/inventory-movements", batch("B-STATE", "-1", "-1"), "k-state-3")
        after = erp.state()

        assert after["journals_posted"] == before["journals_posted"] + 1
        assert after["journal_lines"] == before["journal_lines"] + 3
        assert after["movement_batches"] == before["movement_batches"] + 1
        assert after["movements"] == before["movements"] + 2
        assert after["rejected"] == before["rejected"] + 1
        assert CLOSED in after["closed_periods"]


class TestRestart:
    def test_documents_numbering_and_idempotency_survive_a_restart(self, tmp_path: Path) -> None:
        erp = start(tmp_path)
        try:
            first = erp.post("/api/journals", journal("J-DURABLE"), "k-durable")
            erp.post("/api/inventory-movements", batch("B-DURABLE", "-4"), "k-durable-b")
        finally:
            erp.stop()
        erp = start(tmp_path)
        try:
            replay = erp.post("/api/journals", journal("J-DURABLE"), "k-durable")
            reused = erp.post("/api/journals", journal("J-OTHER"), "k-durable")
            other_key = erp.post("/api/journals", journal("J-DURABLE"), "k-durable-2")
            next_one = erp.post("/api/journals", journal("J-NEXT"), "k-next")
            stock = erp.http.get("/api/stock", params={"store_id": "S001"}).json()["positions"]
        finally:
            erp.stop()

        assert (replay.status_code, replay.json()) == (201, first.json())
        assert replay.headers["idempotent-replayed"] == "true"
        assert reused.status_code == 422
        assert other_key.json()["document_number"] == first.json()["document_number"] == "JE-000001"
        assert next_one.json()["document_number"] == "JE-000002"
        assert stock == [{"sku": "GRO-0001", "uom": "EA", "quantity": "-4"}]


class TestRateLimit:
    def test_a_burst_over_the_limit_is_throttled_and_later_requests_pass(self, tmp_path: Path) -> None:
        erp = start(tmp_path, rate_limit=RateLimit(per_second=1, burst=3).model_dump())
        try:
            answers = [erp.post("/api/journals", journal(f"J-BURST-{n}"), f"k-burst-{n}") for n in range(8)]
            throttled = [a for a in answers if a.status_code == 429]
            assert throttled, [a.status_code for a in answers]
            assert {a.status_code for a in answers} == {201, 429}
            waits = [int(a.headers["retry-after"]) for a in throttled]
            assert min(waits) >= 1
            assert throttled[0].headers["content-type"] == "application/problem+json"
            # every answer says where the caller stands: the first of the burst had 2 tokens left
            assert answers[0].headers["x-ratelimit-limit"] == "1"
            assert answers[0].headers["x-ratelimit-remaining"] == "2"
            assert throttled[0].headers["x-ratelimit-remaining"] == "0"
            assert 0 < float(throttled[0].headers["x-ratelimit-reset"]) <= 1
            assert erp.http.get("/healthz").status_code == 200  # only the business API is limited

            # a throttled request was neither posted nor remembered: sent again later, it posts
            refused_n = answers.index(throttled[0])
            time.sleep(max(waits))
            later = erp.post("/api/journals", journal(f"J-BURST-{refused_n}"), f"k-burst-{refused_n}")
            assert later.status_code == 201, later.text
            assert "idempotent-replayed" not in later.headers
            assert erp.state()["journals_posted"] == sum(a.status_code == 201 for a in answers) + 1
        finally:
            erp.stop()


class TestMaintenance:
    def test_a_window_around_now_answers_503_until_its_end(self, tmp_path: Path) -> None:
        now = datetime.now(UTC)
        window = MaintenanceWindow(start=now - timedelta(minutes=1), end=now + timedelta(minutes=10))
        erp = start(tmp_path, maintenance=[window.model_dump(mode="json")])
        try:
            posting = erp.post("/api/journals", journal("J-MAINT"), "k-maint")
            reading = erp.http.get("/api/journals/J-MAINT")
            health = erp.http.get("/healthz")
        finally:
            erp.stop()

        assert posting.status_code == 503
        assert 1 <= int(posting.headers["retry-after"]) <= 600
        assert "maintenance window" in posting.json()["detail"]
        assert reading.status_code == 503
        assert health.status_code == 200

    def test_a_window_in_the_past_changes_nothing(self, tmp_path: Path) -> None:
        now = datetime.now(UTC)
        window = MaintenanceWindow(start=now - timedelta(hours=2), end=now - timedelta(hours=1))
        erp = start(tmp_path, maintenance=[window.model_dump(mode="json")])
        try:
            posting = erp.post("/api/journals", journal("J-AFTER-MAINT"), "k-after-maint")
        finally:
            erp.stop()

        assert posting.status_code == 201


class TestFaultInjection:
    @pytest.fixture
    def fresh(self, tmp_path: Path) -> Iterator[ErpProcess]:
        erp = start(tmp_path)
        try:
            yield erp
        finally:
            erp.stop()

    def test_an_error_rate_of_one_fails_every_business_request(self, fresh: ErpProcess) -> None:
        put = fresh.http.put("/admin/faults", json={"error_rate": 1})
        answer = fresh.post("/api/journals", journal("J-500"), "k-500")

        assert put.status_code == 200
        assert fresh.http.get("/admin/faults").json()["error_rate"] == 1
        assert answer.status_code == 500
        assert fresh.http.get("/healthz").status_code == 200
        assert fresh.http.get("/admin/state").json()["journals_posted"] == 0

    def test_an_outage_answers_503_with_retry_after(self, fresh: ErpProcess) -> None:
        until = (datetime.now(UTC) + timedelta(seconds=90)).isoformat()
        fresh.http.put("/admin/faults", json={"outage_until": until})

        answer = fresh.post("/api/journals", journal("J-503"), "k-503")

        assert answer.status_code == 503
        assert 1 <= int(answer.headers["retry-after"]) <= 90

    def test_an_unscheduled_maintenance_answers_as_a_scheduled_window(self, fresh: ErpProcess) -> None:
        until = (datetime.now(UTC) + timedelta(seconds=90)).isoformat()
        fresh.http.put("/admin/faults", json={"maintenance_until": until})

        answer = fresh.post("/api/journals", journal("J-MAINT"), "k-maint")

        assert answer.status_code == 503
        assert answer.json()["type"].endswith("/maintenance")
        assert 1 <= int(answer.headers["retry-after"]) <= 90

    def test_throttling_answers_429_with_the_configured_retry_after(self, fresh: ErpProcess) -> None:
        fresh.http.put("/admin/faults", json={"throttle": {"rate": 1, "retry_after": 7}})

        answer = fresh.http.get("/api/trial-balance", params={"store_id": "S001", "business_day": DAY})

        assert answer.status_code == 429
        assert answer.headers["retry-after"] == "7"

    def test_cleared_faults_let_requests_through_again(self, fresh: ErpProcess) -> None:
        fresh.http.put("/admin/faults", json={"error_rate": 1, "throttle": {"rate": 1, "retry_after": 3}})
        failed = fresh.post("/api/journals", journal("J-CLEARED"), "k-cleared")
        cleared = fresh.http.delete("/admin/faults")
        posted = fresh.post("/api/journals", journal("J-CLEARED"), "k-cleared")

        assert failed.status_code == 500
        assert cleared.json() == {
            "error_rate": 0.0,
            "latency_ms": 0,
            "outage_until": None,
            "maintenance_until": None,
            "throttle": None,
        }
        assert posted.status_code == 201

    def test_a_bad_fault_setting_is_refused(self, fresh: ErpProcess) -> None:
        answer = fresh.http.put("/admin/faults", json={"error_rate": 2})

        assert answer.status_code == 400
        assert fresh.http.get("/admin/faults").json()["error_rate"] == 0
