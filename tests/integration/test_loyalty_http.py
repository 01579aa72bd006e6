"""`HttpLoyalty` against the reference loyalty platform started as a process: every port
method's happy path with exact values (refunds, a program's outstanding points and statement
included), idempotent repeats, refusals with the platform's reason, injected faults, hold and
points expiry by moving the service clock, and a stopped service.

The platform runs with its default rules: a point per euro, produce x2, carrier bags (sundry)
x0, silver x1.25 and gold x1.5; members M0001..M0100 seeded with 1,000 welcome points (M0004
silver, M0010 gold, M0001 basic)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.integration.test_sim_loyalty import LoyaltyProcess
from tests.servers import free_port
from tillflow.connectors.loyalty_http import HttpLoyalty
from tillflow.errors import DownstreamRejectedError, DownstreamUnavailableError
from tillflow.ports import Accrual, EarningLine, HoldState, LedgerEntry, Member, PointsMove, ProgramPoints
from tillflow.sim.loyalty import LoyaltySimSettings

SETTINGS = LoyaltySimSettings()  # the defaults, as a demo runs them
# 10.50 + 2 x 4.99 (produce) + 0 x 0.20 (sundry) = 20.48 points before the tier multiplier
BASKET = [
    EarningLine(Decimal("10.50"), "GROCERY"),
    EarningLine(Decimal("4.99"), "PRODUCE"),
    EarningLine(Decimal("0.20"), "SUNDRY"),
]
_keys = itertools.count(1)


def key(label: str = "k") -> str:
    return f"{label}-{next(_keys)}"


def euros(amount: str) -> list[EarningLine]:
    return [EarningLine(Decimal(amount))]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoyaltyProcess]:
    """One platform for the tests that neither move its clock nor stop it (distinct members)."""
    process = LoyaltyProcess(tmp_path_factory.mktemp("loyalty-http") / "loyalty.db", SETTINGS)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def loyalty(service: LoyaltyProcess) -> Iterator[HttpLoyalty]:
    with HttpLoyalty(service.url) as adapter:
        yield adapter


@pytest.fixture
def admin(service: LoyaltyProcess) -> Iterator[httpx.Client]:
    """The platform's admin API; faults are cleared after each test."""
    with httpx.Client(base_url=service.url, timeout=30) as client:
        try:
            yield client
        finally:
            assert client.delete("/admin/faults").status_code == 200


@pytest.fixture
def own(tmp_path: Path) -> Iterator[LoyaltyProcess]:
    """A platform of its own (for moving its clock, for stopping it)."""
    process = LoyaltyProcess(tmp_path / "loyalty.db", SETTINGS)
    try:
        yield process
    finally:
        process.stop()


def service_now(admin: httpx.Client) -> datetime:
    return datetime.fromisoformat(admin.get("/admin/clock").json()["now"])


def rejected(exc: pytest.ExceptionInfo[DownstreamRejectedError]) -> tuple[int | None, str]:
    assert exc.value.system == "loyalty"
    return exc.value.status, exc.value.reason


class TestMembers:
    def test_a_seeded_member_with_its_welcome_points(self, loyalty: HttpLoyalty) -> None:
        assert loyalty.find_member("M0020") == Member("M0020", "default", "gold", 1000, 0)
        assert loyalty.find_member("M0012", program="default") == Member("M0012", "default", "silver", 1000)

    def test_an_unknown_member_is_none(self, loyalty: HttpLoyalty) -> None:
        assert loyalty.find_member("NOBODY") is None
        assert loyalty.find_member("odd?program=x") is None  # an id never changes the query

    def test_an_unknown_program_is_a_refusal_not_an_unknown_member(self, loyalty: HttpLoyalty) -> None:
        with pytest.raises(DownstreamRejectedError) as exc:
            loyalty.find_member("M0001", program="nope")

        assert rejected(exc) == (404, "unknown program: program: no program 'nope'")


