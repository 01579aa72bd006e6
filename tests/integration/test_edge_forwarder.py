"""The store agent's forwarder against a fake hub (an `httpx.MockTransport` that judges records as
the hub does), over a real outbox: what is delivered when, in which order and batches, and how
it waits while the hub is away, throttling or refusing; how a sale that spends points granted
offline reaches the hub; and what it sends again when the hub's heartbeat answer asks."""

from __future__ import annotations

import copy
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tillflow.edge.forwarder import Forwarder
from tillflow.edge.members import OfflineRedemptions
from tillflow.edge.outbox import SQLiteOutbox
from tillflow.flows.z_report import z_reports
from tillflow.hub.ingest import ingest_records
from tillflow.model import Transaction
from tillflow.model.health import StoreHeartbeat
from tillflow.model.loyalty import ReserveRedemption
from tillflow.sim.pos import PosTrafficGenerator, demo_stores

DAY = date(2026, 11, 29)
T1 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
T2 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class FakeHub:
    """Judges batches as the hub does (same id and bytes: duplicate; other bytes: conflict),
    keeps every request, and answers from `script` first when a test put answers there (an
    `httpx.Response`, or an exception to raise as the transport would)."""

    def __init__(self, *, max_records: int = 1000, heartbeat: bool = True) -> None:
        self.digests: dict[str, str] = {}
        self.requests: list[httpx.Request] = []
        self.script: list[httpx.Response | Exception] = []
        self.invalid: dict[str, list[dict[str, str]]] = {}
        self.max_records = max_records
        self.heartbeat = heartbeat
        self.lose_answers = 0  # the next answers are computed, then lost on the way back
        self.resend: list[str] = []  # what the heartbeat's answer asks for again
        self.loyalty: list[httpx.Response] = []  # answers to holds asked for; then each is held
        self.holds: dict[str, str] = {}  # Idempotency-Key -> the hold made

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith("/heartbeat"):  # an older hub has no such endpoint
            return (
                httpx.Response(200, json={"clock_skew_seconds": 0.25, "resend": self.resend})
                if self.heartbeat
                else httpx.Response(404)
            )
        if request.url.path == "/v1/loyalty/redemptions":
            if self.loyalty:
                return self.loyalty.pop(0)
            key = request.headers["idempotency-key"]
            hold = self.holds.setdefault(key, f"H-{len(self.holds) + 1}")
            return httpx.Response(201, json={"hold_id": hold, "state": "held"})
        if self.script:
            answer = self.script.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        if request.url.path == "/v1/day-closes":
            return httpx.Response(201, json={"verdict": "accepted"})
        records = orjson.loads(request.content)["transactions"]
        if len(records) > self.max_records:
            return httpx.Response(413, json={"title": "Batch too large", "status": 413})
        results = [self._judge(i, r) for i, r in enumerate(records)]
        if self.lose_answers:
            self.lose_answers -= 1
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return httpx.Response(200, json={"results": results})

    def _judge(self, index: int, record: dict[str, Any]) -> dict[str, Any]:
        tx_id = Transaction.model_validate(record).transaction_id
        if tx_id in self.invalid:
            return {"index": index, "status": "invalid", "errors": self.invalid[tx_id]}
        digest = hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest()
        known = self.digests.setdefault(tx_id, digest)
        status = "accepted" if known is digest else "duplicate" if known == digest else "conflict"
        return {"index": index, "status": status, "transaction_id": tx_id}

    def batches(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == "/v1/transactions"]

    def sent(self) -> list[dict[str, Any]]:
        """Every record sent, in the order sent."""
        return [record for r in self.batches() for record in orjson.loads(r.content)["transactions"]]

    def beats(self) -> list[StoreHeartbeat]:
        return [
            StoreHeartbeat.model_validate_json(r.content) for r in self.requests if "/heartbeat" in r.url.path
        ]

    def batch_sizes(self) -> list[int]:
        return [len(orjson.loads(r.content)["transactions"]) for r in self.batches()]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    gen = PosTrafficGenerator(demo_stores(1), business_day=DAY, seed=4)
    return [tx.model_dump(mode="json") for tx in gen.transactions(60)]


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[SQLiteOutbox]:
    box = SQLiteOutbox(tmp_path / "outbox-S001.db", "S001")
    yield box
    box.close()


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def forwarder(outbox: SQLiteOutbox, hub: FakeHub, clock: FakeClock) -> Iterator[Forwarder]:
    fwd = make_forwarder(outbox, hub, clock)
    yield fwd
    fwd.close()


