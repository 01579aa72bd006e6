"""ERP postings routed per store and region, on fake ERPs: who gets what, whose answer counts,
and that every target's answer is recorded."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from tillflow.connectors.routing import RoutedErp
from tillflow.connectors.settings import ErpRouting
from tillflow.errors import DownstreamRejectedError, DownstreamUnavailableError
from tillflow.model import InventoryMovement, Journal, JournalLine, MovementReason
from tillflow.ports import PostingOutcome, PostingReceipt, TrialBalanceLine

DAY = date(2026, 11, 29)
AT = datetime(2026, 11, 29, 18, tzinfo=UTC)


class FakeErp:
    def __init__(self, name: str, *, refuse: set[str] | None = None, away: bool = False) -> None:
        self.name = name
        self.refuse = refuse or set()
        self.away = away
        self.posted: list[str] = []

    def _post(self, external_id: str) -> PostingReceipt | DownstreamRejectedError:
        if self.away:
            raise DownstreamUnavailableError(self.name, "connection refused")
        if external_id in self.refuse:
            return DownstreamRejectedError(
                self.name, f"{external_id}: account 4999 does not exist", status=422
            )
        self.posted.append(external_id)
        return PostingReceipt(external_id, f"{self.name}-{len(self.posted)}", AT)

    def post_journal(self, journal: Journal, *, idempotency_key: str) -> PostingReceipt:
        raise NotImplementedError

    def post_journals(
        self, journals: Sequence[Journal], *, idempotency_keys: Sequence[str]
    ) -> list[PostingReceipt | DownstreamRejectedError]:
        return [self._post(j.journal_id) for j in journals]

    def post_movements(
        self,
        store_id: str,
        business_day: date,
        movements: Sequence[InventoryMovement],
        *,
        batch_id: str,
        idempotency_key: str,
    ) -> PostingReceipt:
        answer = self._post(batch_id)
        if isinstance(answer, DownstreamRejectedError):
            raise answer
        return answer

    def posting_status(self, external_id: str) -> PostingReceipt | None:
        return PostingReceipt(external_id, f"{self.name}-x", AT) if external_id in self.posted else None

    def trial_balance(self, store_id: str, business_day: date) -> list[TrialBalanceLine]:
        return [TrialBalanceLine(self.name, "EUR", Decimal(1), Decimal(0))]


class MemoryPostings:
    def __init__(self) -> None:
        self.outcomes: list[PostingOutcome] = []

    def record_outcomes(self, outcomes: Sequence[PostingOutcome], *, at: datetime) -> None:
        self.outcomes += outcomes

    def find_outcomes(self, business_day: date, store_id: str | None = None) -> list[PostingOutcome]:
        return list(self.outcomes)


def journal(journal_id: str, store: str) -> Journal:
    return Journal(
        journal_id=journal_id,
        store_id=store,
        business_day=DAY,
        lines=(
            JournalLine(account="1000", debit=Decimal("11.90"), currency="EUR"),
            JournalLine(account="4000", credit=Decimal("11.90"), currency="EUR"),
        ),
        source_transactions=(f"{store}:R01:2026-11-29:1",),
    )


ROUTING = ErpRouting(default="legacy", regions={"north": "both"}, stores={"S003": "cloud"}, primary="legacy")
REGIONS = {"S001": "south", "S002": "north", "S003": "north"}


def routed(cloud: FakeErp, legacy: FakeErp) -> tuple[RoutedErp, MemoryPostings]:
    postings = MemoryPostings()
    erp = RoutedErp(
        {"cloud": cloud, "legacy": legacy}, ROUTING, regions=REGIONS, postings=postings, now=lambda: AT
    )
    return erp, postings


class TestRoutes:
    def test_a_store_beats_its_region_and_a_region_beats_the_default(self) -> None:
        erp, _ = routed(FakeErp("cloud"), FakeErp("legacy"))
        assert erp.route("S001") == ["legacy"]
        assert erp.route("S002") == ["legacy", "cloud"]  # the primary first
        assert erp.route("S003") == ["cloud"]
        assert erp.route("S999") == ["legacy"]  # a store not configured: the default


class TestParallelRun:
    def test_each_journal_goes_where_its_store_is_routed_and_every_answer_is_recorded(self) -> None:
        cloud, legacy = FakeErp("cloud"), FakeErp("legacy")
        erp, postings = routed(cloud, legacy)
        journals = [journal("J1", "S001"), journal("J2", "S002"), journal("J3", "S003")]

        answers = erp.post_journals(journals, idempotency_keys=["k1", "k2", "k3"])

        assert [a.document_number for a in answers] == ["legacy-1", "legacy-2", "cloud-2"]  # type: ignore[union-attr]
        assert (legacy.posted, cloud.posted) == (["J1", "J2"], ["J2", "J3"])
        recorded = {(o.external_id, o.target): o for o in postings.outcomes}
        assert sorted(recorded) == [("J1", "legacy"), ("J2", "cloud"), ("J2", "legacy"), ("J3", "cloud")]
        assert recorded[("J2", "cloud")].amounts == (("EUR", Decimal("11.90")),)
        assert recorded[("J2", "cloud")].transaction_ids == ("S002:R01:2026-11-29:1",)

    def test_the_other_side_refusing_is_recorded_not_raised(self) -> None:
        erp, postings = routed(FakeErp("cloud", refuse={"J2"}), FakeErp("legacy"))
        [answer] = erp.post_journals([journal("J2", "S002")], idempotency_keys=["k2"])
        assert isinstance(answer, PostingReceipt)
        [cloud] = [o for o in postings.outcomes if o.target == "cloud"]
        assert not cloud.accepted and "4999" in (cloud.reason or "")

    def test_the_primary_refusing_is_the_answer(self) -> None:
        erp, _ = routed(FakeErp("cloud"), FakeErp("legacy", refuse={"J2"}))
        [answer] = erp.post_journals([journal("J2", "S002")], idempotency_keys=["k2"])
        assert isinstance(answer, DownstreamRejectedError)

    def test_the_other_side_away_fails_the_call_after_the_primary_s_answer_is_recorded(self) -> None:
        erp, postings = routed(FakeErp("cloud", away=True), FakeErp("legacy"))
        with pytest.raises(DownstreamUnavailableError):
            erp.post_journals([journal("J2", "S002")], idempotency_keys=["k2"])
        assert [(o.target, o.accepted) for o in postings.outcomes] == [("legacy", True)]

    def test_movements_follow_the_same_routes(self) -> None:
        cloud, legacy = FakeErp("cloud"), FakeErp("legacy", refuse={"B1"})
        erp, postings = routed(cloud, legacy)
        move = InventoryMovement(
            store_id="S002",
            sku="GRO-0001",
            quantity=Decimal(-1),
            reason=MovementReason.SALE,
            transaction_id="S002:R01:2026-11-29:1",
            line_no=1,
            occurred_at=AT,
        )
        with pytest.raises(DownstreamRejectedError):
            erp.post_movements("S002", DAY, [move], batch_id="B1", idempotency_key="kb1")
        assert cloud.posted == ["B1"]
        assert sorted((o.target, o.accepted, o.kind) for o in postings.outcomes) == [
            ("cloud", True, "movements"),
            ("legacy", False, "movements"),
        ]

    def test_status_asks_the_primary_first_and_the_balance_comes_from_the_store_s_first_target(self) -> None:
        cloud, legacy = FakeErp("cloud"), FakeErp("legacy")
        erp, _ = routed(cloud, legacy)
        erp.post_journals([journal("J3", "S003")], idempotency_keys=["k3"])
        assert erp.posting_status("J3") == PostingReceipt("J3", "cloud-x", AT)
        assert erp.posting_status("J9") is None
        assert erp.trial_balance("S003", DAY)[0].account == "cloud"
        assert erp.trial_balance("S002", DAY)[0].account == "legacy"