class TestAccruals:
    @pytest.mark.parametrize(
        ("member", "points", "tier"), [("M0001", 20, "basic"), ("M0004", 25, "silver"), ("M0010", 30, "gold")]
    )
    def test_the_platform_rules_decide_the_points(
        self, loyalty: HttpLoyalty, member: str, points: int, tier: str
    ) -> None:
        move = loyalty.accrue(
            member,
            program="default",
            transaction_id=f"T-rules-{member}",
            currency="EUR",
            lines=BASKET,
            idempotency_key=key(),
        )

        assert (move.member_id, move.points, move.balance, move.repeated) == (
            member,
            points,
            1000 + points,
            False,
        )
        assert move.entry_id
        assert loyalty.find_member(member) == Member(member, "default", tier, 1000 + points, 0)

    def test_a_currency_earns_at_its_own_rate(self, loyalty: HttpLoyalty) -> None:
        move = loyalty.accrue(
            "M0003",
            program="default",
            transaction_id="T-yen",
            currency="JPY",
            lines=[EarningLine(Decimal(1980))],
            idempotency_key=key(),
        )

        assert (move.points, move.balance) == (19, 1019)

    def test_a_repeat_under_the_same_key_is_the_same_entry(self, loyalty: HttpLoyalty) -> None:
        def accrue() -> PointsMove:
            return loyalty.accrue(
                "M0005",
                program="default",
                transaction_id="T-idem",
                currency="EUR",
                lines=euros("7.00"),
                idempotency_key="idem-accrual",
            )

        first, again = accrue(), accrue()

        assert (first.points, first.balance, first.repeated) == (7, 1007, False)
        assert again == replace(first, repeated=True)
        assert loyalty.find_member("M0005") == Member("M0005", "default", "basic", 1007)

    def test_the_same_transaction_under_another_key_is_refused(self, loyalty: HttpLoyalty) -> None:
        first = loyalty.accrue(
            "M0006",
            program="default",
            transaction_id="T-once",
            currency="EUR",
            lines=euros("3.00"),
            idempotency_key=key(),
        )

        with pytest.raises(DownstreamRejectedError) as exc:
            loyalty.accrue(
                "M0006",
                program="default",
                transaction_id="T-once",
                currency="EUR",
                lines=euros("3.00"),
                idempotency_key=key(),
            )

        assert rejected(exc) == (
            409,
            "transaction already earned: transaction T-once already earned 3 points for member M0006"
            f" (entry {first.entry_id}); a transaction earns once",
        )
        assert loyalty.find_member("M0006") == Member("M0006", "default", "basic", 1003)

    def test_an_amount_below_the_minor_unit_is_refused_naming_the_field(self, loyalty: HttpLoyalty) -> None:
        with pytest.raises(DownstreamRejectedError) as exc:
            loyalty.accrue(
                "M0007",
                program="default",
                transaction_id="T-bad",
                currency="EUR",
                lines=euros("1.005"),
                idempotency_key=key(),
            )

        assert rejected(exc) == (
            422,
            "invalid amount: lines.0.amount: 1.005 has digits below the EUR minor unit",
        )

    def test_a_key_reused_with_another_request_is_refused(self, loyalty: HttpLoyalty) -> None:
        loyalty.accrue(
            "M0008",
            program="default",
            transaction_id="T-reuse",
            currency="EUR",
            lines=euros("1.00"),
            idempotency_key="reused",
        )

        with pytest.raises(DownstreamRejectedError) as exc:
            loyalty.accrue(
                "M0008",
                program="default",
                transaction_id="T-reuse",
                currency="EUR",
                lines=euros("2.00"),
                idempotency_key="reused",
            )

        assert exc.value.status == 422


class TestAccrualBatches:
    def test_each_accrual_is_answered_on_its_own(self, loyalty: HttpLoyalty) -> None:
        accruals = [
            Accrual("M0061", "default", "T-batch-1", "EUR", tuple(euros("10.00")), "batch-1"),
            Accrual("M0062", "default", "T-batch-2", "EUR", tuple(euros("0.001")), "batch-2"),
            Accrual("M0063", "default", "T-batch-3", "EUR", tuple(euros("3.00")), "batch-3"),
        ]

        earned, refused, third = loyalty.accrue_many(accruals)

        assert isinstance(earned, PointsMove) and (earned.member_id, earned.points) == ("M0061", 10)
        assert isinstance(third, PointsMove) and (third.member_id, third.points) == ("M0063", 3)
        assert isinstance(refused, DownstreamRejectedError)
        assert "T-batch-2" in refused.reason and "minor unit" in refused.reason and refused.status == 422

    def test_a_batch_sent_again_earns_nothing_more(self, service: LoyaltyProcess) -> None:
        accruals = [
            Accrual(f"M00{70 + n}", "default", f"T-again-{n}", "EUR", tuple(euros("5.00")), f"again-{n}")
            for n in range(5)
        ]
        with HttpLoyalty(service.url, max_batch=2) as small_batches:  # three requests
            first = small_batches.accrue_many(accruals)
            again = small_batches.accrue_many(accruals)

        assert all(isinstance(m, PointsMove) and not m.repeated for m in first)
        assert again == [replace(m, repeated=True) for m in first if isinstance(m, PointsMove)]