def make_forwarder(
    outbox: SQLiteOutbox, hub: FakeHub, clock: Callable[[], float], **kwargs: Any
) -> Forwarder:
    options: dict[str, Any] = {"linger": 0, "rng": random.Random(1), "clock": clock} | kwargs
    return Forwarder(outbox, "http://hub.test", "store-key", transport=httpx.MockTransport(hub), **options)


def keep(outbox: SQLiteOutbox, records: list[dict[str, Any]], traceparent: str | None = None) -> list[str]:
    ingest_records(records, outbox, traceparent=traceparent)
    return [Transaction.model_validate(r).transaction_id for r in records]


class TestDelivery:
    def test_it_sends_the_tills_bytes_with_the_stores_key_and_marks_them_delivered(
        self, forwarder: Forwarder, outbox: SQLiteOutbox, hub: FakeHub, records: list[dict[str, Any]]
    ) -> None:
        ids = keep(outbox, records[:30])

        assert forwarder.step() == 0
        assert forwarder.step() is None  # nothing left to send

        [sent] = hub.batches()
        assert (
            sent.content
            == b'{"transactions":['
            + b",".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in records[:30])
            + b"]}"
        )
        assert sent.headers["authorization"] == "Bearer store-key"
        assert {outbox.states()[i] for i in ids} == {"delivered"}
        assert forwarder.delivered_total == 30

    def test_a_resend_after_a_lost_answer_is_a_duplicate_and_delivered_once(
        self,
        forwarder: Forwarder,
        outbox: SQLiteOutbox,
        hub: FakeHub,
        clock: FakeClock,
        records: list[dict[str, Any]],
    ) -> None:
        ids = keep(outbox, records[:5])
        hub.lose_answers = 1

        pause = forwarder.step()
        pending_after_loss = len(outbox.pending(10))
        clock.now += pause or 0
        forwarder.step()

        assert pending_after_loss == 5
        assert hub.batch_sizes() == [5, 5]
        assert {outbox.states()[i] for i in ids} == {"delivered"}
        assert forwarder.conflicts_total == 0 and forwarder.last_error is None

    def test_a_conflict_or_an_invalid_answer_is_kept_with_its_reason_and_never_sent_again(
        self, forwarder: Forwarder, outbox: SQLiteOutbox, hub: FakeHub, records: list[dict[str, Any]]
    ) -> None:
        ids = keep(outbox, records[:4])
        hub.digests[ids[1]] = "another till's content"
        hub.invalid[ids[2]] = [{"field": "lines[0].sku", "reason": "Field required"}]

        forwarder.step()
        again = forwarder.step()

        assert [outbox.states()[i] for i in ids] == ["delivered", "conflict", "refused", "delivered"]
        assert again is None and len(hub.batches()) == 1
        assert forwarder.conflicts_total == 1
        stats = outbox.stats()
        assert (stats.conflicts, stats.refused, stats.depth) == (1, 1, 0)

    def test_a_batch_never_mixes_two_traces_of_the_tills(
        self, forwarder: Forwarder, outbox: SQLiteOutbox, hub: FakeHub, records: list[dict[str, Any]]
    ) -> None:
        keep(outbox, records[:2], T1)
        keep(outbox, records[2:4])  # sent without a traceparent: joins any batch
        keep(outbox, records[4:5], T2)

        forwarder.step()
        forwarder.step()

        assert hub.batch_sizes() == [4, 1]
        assert [r.headers.get("traceparent") for r in hub.batches()] == [T1, T2]

    def test_a_413_halves_the_batch_until_the_hub_takes_it(
        self, outbox: SQLiteOutbox, clock: FakeClock, records: list[dict[str, Any]]
    ) -> None:
        hub = FakeHub(max_records=8)
        forwarder = make_forwarder(outbox, hub, clock, batch=30)
        ids = keep(outbox, records[:30])

        while forwarder.step() is not None:
            pass

        assert hub.batch_sizes() == [30, 15, 7, 7, 7, 7, 2]
        assert {outbox.states()[i] for i in ids} == {"delivered"}
        forwarder.close()

    def test_a_batch_waits_for_more_until_its_oldest_has_lingered(
        self, outbox: SQLiteOutbox, hub: FakeHub, clock: FakeClock, records: list[dict[str, Any]]
    ) -> None:
        forwarder = make_forwarder(outbox, hub, clock, linger=3600, batch=10)
        keep(outbox, records[:4])
        lingering = forwarder.step()
        sent_while_lingering = len(hub.batches())
        keep(outbox, records[4:12])

        full = forwarder.step()

        assert lingering is not None and 3500 < lingering <= 3600 and sent_while_lingering == 0
        assert full == 0 and hub.batch_sizes() == [10]
        forwarder.close()


