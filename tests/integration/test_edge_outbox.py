"""The store agent's outbox on a real SQLite file: the hub's verdicts, group commit, the
forwarding order, re-sends and retention, the bytes chosen to send, transactions held for an
operator, day closes, a file of an earlier agent, and a full disk that loses nothing."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from tillflow.edge.outbox import EntryState, SQLiteOutbox
from tillflow.errors import DiskFullError, StorageError
from tillflow.flows.z_report import z_reports
from tillflow.hub.ingest import ingest_records
from tillflow.model import Transaction
from tillflow.ports import Verdict
from tillflow.sim.pos import PosTrafficGenerator, demo_stores

DAY = date(2026, 11, 29)


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    """600 transactions of store S001's two registers, as the tills send them."""
    gen = PosTrafficGenerator(demo_stores(1), business_day=DAY, seed=9)
    return [tx.model_dump(mode="json") for tx in gen.transactions(600)]


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[SQLiteOutbox]:
    box = SQLiteOutbox(tmp_path / "outbox-S001.db", "S001")
    yield box
    box.close()


def submit(outbox: SQLiteOutbox, records: list[dict[str, Any]]) -> list[str]:
    """The outbox's verdict for each record, as the local API answers them."""
    return [r.status.value for r in ingest_records(records, outbox, traceparent=None)]


def tx_id(record: dict[str, Any]) -> str:
    return Transaction.model_validate(record).transaction_id


def rows_on_disk(path: Path) -> dict[str, tuple[str, bytes]]:
    """What a fresh connection reads from the file: transaction id -> (state, data)."""
    with closing(sqlite3.connect(path)) as conn:
        return {
            tx: (state, bytes(data))
            for tx, state, data in conn.execute("SELECT transaction_id, state, data FROM transactions")
        }


class TestVerdicts:
    def test_a_new_transaction_is_accepted_and_waits_to_be_forwarded(
        self, outbox: SQLiteOutbox, records: list[dict[str, Any]]
    ) -> None:
        assert submit(outbox, records[:3]) == ["accepted"] * 3
        assert [e.transaction_id for e in outbox.pending(10)] == [tx_id(r) for r in records[:3]]
        assert outbox.wake.is_set()

    def test_the_same_record_again_even_spelled_differently_is_a_duplicate(
        self, outbox: SQLiteOutbox, records: list[dict[str, Any]]
    ) -> None:
        submit(outbox, records[:2])
        respelled = {**records[1], "totals": {**records[1]["totals"]}}
        respelled["totals"]["grand_total"] = records[1]["totals"]["grand_total"] + "00"

        assert submit(outbox, [records[0], respelled]) == ["duplicate", "duplicate"]
        assert outbox.stats().depth == 2

    def test_a_reused_sequence_with_other_content_is_a_conflict_recorded_and_never_forwarded(
        self, outbox: SQLiteOutbox, records: list[dict[str, Any]]
    ) -> None:
        submit(outbox, records[:1])
        clash = {**records[0], "operator_id": "RESTORED-FROM-BACKUP"}

        assert submit(outbox, [clash, records[1]]) == ["conflict", "accepted"]
        [kept, second] = outbox.pending(10)
        stored = outbox.get_transaction(tx_id(records[0]))
        assert stored is not None and stored.conflicts == 1
        assert Transaction.model_validate_json(kept.data).operator_id == records[0]["operator_id"]
        assert second.transaction_id == tx_id(records[1])
        assert outbox.stats().local_conflicts == 1

    def test_two_records_with_one_identity_in_one_batch_are_judged_in_order(
        self, outbox: SQLiteOutbox, records: list[dict[str, Any]]
    ) -> None:
        clash = {**records[0], "operator_id": "SOMEONE-ELSE"}

        assert submit(outbox, [records[0], records[0], clash]) == ["accepted", "duplicate", "conflict"]

    def test_it_keeps_the_bytes_the_till_sent_with_sorted_keys(
        self, outbox: SQLiteOutbox, records: list[dict[str, Any]]
    ) -> None:
        submit(outbox, records[:1])

        [entry] = outbox.pending(1)
        assert entry.data == orjson.dumps(records[0], option=orjson.OPT_SORT_KEYS)
        assert entry.digest == hashlib.sha256(entry.data).hexdigest()  # as the hub digests them

    def test_another_stores_transaction_or_file_is_refused(
        self, outbox: SQLiteOutbox, records: list[dict[str, Any]], tmp_path: Path
    ) -> None:
        other = {**records[0], "store_id": "S002"}

        with pytest.raises(ValueError, match="S002"):
            submit(outbox, [other])
        with pytest.raises(StorageError, match="belongs to store S001"):
            SQLiteOutbox(tmp_path / "outbox-S001.db", "S002")