class TestReversals:
    def test_part_then_all_that_is_left_then_no_more(self, loyalty: HttpLoyalty) -> None:
        loyalty.accrue(
            "M0009",
            program="default",
            transaction_id="T-rev",
            currency="EUR",
            lines=euros("50.00"),
            idempotency_key=key(),
        )

        part = loyalty.reverse(
            "M0009", program="default", transaction_id="T-rev", points=20, idempotency_key="rev-part"
        )
        again = loyalty.reverse(
            "M0009", program="default", transaction_id="T-rev", points=20, idempotency_key="rev-part"
        )
        rest = loyalty.reverse(
            "M0009", program="default", transaction_id="T-rev", points=None, idempotency_key=key()
        )
        with pytest.raises(DownstreamRejectedError) as exc:
            loyalty.reverse(
                "M0009", program="default", transaction_id="T-rev", points=1, idempotency_key=key()
            )

        assert (part.member_id, part.points, part.balance, part.repeated) == ("M0009", -20, 1030, False)
        assert (again.entry_id, again.points, again.repeated) == (part.entry_id, -20, True)
        assert (rest.points, rest.balance) == (-30, 1000)
        assert rejected(exc) == (
            422,
            "more than earned: points: 1 is more than the 0 points left to reverse of transaction T-rev"
            " (earned 50, reversed 50)",
        )

    def test_a_transaction_that_earned_nothing_cannot_be_reversed(self, loyalty: HttpLoyalty) -> None:
        with pytest.raises(DownstreamRejectedError) as exc:
            loyalty.reverse(
                "M0011", program="default", transaction_id="T-never", points=None, idempotency_key=key()
            )

        assert rejected(exc) == (
            404,
            "no such accrual: transaction_id: member M0011 earned nothing with transaction T-never",
        )