class TestWaiting:
    def test_retry_after_is_obeyed(
        self,
        forwarder: Forwarder,
        outbox: SQLiteOutbox,
        hub: FakeHub,
        clock: FakeClock,
        records: list[dict[str, Any]],
    ) -> None:
        keep(outbox, records[:3])
        hub.script = [httpx.Response(429, headers={"retry-after": "7"}, json={"title": "Too many requests"})]

        pause = forwarder.step()
        clock.now += 6
        still = forwarder.step()
        clock.now += 1
        done = forwarder.step()

        assert pause == 7 and still == pytest.approx(1)
        assert done == 0 and len(hub.batches()) == 2
        assert outbox.stats().depth == 0

    def test_an_unreachable_hub_is_retried_with_full_jitter_up_to_the_cap(
        self, outbox: SQLiteOutbox, hub: FakeHub, clock: FakeClock, records: list[dict[str, Any]]
    ) -> None:
        forwarder = make_forwarder(outbox, hub, clock, backoff_base=0.5, backoff_cap=30)
        ids = keep(outbox, records[:3])
        hub.script = [httpx.ConnectError("connection refused") for _ in range(12)]

        pauses: list[float] = []
        for _ in range(12):
            pause = forwarder.step()
            assert pause is not None
            pauses.append(pause)
            clock.now += pause
        error, attempts = forwarder.last_error, [e.attempts for e in outbox.pending(10)]
        forwarder.step()

        assert all(0 <= p <= min(30, 0.5 * 2**n) for n, p in enumerate(pauses))
        assert max(pauses) > 8  # the ceiling doubled up to the cap
        assert error is not None and "unreachable" in error and attempts == [12, 12, 12]
        assert {outbox.states()[i] for i in ids} == {"delivered"}
        assert forwarder.last_error is None
        forwarder.close()

    def test_a_refused_key_is_reported_and_retried_later(
        self, forwarder: Forwarder, outbox: SQLiteOutbox, hub: FakeHub, records: list[dict[str, Any]]
    ) -> None:
        keep(outbox, records[:2])
        hub.script = [httpx.Response(401, json={"title": "Invalid API key", "detail": "the key is unknown"})]

        pause = forwarder.step()

        assert pause is not None and pause >= 0
        assert forwarder.last_error is not None and "refused the store's key (401)" in forwarder.last_error
        assert [e.attempts for e in outbox.pending(10)] == [1, 1]


