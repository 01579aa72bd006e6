"""The agent's drop folder: files read with the import code into the stores' outboxes (real SQLite
files), then moved to done/ or failed/ with their report."""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.shared_data import sample
from tillflow.config import TillflowConfig
from tillflow.edge.agent import StoreOutboxes
from tillflow.edge.dropfolder import DropFolder, OutboxSink
from tillflow.edge.outbox import SQLiteOutbox
from tillflow.formats.policy import PolicyMaps
from tillflow.model import Store

NCR_SMALL = sample("poslog", "ncr-acs-2.1", "SMALL.xml")  # a sign-on and one sale of NCR store 9
SALE = "S009:34:2017-09-30:00000161"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[DropFolder, SQLiteOutbox]]:
    """A drop folder of an agent serving S009 (NCR's store 9), settling at once."""
    config = TillflowConfig(
        stores=[Store(store_id="S009", timezone="America/New_York", currency="USD")],
        policy=PolicyMaps(store_aliases={"9": "S009", "10": "S010"}),
    )
    outbox = SQLiteOutbox(tmp_path / "outbox-S009.db", "S009")
    outboxes = StoreOutboxes({"S009": outbox})
    folder = DropFolder(
        tmp_path / "drop",
        OutboxSink(outboxes, outboxes.store_ids),
        config.import_context(),
        config.imports.by_format(),
        settle=0,
    )
    try:
        yield folder, outbox
    finally:
        outbox.close()


def drop(folder: DropFolder, name: str, data: bytes) -> Path:
    path = folder.root / name
    path.write_bytes(data)
    return path


def report_of(path: Path) -> list[dict[str, str]]:
    with path.with_name(path.name + ".report.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


class TestDropFolder:
    def test_a_file_is_taken_once_settled_and_moves_to_done(
        self, served: tuple[DropFolder, SQLiteOutbox]
    ) -> None:
        folder, outbox = served
        drop(folder, "z.xml", NCR_SMALL.read_bytes())

        assert folder.scan() == []  # first seen: it may still be being written
        [summary] = folder.scan()

        assert (summary.read, summary.not_posted, dict(summary.hub)) == (2, 1, {"accepted": 1})
        assert [e.transaction_id for e in outbox.pending(10)] == [SALE]
        assert (folder.root / "done" / "z.xml").read_bytes() == NCR_SMALL.read_bytes()
        assert not (folder.root / "z.xml").exists()
        assert not (folder.root / "done" / "z.xml.report.csv").exists()  # nothing refused

    def test_a_file_that_changes_waits_until_it_stops(self, served: tuple[DropFolder, SQLiteOutbox]) -> None:
        folder, outbox = served
        path = drop(folder, "z.xml", NCR_SMALL.read_bytes()[:100])
        folder.scan()
        path.write_bytes(NCR_SMALL.read_bytes())  # the copy goes on
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))

        assert folder.scan() == []
        assert len(folder.scan()) == 1 and [e.transaction_id for e in outbox.pending(10)] == [SALE]

    def test_the_same_file_again_is_answered_duplicate_under_a_new_name(
        self, served: tuple[DropFolder, SQLiteOutbox]
    ) -> None:
        folder, outbox = served
        for _ in range(2):
            drop(folder, "z.xml", NCR_SMALL.read_bytes())
            folder.scan()
            [summary] = folder.scan()

        assert dict(summary.hub) == {"duplicate": 1}
        assert sorted(p.name for p in (folder.root / "done").iterdir()) == ["z.1.xml", "z.xml"]
        assert len(outbox.pending(10)) == 1

    def test_a_record_of_a_store_not_served_fails_the_file_with_its_reason(
        self, served: tuple[DropFolder, SQLiteOutbox]
    ) -> None:
        folder, outbox = served
        other = NCR_SMALL.read_bytes().replace(b"<RetailStoreID>9<", b"<RetailStoreID>10<")
        assert other != NCR_SMALL.read_bytes()
        drop(folder, "other.xml", other)
        folder.scan()
        folder.scan()

        failed = folder.root / "failed" / "other.xml"
        assert failed.exists() and outbox.pending(10) == []
        [row] = report_of(failed)
        assert (row["stage"], row["field"]) == ("hub", "store_id") and "S010" in row["reason"]

    def test_an_unreadable_file_fails_with_the_reason_and_the_watch_goes_on(
        self, served: tuple[DropFolder, SQLiteOutbox]
    ) -> None:
        folder, outbox = served
        drop(folder, "broken.xml", b"<POSLog><Transaction>")
        shutil.copy(NCR_SMALL, folder.root / "good.xml")
        folder.scan()
        done = folder.scan()

        assert len(done) == 2
        [row] = report_of(folder.root / "failed" / "broken.xml")
        assert row["stage"] == "read" and row["reason"]
        assert (folder.root / "done" / "good.xml").exists()
        assert [e.transaction_id for e in outbox.pending(10)] == [SALE]