class TestHolds:
    def test_reserve_then_commit_spends_the_points(self, loyalty: HttpLoyalty, admin: httpx.Client) -> None:
        now = service_now(admin)

        hold = loyalty.reserve(
            "M0021", program="default", points=400, ttl=timedelta(minutes=5), idempotency_key="hold-21"
        )
        again = loyalty.reserve(
            "M0021", program="default", points=400, ttl=timedelta(minutes=5), idempotency_key="hold-21"
        )
        during = loyalty.find_member("M0021")
        spent = loyalty.commit(hold.hold_id, transaction_id="T-pay-21", idempotency_key="commit-21")
        spent_again = loyalty.commit(hold.hold_id, transaction_id="T-pay-21", idempotency_key="commit-21")

        assert (hold.member_id, hold.points, hold.state, hold.transaction_id) == (
            "M0021",
            400,
            HoldState.HELD,
            None,
        )
        assert hold.expires_at.tzinfo is not None
        assert timedelta(minutes=5) <= hold.expires_at - now < timedelta(minutes=6)
        assert again == replace(hold, repeated=True)
        assert during == Member("M0021", "default", "basic", 600, 400)
        assert (spent.hold_id, spent.state, spent.transaction_id) == (
            hold.hold_id,
            HoldState.COMMITTED,
            "T-pay-21",
        )
        assert (spent.points, spent.expires_at, spent.repeated) == (400, hold.expires_at, False)
        assert spent_again == replace(spent, repeated=True)
        assert loyalty.find_member("M0021") == Member("M0021", "default", "basic", 600, 0)

    def test_reserve_then_release_gives_the_points_back(self, loyalty: HttpLoyalty) -> None:
        hold = loyalty.reserve(
            "M0022", program="default", points=700, ttl=timedelta(minutes=5), idempotency_key=key()
        )
        assert loyalty.find_member("M0022") == Member("M0022", "default", "basic", 300, 700)

        released = loyalty.release(hold.hold_id, idempotency_key="release-22")
        again = loyalty.release(hold.hold_id, idempotency_key="release-22")

        assert (released.hold_id, released.state, released.points) == (hold.hold_id, HoldState.RELEASED, 700)
        assert (again.state, again.repeated) == (HoldState.RELEASED, True)
        assert loyalty.find_member("M0022") == Member("M0022", "default", "basic", 1000, 0)

    def test_commit_after_release_is_refused_naming_the_state(self, loyalty: HttpLoyalty) -> None:
        hold = loyalty.reserve(
            "M0023", program="default", points=10, ttl=timedelta(minutes=5), idempotency_key=key()
        )
        loyalty.release(hold.hold_id, idempotency_key=key())

        with pytest.raises(DownstreamRejectedError) as exc:
            loyalty.commit(hold.hold_id, transaction_id="T-late", idempotency_key=key())

        assert rejected(exc) == (
            409,
            f"hold not open: hold {hold.hold_id} is released: it cannot be committed",
        )
        assert loyalty.find_member("M0023") == Member("M0023", "default", "basic", 1000, 0)

    def test_release_after_commit_is_refused(self, loyalty: HttpLoyalty) -> None:
        hold = loyalty.reserve(
            "M0024", program="default", points=10, ttl=timedelta(minutes=5), idempotency_key=key()
        )
        loyalty.commit(hold.hold_id, transaction_id="T-spent", idempotency_key=key())

        with pytest.raises(DownstreamRejectedError) as exc:
            loyalty.release(hold.hold_id, idempotency_key=key())

        assert rejected(exc) == (
            409,
            f"hold committed: hold {hold.hold_id} was committed for transaction T-spent:"
            " it cannot be released",
        )

    def test_more_than_available_is_refused(self, loyalty: HttpLoyalty) -> None:
        loyalty.reserve(
            "M0025", program="default", points=600, ttl=timedelta(minutes=5), idempotency_key=key()
        )

        with pytest.raises(DownstreamRejectedError) as exc:
            loyalty.reserve(
                "M0025", program="default", points=401, ttl=timedelta(minutes=5), idempotency_key=key()
            )

        assert rejected(exc) == (
            422,
            "insufficient points: points: 401 requested but only 400 available (600 already held)",
        )

    def test_an_unknown_hold_is_refused(self, loyalty: HttpLoyalty) -> None:
        with pytest.raises(DownstreamRejectedError) as exc:
            loyalty.commit("H-nope", transaction_id="T-x", idempotency_key=key())

        assert rejected(exc) == (404, "unknown hold: hold_id: no hold H-nope")