class TestDayCloseAndHealth:
    def test_the_day_close_goes_after_the_days_transactions(
        self, forwarder: Forwarder, outbox: SQLiteOutbox, hub: FakeHub, records: list[dict[str, Any]]
    ) -> None:
        keep(outbox, records[:6])
        [report] = z_reports(
            [Transaction.model_validate(r) for r in records[:6]], closed_at=datetime.now(UTC)
        )
        outbox.record_day_close(report, received_at=datetime.now(UTC))

        while forwarder.step() is not None:
            pass

        assert [r.url.path for r in hub.requests] == ["/v1/transactions", "/v1/day-closes"]
        assert (
            orjson.loads(hub.requests[1].content)["registers"]
            == orjson.loads(report.model_dump_json())["registers"]
        )
        assert outbox.day_close_state(DAY) == ("delivered", None)

    def test_a_due_day_close_does_not_wait_behind_later_sales(
        self, outbox: SQLiteOutbox, hub: FakeHub, clock: FakeClock, records: list[dict[str, Any]]
    ) -> None:
        forwarder = make_forwarder(outbox, hub, clock, batch=3)
        keep(outbox, records[:6])
        [report] = z_reports(
            [Transaction.model_validate(r) for r in records[:6]], closed_at=datetime.now(UTC)
        )
        outbox.record_day_close(report, received_at=datetime.now(UTC))
        keep(outbox, records[6:12])

        while forwarder.step() is not None:
            pass

        paths = [r.url.path.removeprefix("/v1/") for r in hub.requests]
        assert paths == ["transactions", "transactions", "day-closes", "transactions", "transactions"]
        forwarder.close()

    def test_the_heartbeat_says_how_far_behind_the_store_is(
        self, forwarder: Forwarder, outbox: SQLiteOutbox, hub: FakeHub, records: list[dict[str, Any]]
    ) -> None:
        keep(outbox, records[:5])

        forwarder.send_heartbeat()

        [beat] = [StoreHeartbeat.model_validate_json(r.content) for r in hub.requests]
        assert hub.requests[0].url.path == "/v1/stores/S001/heartbeat"
        assert (beat.buffer_depth, beat.delivered_total, beat.last_error) == (5, 0, None)
        assert beat.oldest_unsent_age_seconds is not None and beat.oldest_unsent_age_seconds >= 0
        assert forwarder.clock_skew_seconds == 0.25

    def test_a_hub_without_heartbeats_is_noted_once(
        self, forwarder: Forwarder, hub: FakeHub, caplog: pytest.LogCaptureFixture
    ) -> None:
        hub.heartbeat = False

        with caplog.at_level(logging.INFO, logger="tillflow.edge.forwarder"):
            forwarder.send_heartbeat()
            forwarder.send_heartbeat()

        assert sum("takes no heartbeat" in r.message for r in caplog.records) == 1


class TestRunning:
    def test_the_thread_wakes_for_new_transactions_and_stops_when_told(
        self, outbox: SQLiteOutbox, hub: FakeHub, records: list[dict[str, Any]]
    ) -> None:
        forwarder = make_forwarder(outbox, hub, time.monotonic, heartbeat_seconds=3600)
        stop = threading.Event()
        thread = forwarder.start(stop)
        ids = keep(outbox, records[:10])  # the forwarder sleeps until the outbox wakes it

        deadline = time.monotonic() + 30
        while {outbox.states()[i] for i in ids} != {"delivered"} and time.monotonic() < deadline:
            time.sleep(0.01)
        delivered = {outbox.states()[i] for i in ids}
        stop.set()
        outbox.wake.set()
        thread.join(timeout=30)

        assert delivered == {"delivered"}
        assert not thread.is_alive()
        assert sum(hub.batch_sizes()) == 10
        forwarder.close()


@pytest.fixture
def grants(tmp_path: Path) -> Iterator[OfflineRedemptions]:
    offline = OfflineRedemptions(tmp_path / "grants.db", "cap", 1000)
    yield offline
    offline.close()


