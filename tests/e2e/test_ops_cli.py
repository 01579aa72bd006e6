"""Operations from the command line, as an operator runs them against a hub's state."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.builders import cloud_event
from tillflow.bootstrap import bootstrap
from tillflow.config import load_config
from tillflow.ports import EventLog

CLI = [sys.executable, "-m", "tillflow.cli"]


def tillflow(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args, "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=120
    )


def as_json(done: subprocess.CompletedProcess[str]) -> object:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[tuple[Path, EventLog]]:
    """A hub's data dir with three events: one acked, one dead-lettered, one pending."""
    services = bootstrap(load_config(None, data_dir=tmp_path))
    log = services.event_log
    log.append_events([cloud_event(1), cloud_event(2), cloud_event(3)])
    first, second, third = log.fetch_batch("inventory", limit=3)
    log.ack_events("inventory", [first])
    log.dead_letter("inventory", second, reason="PoisonEventError: line 2 has no SKU")
    log.nak_event("inventory", third, delay=3600, error="RuntimeError: ERP down")
    try:
        yield tmp_path, log
    finally:
        services.close()


class TestLag:
    def test_lag_shows_position_pending_and_dead_letters(self, state: tuple[Path, EventLog]) -> None:
        data_dir, _ = state
        [row] = as_json(tillflow(data_dir, "lag", "--json"))  # type: ignore[misc]
        assert (row["flow"], row["position"], row["head"], row["lag"]) == ("inventory", 3, 3, 0)
        assert (row["pending"], row["dead_letters"]) == (1, 1)

    def test_the_table_names_the_flow(self, state: tuple[Path, EventLog]) -> None:
        done = tillflow(state[0], "lag")
        assert done.returncode == 0 and "inventory" in done.stdout


class TestDeadLetters:
    def test_list_and_show(self, state: tuple[Path, EventLog]) -> None:
        data_dir, _ = state
        [listed] = as_json(tillflow(data_dir, "dlq", "list", "--json"))  # type: ignore[misc]
        assert listed["event"] == "evt-2" and listed["attempts"] == 1
        shown = as_json(tillflow(data_dir, "dlq", "show", str(listed["id"]), "--json"))
        assert shown["reason"] == "PoisonEventError: line 2 has no SKU"  # type: ignore[index]
        assert shown["data"] == '{"n":2}'  # type: ignore[index]
        missing = tillflow(data_dir, "dlq", "show", "999")
        assert missing.returncode == 1 and "999" in missing.stderr

    def test_replay_needs_a_selection_and_is_audited(self, state: tuple[Path, EventLog]) -> None:
        data_dir, log = state
        assert tillflow(data_dir, "dlq", "replay", "--why", "x").returncode == 2
        done = as_json(
            tillflow(data_dir, "dlq", "replay", "--all", "--why", "SKU fixed", "--actor", "ana", "--json")
        )
        assert done == [{"replayed": 1}]
        assert log.list_dead_letters() == []
        [again] = log.fetch_batch("inventory", limit=10)
        assert again.event.id == "evt-2"
        audit = log.list_audit()[0]
        assert (audit.action, audit.actor, audit.why, audit.count) == (
            "replay-dead-letters",
            "ana",
            "SKU fixed",
            1,
        )

    def test_purge_by_reason(self, state: tuple[Path, EventLog]) -> None:
        data_dir, log = state
        done = as_json(
            tillflow(data_dir, "dlq", "purge", "--reason", "no SKU", "--why", "test till", "--json")
        )
        assert done == [{"purged": 1}]
        assert log.list_dead_letters() == []


class TestReplay:
    def test_a_flow_replays_from_a_sequence(self, state: tuple[Path, EventLog]) -> None:
        data_dir, log = state
        [row] = as_json(
            tillflow(
                data_dir, "replay", "--flow", "inventory", "--from-seq", "1", "--why", "re-run", "--json"
            )
        )  # type: ignore[misc]
        assert (row["position"], row["to_replay"]) == (0, 3)
        assert [e.event.id for e in log.fetch_batch("inventory", limit=10)] == ["evt-1", "evt-2", "evt-3"]

    def test_since_needs_an_offset(self, state: tuple[Path, EventLog]) -> None:
        done = tillflow(state[0], "replay", "--flow", "x", "--since", "2026-11-29T08:00:00", "--why", "y")
        assert done.returncode == 2 and "offset" in done.stderr


class TestOperatorMistakes:
    def test_a_mistyped_data_dir_is_an_error_not_an_empty_hub(self, tmp_path: Path) -> None:
        done = tillflow(tmp_path / "nowhere", "lag")
        assert done.returncode == 2 and "no hub state" in done.stderr
        assert not (tmp_path / "nowhere" / "tillflow.db").exists()

    def test_replaying_an_unknown_flow_needs_new(self, state: tuple[Path, EventLog]) -> None:
        data_dir, log = state
        typo = tillflow(data_dir, "replay", "--flow", "invetnory", "--from-seq", "1", "--why", "x")
        assert typo.returncode == 2 and "--new" in typo.stderr
        done = tillflow(data_dir, "replay", "--flow", "audit-copy", "--new", "--from-seq", "1", "--why", "x")
        assert done.returncode == 0
        assert log.read_position("audit-copy") == 0

    def test_a_sequence_past_the_head_is_refused(self, state: tuple[Path, EventLog]) -> None:
        done = tillflow(state[0], "replay", "--flow", "inventory", "--from-seq", "999", "--why", "x")
        assert done.returncode == 2 and "head is 3" in done.stderr

    def test_purging_everything_of_every_flow_is_refused(self, state: tuple[Path, EventLog]) -> None:
        done = tillflow(state[0], "dlq", "purge", "--all", "--why", "x")
        assert done.returncode == 2 and "--flow" in done.stderr