class TestGroupCommit:
    def test_concurrent_submissions_share_commits_and_each_is_durable_when_answered(
        self, outbox: SQLiteOutbox, records: list[dict[str, Any]]
    ) -> None:
        tills = 48
        answered_durable: list[bool] = []
        ready = threading.Barrier(tills + 1)

        def till(record: dict[str, Any]) -> None:
            ready.wait()
            verdicts = submit(outbox, [record])
            # once answered, a fresh connection reads it from the file
            answered_durable.append(verdicts == ["accepted"] and tx_id(record) in rows_on_disk(outbox.path))

        # hold the file's write lock, so that every till queues up behind the first
        blocker = sqlite3.connect(outbox.path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        threads = [threading.Thread(target=till, args=(r,)) for r in records[:tills]]
        for thread in threads:
            thread.start()
        commits_before = outbox.commits
        ready.wait()
        threading.Event().wait(0.3)  # let the tills reach the queue
        blocker.execute("COMMIT")
        blocker.close()
        for thread in threads:
            thread.join()

        assert answered_durable == [True] * tills
        assert len(rows_on_disk(outbox.path)) == tills
        assert outbox.commits - commits_before < tills / 4

    def test_one_failing_submission_does_not_undo_the_others_of_its_commit(
        self, outbox: SQLiteOutbox, records: list[dict[str, Any]]
    ) -> None:
        submit(outbox, records[:1])
        outcomes: list[Any] = []

        def till(batch: list[dict[str, Any]]) -> None:
            try:
                outcomes.append(submit(outbox, batch))
            except ValueError as exc:
                outcomes.append(str(exc))

        threads = [
            threading.Thread(target=till, args=([records[1]],)),
            threading.Thread(target=till, args=([{**records[2], "store_id": "S002"}],)),
            threading.Thread(target=till, args=([records[3]],)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert sum(o == ["accepted"] for o in outcomes) == 2
        assert set(rows_on_disk(outbox.path)) == {tx_id(r) for r in (records[0], records[1], records[3])}


class TestForwardingOrder:
    def test_pending_is_oldest_first_so_each_register_goes_in_till_order(
        self, outbox: SQLiteOutbox, records: list[dict[str, Any]]
    ) -> None:
        for i in range(0, 200, 25):
            submit(outbox, records[i : i + 25])

        first, rest = outbox.pending(120), outbox.pending(1000)
        assert [e.transaction_id for e in rest] == [tx_id(r) for r in records[:200]]
        assert first == rest[:120]
        for register in ("R01", "R02"):
            sequences = [e.sequence for e in rest if e.register_id == register]
            assert sequences == sorted(sequences) and sequences

    def test_delivered_conflict_and_refused_leave_the_queue_and_are_counted(
        self, outbox: SQLiteOutbox, records: list[dict[str, Any]]
    ) -> None:
        submit(outbox, records[:10])
        ids = [tx_id(r) for r in records[:10]]

        assert outbox.mark_delivered(ids[:6]) == 6
        assert outbox.mark_failed(ids[6], EntryState.CONFLICT, "the hub holds other content")
        assert outbox.mark_failed(ids[7], EntryState.REFUSED, "lines[0].sku: Field required")
        outbox.note_attempt(ids[8:], "the hub is unreachable")

        assert [e.transaction_id for e in outbox.pending(10)] == ids[8:]
        assert [e.attempts for e in outbox.pending(10)] == [1, 1]
        stats = outbox.stats()
        assert (stats.depth, stats.delivered, stats.conflicts, stats.refused) == (2, 6, 1, 1)
        assert outbox.states()[ids[6]] == "conflict"
        assert outbox.mark_delivered(ids[:6]) == 0  # already delivered: nothing changes

    def test_the_oldest_unsent_age_is_that_of_the_oldest_pending(
        self, outbox: SQLiteOutbox, records: list[dict[str, Any]]
    ) -> None:
        assert outbox.stats().oldest_unsent_age_seconds is None
        received = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
        ingest_records(records[:2], outbox, traceparent=None, received_at=received)

        later = received + timedelta(seconds=90)
        assert outbox.stats(now=later).oldest_unsent_age_seconds == pytest.approx(90)

    def test_it_resumes_where_it_was_after_a_reopen(
        self, tmp_path: Path, records: list[dict[str, Any]]
    ) -> None:
        path = tmp_path / "outbox-S001.db"
        first = SQLiteOutbox(path, "S001")
        submit(first, records[:20])
        first.mark_delivered([tx_id(r) for r in records[:5]])
        first.close()

        again = SQLiteOutbox(path, "S001")
        try:
            assert [e.transaction_id for e in again.pending(100)] == [tx_id(r) for r in records[5:20]]
            assert submit(again, records[:1]) == ["duplicate"]
        finally:
            again.close()


class TestResendAndRetention:
    def test_requeue_sends_delivered_transactions_again_by_id_or_by_day(
        self, outbox: SQLiteOutbox, records: list[dict[str, Any]]
    ) -> None:
        submit(outbox, records[:6])
        ids = [tx_id(r) for r in records[:6]]
        outbox.mark_delivered(ids[:5])
        outbox.mark_failed(ids[5], EntryState.CONFLICT, "other content")

        assert outbox.requeue(ids[1:3]) == 2
        assert [e.transaction_id for e in outbox.pending(10)] == ids[1:3]
        assert outbox.requeue(business_day=DAY) == 3  # the other delivered ones; not the conflict
        assert [e.transaction_id for e in outbox.pending(10)] == ids[:5]
        assert outbox.requeue(business_day=DAY + timedelta(days=1)) == 0

    def test_purge_forgets_only_what_was_delivered_before_the_cut(
        self, outbox: SQLiteOutbox, records: list[dict[str, Any]]
    ) -> None:
        submit(outbox, records[:6])
        ids = [tx_id(r) for r in records[:6]]
        long_ago = datetime.now(UTC) - timedelta(days=8)
        outbox.mark_delivered(ids[:3], at=long_ago)
        outbox.mark_delivered(ids[3:5])

        assert outbox.purge_delivered(datetime.now(UTC) - timedelta(days=7)) == 3
        assert set(outbox.states()) == set(ids[3:])
        assert outbox.stats().depth == 1

    def test_what_the_hub_asks_for_is_told_apart_by_what_the_outbox_holds(
        self, outbox: SQLiteOutbox, records: list[dict[str, Any]]
    ) -> None:
        submit(outbox, records[:3])
        ids = [tx_id(r) for r in records[:3]]
        outbox.mark_delivered(ids[:2])

        found = outbox.find_states([ids[1], "S001:R09:2026-11-29:00000001", ids[2], ids[1]])

        assert found == {ids[1]: "delivered", ids[2]: "pending"}
        assert outbox.find_states([]) == {}


class TestBytesToSend:
    def test_the_bytes_chosen_to_send_are_kept_once_and_the_tills_are_still_what_it_is_judged_by(
        self, outbox: SQLiteOutbox, records: list[dict[str, Any]]
    ) -> None:
        submit(outbox, records[:2])
        first, second = tx_id(records[0]), tx_id(records[1])
        chosen = orjson.dumps({**records[0], "operator_id": "SENT-INSTEAD"}, option=orjson.OPT_SORT_KEYS)

        kept = outbox.keep_sent_data(first, chosen)
        later = outbox.keep_sent_data(first, b"other bytes")
        [entry, untouched] = outbox.pending(10)
        outbox.mark_delivered([first])
        outbox.requeue([first])
        [again, _] = outbox.pending(10)

        assert kept == later == chosen  # the first choice stands
        assert (entry.sent_data, entry.to_send) == (chosen, chosen)
        assert entry.data == orjson.dumps(records[0], option=orjson.OPT_SORT_KEYS)
        assert (untouched.transaction_id, untouched.sent_data, untouched.to_send) == (
            second,
            None,
            untouched.data,
        )
        assert again.to_send == chosen  # a re-send carries the same bytes
        assert submit(outbox, records[:1]) == ["duplicate"]  # judged by the till's bytes
        stored = outbox.get_transaction(first)
        assert stored is not None and stored.data == entry.data


class TestHeld:
    def test_a_held_transaction_waits_with_its_reason_until_released_as_the_till_sent_it(
        self, outbox: SQLiteOutbox, records: list[dict[str, Any]]
    ) -> None:
        submit(outbox, records[:3])
        ids = [tx_id(r) for r in records[:3]]

        assert outbox.hold(ids[1], "the hub refused offline grant OFF-1") is True
        assert outbox.hold(ids[1], "again") is False  # no longer pending
        waiting = [e.transaction_id for e in outbox.pending(10)]
        [held] = outbox.held()
        stats = outbox.stats()
        before = outbox.release(ids[1])
        unknown = outbox.release("S001:R09:2026-11-29:00000001")
        not_held = outbox.release(ids[0])

        assert waiting == [ids[0], ids[2]]
        assert (held.transaction_id, held.business_day, held.reason) == (
            ids[1],
            DAY,
            "the hub refused offline grant OFF-1",
        )
        assert (stats.held, stats.depth) == (1, 2)
        assert (before, unknown, not_held) == ("held", None, "pending")
        released = [e for e in outbox.pending(10) if e.transaction_id == ids[1]]
        assert [e.to_send for e in released] == [orjson.dumps(records[1], option=orjson.OPT_SORT_KEYS)]
        assert outbox.held() == [] and outbox.stats().held == 0


class TestEarlierFiles:
    def test_an_outbox_of_an_earlier_agent_opens_with_what_it_held(
        self, tmp_path: Path, records: list[dict[str, Any]]
    ) -> None:
        path = tmp_path / "outbox-S001.db"
        box = SQLiteOutbox(path, "S001")
        submit(box, records[:2])
        box.close()
        with closing(sqlite3.connect(path)) as conn:  # as an agent before `sent_data` wrote it
            conn.execute("ALTER TABLE transactions DROP COLUMN sent_data")
            conn.commit()

        reopened = SQLiteOutbox(path, "S001")
        try:
            pending = reopened.pending(10)
            kept = reopened.keep_sent_data(pending[0].transaction_id, b'{"chosen": true}')
        finally:
            reopened.close()

        assert [e.transaction_id for e in pending] == [tx_id(r) for r in records[:2]]
        assert [e.sent_data for e in pending] == [None, None]
        assert kept == b'{"chosen": true}'


class TestDayClose:
    def test_a_day_close_waits_for_the_days_transactions_pending_before_it(
        self, outbox: SQLiteOutbox, records: list[dict[str, Any]]
    ) -> None:
        submit(outbox, records[:10])
        [report] = z_reports(
            [Transaction.model_validate(r) for r in records[:10]], closed_at=datetime.now(UTC)
        )
        assert outbox.record_day_close(report, received_at=datetime.now(UTC)) is Verdict.ACCEPTED
        submit(outbox, records[10:12])  # later sales of the day do not hold the report back
        ids = [tx_id(r) for r in records[:12]]

        outbox.mark_delivered(ids[:9])
        waiting = outbox.due_day_closes()
        outbox.mark_delivered(ids[9:10])
        due = outbox.due_day_closes()

        assert waiting == []
        assert [c.business_day for c in due] == [DAY]
        assert outbox.record_day_close(report, received_at=datetime.now(UTC)) is Verdict.DUPLICATE
        outbox.mark_day_close(DAY, EntryState.DELIVERED)
        assert outbox.due_day_closes() == [] and outbox.day_close_state(DAY) == ("delivered", None)

    def test_the_day_read_back_gives_the_z_report_of_what_the_tills_sent(
        self, outbox: SQLiteOutbox, records: list[dict[str, Any]]
    ) -> None:
        submit(outbox, records[:50])
        closed_at = datetime.now(UTC)

        held = [Transaction.model_validate_json(s.data) for s in outbox.read_store_day("S001", DAY)]

        assert z_reports(held, closed_at=closed_at) == z_reports(
            [Transaction.model_validate(r) for r in records[:50]], closed_at=closed_at
        )
        assert outbox.list_store_days(DAY) == ["S001"]
        assert sum(map(len, outbox.list_sequences("S001", DAY).values())) == 50


class TestFullOutbox:
    def test_a_full_outbox_refuses_clearly_and_loses_nothing_acknowledged(
        self, tmp_path: Path, records: list[dict[str, Any]]
    ) -> None:
        path = tmp_path / "outbox-S001.db"
        capped = SQLiteOutbox(path, "S001", max_pages=40)  # SQLite stops the file at 40 pages
        acknowledged: list[dict[str, Any]] = []
        refused: list[dict[str, Any]] = []
        try:
            for i in range(0, len(records), 20):
                batch = records[i : i + 20]
                try:
                    assert submit(capped, batch) == ["accepted"] * len(batch)
                    acknowledged += batch
                except DiskFullError as exc:
                    refused = batch
                    error = exc
                    break
            depth_when_full = capped.stats().depth
        finally:
            capped.close()

        assert refused and acknowledged, "the cap was never reached"
        assert "is full" in str(error)
        on_disk = rows_on_disk(path)
        assert {tx_id(r) for r in acknowledged} == set(on_disk)  # the refused batch left nothing
        assert all(state == "pending" for state, _ in on_disk.values())
        assert depth_when_full == len(acknowledged)
        roomy = SQLiteOutbox(path, "S001")  # space freed: the till sends the batch again
        try:
            assert submit(roomy, refused) == ["accepted"] * len(refused)
            assert submit(roomy, acknowledged[:3]) == ["duplicate"] * 3
        finally:
            roomy.close()