def grant(grants: OfflineRedemptions, member: str, points: int = 100) -> str:
    """A grant made while the hub was away; its id, which the till names in its tender."""
    ask = ReserveRedemption(store_id="S001", member_id=member, points=points)
    decision = grants.grant(ask, f"till-{member}")
    assert decision.grant is not None
    return decision.grant.grant_id


def paid_with_points(record: dict[str, Any], hold: str, value: str = "1.00") -> dict[str, Any]:
    """The sale with `value` of its card tender paid with loyalty points held as `hold`."""
    paid = copy.deepcopy(record)
    [card] = paid["tenders"]
    card["amount"] = str(Decimal(card["amount"]) - Decimal(value))
    points = {"kind": "loyalty_points", "amount": value, "change": "0", "reference": hold, "points": 100}
    paid["tenders"] = [card, points]
    Transaction.model_validate(paid)  # still a valid sale
    return paid


@pytest.fixture
def card_sales(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sales paid with one card, as the tills send them."""
    return [r for r in records if r["kind"] == "sale" and [t["kind"] for t in r["tenders"]] == ["card"]]


def tenders(record: dict[str, Any]) -> list[str | None]:
    return [t.get("reference") for t in record["tenders"]]


class TestOfflineGrants:
    def test_a_sale_spending_a_grant_names_the_hubs_hold_and_every_send_carries_the_same_bytes(
        self,
        outbox: SQLiteOutbox,
        hub: FakeHub,
        clock: FakeClock,
        grants: OfflineRedemptions,
        card_sales: list[dict[str, Any]],
    ) -> None:
        forwarder = make_forwarder(outbox, hub, clock, grants=grants)
        granted = grant(grants, "M1")
        sale = paid_with_points(card_sales[0], granted)
        [tx_id] = keep(outbox, [sale])

        while forwarder.step() is not None:
            pass
        first = hub.batches()[-1].content
        resent = forwarder.resend([tx_id])
        while forwarder.step() is not None:
            pass
        again = [r.status.value for r in ingest_records([sale], outbox, traceparent=None)]

        settled = grants.find_grant(granted)
        assert settled is not None and (settled.state, settled.hold_id) == ("settled", "H-1")
        [asked] = [r for r in hub.requests if r.url.path == "/v1/loyalty/redemptions"]
        assert asked.headers["idempotency-key"] == granted  # settling again holds nothing twice
        assert [tenders(r) for r in hub.sent()] == [[None, "H-1"], [None, "H-1"]]
        assert resent == 1 and hub.batches()[-1].content == first  # the re-send, byte for byte
        assert {k: v for k, v in hub.sent()[0].items() if k != "tenders"} == {
            k: v for k, v in sale.items() if k != "tenders"
        }
        assert again == ["duplicate"]  # the till's resend is judged against what the till sent
        stored = outbox.get_transaction(tx_id)
        assert stored is not None and orjson.loads(stored.data) == sale
        assert outbox.states()[tx_id] == "delivered"
        forwarder.close()

    def test_a_sale_whose_grant_cannot_be_settled_yet_waits_and_the_sales_after_it_too(
        self,
        outbox: SQLiteOutbox,
        hub: FakeHub,
        clock: FakeClock,
        grants: OfflineRedemptions,
        card_sales: list[dict[str, Any]],
    ) -> None:
        forwarder = make_forwarder(outbox, hub, clock, grants=grants)
        before = keep(outbox, card_sales[:2])
        spending = keep(outbox, [paid_with_points(card_sales[2], grant(grants, "M2"))])
        after = keep(outbox, card_sales[3:5])
        away = {"title": "Loyalty platform unavailable", "detail": "the platform is in maintenance"}
        hub.loyalty = [httpx.Response(503, json=away), httpx.Response(503, json=away)]

        sent_first = forwarder.step()
        pause = forwarder.step()
        error, states = forwarder.last_error, outbox.states()
        clock.now += pause or 0
        while forwarder.step() is not None:
            pass

        assert (
            sent_first == 0
            and [Transaction.model_validate(r).transaction_id for r in hub.sent()][:2] == before
        )
        assert pause is not None and pause > 0
        assert error is not None and "not settled yet" in error and "maintenance" in error
        assert [states[i] for i in spending + after] == ["pending"] * 3
        order = [Transaction.model_validate(r).transaction_id for r in hub.sent()]
        assert order == before + spending + after  # till order kept
        assert tenders(hub.sent()[2]) == [None, "H-1"] and forwarder.last_error is None
        forwarder.close()

    def test_a_sale_whose_grant_the_hub_refused_is_held_until_an_operator_releases_it(
        self,
        outbox: SQLiteOutbox,
        hub: FakeHub,
        clock: FakeClock,
        grants: OfflineRedemptions,
        card_sales: list[dict[str, Any]],
    ) -> None:
        forwarder = make_forwarder(outbox, hub, clock, grants=grants)
        granted = grant(grants, "M3", points=900)
        [held] = keep(outbox, [paid_with_points(card_sales[0], granted)])
        others = keep(outbox, card_sales[1:3])
        refusal = {"title": "Redemption refused", "detail": "insufficient points: M3 has 500"}
        hub.loyalty = [httpx.Response(422, json=refusal)]

        while forwarder.step() is not None:
            pass
        forwarder.send_heartbeat()
        sent_while_held = [Transaction.model_validate(r).transaction_id for r in hub.sent()]
        [kept] = outbox.held()
        before = outbox.release(held)
        twice = outbox.release(held)
        while forwarder.step() is not None:
            pass

        assert sent_while_held == others
        assert kept.transaction_id == held and "insufficient points" in kept.reason
        assert outbox.stats().held == 0 and before == "held" and twice == "pending"
        [beat] = hub.beats()
        assert beat.last_error is not None and "1 transaction(s) held" in beat.last_error
        assert "insufficient points" in beat.last_error and beat.buffer_depth == 0
        assert tenders(hub.sent()[-1]) == [None, granted]  # released: sent as the till sent it
        assert outbox.states()[held] == "delivered"
        forwarder.close()

    def test_a_grant_this_agent_never_made_holds_the_sale(
        self, forwarder: Forwarder, outbox: SQLiteOutbox, hub: FakeHub, card_sales: list[dict[str, Any]]
    ) -> None:
        [tx_id] = keep(outbox, [paid_with_points(card_sales[0], "OFF-from-another-agent")])

        while forwarder.step() is not None:
            pass

        assert hub.batches() == [] and outbox.states()[tx_id] == "held"
        [held] = outbox.held()
        assert "OFF-from-another-agent" in held.reason


class TestResendOnRequest:
    def test_what_the_hub_misses_is_sent_again_and_what_the_outbox_lacks_is_reported(
        self, forwarder: Forwarder, outbox: SQLiteOutbox, hub: FakeHub, records: list[dict[str, Any]]
    ) -> None:
        ids = keep(outbox, records[:6])
        while forwarder.step() is not None:
            pass
        never_here = "S001:R09:2026-11-29:00000001"
        hub.resend = [ids[4], never_here, ids[1]]

        forwarder.send_heartbeat()  # the answer asks for them
        while forwarder.step() is not None:
            pass
        hub.resend = []
        forwarder.send_heartbeat()  # reports what it lacks
        forwarder.send_heartbeat()  # the hub asked for nothing more

        assert hub.batch_sizes() == [6, 2]
        assert [Transaction.model_validate(r).transaction_id for r in hub.sent()[6:]] == [ids[1], ids[4]]
        assert (
            hub.batches()[1].content
            == b'{"transactions":['
            + b",".join(orjson.dumps(records[i], option=orjson.OPT_SORT_KEYS) for i in (1, 4))
            + b"]}"
        )
        assert [b.missing for b in hub.beats()] == [None, (never_here,), None]
        assert forwarder.resent_total == 2 and set(outbox.states().values()) == {"delivered"}