class TestRefunds:
    def test_a_refund_gives_the_spent_points_back_once(self, loyalty: HttpLoyalty) -> None:
        hold = loyalty.reserve(
            "M0041", program="default", points=300, ttl=timedelta(minutes=5), idempotency_key=key()
        )
        loyalty.commit(hold.hold_id, transaction_id="T-pay-40", idempotency_key=key())
        assert loyalty.find_member("M0041") == Member("M0041", "default", "basic", 700)

        refund = loyalty.refund(hold.hold_id, transaction_id="T-void-40", idempotency_key="refund-40")
        again = loyalty.refund(hold.hold_id, transaction_id="T-void-40", idempotency_key="refund-40")

        assert (refund.member_id, refund.points, refund.balance, refund.repeated) == (
            "M0041",
            300,
            1000,
            False,
        )
        assert refund.entry_id
        assert again == replace(refund, repeated=True)
        assert loyalty.find_member("M0041") == Member("M0041", "default", "basic", 1000)

    def test_a_refund_under_another_key_is_refused_naming_the_state(self, loyalty: HttpLoyalty) -> None:
        hold = loyalty.reserve(
            "M0042", program="default", points=10, ttl=timedelta(minutes=5), idempotency_key=key()
        )
        loyalty.commit(hold.hold_id, transaction_id="T-pay-41", idempotency_key=key())
        loyalty.refund(hold.hold_id, transaction_id="T-void-41", idempotency_key=key())

        with pytest.raises(DownstreamRejectedError) as exc:
            loyalty.refund(hold.hold_id, transaction_id="T-void-41", idempotency_key=key())

        assert rejected(exc) == (
            409,
            f"hold not committed: hold {hold.hold_id} is refunded (by transaction T-void-41):"
            " only a committed hold can be refunded",
        )
        assert loyalty.find_member("M0042") == Member("M0042", "default", "basic", 1000)

    def test_an_open_hold_cannot_be_refunded(self, loyalty: HttpLoyalty) -> None:
        hold = loyalty.reserve(
            "M0043", program="default", points=10, ttl=timedelta(minutes=5), idempotency_key=key()
        )

        with pytest.raises(DownstreamRejectedError) as exc:
            loyalty.refund(hold.hold_id, transaction_id="T-void-42", idempotency_key=key())

        assert rejected(exc) == (
            409,
            f"hold not committed: hold {hold.hold_id} is held: only a committed hold can be refunded",
        )
        assert loyalty.find_member("M0043") == Member("M0043", "default", "basic", 990, 10)

    def test_an_unknown_hold_is_refused(self, loyalty: HttpLoyalty) -> None:
        with pytest.raises(DownstreamRejectedError) as exc:
            loyalty.refund("H-nope", transaction_id="T-void", idempotency_key=key())

        assert rejected(exc) == (404, "unknown hold: hold_id: no hold H-nope")


class TestProgramReads:
    def test_outstanding_counts_what_members_hold_with_open_holds(self, own: LoyaltyProcess) -> None:
        with HttpLoyalty(own.url) as loyalty, httpx.Client(base_url=own.url, timeout=30) as admin:
            before = service_now(admin)
            seeded = loyalty.outstanding("default")
            after = service_now(admin)
            loyalty.reserve(
                "M0001", program="default", points=200, ttl=timedelta(minutes=5), idempotency_key=key()
            )
            spent = loyalty.reserve(
                "M0002", program="default", points=50, ttl=timedelta(minutes=5), idempotency_key=key()
            )
            loyalty.commit(spent.hold_id, transaction_id="T-pay", idempotency_key=key())
            loyalty.accrue(
                "M0003",
                program="default",
                transaction_id="T-earn",
                currency="EUR",
                lines=euros("10.00"),
                idempotency_key=key(),
            )

            now = loyalty.outstanding("default")
            ledger = loyalty.statement("default", limit=10_000)

        assert replace(seeded, as_of=before) == ProgramPoints("default", 100_000, 0, 100, before)
        assert before <= seeded.as_of <= after
        assert (now.outstanding, now.held, now.members) == (100_000 - 50 + 10, 200, 100)
        assert now.outstanding == sum(entry.points for entry in ledger)

    def test_the_statement_pages_and_filters(self, own: LoyaltyProcess) -> None:
        with HttpLoyalty(own.url) as loyalty:
            loyalty.accrue(
                "M0001",
                program="default",
                transaction_id="T-st",
                currency="EUR",
                lines=euros("20.00"),
                idempotency_key=key(),
            )
            loyalty.reverse(
                "M0001", program="default", transaction_id="T-st", points=5, idempotency_key=key()
            )
            first = loyalty.statement("default", limit=2)
            rest = loyalty.statement("default", after=first[-1].seq)
            moves = loyalty.statement("default", kinds=["accrual", "reversal"])
            beyond = loyalty.statement("default", after=moves[-1].seq)

        assert [(e.seq, e.member_id, e.kind, e.points) for e in first] == [
            (1, "M0001", "bonus", 1000),
            (2, "M0002", "bonus", 1000),
        ]
        assert first[0] == LedgerEntry(1, first[0].entry_id, "M0001", "bonus", 1000, None, None, first[0].at)
        assert first[0].at.tzinfo is not None
        assert [e.seq for e in first + rest] == list(range(1, 103))
        assert [(e.kind, e.member_id, e.points, e.transaction_id, e.hold_id) for e in moves] == [
            ("accrual", "M0001", 20, "T-st", None),
            ("reversal", "M0001", -5, "T-st", None),
        ]
        assert moves == rest[-2:]
        assert beyond == []

    def test_expired_points_are_in_the_statement_once_due(self, own: LoyaltyProcess) -> None:
        with HttpLoyalty(own.url) as loyalty, httpx.Client(base_url=own.url, timeout=30) as admin:
            before = loyalty.statement("default", kinds=["expiry"])
            later = service_now(admin) + timedelta(days=365, seconds=1)  # the welcome points expire
            admin.post("/admin/clock", json={"now": later.isoformat()})
            expired = loyalty.statement("default", kinds=["expiry"], limit=500)
            outstanding = loyalty.outstanding("default")

        assert before == []
        assert len(expired) == 100
        assert {(e.kind, e.points) for e in expired} == {("expiry", -1000)}
        assert (outstanding.outstanding, outstanding.held) == (0, 0)

    def test_an_unknown_program_is_refused(self, loyalty: HttpLoyalty) -> None:
        with pytest.raises(DownstreamRejectedError) as outstanding:
            loyalty.outstanding("nope")
        with pytest.raises(DownstreamRejectedError) as statement:
            loyalty.statement("nope")

        assert (
            rejected(outstanding)
            == rejected(statement)
            == (404, "unknown program: program: no program 'nope'")
        )

    def test_a_limit_out_of_range_is_refused(self, loyalty: HttpLoyalty) -> None:
        with pytest.raises(DownstreamRejectedError) as exc:
            loyalty.statement("default", limit=10_001)

        assert rejected(exc) == (422, "invalid limit: limit: 10001 is outside 1..10000")


