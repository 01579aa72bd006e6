"""The EventLog port's delivery contract: redeliveries, dead letters, replay, resets, retention.

Like test_event_log, these stories speak only through the port, so they run on every backend
the `log` fixture builds (SQLite and PostgreSQL through `engine`). Each story keeps the consumer
contract: every fetched event is settled — acked, nak'ed or dead-lettered — before the group's
next fetch.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from tests.builders import TRACEPARENT, cloud_event
from tillflow.bus.sql import SQLEventLog
from tillflow.model import LoggedEvent
from tillflow.ports import DeadLetterSelection, EventLog

G = "inventory"
OTHER = "loyalty"
OPERATOR = "ops@example.com"


@pytest.fixture
def log(engine: Engine) -> EventLog:
    return SQLEventLog(engine)


def append(log: EventLog, *ns: int, **fields: object) -> list[int]:
    """Log events `evt-<n>` and return their seqs (none of them a repeat)."""
    seqs = log.append_events([cloud_event(n, **fields) for n in ns])
    assert None not in seqs
    return [s for s in seqs if s is not None]


def fetch(log: EventLog, group: str, limit: int = 100) -> list[LoggedEvent]:
    return log.fetch_batch(group, limit=limit)


def seen(batch: list[LoggedEvent]) -> list[tuple[str, int]]:
    """Each fetched event as (id, attempt)."""
    return [(e.event.id, e.attempt) for e in batch]


def drain(log: EventLog, group: str) -> list[tuple[str, int]]:
    """Fetch everything the group would be handed now, ack it, and say what it was."""
    batch = fetch(log, group)
    log.ack_events(group, batch)
    return seen(batch)


def dead_letter_all(log: EventLog, group: str, reason: str = "ValueError: bad record") -> None:
    """Fetch everything the group would be handed now and dead-letter each event."""
    for event in fetch(log, group):
        log.dead_letter(group, event, reason=reason)


class TestNak:
    def test_a_first_delivery_is_attempt_one(self, log: EventLog) -> None:
        append(log, 1, 2)

        assert drain(log, G) == [("evt-1", 1), ("evt-2", 1)]

    def test_a_nacked_event_comes_back_with_its_attempt_counted(self, log: EventLog) -> None:
        [seq] = append(log, 1)
        [first] = fetch(log, G)

        log.nak_event(G, first, delay=0, error="RuntimeError: ERP down")
        [second] = fetch(log, G)

        assert (second.event.id, second.seq, second.attempt) == ("evt-1", seq, 2)
        assert second.event == first.event

        log.nak_event(G, second, delay=0, error="RuntimeError: ERP still down")
        assert drain(log, G) == [("evt-1", 3)]

    def test_due_redeliveries_come_before_new_events(self, log: EventLog) -> None:
        append(log, 1, 2, 3, 4)
        one, two = fetch(log, G, limit=2)
        log.ack_events(G, [one])
        log.nak_event(G, two, delay=0, error="RuntimeError: ERP down")

        [first] = fetch(log, G, limit=1)
        assert seen([first]) == [("evt-2", 2)]  # the redelivery takes the one slot, not evt-3
        log.ack_events(G, [first])

        assert drain(log, G) == [("evt-3", 1), ("evt-4", 1)]

    def test_a_redelivery_and_new_events_share_one_batch_redelivery_first(self, log: EventLog) -> None:
        append(log, 1, 2)
        one, two = fetch(log, G)
        log.nak_event(G, two, delay=0, error="TimeoutError")
        log.ack_events(G, [one])
        append(log, 3, 4)

        assert drain(log, G) == [("evt-2", 2), ("evt-3", 1), ("evt-4", 1)]

    def test_an_event_nacked_with_a_delay_waits_while_newer_events_flow(self, log: EventLog) -> None:
        append(log, 1)
        [first] = fetch(log, G)
        log.nak_event(G, first, delay=3600, error="RuntimeError: ERP in maintenance")
        append(log, 2, 3)

        assert drain(log, G) == [("evt-2", 1), ("evt-3", 1)]
        assert fetch(log, G) == []
        assert log.read_groups()[G].pending == 1

    def test_a_nack_does_not_hold_back_the_position_for_the_rest_of_the_batch(self, log: EventLog) -> None:
        seqs = append(log, 1, 2, 3)
        one, two, three = fetch(log, G)

        log.nak_event(G, one, delay=3600, error="RuntimeError: ERP down")
        log.ack_events(G, [two, three])

        assert log.read_position(G) == seqs[-1]
        state = log.read_groups()[G]
        assert (state.position, state.lag, state.pending) == (seqs[-1], 0, 1)
        assert fetch(log, G) == []

    def test_acking_a_redelivered_event_removes_it_from_pending(self, log: EventLog) -> None:
        seqs = append(log, 1, 2)
        one, two = fetch(log, G)
        log.nak_event(G, one, delay=0, error="RuntimeError: ERP down")
        log.ack_events(G, [two])
        assert log.read_groups()[G].pending == 1

        assert drain(log, G) == [("evt-1", 2)]

        state = log.read_groups()[G]
        assert (state.pending, state.position) == (0, seqs[-1])  # acking an older seq keeps the position
        assert fetch(log, G) == []

    def test_a_nack_concerns_only_its_own_group(self, log: EventLog) -> None:
        append(log, 1)
        [first] = fetch(log, G)
        log.nak_event(G, first, delay=0, error="RuntimeError: ERP down")

        assert drain(log, OTHER) == [("evt-1", 1)]
        assert drain(log, OTHER) == []
        assert log.read_groups()[OTHER].pending == 0
        assert drain(log, G) == [("evt-1", 2)]


class TestDeadLetter:
    def test_a_dead_lettered_event_is_not_delivered_again(self, log: EventLog) -> None:
        append(log, 1)
        [first] = fetch(log, G)

        log.dead_letter(G, first, reason="ValueError: unknown SKU")

        assert fetch(log, G) == []
        append(log, 2)
        assert drain(log, G) == [("evt-2", 1)]

    def test_a_dead_letter_keeps_the_event_its_reason_and_attempts(self, log: EventLog) -> None:
        payload = bytes(range(256)) + '{"name":"Crème brûlée"}'.encode()
        [seq] = append(log, 1, traceparent=TRACEPARENT, data=payload)
        [first] = fetch(log, G)
        before = datetime.now(UTC)

        log.dead_letter(G, first, reason="ValueError: unknown SKU GRO-9999")

        after = datetime.now(UTC)
        [dl] = log.list_dead_letters(group=G)
        assert (dl.group, dl.reason, dl.attempts) == (G, "ValueError: unknown SKU GRO-9999", 1)
        assert dl.event.seq == seq
        assert (dl.event.event.source, dl.event.event.id) == (first.event.source, "evt-1")
        assert dl.event.event.traceparent == TRACEPARENT
        assert dl.event.event.data == payload
        assert dl.event.event == first.event
        assert before - timedelta(seconds=1) <= dl.dead_at <= after + timedelta(seconds=1)

    def test_the_group_state_counts_its_dead_letters_and_the_oldest(self, log: EventLog) -> None:
        append(log, 1, 2, 3)
        one, two, three = fetch(log, G)
        log.dead_letter(G, one, reason="ValueError: first")
        log.ack_events(G, [two])
        log.dead_letter(G, three, reason="ValueError: second")

        oldest, newest = log.list_dead_letters(group=G)
        state = log.read_groups()[G]

        assert (oldest.reason, newest.reason) == ("ValueError: first", "ValueError: second")
        assert oldest.dead_at <= newest.dead_at
        assert state.dead_letters == 2
        assert state.oldest_dead_letter_at == oldest.dead_at
        assert state.pending == 0

    def test_a_group_without_dead_letters_shows_none(self, log: EventLog) -> None:
        append(log, 1)
        drain(log, G)

        state = log.read_groups()[G]

        assert (state.dead_letters, state.oldest_dead_letter_at) == (0, None)
        assert log.list_dead_letters(group=G) == []

    def test_dead_letters_of_another_group_are_kept_apart(self, log: EventLog) -> None:
        append(log, 1, 2)
        one, two = fetch(log, G)
        log.dead_letter(G, one, reason="ValueError: inventory cannot")
        log.ack_events(G, [two])
        first, second = fetch(log, OTHER)
        log.ack_events(OTHER, [first])
        log.dead_letter(OTHER, second, reason="HTTPError: loyalty refused")

        assert [(d.group, d.event.event.id) for d in log.list_dead_letters(group=G)] == [(G, "evt-1")]
        assert [(d.group, d.event.event.id) for d in log.list_dead_letters(group=OTHER)] == [(OTHER, "evt-2")]
        assert [(d.group, d.event.event.id) for d in log.list_dead_letters()] == [
            (G, "evt-1"),
            (OTHER, "evt-2"),
        ]
        groups = log.read_groups()
        assert (groups[G].dead_letters, groups[OTHER].dead_letters) == (1, 1)

    def test_dead_letters_are_listed_oldest_first_up_to_the_limit(self, log: EventLog) -> None:
        append(log, 1, 2, 3)
        for event in fetch(log, G):
            log.dead_letter(G, event, reason=f"ValueError: {event.event.id}")

        assert [d.event.event.id for d in log.list_dead_letters(group=G)] == ["evt-1", "evt-2", "evt-3"]
        assert [d.event.event.id for d in log.list_dead_letters(group=G, limit=2)] == ["evt-1", "evt-2"]

    def test_a_redelivery_dead_lettered_counts_its_attempts_and_leaves_pending(self, log: EventLog) -> None:
        append(log, 1)
        [first] = fetch(log, G)
        log.nak_event(G, first, delay=0, error="RuntimeError: ERP down")
        [second] = fetch(log, G)
        log.nak_event(G, second, delay=0, error="RuntimeError: ERP down")
        [third] = fetch(log, G)
        assert third.attempt == 3

        log.dead_letter(G, third, reason="RuntimeError: gave up after 3 attempts")

        [dl] = log.list_dead_letters(group=G)
        assert dl.attempts == 3
        state = log.read_groups()[G]
        assert (state.pending, state.dead_letters) == (0, 1)
        assert fetch(log, G) == []

    def test_a_dead_letter_keeps_its_payload_when_the_event_is_trimmed(self, log: EventLog) -> None:
        append(log, 1, 2, data=b'{"keep":"me"}')
        one, two = fetch(log, G)
        log.dead_letter(G, one, reason="ValueError: bad")
        log.ack_events(G, [two])

        assert log.trim_events(max_events=1) == 1

        [dl] = log.list_dead_letters(group=G)
        assert dl.event.event == one.event
        assert dl.event.event.data == b'{"keep":"me"}'


class TestReplayDeadLetters:
    def test_replaying_some_ids_delivers_only_those_again_from_attempt_one(self, log: EventLog) -> None:
        seqs = append(log, 1, 2, 3)
        dead_letter_all(log, G)
        dl1, dl2, dl3 = log.list_dead_letters(group=G)

        count = log.replay_dead_letters(
            DeadLetterSelection(group=G, ids=(dl2.id,)), actor=OPERATOR, why="SKU GRO-9999 now exists"
        )

        assert count == 1
        assert [d.id for d in log.list_dead_letters(group=G)] == [dl1.id, dl3.id]
        [again] = fetch(log, G)
        assert (again.event.id, again.seq, again.attempt) == ("evt-2", seqs[1], 1)
        assert again.event == dl2.event.event
        log.ack_events(G, [again])
        assert fetch(log, G) == []

    def test_replaying_by_reason_picks_the_dead_letters_whose_reason_contains_it(self, log: EventLog) -> None:
        append(log, 1, 2, 3)
        one, two, three = fetch(log, G)
        log.dead_letter(G, one, reason="ValueError: unknown SKU GRO-9999")
        log.dead_letter(G, two, reason="TimeoutError: ERP did not answer")
        log.dead_letter(G, three, reason="ValueError: unknown SKU GRO-0042")

        count = log.replay_dead_letters(
            DeadLetterSelection(group=G, reason_contains="unknown SKU"), actor=OPERATOR, why="catalog fixed"
        )

        assert count == 2
        assert [d.event.event.id for d in log.list_dead_letters(group=G)] == ["evt-2"]
        assert drain(log, G) == [("evt-1", 1), ("evt-3", 1)]

    def test_replaying_a_group_replays_all_of_its_dead_letters_and_no_others(self, log: EventLog) -> None:
        append(log, 1, 2)
        dead_letter_all(log, G)
        dead_letter_all(log, OTHER, reason="HTTPError: 503")

        count = log.replay_dead_letters(DeadLetterSelection(group=G), actor=OPERATOR, why="ERP back")

        assert count == 2
        assert log.list_dead_letters(group=G) == []
        assert len(log.list_dead_letters(group=OTHER)) == 2
        assert drain(log, G) == [("evt-1", 1), ("evt-2", 1)]
        assert fetch(log, OTHER) == []
        groups = log.read_groups()
        assert (groups[G].dead_letters, groups[G].oldest_dead_letter_at) == (0, None)
        assert groups[OTHER].dead_letters == 2

    def test_a_replay_is_audited(self, log: EventLog) -> None:
        append(log, 1, 2)
        dead_letter_all(log, G)
        before = datetime.now(UTC)

        log.replay_dead_letters(DeadLetterSelection(group=G), actor=OPERATOR, why="ERP back after outage")

        [entry] = log.list_audit()
        assert (entry.action, entry.group, entry.count, entry.actor, entry.why) == (
            "replay-dead-letters",
            G,
            2,
            OPERATOR,
            "ERP back after outage",
        )
        assert before - timedelta(seconds=1) <= entry.at <= datetime.now(UTC) + timedelta(seconds=1)
        drain(log, G)

    def test_a_replayed_event_that_fails_again_can_be_dead_lettered_again(self, log: EventLog) -> None:
        append(log, 1)
        dead_letter_all(log, G, reason="ValueError: first time")
        log.replay_dead_letters(DeadLetterSelection(group=G), actor=OPERATOR, why="try again")

        dead_letter_all(log, G, reason="ValueError: second time")

        [dl] = log.list_dead_letters(group=G)
        assert (dl.event.event.id, dl.reason, dl.attempts) == ("evt-1", "ValueError: second time", 1)
        assert fetch(log, G) == []

    def test_a_selection_that_matches_nothing_replays_nothing(self, log: EventLog) -> None:
        append(log, 1)
        dead_letter_all(log, G, reason="ValueError: bad")

        assert (
            log.replay_dead_letters(
                DeadLetterSelection(group=G, reason_contains="no such reason"), actor=OPERATOR, why="x"
            )
            == 0
        )
        assert log.replay_dead_letters(DeadLetterSelection(group=OTHER), actor=OPERATOR, why="x") == 0
        assert len(log.list_dead_letters(group=G)) == 1
        assert fetch(log, G) == []

    def test_a_dead_letter_can_be_replayed_after_its_event_was_trimmed(self, log: EventLog) -> None:
        append(log, 1, 2, data=b'{"keep":"me"}')
        one, two = fetch(log, G)
        log.dead_letter(G, one, reason="ValueError: bad")
        log.ack_events(G, [two])
        log.trim_events(max_events=1)  # the log no longer holds evt-1; its dead letter does

        count = log.replay_dead_letters(DeadLetterSelection(group=G), actor=OPERATOR, why="fixed")

        assert count == 1
        assert log.list_dead_letters(group=G) == []
        [again] = fetch(log, G)
        assert (again.event, again.attempt) == (one.event, 1)
        log.ack_events(G, [again])

    def test_a_trimmed_dead_letter_replays_even_when_its_id_was_logged_again(self, log: EventLog) -> None:
        append(log, 1, 2)
        one, two = fetch(log, G)
        log.dead_letter(G, one, reason="ValueError: bad")
        log.ack_events(G, [two])
        log.trim_events(max_events=1)
        append(log, 1)  # the till resends evt-1; the trimmed log no longer knows it

        count = log.replay_dead_letters(DeadLetterSelection(group=G), actor=OPERATOR, why="fixed")

        assert count == 1
        assert log.list_dead_letters(group=G) == []
        batch = fetch(log, G)
        assert ("evt-1", 1) in seen(batch)
        log.ack_events(G, batch)

    def test_a_replayed_dead_letter_is_not_lost_to_a_later_age_trim(self, log: EventLog) -> None:
        append(log, 1, 2)
        one, two = fetch(log, G)
        log.dead_letter(G, one, reason="ValueError: bad")
        log.ack_events(G, [two])
        log.trim_events(max_events=1)  # evt-1 leaves the log; its dead letter keeps it
        time.sleep(0.3)
        log.replay_dead_letters(DeadLetterSelection(group=G), actor=OPERATOR, why="fixed")

        log.trim_events(max_age=timedelta(seconds=0.2))  # evt-2 is older than that; the replay is not

        assert drain(log, G) == [("evt-1", 1)]


class TestPurgeDeadLetters:
    def test_purged_dead_letters_are_gone_for_good(self, log: EventLog) -> None:
        append(log, 1, 2)
        dead_letter_all(log, G)
        dl1, dl2 = log.list_dead_letters(group=G)

        count = log.purge_dead_letters(
            DeadLetterSelection(group=G, ids=(dl1.id,)), actor=OPERATOR, why="test data from the lab till"
        )

        assert count == 1
        assert [d.id for d in log.list_dead_letters(group=G)] == [dl2.id]
        assert log.read_groups()[G].dead_letters == 1
        assert fetch(log, G) == []
        assert log.replay_dead_letters(DeadLetterSelection(group=G), actor=OPERATOR, why="all back") == 1
        assert drain(log, G) == [("evt-2", 1)]  # the purged one never comes back

    def test_a_purge_is_audited_and_the_audit_is_newest_first(self, log: EventLog) -> None:
        append(log, 1, 2)
        dead_letter_all(log, G, reason="ValueError: bad")
        log.replay_dead_letters(
            DeadLetterSelection(group=G, ids=(log.list_dead_letters(group=G)[0].id,)),
            actor="alice",
            why="fixed",
        )
        drain(log, G)

        count = log.purge_dead_letters(DeadLetterSelection(group=G), actor="bob", why="junk")

        assert count == 1
        assert log.list_dead_letters() == []
        newest, older = log.list_audit()
        assert (newest.action, newest.group, newest.count, newest.actor, newest.why) == (
            "purge-dead-letters",
            G,
            1,
            "bob",
            "junk",
        )
        assert (older.action, older.count, older.actor) == ("replay-dead-letters", 1, "alice")
        assert older.at <= newest.at
        assert [e.action for e in log.list_audit(limit=1)] == ["purge-dead-letters"]

    def test_a_purge_of_one_group_leaves_the_others(self, log: EventLog) -> None:
        append(log, 1)
        dead_letter_all(log, G)
        dead_letter_all(log, OTHER)

        assert log.purge_dead_letters(DeadLetterSelection(group=OTHER), actor=OPERATOR, why="junk") == 1

        assert [d.group for d in log.list_dead_letters()] == [G]


class TestResetGroup:
    def test_a_reset_to_a_seq_delivers_from_there_again(self, log: EventLog) -> None:
        seqs = append(log, 1, 2, 3, 4)
        drain(log, G)

        position = log.reset_group(G, from_seq=seqs[1], actor=OPERATOR, why="re-run inventory")

        assert position == seqs[1] - 1
        assert log.read_position(G) == seqs[1] - 1
        assert [e for e, _ in drain(log, G)] == ["evt-2", "evt-3", "evt-4"]
        assert fetch(log, G) == []

    def test_a_reset_can_move_a_group_forward(self, log: EventLog) -> None:
        seqs = append(log, 1, 2, 3, 4)

        assert log.reset_group(G, from_seq=seqs[3], actor=OPERATOR, why="skip the backlog") == seqs[3] - 1

        assert [e for e, _ in drain(log, G)] == ["evt-4"]

    def test_a_new_group_started_from_a_seq_begins_there(self, log: EventLog) -> None:
        seqs = append(log, 1, 2, 3)

        position = log.reset_group("reconcile", from_seq=seqs[2], actor=OPERATOR, why="new flow")

        assert position == seqs[2] - 1
        assert log.read_groups()["reconcile"].position == seqs[2] - 1
        assert [e for e, _ in drain(log, "reconcile")] == ["evt-3"]

    def test_a_reset_since_a_time_starts_at_the_first_event_logged_at_or_after_it(
        self, log: EventLog
    ) -> None:
        [first] = append(log, 1)
        time.sleep(0.01)
        since = datetime.now(UTC)
        time.sleep(0.01)
        [second] = append(log, 2)
        append(log, 3)
        drain(log, G)

        position = log.reset_group(G, since=since, actor=OPERATOR, why="replay the afternoon")

        assert position == second - 1
        assert position >= first
        assert [e for e, _ in drain(log, G)] == ["evt-2", "evt-3"]

    def test_a_reset_since_goes_by_log_time_not_event_time(self, log: EventLog) -> None:
        append(log, 1, time=datetime(2030, 1, 1, tzinfo=UTC))  # a till with its clock far ahead
        time.sleep(0.01)
        since = datetime.now(UTC)
        time.sleep(0.01)
        append(log, 2, time=datetime(2020, 1, 1, tzinfo=UTC))  # and one far behind
        drain(log, G)

        log.reset_group(G, since=since, actor=OPERATOR, why="replay")

        assert [e for e, _ in drain(log, G)] == ["evt-2"]

    def test_a_reset_drops_the_groups_pending_redeliveries(self, log: EventLog) -> None:
        seqs = append(log, 1, 2, 3)
        one, two, three = fetch(log, G)
        log.nak_event(G, one, delay=0, error="RuntimeError: ERP down")
        log.nak_event(G, two, delay=3600, error="RuntimeError: ERP down")
        log.ack_events(G, [three])
        assert log.read_groups()[G].pending == 2

        log.reset_group(G, from_seq=seqs[2], actor=OPERATOR, why="skip the broken ones")

        assert log.read_groups()[G].pending == 0
        assert drain(log, G) == [("evt-3", 1)]  # not evt-1 again, though it was due

    def test_a_reset_leaves_other_groups_alone(self, log: EventLog) -> None:
        seqs = append(log, 1, 2)
        drain(log, G)
        [first, second] = fetch(log, OTHER)
        log.ack_events(OTHER, [first])
        log.nak_event(OTHER, second, delay=3600, error="HTTPError: 429")

        log.reset_group(G, from_seq=seqs[0], actor=OPERATOR, why="re-run")

        state = log.read_groups()[OTHER]
        assert (state.position, state.pending) == (seqs[1], 1)

    def test_a_reset_is_audited(self, log: EventLog) -> None:
        seqs = append(log, 1, 2)
        drain(log, G)

        log.reset_group(G, from_seq=seqs[0], actor=OPERATOR, why="inventory bug fixed, re-run")

        [entry] = log.list_audit()
        assert (entry.action, entry.group, entry.actor, entry.why) == (
            "reset-group",
            G,
            OPERATOR,
            "inventory bug fixed, re-run",
        )
        drain(log, G)


class TestTrimEvents:
    def test_trimming_to_a_number_keeps_only_the_newest(self, log: EventLog) -> None:
        seqs = append(log, 1, 2, 3, 4, 5)

        dropped = log.trim_events(max_events=2)

        assert dropped == 3
        assert drain(log, "newcomer") == [("evt-4", 1), ("evt-5", 1)]
        assert log.read_head() == seqs[-1]
        assert log.trim_events(max_events=2) == 0

    def test_trimming_to_a_number_counts_events_not_seqs(self, log: EventLog) -> None:
        append(log, 1, 2, 3)
        assert log.append_events([cloud_event(2), cloud_event(3)]) == [None, None]  # repeats may use up seqs
        append(log, 4)

        assert log.trim_events(max_events=2) == 2

        assert drain(log, "newcomer") == [("evt-3", 1), ("evt-4", 1)]

    def test_trimming_by_age_drops_what_was_logged_before(self, log: EventLog) -> None:
        append(log, 1, 2, 3)
        time.sleep(0.01)

        assert log.trim_events(max_age=timedelta(hours=1)) == 0
        assert log.trim_events(max_age=timedelta(0)) == 3

        assert fetch(log, "newcomer") == []
        append(log, 4)
        assert drain(log, "newcomer") == [("evt-4", 1)]

    def test_a_group_behind_the_trim_carries_on_with_what_remains(self, log: EventLog) -> None:
        append(log, 1, 2, 3, 4)
        log.ack_events(G, fetch(log, G, limit=1))

        log.trim_events(max_events=2)

        assert [e for e, _ in drain(log, G)] == ["evt-3", "evt-4"]

    def test_events_that_remain_are_still_deduplicated(self, log: EventLog) -> None:
        append(log, 1, 2, 3)
        log.trim_events(max_events=2)
        head = log.read_head()

        assert log.append_events([cloud_event(2), cloud_event(3)]) == [None, None]
        assert log.read_head() == head
        assert [e for e, _ in drain(log, "newcomer")] == ["evt-2", "evt-3"]


class TestReadGroups:
    def test_lag_is_the_head_minus_the_position(self, log: EventLog) -> None:
        seqs = append(log, 1, 2, 3, 4, 5)
        log.ack_events(G, fetch(log, G, limit=2))
        log.ack_events(OTHER, fetch(log, OTHER, limit=5))

        groups = log.read_groups()

        assert (groups[G].position, groups[G].lag) == (seqs[1], seqs[-1] - seqs[1])
        assert (groups[OTHER].position, groups[OTHER].lag) == (seqs[-1], 0)

    def test_pending_and_dead_letters_are_counted_per_group(self, log: EventLog) -> None:
        append(log, 1, 2, 3)
        one, two, three = fetch(log, G)
        log.nak_event(G, one, delay=3600, error="RuntimeError: ERP down")
        log.nak_event(G, two, delay=3600, error="RuntimeError: ERP down")
        log.dead_letter(G, three, reason="ValueError: bad")
        first, second, third = fetch(log, OTHER)
        log.dead_letter(OTHER, first, reason="HTTPError: 400")
        log.dead_letter(OTHER, second, reason="HTTPError: 400")
        log.nak_event(OTHER, third, delay=3600, error="HTTPError: 429")

        groups = log.read_groups()

        assert (groups[G].pending, groups[G].dead_letters) == (2, 1)
        assert (groups[OTHER].pending, groups[OTHER].dead_letters) == (1, 2)
        assert groups[G].oldest_dead_letter_at is not None
        assert groups[OTHER].oldest_dead_letter_at is not None


class TestRetentionLosesNothing:
    def test_a_retry_pending_when_its_event_is_trimmed_becomes_a_dead_letter(self, log: EventLog) -> None:
        append(log, 1, 2)
        one, two = fetch(log, G)
        log.nak_event(G, one, delay=3600, error="RuntimeError: ERP down")
        log.ack_events(G, [two])

        log.trim_events(max_events=1)

        [dead] = log.list_dead_letters(group=G)
        assert dead.event.event.id == one.event.id and dead.attempts == 1
        assert "retention" in dead.reason and "ERP down" in dead.reason
        assert log.read_groups()[G].pending == 0


class TestRedeliveriesAndPositions:
    def test_a_replayed_dead_letter_ahead_of_the_position_does_not_move_it(self, log: EventLog) -> None:
        append(log, 1, 2, 3)
        one, two, three = fetch(log, G)
        log.ack_events(G, [one, two])
        log.dead_letter(G, three, reason="PoisonEventError: bad")
        log.reset_group(G, from_seq=1, actor=OPERATOR, why="re-run after a fix")
        log.replay_dead_letters(DeadLetterSelection(group=G), actor=OPERATOR, why="fixed")

        batch = fetch(log, G, limit=2)  # the replayed seq 3 first, then seq 1 afresh
        assert [(e.seq, e.redelivered) for e in batch] == [(3, True), (1, False)]
        log.ack_events(G, batch)

        assert log.read_position(G) == 1  # not 3: seq 2 has not been handled again yet
        assert [e.seq for e in fetch(log, G)] == [2, 3]

    def test_a_nak_after_retention_dropped_the_event_keeps_it_as_a_dead_letter(self, log: EventLog) -> None:
        append(log, 1, 2)
        one, two = fetch(log, G)
        log.ack_events(G, [two])
        log.trim_events(max_events=1)  # drops seq 1 while it is still being handled

        log.nak_event(G, one, delay=0, error="RuntimeError: ERP down")

        [dead] = log.list_dead_letters(group=G)
        assert dead.event.event.id == one.event.id and "ERP down" in dead.reason
        assert log.read_groups()[G].pending == 0

    def test_the_reason_filter_ignores_case_on_every_backend(self, log: EventLog) -> None:
        append(log, 1)
        [one] = fetch(log, G)
        log.dead_letter(G, one, reason="PoisonEventError: Line 3 Has No SKU")
        selection = DeadLetterSelection(group=G, reason_contains="no sku")
        assert log.purge_dead_letters(selection, actor=OPERATOR, why="lab till") == 1
        assert "ids" in log.list_audit()[0].detail


class TestSequencesAfterTrim:
    def test_an_event_appended_after_everything_was_trimmed_still_reaches_a_caught_up_group(
        self, log: EventLog
    ) -> None:
        append(log, 1, 2, 3)
        log.ack_events(G, fetch(log, G))
        time.sleep(0.01)
        assert log.trim_events(max_age=timedelta(0)) == 3

        [seq] = log.append_events([cloud_event(4)])

        assert seq is not None and seq > 3  # sequences are never reused
        assert [e.event.id for e in fetch(log, G)] == ["evt-4"]
