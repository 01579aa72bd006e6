"""The reference loyalty platform, run as a real process on a free port with its own SQLite
file and driven over HTTP: earning rules, reversals, holds and refunds, expiry, a program's
outstanding points and statement, idempotency, restart and injected faults. Time-dependent
behaviour moves the service clock; nothing sleeps."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import ServiceProcess, free_port
from tillflow.sim.loyalty import EarnRate, LoyaltySimSettings, TierRule

SETTINGS = LoyaltySimSettings(
    tiers=[
        TierRule(name="basic", multiplier=Decimal(1), threshold=0),
        TierRule(name="silver", multiplier=Decimal("1.25")),
        TierRule(name="gold", multiplier=Decimal("1.5"), threshold=1000),
    ],
    earn={"EUR": EarnRate(), "JPY": EarnRate(per=Decimal(100))},
    category_multipliers={"produce": Decimal(2), "sundry": Decimal(0)},
    expiry_days=30,
    hold_ttl_seconds=600,
    seed_members=10,  # M0001..M0010: M0004 and M0008 silver, M0010 gold, the rest basic
    seed_points=0,
    fault_seed=7,
)
T0 = datetime(2030, 1, 1, tzinfo=UTC)
# 10.50 + 2 x 4.99 (produce) + 0 x 0.20 (a carrier bag earns nothing) = 20.48 points before the tier
BASKET = [
    {"amount": "10.50", "category": "GROCERY"},
    {"amount": "4.99", "category": "PRODUCE"},
    {"amount": "0.20", "category": "SUNDRY"},
]


class LoyaltyProcess(ServiceProcess):
    """The platform in a child process: started, awaited on /healthz, stopped, restarted."""

    def __init__(self, db_path: Path, settings: LoyaltySimSettings) -> None:
        self.db_path = db_path
        self.settings = settings
        self.port = free_port()
        code = (
            "from pathlib import Path; from tillflow.sim.loyalty import LoyaltySimSettings, serve; "
            f"serve({self.port}, Path({str(db_path)!r}), "
            f"settings=LoyaltySimSettings.model_validate_json({settings.model_dump_json()!r}))"
        )
        super().__init__(
            "the loyalty platform", [sys.executable, "-c", code], self.port, db_path.with_suffix(".log")
        )
        self.start()


class Api:
    """A small client: every write gets a fresh idempotency key unless given one."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)
        self._n = 0

    def key(self) -> str:
        self._n += 1
        return f"k-{time.monotonic_ns()}-{self._n}"

    def post(
        self, path: str, body: dict[str, Any] | None = None, *, key: str | None = None
    ) -> httpx.Response:
        return self.http.post(path, json=body or {}, headers={"Idempotency-Key": key or self.key()})

    def accrue(
        self, member: str, txn: str, lines: list[dict[str, Any]], currency: str = "EUR"
    ) -> httpx.Response:
        body = {"member_id": member, "transaction_id": txn, "currency": currency, "lines": lines}
        return self.post("/api/accruals", body)

    def reverse(self, member: str, txn: str, points: int | None = None) -> httpx.Response:
        return self.post("/api/reversals", {"member_id": member, "transaction_id": txn, "points": points})

    def hold(self, member: str, points: int, ttl: int | None = None) -> httpx.Response:
        return self.post("/api/holds", {"member_id": member, "points": points, "ttl_seconds": ttl})

    def member(self, member: str) -> dict[str, Any]:
        answer = self.http.get(f"/api/members/{member}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def ledger(self, member: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.http.get(f"/api/members/{member}/ledger").json()["entries"]
        return entries

    def set_clock(self, now: datetime) -> None:
        assert self.http.post("/admin/clock", json={"now": now.isoformat()}).status_code == 200

    def now(self) -> datetime:
        return datetime.fromisoformat(self.http.get("/admin/clock").json()["now"])

    def spend(self, member: str, points: int, txn: str) -> str:
        """Hold `points` and commit the hold for `txn`; the hold's id."""
        hold_id: str = self.hold(member, points).json()["hold_id"]
        commit = self.post(f"/api/holds/{hold_id}/commit", {"transaction_id": txn})
        assert commit.status_code == 200, commit.text
        return hold_id

    def refund(self, hold_id: str, txn: str, *, key: str | None = None) -> httpx.Response:
        return self.post(f"/api/holds/{hold_id}/refund", {"transaction_id": txn}, key=key)

    def outstanding(self, program: str = "default") -> dict[str, Any]:
        answer = self.http.get(f"/api/programs/{program}/outstanding")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def entries(self, program: str = "default", **params: Any) -> dict[str, Any]:
        answer = self.http.get(f"/api/programs/{program}/entries", params=params)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body


def euros(amount: str) -> list[dict[str, Any]]:
    return [{"amount": amount, "category": None}]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One platform for the tests that neither move the clock nor restart it (distinct members)."""
    process = LoyaltyProcess(tmp_path_factory.mktemp("loyalty") / "loyalty.db", SETTINGS)
    try:
        yield Api(process.url)
    finally:
        process.stop()


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[LoyaltyProcess]:
    """A platform of its own, its clock at T0."""
    process = LoyaltyProcess(tmp_path / "loyalty.db", SETTINGS)
    try:
        Api(process.url).set_clock(T0)
        yield process
    finally:
        process.stop()


class TestEarningRules:
    def test_points_per_unit_with_category_and_tier_multipliers(self, shared: Api) -> None:
        basic = shared.accrue("M0001", "T-rules-1", BASKET)
        silver = shared.accrue("M0004", "T-rules-2", BASKET)
        gold = shared.accrue("M0010", "T-rules-3", BASKET)

        assert [a.status_code for a in (basic, silver, gold)] == [201, 201, 201]
        assert basic.json()["points"] == 20  # 20.48 rounded down
        assert silver.json()["points"] == 25  # 25.60
        assert gold.json()["points"] == 30  # 30.72
        assert shared.member("M0010") == {
            "member_id": "M0010",
            "program": "default",
            "tier": "gold",
            "balance": 30,
            "held": 0,
            "lifetime_points": 30,
        }

    def test_a_currency_earns_at_its_own_rate(self, shared: Api) -> None:
        answer = shared.accrue("M0003", "T-yen", [{"amount": "1980"}], currency="JPY")

        assert answer.status_code == 201
        assert answer.json()["points"] == 19  # a point per 100 JPY

    def test_lifetime_points_reach_a_higher_tier(self, shared: Api) -> None:
        first = shared.accrue("M0002", "T-tier-1", euros("999.00"))
        second = shared.accrue("M0002", "T-tier-2", euros("10.00"))

        assert first.json()["tier"] == "basic"
        assert second.json()["points"] == 10  # earned at the basic rate, then promoted
        assert shared.member("M0002")["tier"] == "gold"

    def test_an_unknown_member_is_enrolled_by_an_accrual_but_not_by_a_read(self, shared: Api) -> None:
        assert shared.http.get("/api/members/NEW-1").status_code == 404

        answer = shared.accrue("NEW-1", "T-new-1", euros("5.00"))

        assert answer.status_code == 201
        assert shared.member("NEW-1")["tier"] == "basic"
        assert shared.member("NEW-1")["balance"] == 5

    @pytest.mark.parametrize(
        ("currency", "lines", "status", "field"),
        [
            ("EUR", [{"amount": "1.005"}], 422, "lines.0.amount"),
            ("GBP", [{"amount": "1.00"}], 422, "currency"),
            ("EUR", [{"amount": 1.5}], 400, "lines.0.amount"),
            ("EUR", [], 400, "lines"),
        ],
    )
    def test_an_invalid_accrual_is_refused_naming_the_field(
        self, shared: Api, currency: str, lines: list[dict[str, Any]], status: int, field: str
    ) -> None:
        answer = shared.accrue("M0005", f"T-bad-{currency}-{status}-{len(lines)}", lines, currency)

        assert answer.status_code == status
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["detail"].startswith(field)


class TestIdempotency:
    def test_a_repeat_returns_the_first_answer_and_earns_once(self, shared: Api) -> None:
        body = {"member_id": "M0006", "transaction_id": "T-idem-1", "currency": "EUR", "lines": euros("7.00")}
        first = shared.post("/api/accruals", body, key="idem-1")
        again = shared.post("/api/accruals", body, key="idem-1")

        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert shared.member("M0006")["balance"] == 7

    def test_a_key_reused_with_another_body_is_refused(self, shared: Api) -> None:
        body = {"member_id": "M0006", "transaction_id": "T-idem-2", "currency": "EUR", "lines": euros("1.00")}
        assert shared.post("/api/accruals", body, key="idem-2").status_code == 201

        other = shared.post("/api/accruals", body | {"lines": euros("2.00")}, key="idem-2")

        assert other.status_code == 422
        assert other.json()["title"] == "idempotency key reused with another request"

    def test_a_transaction_earns_once_whatever_the_key(self, shared: Api) -> None:
        assert shared.accrue("M0007", "T-once", euros("3.00")).status_code == 201

        again = shared.accrue("M0007", "T-once", euros("3.00"))

        assert again.status_code == 409
        assert again.json()["points"] == 3
        assert shared.member("M0007")["balance"] == 3

    def test_a_write_without_a_key_is_refused(self, shared: Api) -> None:
        body = {"member_id": "M0007", "transaction_id": "T-nokey", "currency": "EUR", "lines": euros("3.00")}
        answer = shared.http.post("/api/accruals", json=body)

        assert answer.status_code == 400
        assert "Idempotency-Key" in answer.json()["detail"]

    def test_a_refusal_is_remembered_like_a_success(self, shared: Api) -> None:
        body = {"member_id": "M0009", "points": 1_000_000}
        first = shared.post("/api/holds", body, key="idem-refused")
        again = shared.post("/api/holds", body, key="idem-refused")

        assert first.status_code == again.status_code == 422
        assert again.headers["idempotent-replayed"] == "true"


class TestReversals:
    def test_partial_then_all_remaining_then_no_more(self, shared: Api) -> None:
        assert shared.accrue("NEW-REV", "T-rev", euros("50.00")).json()["points"] == 50

        partial = shared.reverse("NEW-REV", "T-rev", 20)
        rest = shared.reverse("NEW-REV", "T-rev", None)
        more = shared.reverse("NEW-REV", "T-rev", 1)

        assert (partial.status_code, partial.json()["points"], partial.json()["balance"]) == (201, -20, 30)
        assert (rest.status_code, rest.json()["points"], rest.json()["balance"]) == (201, -30, 0)
        assert more.status_code == 422
        assert (more.json()["earned"], more.json()["reversed"], more.json()["remaining"]) == (50, 50, 0)
        kinds = [(e["kind"], e["points"]) for e in shared.ledger("NEW-REV")]
        assert kinds == [("accrual", 50), ("reversal", -20), ("reversal", -30)]

    def test_more_than_earned_is_refused(self, shared: Api) -> None:
        shared.accrue("NEW-REV2", "T-rev2", euros("10.00"))

        answer = shared.reverse("NEW-REV2", "T-rev2", 11)

        assert answer.status_code == 422
        assert answer.json()["remaining"] == 10
        assert shared.member("NEW-REV2")["balance"] == 10

    def test_a_transaction_that_earned_nothing_cannot_be_reversed(self, shared: Api) -> None:
        shared.accrue("NEW-REV3", "T-rev3", euros("10.00"))

        answer = shared.post("/api/reversals", {"member_id": "NEW-REV3", "transaction_id": "T-never"})

        assert answer.status_code == 404

    def test_points_taken_back_after_they_were_spent_leave_a_debt_the_next_accrual_pays(
        self, shared: Api
    ) -> None:
        shared.accrue("NEW-DEBT", "T-debt-1", euros("10.00"))
        hold = shared.hold("NEW-DEBT", 10).json()
        shared.post(f"/api/holds/{hold['hold_id']}/commit", {"transaction_id": "T-debt-spend"})

        reversal = shared.post("/api/reversals", {"member_id": "NEW-DEBT", "transaction_id": "T-debt-1"})
        after = shared.accrue("NEW-DEBT", "T-debt-2", euros("15.00"))

        assert reversal.json()["balance"] == -10
        assert after.json()["balance"] == 5


class TestHolds:
    def test_a_committed_hold_spends_the_points(self, shared: Api) -> None:
        shared.accrue("NEW-H1", "T-h1", euros("100.00"))

        hold = shared.hold("NEW-H1", 40)
        during = shared.member("NEW-H1")
        commit = shared.post(f"/api/holds/{hold.json()['hold_id']}/commit", {"transaction_id": "T-h1-pay"})

        assert hold.status_code == 201
        assert hold.json()["state"] == "held"
        assert (during["balance"], during["held"]) == (60, 40)
        assert commit.status_code == 200
        assert (commit.json()["state"], commit.json()["transaction_id"]) == ("committed", "T-h1-pay")
        assert shared.member("NEW-H1") | {"tier": None} == {
            "member_id": "NEW-H1",
            "program": "default",
            "tier": None,
            "balance": 60,
            "held": 0,
            "lifetime_points": 100,
        }
        assert shared.ledger("NEW-H1")[-1] | {"entry_id": None, "at": None} == {
            "entry_id": None,
            "kind": "redemption",
            "points": -40,
            "balance": 60,
            "transaction_id": "T-h1-pay",
            "hold_id": hold.json()["hold_id"],
            "at": None,
        }

    def test_a_released_hold_gives_the_points_back(self, shared: Api) -> None:
        shared.accrue("NEW-H2", "T-h2", euros("100.00"))
        hold_id = shared.hold("NEW-H2", 70).json()["hold_id"]

        release = shared.post(f"/api/holds/{hold_id}/release")
        again = shared.post(f"/api/holds/{hold_id}/release")
        commit = shared.post(f"/api/holds/{hold_id}/commit", {"transaction_id": "T-h2-pay"})

        assert (release.status_code, release.json()["state"]) == (200, "released")
        assert release.json()["balance"] == 100
        assert (again.status_code, again.json()["state"]) == (200, "released")
        assert commit.status_code == 409
        assert commit.json()["state"] == "released"
        assert shared.member("NEW-H2")["balance"] == 100

    def test_a_committed_hold_cannot_be_released(self, shared: Api) -> None:
        shared.accrue("NEW-H3", "T-h3", euros("10.00"))
        hold_id = shared.hold("NEW-H3", 10).json()["hold_id"]
        shared.post(f"/api/holds/{hold_id}/commit", {"transaction_id": "T-h3-pay"})

        release = shared.post(f"/api/holds/{hold_id}/release")
        other = shared.post(f"/api/holds/{hold_id}/commit", {"transaction_id": "T-h3-other"})
        same = shared.post(f"/api/holds/{hold_id}/commit", {"transaction_id": "T-h3-pay"})

        assert (release.status_code, release.json()["state"]) == (409, "committed")
        assert other.status_code == 409
        assert (same.status_code, same.json()["state"]) == (200, "committed")
        assert shared.member("NEW-H3")["balance"] == 0

    def test_a_hold_cannot_exceed_the_available_points(self, shared: Api) -> None:
        shared.accrue("NEW-H4", "T-h4", euros("20.00"))

        too_many = shared.hold("NEW-H4", 21)

        assert too_many.status_code == 422
        assert too_many.json()["title"] == "insufficient points"
        assert (too_many.json()["requested"], too_many.json()["available"]) == (21, 20)

    def test_two_holds_cannot_spend_the_same_points(self, shared: Api) -> None:
        shared.accrue("NEW-H5", "T-h5", euros("20.00"))

        first = shared.hold("NEW-H5", 15)
        second = shared.hold("NEW-H5", 10)

        assert first.status_code == 201
        assert second.status_code == 422
        assert (second.json()["available"], second.json()["held"]) == (5, 15)

    def test_concurrent_holds_never_overspend(self, shared: Api) -> None:
        shared.accrue("NEW-H6", "T-h6", euros("20.00"))

        def hold(_: int) -> int:
            with httpx.Client(base_url=str(shared.http.base_url), timeout=30) as http:
                body = {"member_id": "NEW-H6", "points": 5}
                answer = http.post("/api/holds", json=body, headers={"Idempotency-Key": shared.key()})
                return answer.status_code

        with ThreadPoolExecutor(max_workers=10) as pool:
            statuses = sorted(pool.map(hold, range(10)))

        assert statuses == [201] * 4 + [422] * 6
        assert shared.member("NEW-H6") | {"lifetime_points": 0} == {
            "member_id": "NEW-H6",
            "program": "default",
            "tier": "basic",
            "balance": 0,
            "held": 20,
            "lifetime_points": 0,
        }

    def test_an_unknown_hold_is_not_found(self, shared: Api) -> None:
        assert shared.post("/api/holds/H-nope/commit", {"transaction_id": "T"}).status_code == 404


class TestRefunds:
    def test_a_refund_gives_the_spent_points_back(self, shared: Api) -> None:
        shared.accrue("NEW-R1", "T-r1", euros("100.00"))
        hold_id = shared.spend("NEW-R1", 40, "T-r1-pay")

        refund = shared.refund(hold_id, "T-r1-void")

        assert refund.status_code == 201
        assert refund.json() | {"entry_id": None} == {
            "entry_id": None,
            "member_id": "NEW-R1",
            "program": "default",
            "transaction_id": "T-r1-void",
            "points": 40,
            "balance": 100,
            "hold_id": hold_id,
        }
        assert shared.member("NEW-R1")["balance"] == 100
        assert shared.member("NEW-R1")["lifetime_points"] == 100  # a refund earns nothing
        assert shared.http.get(f"/api/holds/{hold_id}").json()["state"] == "refunded"
        assert shared.ledger("NEW-R1")[-1] | {"at": None} == {
            "entry_id": refund.json()["entry_id"],
            "kind": "refund",
            "points": 40,
            "balance": 100,
            "transaction_id": "T-r1-void",
            "hold_id": hold_id,
            "at": None,
        }

    def test_a_refund_repeated_under_its_key_gives_back_once(self, shared: Api) -> None:
        shared.accrue("NEW-R2", "T-r2", euros("50.00"))
        hold_id = shared.spend("NEW-R2", 30, "T-r2-pay")

        first = shared.refund(hold_id, "T-r2-void", key="refund-r2")
        again = shared.refund(hold_id, "T-r2-void", key="refund-r2")
        other_key = shared.refund(hold_id, "T-r2-void")

        assert (first.status_code, again.status_code) == (201, 201)
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert other_key.status_code == 409
        assert other_key.json() | {"instance": None} == {
            "type": "https://tillflow.dev/problems/hold-not-committed",
            "title": "hold not committed",
            "status": 409,
            "detail": f"hold {hold_id} is refunded (by transaction T-r2-void):"
            " only a committed hold can be refunded",
            "state": "refunded",
            "instance": None,
        }
        assert [e["kind"] for e in shared.ledger("NEW-R2")] == ["accrual", "redemption", "refund"]
        assert shared.member("NEW-R2")["balance"] == 50

    @pytest.mark.parametrize("state", ["held", "released"])
    def test_only_a_committed_hold_is_refunded(self, shared: Api, state: str) -> None:
        member = f"NEW-R3-{state}"
        shared.accrue(member, f"T-r3-{state}", euros("20.00"))
        hold_id = shared.hold(member, 10).json()["hold_id"]
        if state == "released":
            shared.post(f"/api/holds/{hold_id}/release")

        refund = shared.refund(hold_id, "T-r3-void")

        assert refund.status_code == 409
        assert refund.headers["content-type"] == "application/problem+json"
        assert refund.json()["type"].endswith("/hold-not-committed")
        assert refund.json()["state"] == state
        assert refund.json()["detail"] == f"hold {hold_id} is {state}: only a committed hold can be refunded"
        assert shared.http.get(f"/api/holds/{hold_id}").json()["state"] == state
        assert shared.member(member)["balance"] == (10 if state == "held" else 20)

    def test_an_unknown_hold_is_not_found(self, shared: Api) -> None:
        answer = shared.refund("H-nope", "T-void")

        assert (answer.status_code, answer.json()["type"]) == (
            404,
            "https://tillflow.dev/problems/unknown-hold",
        )

    def test_a_refunded_hold_can_be_neither_released_nor_committed_again(self, shared: Api) -> None:
        shared.accrue("NEW-R4", "T-r4", euros("10.00"))
        hold_id = shared.spend("NEW-R4", 10, "T-r4-pay")
        shared.refund(hold_id, "T-r4-void")

        release = shared.post(f"/api/holds/{hold_id}/release")
        commit = shared.post(f"/api/holds/{hold_id}/commit", {"transaction_id": "T-r4-pay"})

        assert (release.status_code, release.json()["state"]) == (409, "refunded")
        assert (commit.status_code, commit.json()["state"]) == (409, "refunded")
        assert shared.member("NEW-R4")["balance"] == 10

    def test_a_refund_pays_the_members_debt_first(self, shared: Api) -> None:
        shared.accrue("NEW-RD", "T-rd-1", euros("10.00"))
        hold_id = shared.spend("NEW-RD", 10, "T-rd-pay")
        debt = shared.reverse("NEW-RD", "T-rd-1")  # the 10 points were spent: a debt of 10

        refund = shared.refund(hold_id, "T-rd-void")
        after = shared.accrue("NEW-RD", "T-rd-2", euros("5.00"))

        assert debt.json()["balance"] == -10
        assert (refund.json()["points"], refund.json()["balance"]) == (10, 0)  # the debt is paid
        assert after.json()["balance"] == 5  # nothing left to pay off
        assert [(e["kind"], e["points"], e["balance"]) for e in shared.ledger("NEW-RD")] == [
            ("accrual", 10, 10),
            ("redemption", -10, 0),
            ("reversal", -10, -10),
            ("refund", 10, 0),
            ("accrual", 5, 5),
        ]


class TestTheServiceClock:
    def test_a_hold_past_its_ttl_expires_and_cannot_be_committed(self, platform: LoyaltyProcess) -> None:
        api = Api(platform.url)
        api.accrue("M0001", "T-ttl", euros("30.00"))
        hold_id = api.hold("M0001", 30, ttl=60).json()["hold_id"]

        api.set_clock(T0 + timedelta(seconds=59))
        assert api.member("M0001")["held"] == 30
        api.set_clock(T0 + timedelta(seconds=61))
        state = api.http.get(f"/api/holds/{hold_id}").json()
        commit = api.post(f"/api/holds/{hold_id}/commit", {"transaction_id": "T-ttl-pay"})

        assert state["state"] == "expired"
        assert api.member("M0001") | {"lifetime_points": 0} == {
            "member_id": "M0001",
            "program": "default",
            "tier": "basic",
            "balance": 30,
            "held": 0,
            "lifetime_points": 0,
        }
        assert (commit.status_code, commit.json()["state"]) == (409, "expired")

    def test_points_expire_oldest_first(self, platform: LoyaltyProcess) -> None:
        api = Api(platform.url)
        api.accrue("M0001", "T-old", euros("10.00"))  # expires T0 + 30 days
        api.set_clock(T0 + timedelta(days=10))
        api.accrue("M0001", "T-new", euros("20.00"))  # expires T0 + 40 days
        hold_id = api.hold("M0001", 4).json()["hold_id"]
        api.post(f"/api/holds/{hold_id}/commit", {"transaction_id": "T-spend"})  # 4 of the old lot

        api.set_clock(T0 + timedelta(days=30, seconds=1))
        after_first = api.member("M0001")["balance"]
        api.set_clock(T0 + timedelta(days=40, seconds=1))
        after_second = api.member("M0001")["balance"]

        assert (after_first, after_second) == (20, 0)
        kinds = [(e["kind"], e["points"], e["balance"]) for e in api.ledger("M0001")]
        assert kinds == [
            ("accrual", 10, 10),
            ("accrual", 20, 30),
            ("redemption", -4, 26),
            ("expiry", -6, 20),
            ("expiry", -20, 0),
        ]
        assert api.http.get("/admin/state").json()["points_expired"] == 26

    def test_points_an_open_hold_needs_do_not_expire_under_it(self, platform: LoyaltyProcess) -> None:
        api = Api(platform.url)
        api.accrue("M0001", "T-kept", euros("10.00"))  # expires T0 + 30 days
        api.set_clock(T0 + timedelta(days=30, seconds=-60))
        hold_id = api.hold("M0001", 8, ttl=600).json()["hold_id"]

        api.set_clock(T0 + timedelta(days=30, seconds=1))
        commit = api.post(f"/api/holds/{hold_id}/commit", {"transaction_id": "T-kept-pay"})

        assert commit.status_code == 200
        assert [(e["kind"], e["points"]) for e in api.ledger("M0001")] == [
            ("accrual", 10),
            ("expiry", -2),
            ("redemption", -8),
        ]
        assert api.member("M0001")["balance"] == 0


def ledger_total(api: Api, program: str = "default") -> int:
    return sum(e["points"] for e in api.entries(program, limit=10_000)["entries"])


class TestOutstanding:
    def test_outstanding_is_the_sum_of_the_ledger_through_every_kind_of_move(
        self, platform: LoyaltyProcess
    ) -> None:
        api = Api(platform.url)
        api.accrue("M0001", "T-o1", euros("40.00"))  # expires T0 + 30 days
        api.accrue("M0002", "T-o2", euros("20.00"))  # expires T0 + 30 days
        api.reverse("M0002", "T-o2", 5)
        api.set_clock(T0 + timedelta(days=10))
        spent = api.spend("M0001", 10, "T-o3")  # from the oldest lot
        assert api.refund(spent, "T-o3-void").status_code == 201  # a new lot: T0 + 40 days
        api.accrue("M0003", "T-o4", euros("8.00"))  # T0 + 40 days
        before_hold = api.outstanding()
        open_hold = api.hold("M0003", 3, ttl=600).json()["hold_id"]

        during = api.outstanding()
        api.set_clock(T0 + timedelta(days=30, seconds=1))
        after_expiry = api.outstanding()
        late_refund = api.refund(open_hold, "T-o5-void")

        assert before_hold["outstanding"] == during["outstanding"] == 40 + 15 - 10 + 10 + 8 == 63
        assert (before_hold["held"], during["held"]) == (0, 3)  # held points are still owed
        assert during | {"as_of": None} == {
            "program": "default",
            "outstanding": 63,
            "held": 3,
            "members": 10,
            "as_of": None,
        }
        assert during["as_of"].startswith("2030-01-11")
        # 30 of M0001's first lot (10 of it was spent) and M0002's 15 expired; the rest is younger
        assert (after_expiry["outstanding"], after_expiry["held"]) == (18, 0)
        assert after_expiry["outstanding"] == ledger_total(api)
        assert api.http.get("/admin/state").json()["outstanding"] == 18
        assert (late_refund.status_code, late_refund.json()["state"]) == (409, "expired")

    def test_outstanding_settles_the_expiries_that_are_due_first(self, platform: LoyaltyProcess) -> None:
        api = Api(platform.url)
        api.accrue("M0001", "T-due", euros("12.00"))
        api.set_clock(T0 + timedelta(days=30, seconds=1))

        outstanding = api.outstanding()  # no member was read since the clock moved

        assert outstanding["outstanding"] == 0
        assert [(e["kind"], e["points"]) for e in api.ledger("M0001")] == [("accrual", 12), ("expiry", -12)]

    def test_an_unknown_program_is_not_found(self, shared: Api) -> None:
        answer = shared.http.get("/api/programs/nope/outstanding")

        assert answer.status_code == 404
        assert answer.json()["type"].endswith("/unknown-program")


@pytest.fixture
def two_programs(tmp_path: Path) -> Iterator[Api]:
    """A platform with two programs, M0001..M0003 in each with 100 welcome points; its clock is
    left where it was when they were seeded (wall time)."""
    settings = SETTINGS.model_copy(
        update={"programs": ["default", "staff"], "seed_members": 3, "seed_points": 100}
    )
    process = LoyaltyProcess(tmp_path / "loyalty.db", settings)
    try:
        yield Api(process.url)
    finally:
        process.stop()


class TestStatement:
    def test_pages_by_cursor_in_ledger_order(self, two_programs: Api) -> None:
        api = two_programs
        for n in range(1, 4):
            api.accrue(f"M000{n}", f"T-st-{n}", euros(f"{n}.00"))
        api.post("/api/accruals", {**accrual("M0001", "T-st-staff", "9.00"), "program": "staff"})
        api.reverse("M0002", "T-st-2", 1)

        whole = api.entries()
        pages, after = [], 0
        while True:
            page = api.entries(after=after, limit=2)
            if not page["entries"]:
                assert page["next"] == after
                break
            assert len(page["entries"]) <= 2
            pages += page["entries"]
            after = page["next"]
            assert after == page["entries"][-1]["seq"]

        assert pages == whole["entries"]
        assert [(e["member_id"], e["kind"], e["points"]) for e in whole["entries"]] == [
            ("M0001", "bonus", 100),
            ("M0002", "bonus", 100),
            ("M0003", "bonus", 100),
            ("M0001", "accrual", 1),
            ("M0002", "accrual", 2),
            ("M0003", "accrual", 3),
            ("M0002", "reversal", -1),
        ]  # the staff program's entries are its own
        assert [e["seq"] for e in whole["entries"]] == sorted(e["seq"] for e in whole["entries"])
        assert whole["program"] == "default"
        assert whole["next"] == whole["entries"][-1]["seq"]
        assert [(e["kind"], e["points"]) for e in api.entries("staff")["entries"]] == [
            ("bonus", 100),
            ("bonus", 100),
            ("bonus", 100),
            ("accrual", 9),
        ]
        assert api.outstanding()["outstanding"] == ledger_total(api) == 305
        assert api.outstanding("staff")["outstanding"] == ledger_total(api, "staff") == 309

    def test_only_the_kinds_asked_for(self, two_programs: Api) -> None:
        api = two_programs
        api.accrue("M0001", "T-k1", euros("10.00"))
        api.reverse("M0001", "T-k1", 4)
        hold_id = api.spend("M0002", 50, "T-k2")
        api.refund(hold_id, "T-k2-void")

        moves = api.entries(kind=["reversal", "refund"])["entries"]
        bonuses = api.entries(kind="bonus", after=1)["entries"]

        assert [(e["kind"], e["member_id"], e["points"], e["transaction_id"]) for e in moves] == [
            ("reversal", "M0001", -4, "T-k1"),
            ("refund", "M0002", 50, "T-k2-void"),
        ]
        assert moves[1]["hold_id"] == hold_id
        assert [(e["kind"], e["member_id"]) for e in bonuses] == [("bonus", "M0002"), ("bonus", "M0003")]

    def test_expiries_show_once_the_clock_passes_them(self, two_programs: Api) -> None:
        api = two_programs
        start = api.now()  # the welcome points were given before: they expire by start + 30 days
        api.set_clock(start + timedelta(days=10))
        api.accrue("M0001", "T-x1", euros("7.00"))  # expires start + 40 days

        before = api.entries(kind="expiry")
        api.set_clock(start + timedelta(days=30, seconds=1))
        first = api.entries(kind="expiry")
        again = api.entries(kind="expiry", after=before["next"])
        api.set_clock(start + timedelta(days=40, seconds=1))
        later = api.entries(kind="expiry", after=first["next"])

        assert (before["entries"], before["next"]) == ([], 0)
        assert [(e["member_id"], e["points"], e["transaction_id"]) for e in first["entries"]] == [
            ("M0001", -100, None),
            ("M0002", -100, None),
            ("M0003", -100, None),
        ]
        assert again["entries"] == first["entries"]  # settled once
        assert [(e["member_id"], e["points"]) for e in later["entries"]] == [("M0001", -7)]
        assert api.outstanding()["outstanding"] == ledger_total(api) == 0

    @pytest.mark.parametrize(
        ("params", "status", "detail"),
        [
            ({"limit": 0}, 422, "limit: 0 is outside 1..10000"),
            ({"limit": 10_001}, 422, "limit: 10001 is outside 1..10000"),
            ({"after": -1}, 422, "after: -1 is below 0"),
            ({"kind": "expired"}, 422, "kind: expired is not one of"),
            ({"limit": "many"}, 400, "query.limit"),
        ],
    )
    def test_a_bad_query_is_refused(
        self, shared: Api, params: dict[str, Any], status: int, detail: str
    ) -> None:
        answer = shared.http.get("/api/programs/default/entries", params=params)

        assert answer.status_code == status
        assert answer.json()["detail"].startswith(detail)

    def test_an_unknown_program_is_not_found(self, shared: Api) -> None:
        answer = shared.http.get("/api/programs/nope/entries")

        assert answer.status_code == 404
        assert answer.json()["type"].endswith("/unknown-program")

    def test_the_reads_are_faulted_like_other_reads(self, platform: LoyaltyProcess) -> None:
        api = Api(platform.url)
        until = datetime.now(UTC) + timedelta(hours=1)
        api.http.put("/admin/faults", json={"outage_until": until.isoformat()})

        outstanding = api.http.get("/api/programs/default/outstanding")
        entries = api.http.get("/api/programs/default/entries")

        assert (outstanding.status_code, entries.status_code) == (503, 503)
        assert outstanding.headers["retry-after"] and entries.headers["retry-after"]


def accrual(member: str, txn: str, amount: str) -> dict[str, Any]:
    return {"member_id": member, "transaction_id": txn, "currency": "EUR", "lines": euros(amount)}


class TestRestart:
    def test_state_idempotency_and_clock_survive_a_restart(self, platform: LoyaltyProcess) -> None:
        api = Api(platform.url)
        body = {"member_id": "M0008", "transaction_id": "T-keep", "currency": "EUR", "lines": euros("8.00")}
        first = api.post("/api/accruals", body, key="keep-1")
        hold_id = api.hold("M0008", 4).json()["hold_id"]

        platform.restart()
        api = Api(platform.url)
        again = api.post("/api/accruals", body, key="keep-1")

        assert first.json()["points"] == 10  # silver: 8 x 1.25
        assert again.status_code == 201
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert (api.member("M0008")["balance"], api.member("M0008")["held"]) == (6, 4)
        assert api.http.get(f"/api/holds/{hold_id}").json()["state"] == "held"
        assert api.http.get("/admin/clock").json()["now"].startswith("2030-01-01")


class TestFaults:
    def test_errors_outage_and_throttling_then_cleared(self, platform: LoyaltyProcess) -> None:
        api = Api(platform.url)
        body = {"member_id": "M0001", "transaction_id": "T-fault", "currency": "EUR", "lines": euros("5.00")}

        assert api.http.put("/admin/faults", json={"error_rate": 1}).status_code == 200
        failed = api.post("/api/accruals", body, key="fault-1")
        health = api.http.get("/healthz")
        outage_until = datetime.now(UTC) + timedelta(hours=1)
        api.http.put("/admin/faults", json={"outage_until": outage_until.isoformat()})
        outage = api.http.get("/api/members/M0001")
        api.http.put("/admin/faults", json={"throttle": {"rate": 1, "retry_after": 7}})
        throttled = api.http.get("/api/members/M0001")
        api.http.put("/admin/faults", json={"latency_ms": 5})
        latency = api.http.get("/admin/faults").json()["latency_ms"]
        cleared = api.http.delete("/admin/faults")
        served = api.post("/api/accruals", body, key="fault-1")

        assert failed.status_code == 500
        assert failed.headers["content-type"] == "application/problem+json"
        assert health.status_code == 200
        assert outage.status_code == 503
        assert 3500 <= int(outage.headers["retry-after"]) <= 3600
        assert (throttled.status_code, throttled.headers["retry-after"]) == (429, "7")
        assert latency == 5
        assert cleared.json()["error_rate"] == 0
        assert served.status_code == 201  # the failed attempt had no effect and stored no answer
        assert "idempotent-replayed" not in served.headers
        assert api.member("M0001")["balance"] == 5

    def test_an_error_rate_fails_about_that_share_of_requests(self, platform: LoyaltyProcess) -> None:
        api = Api(platform.url)
        api.http.put("/admin/faults", json={"error_rate": 0.5, "seed": 1})

        statuses = [api.http.get("/api/members/M0001").status_code for _ in range(200)]

        assert set(statuses) == {200, 500}
        assert 60 <= statuses.count(500) <= 140

    def test_a_bad_fault_setting_is_refused(self, platform: LoyaltyProcess) -> None:
        answer = Api(platform.url).http.put("/admin/faults", json={"error_rate": 2})

        assert answer.status_code == 400
        assert "error_rate" in answer.json()["detail"]


class TestAdminState:
    def test_the_summary_counts_what_happened(self, platform: LoyaltyProcess) -> None:
        api = Api(platform.url)
        api.accrue("M0001", "T-s1", euros("40.00"))
        api.post("/api/reversals", {"member_id": "M0001", "transaction_id": "T-s1", "points": 5})
        spent = api.hold("M0001", 10).json()["hold_id"]
        api.post(f"/api/holds/{spent}/commit", {"transaction_id": "T-s2"})
        api.hold("M0001", 3)

        state = api.http.get("/admin/state").json()

        assert {k: state[k] for k in ("members", "accruals", "points_issued", "points_reversed")} == {
            "members": 10,
            "accruals": 1,
            "points_issued": 40,
            "points_reversed": 5,
        }
        assert (state["points_redeemed"], state["open_holds"], state["points_held"]) == (10, 1, 3)
        assert (state["points_refunded"], state["outstanding"]) == (0, 25)

    def test_the_summary_counts_refunds_and_what_is_outstanding(self, platform: LoyaltyProcess) -> None:
        api = Api(platform.url)
        api.accrue("M0001", "T-s3", euros("30.00"))
        spent = api.spend("M0001", 12, "T-s4")
        api.refund(spent, "T-s4-void")

        state = api.http.get("/admin/state").json()

        assert (state["points_redeemed"], state["points_refunded"]) == (12, 12)
        assert (state["holds_committed"], state["holds_refunded"]) == (0, 1)
        assert state["outstanding"] == api.outstanding()["outstanding"] == ledger_total(api) == 30