class TestTheServiceClock:
    def test_a_hold_past_its_ttl_cannot_be_committed(self, own: LoyaltyProcess) -> None:
        with HttpLoyalty(own.url) as loyalty, httpx.Client(base_url=own.url, timeout=30) as admin:
            before = service_now(admin)
            hold = loyalty.reserve(
                "M0001", program="default", points=300, ttl=timedelta(seconds=60), idempotency_key=key()
            )
            after = service_now(admin)
            admin.post("/admin/clock", json={"now": (hold.expires_at - timedelta(seconds=1)).isoformat()})
            still_held = loyalty.find_member("M0001")
            admin.post("/admin/clock", json={"now": (hold.expires_at + timedelta(seconds=1)).isoformat()})

            with pytest.raises(DownstreamRejectedError) as exc:
                loyalty.commit(hold.hold_id, transaction_id="T-too-late", idempotency_key=key())

            assert before + timedelta(seconds=60) <= hold.expires_at <= after + timedelta(seconds=60)
            assert still_held == Member("M0001", "default", "basic", 700, 300)
            assert rejected(exc) == (
                409,
                f"hold not open: hold {hold.hold_id} is expired: it cannot be committed",
            )
            assert loyalty.find_member("M0001") == Member("M0001", "default", "basic", 1000, 0)


