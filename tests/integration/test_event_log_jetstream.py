"""The EventLog contract on NATS JetStream, against a real nats-server started for the session.

The backend-neutral stories of test_event_log and test_event_log_delivery are subclassed here
with a `log` fixture that builds a `JetStreamEventLog` (fresh streams per story; the state store
for durable dedupe and audit is a SQLite file). Stories about the SQL log itself (its file, its
failure-streak table) are not repeated. The stories at the end are JetStream's own: dedupe past
the server's window, an unreachable server, and redelivery after a consumer dies mid-batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from sqlalchemy import Engine

from tests.builders import cloud_event
from tests.integration import test_event_log as log_stories
from tests.integration import test_event_log_delivery as delivery_stories
from tests.integration.test_event_log_delivery import OPERATOR, G, append, fetch
from tests.nats_server import NatsServer, nats_server
from tests.servers import free_port
from tillflow.bus.jetstream import JetStreamEventLog
from tillflow.errors import EventLogError
from tillflow.ports import DeadLetterSelection, EventLog
from tillflow.storage.db import create_state_engine, sqlite_url
from tillflow.storage.migrate import upgrade_schema

STREAM = "TILLFLOW"
Opener = Callable[..., JetStreamEventLog]


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    with nats_server() as running:
        yield running


async def _delete_streams(url: str, *names: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for name in names:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
    finally:
        await nc.close()


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Engine]:
    """The state store that keeps dedupe records, failure streaks and the audit trail."""
    engine = create_state_engine(sqlite_url(tmp_path / "state.db"))
    upgrade_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def open_log(server: NatsServer, state: Engine) -> Iterator[Opener]:
    """Open JetStreamEventLogs on fresh streams; every one is closed and the streams deleted at the end."""
    asyncio.run(_delete_streams(server.url, STREAM, f"{STREAM}_DLQ"))
    opened: list[JetStreamEventLog] = []

    def open_(**options: Any) -> JetStreamEventLog:
        log = JetStreamEventLog([server.url], state, stream=STREAM, **options)
        opened.append(log)
        return log

    yield open_
    for log in opened:
        log.close()
    asyncio.run(_delete_streams(server.url, STREAM, f"{STREAM}_DLQ"))


@pytest.fixture
def log(open_log: Opener) -> JetStreamEventLog:
    return open_log()


# --- the contract ----------------------------------------------------------------------------------


class TestAppendingOnJetStream(log_stories.TestAppending):
    pass


class TestFetchingOnJetStream(log_stories.TestFetching):
    pass


class TestConsumerGroupsOnJetStream(log_stories.TestConsumerGroups):
    pass


class TestAcknowledgingOnJetStream(log_stories.TestAcknowledging):
    pass


class TestHeadAndPositionOnJetStream(log_stories.TestHeadAndPosition):
    pass


class TestRoundTripOnJetStream(log_stories.TestRoundTrip):
    pass


class TestNakOnJetStream(delivery_stories.TestNak):
    pass


class TestDeadLetterOnJetStream(delivery_stories.TestDeadLetter):
    pass


class TestReplayDeadLettersOnJetStream(delivery_stories.TestReplayDeadLetters):
    pass


class TestPurgeDeadLettersOnJetStream(delivery_stories.TestPurgeDeadLetters):
    pass


class TestResetGroupOnJetStream(delivery_stories.TestResetGroup):
    pass


class TestTrimEventsOnJetStream(delivery_stories.TestTrimEvents):
    pass


class TestReadGroupsOnJetStream(delivery_stories.TestReadGroups):
    pass


class TestRetentionLosesNothingOnJetStream(delivery_stories.TestRetentionLosesNothing):
    pass


class TestRedeliveriesAndPositionsOnJetStream(delivery_stories.TestRedeliveriesAndPositions):
    def test_a_replayed_dead_letter_ahead_of_the_position_does_not_move_it(self, log: EventLog) -> None:
        """JetStream delivers a replay in stream order (after the events logged before it),
        not first as the SQL log does; what matters holds: handling it does not move the
        position past events not yet handled again."""
        append(log, 1, 2, 3)
        one, two, three = fetch(log, G)
        log.ack_events(G, [one, two])
        log.dead_letter(G, three, reason="PoisonEventError: bad")
        log.reset_group(G, from_seq=1, actor=OPERATOR, why="re-run after a fix")
        log.replay_dead_letters(DeadLetterSelection(group=G), actor=OPERATOR, why="fixed")

        batch = fetch(log, G)
        assert [(e.seq, e.redelivered) for e in batch] == [(1, False), (2, False), (3, False), (3, True)]
        log.ack_events(G, [batch[0], batch[3]])

        assert log.read_position(G) == 1  # not 3, nor the replay's place: seq 2 is not handled again yet
        log.nak_event(G, batch[1], delay=0, error="RuntimeError: again")
        log.nak_event(G, batch[2], delay=0, error="RuntimeError: again")
        assert [e.seq for e in fetch(log, G)] == [2, 3]


class TestSequencesAfterTrimOnJetStream(delivery_stories.TestSequencesAfterTrim):
    pass


class TestFailureStreaksOnJetStream(log_stories.TestFailureStreaks):
    pass


# --- JetStream's own stories -----------------------------------------------------------------------


class TestDurableDedupe:
    def test_a_resend_after_the_servers_dedupe_window_is_still_a_repeat(self, open_log: Opener) -> None:
        log = open_log(duplicate_window=timedelta(seconds=1))
        [seq] = log.append_events([cloud_event(1)])
        time.sleep(1.5)  # JetStream has forgotten the Nats-Msg-Id by now

        assert log.append_events([cloud_event(1), cloud_event(2)])[0] is None

        assert log.read_head() == seq + 1
        assert [e.event.id for e in log.fetch_batch("inventory", limit=10)] == ["evt-1", "evt-2"]

    def test_a_restarted_log_still_knows_what_was_logged(self, open_log: Opener) -> None:
        first = open_log()
        first.append_events([cloud_event(1)])
        first.close()

        again = open_log()

        assert again.append_events([cloud_event(1)]) == [None]
        assert again.read_head() == 1


class TestUnreachableServer:
    def test_an_unreachable_server_at_start_is_an_error_naming_it(self, state: Engine) -> None:
        url = f"nats://127.0.0.1:{free_port()}"

        with pytest.raises(EventLogError, match=url):
            JetStreamEventLog([url], state, connect_timeout=1.0)


class TestCrashedConsumer:
    def test_a_batch_fetched_by_a_consumer_that_died_is_delivered_again_after_ack_wait(
        self, open_log: Opener
    ) -> None:
        crashed = open_log(ack_wait=timedelta(seconds=1))
        crashed.append_events([cloud_event(1), cloud_event(2)])
        assert len(crashed.fetch_batch("inventory", limit=10)) == 2
        crashed.close()  # no ack, no nak: as if the process was killed

        restarted = open_log(ack_wait=timedelta(seconds=1))
        assert restarted.fetch_batch("inventory", limit=10) == []  # still the dead consumer's, for now
        time.sleep(1.3)

        batch = restarted.fetch_batch("inventory", limit=10)
        assert [(e.event.id, e.attempt, e.redelivered) for e in batch] == [
            ("evt-1", 2, True),
            ("evt-2", 2, True),
        ]
        restarted.ack_events("inventory", batch)
        assert restarted.read_position("inventory") == restarted.read_head()
        assert restarted.fetch_batch("inventory", limit=10) == []


class TestServerRestart:
    def test_the_log_reconnects_after_the_server_restarts_and_loses_nothing(
        self, server: NatsServer, open_log: Opener
    ) -> None:
        log = open_log(request_timeout=1.0)
        log.append_events([cloud_event(1), cloud_event(2)])
        log.ack_events("inventory", log.fetch_batch("inventory", limit=1))

        server.stop()
        with pytest.raises(EventLogError):
            log.append_events([cloud_event(3)])  # nothing to publish to: the append is refused, not lost
        server.start()

        deadline = time.monotonic() + 15
        while True:  # the client reconnects with backoff on its own
            try:
                log.append_events([cloud_event(3)])
                break
            except EventLogError:
                assert time.monotonic() < deadline, "the log did not reconnect"
                time.sleep(0.2)
        assert [e.event.id for e in log.fetch_batch("inventory", limit=10)] == ["evt-2", "evt-3"]
