"""The compliance consumer on real data: the Online Retail file's invoices through a hub's state
store and event log (SQLite), judged against a promotion calendar loaded into the master data.
A clean run finds nothing; a planted unauthorised discount and a promotion the till skipped
are found, with their line and amounts; a redelivered batch records them once; without a
calendar nobody is judged."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.integration.test_real_data_posting import CONFIG, ONLINE_RETAIL_FIRST_100, parse_file
from tillflow.bootstrap import bootstrap
from tillflow.config import TillflowConfig
from tillflow.flows.compliance import FLOW
from tillflow.formats.records import Imported
from tillflow.hub.ingest import ingest_records
from tillflow.model import Transaction
from tillflow.model.masterdata import Promotion, PromotionKind
from tillflow.ports import DeviationKind
from tillflow.services import Services


def invoices() -> list[Transaction]:
    return [r.transaction for r in parse_file(ONLINE_RETAIL_FIRST_100) if isinstance(r, Imported)]


def hub(tmp: Path) -> Services:
    config = TillflowConfig.model_validate(
        CONFIG.model_dump() | {"hub": {"data_dir": tmp, "promotion_compliance": True}}
    )
    return bootstrap(config)


def with_discount(tx: Transaction, line_index: int, amount: str, promotion_id: str | None) -> Transaction:
    """`tx` with a discount on one line, its totals and its (first) tender brought in line."""
    body: dict[str, Any] = tx.model_dump(mode="json")
    off = Decimal(amount)
    line = body["lines"][line_index]
    line["modifiers"] = [{"amount": amount, "reason": "promotion", "promotion_id": promotion_id}]
    for field in ("subtotal", "grand_total"):
        body["totals"][field] = str(Decimal(body["totals"][field]) - off)
    body["tenders"][0]["amount"] = str(Decimal(body["tenders"][0]["amount"]) - off)
    return Transaction.model_validate(body)


def judge(services: Services, txs: list[Transaction]) -> None:
    ingest_records([tx.model_dump(mode="json") for tx in txs], services.transactions, traceparent=None)
    [runner] = services.consumers([FLOW])
    while runner.run_once():
        pass


# running the whole of 2010 (the file's year), for SKUs the file never sells
ELSEWHERE = Promotion(
    promotion_id="XMAS-CANDLES",
    kind=PromotionKind.PERCENT_OFF,
    percent=Decimal(10),
    skus=("NOT-SOLD-1",),
    starts=datetime(2010, 1, 1),
    ends=datetime(2011, 1, 1),
)


class TestComplianceOnRealData:
    def test_a_clean_run_finds_nothing(self, tmp_path: Path) -> None:
        services = hub(tmp_path)
        try:
            services.masterdata.record_promotions([ELSEWHERE], at=datetime.now(UTC))
            txs = invoices()
            judge(services, txs)

            days = {tx.business_day for tx in txs}
            assert len(txs) == 14
            assert [d for day in days for d in services.deviations.find_deviations(day)] == []
        finally:
            services.close()

    def test_a_planted_discount_and_a_skipped_promotion_are_found_once(self, tmp_path: Path) -> None:
        services = hub(tmp_path)
        try:
            txs = invoices()
            planted = with_discount(txs[3], 1, "0.50", None)
            skipped_sku = txs[5].lines[0].sku
            on_sale = Promotion(
                promotion_id="HALF-TERM",
                kind=PromotionKind.PERCENT_OFF,
                percent=Decimal(20),
                skus=(skipped_sku,),
                starts=datetime(2010, 1, 1),
                ends=datetime(2011, 1, 1),
            )
            services.masterdata.record_promotions([ELSEWHERE, on_sale], at=datetime.now(UTC))
            clean = [
                tx for tx in txs if tx is not txs[3] and not any(ln.sku == skipped_sku for ln in tx.lines)
            ]
            skipping = [tx for tx in txs if tx is not txs[3] and tx not in clean]

            judge(services, [planted, *clean, *skipping])
            judge(services, [planted])  # a resent record: a duplicate, nothing judged twice

            found = services.deviations.find_deviations(planted.business_day)
            assert len(skipping) >= 1
            unauthorised = [d for d in found if d.kind is DeviationKind.UNAUTHORISED_DISCOUNT]
            assert [(d.transaction_id, d.line_no, d.actual) for d in unauthorised] == [
                (planted.transaction_id, planted.lines[1].line_no, Decimal("0.50"))
            ]
            not_applied = {d.transaction_id for d in found if d.kind is DeviationKind.PROMOTION_NOT_APPLIED}
            assert not_applied == {
                tx.transaction_id for tx in skipping if tx.business_day == planted.business_day
            }
            assert all(
                d.promotion_id == "HALF-TERM" for d in found if d.kind is DeviationKind.PROMOTION_NOT_APPLIED
            )
        finally:
            services.close()

    def test_without_a_calendar_nobody_is_judged(self, tmp_path: Path) -> None:
        services = hub(tmp_path)
        try:
            txs = invoices()
            planted = with_discount(txs[3], 1, "0.50", "ANY-PROMO")

            judge(services, [planted])

            assert services.deviations.find_deviations(planted.business_day) == []
            assert services.event_log.read_groups()[FLOW].lag == 0
        finally:
            services.close()