class TestFaults:
    def test_an_outage_is_unavailable_with_its_retry_after(
        self, loyalty: HttpLoyalty, admin: httpx.Client
    ) -> None:
        until = datetime.now(UTC) + timedelta(hours=1)
        admin.put("/admin/faults", json={"outage_until": until.isoformat()})

        with pytest.raises(DownstreamUnavailableError) as exc:
            loyalty.find_member("M0030")

        assert exc.value.system == "loyalty"
        assert exc.value.retry_after is not None
        assert 3500 <= exc.value.retry_after <= 3600
        assert "503" in str(exc.value) and "in maintenance until" in str(exc.value)

    def test_an_outage_makes_refunds_and_program_reads_unavailable(
        self, loyalty: HttpLoyalty, admin: httpx.Client
    ) -> None:
        hold = loyalty.reserve(
            "M0045", program="default", points=10, ttl=timedelta(minutes=5), idempotency_key=key()
        )
        loyalty.commit(hold.hold_id, transaction_id="T-pay-43", idempotency_key=key())
        until = datetime.now(UTC) + timedelta(hours=1)
        admin.put("/admin/faults", json={"outage_until": until.isoformat()})

        with pytest.raises(DownstreamUnavailableError) as refund:
            loyalty.refund(hold.hold_id, transaction_id="T-void-43", idempotency_key="refund-43")
        with pytest.raises(DownstreamUnavailableError) as outstanding:
            loyalty.outstanding("default")
        with pytest.raises(DownstreamUnavailableError) as statement:
            loyalty.statement("default", kinds=["expiry"])
        admin.delete("/admin/faults")
        served = loyalty.refund(hold.hold_id, transaction_id="T-void-43", idempotency_key="refund-43")

        for exc in (refund, outstanding, statement):
            assert exc.value.system == "loyalty"
            assert exc.value.retry_after is not None and 3500 <= exc.value.retry_after <= 3600
            assert "503" in str(exc.value)
        assert "/api/programs/default/entries?after=0&limit=1000&kind=expiry" in str(statement.value)
        assert (served.points, served.balance, served.repeated) == (10, 1000, False)  # no effect before

    def test_throttling_is_unavailable_with_its_retry_after(
        self, loyalty: HttpLoyalty, admin: httpx.Client
    ) -> None:
        admin.put("/admin/faults", json={"throttle": {"rate": 1, "retry_after": 7}})

        with pytest.raises(DownstreamUnavailableError) as exc:
            loyalty.reserve(
                "M0030", program="default", points=1, ttl=timedelta(minutes=1), idempotency_key=key()
            )

        assert exc.value.retry_after == 7
        assert "429" in str(exc.value)

    def test_server_errors_are_unavailable_and_leave_no_effect(
        self, loyalty: HttpLoyalty, admin: httpx.Client
    ) -> None:
        admin.put("/admin/faults", json={"error_rate": 1})

        def accrue() -> PointsMove:
            return loyalty.accrue(
                "M0031",
                program="default",
                transaction_id="T-fault",
                currency="EUR",
                lines=euros("5.00"),
                idempotency_key="fault-31",
            )

        with pytest.raises(DownstreamUnavailableError) as exc:
            accrue()
        admin.delete("/admin/faults")
        served = accrue()

        assert exc.value.retry_after is None
        assert "500" in str(exc.value) and "injected server error" in str(exc.value)
        assert (served.points, served.balance, served.repeated) == (5, 1005, False)

    def test_a_slow_answer_is_unavailable(self, service: LoyaltyProcess, admin: httpx.Client) -> None:
        admin.put("/admin/faults", json={"latency_ms": 2000})

        with HttpLoyalty(service.url, timeout=0.2) as slow, pytest.raises(DownstreamUnavailableError) as exc:
            slow.find_member("M0032")

        assert f"{service.url}/api/members/M0032" in str(exc.value)
        assert "timed out" in str(exc.value)
        assert exc.value.retry_after is None


class TestAStoppedService:
    def test_is_unavailable_naming_the_url(self, own: LoyaltyProcess) -> None:
        own.stop()

        with HttpLoyalty(own.url) as loyalty, pytest.raises(DownstreamUnavailableError) as exc:
            loyalty.release("H-any", idempotency_key=key())

        assert f"{own.url}/api/holds/H-any/release" in str(exc.value)
        assert exc.value.retry_after is None

    def test_refunds_and_program_reads_are_unavailable_naming_the_url(self, own: LoyaltyProcess) -> None:
        own.stop()

        with HttpLoyalty(own.url) as loyalty:
            with pytest.raises(DownstreamUnavailableError) as refund:
                loyalty.refund("H-any", transaction_id="T-void", idempotency_key=key())
            with pytest.raises(DownstreamUnavailableError) as outstanding:
                loyalty.outstanding("default")
            with pytest.raises(DownstreamUnavailableError) as statement:
                loyalty.statement("default", after=7)

        assert f"{own.url}/api/holds/H-any/refund" in str(refund.value)
        assert f"{own.url}/api/programs/default/outstanding" in str(outstanding.value)
        assert f"{own.url}/api/programs/default/entries?after=7" in str(statement.value)

    def test_nothing_listening_is_unavailable(self) -> None:
        url = f"http://127.0.0.1:{free_port()}"

        with HttpLoyalty(url) as loyalty, pytest.raises(DownstreamUnavailableError) as exc:
            loyalty.find_member("M0001")

        assert url in str(exc.value)
