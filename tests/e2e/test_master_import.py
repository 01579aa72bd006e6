"""`tillflow import FILE... --kind items|prices|promotions` against a real hub process: master
data files from an ERP or PIM load through the hub's batch APIs, refused rows land in the
quarantine report (row, field, reason), withdrawals in JSON pass through, a busy hub is waited
out, and a key that may not load master data stops the import with the hub's reason.

One `tillflow hub` process serves the module (stores S001 in region north, S002 in south; at
most 50 records per batch); the CLI runs as a subprocess in the test's own directory (where
the default quarantine report lands). Each test uses SKUs and promotion ids of its own.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningHub, hub_process
from tillflow.config import HubSettings, TillflowConfig
from tillflow.model import Store

CLI = [sys.executable, "-m", "tillflow.cli", "import"]
REPORT_HEADER = ["file", "record", "locator", "stage", "field", "reason", "numbers"]
START = "2026-03-01T00:00:00"
AT = {"at": "2026-06-01T10:00:00+00:00"}  # when the prices and promotions below are in effect


@pytest.fixture(scope="module")
def master_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    config = TillflowConfig(
        hub=HubSettings(max_batch_records=50),
        stores=[Store(store_id="S001", region="north"), Store(store_id="S002", region="south")],
    )
    with hub_process(tmp_path_factory.mktemp("master-hub"), config) as hub:
        yield hub


# -- helpers ---------------------------------------------------------------------------------


def run_import(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`tillflow import ARGS` in `cwd`; a wide terminal so the summary table is not cut short."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILLFLOW_")}
    env["COLUMNS"] = "250"
    return subprocess.run(
        [*CLI, *(str(a) for a in args)], capture_output=True, text=True, timeout=300, cwd=cwd, env=env
    )


def load(
    hub: RunningHub,
    kind: str,
    *files: Path,
    cwd: Path,
    url: str | None = None,
    key: str | None = None,
    extra: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """`tillflow import --kind KIND FILES` into `hub` (or through `url`) with its admin key."""
    auth = ("--hub", url or hub.url, "--api-key", key or hub.admin)
    return run_import("--kind", kind, *auth, *extra, *files, cwd=cwd)


def summary_rows(stderr: str) -> dict[str, dict[str, str]]:
    """The summary table printed on stderr: file name -> column -> cell."""
    header: list[str] | None = None
    rows: dict[str, dict[str, str]] = {}
    for line in stderr.splitlines():
        line = line.strip()
        if line.startswith("┃") and header is None:
            header = [cell.strip() for cell in line.strip("┃").split("┃")]
        elif line.startswith("│") and header is not None:
            cells = [cell.strip() for cell in line.strip("│").split("│")]
            row = dict(zip(header, cells, strict=True))
            rows[row["file"]] = row
    assert header is not None, f"no summary table in:\n{stderr}"
    return rows


def counts(row: dict[str, str], *columns: str) -> tuple[int, ...]:
    return tuple(int(row[c]) for c in columns)


def report_entries(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    assert header == REPORT_HEADER
    return [dict(zip(header, row, strict=True)) for row in rows]


def flat(text: str) -> str:
    """Text with every run of whitespace (line wraps included) as one space."""
    return " ".join(text.split())


def head_version(hub: RunningHub) -> int:
    with hub.client(hub.admin) as admin:
        version: int = admin.get("/v1/masterdata/status").json()["version"]
    return version


def promotion(pid: str, sku: str, percent: str = "10") -> dict[str, Any]:
    return {"promotion_id": pid, "kind": "percent_off", "percent": percent, "skus": [sku],
            "starts": START, "ends": "2026-12-31T00:00:00"}  # fmt: skip


@contextmanager
def busy_front(hub_url: str, busy: list[int]) -> Iterator[tuple[str, list[int]]]:
    """A front for the hub that answers its first requests with the statuses in `busy` (each
    with Retry-After: 1) and forwards the others; yields its URL and every status it answered."""
    answered: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            headers = {"content-type": "application/json"}
            if len(answered) < len(busy):
                status, content = busy[len(answered)], b'{"title": "Busy"}'
                headers["retry-after"] = "1"
            else:
                forwarded = httpx.put(
                    hub_url + self.path,
                    content=body,
                    headers={"authorization": self.headers["authorization"], **headers},
                    timeout=60,
                )
                status, content = forwarded.status_code, forwarded.content
            answered.append(status)
            self.send_response(status)
            for name, value in {**headers, "content-length": str(len(content))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", answered
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- loads -----------------------------------------------------------------------------------


class TestItems:
    def test_a_csv_of_items_loads_and_the_bad_row_is_quarantined(
        self, master_hub: RunningHub, tmp_path: Path
    ) -> None:
        items = tmp_path / "items.csv"
        items.write_text(
            "sku,description,department,uom,gtins,conversions\n"
            "MI-A,Cheese,DAIRY,KG,4012345678901,G=0.001\n"
            "MI-B,Crates,DRINKS,BOX,,\n"
            "MI-C,Apples,FRUIT,EA,,KG=5\n"
        )
        done = load(master_hub, "items", items, cwd=tmp_path)

        assert done.returncode == 3, done.stderr
        row = summary_rows(done.stderr)[items.name]
        assert (row["kind"], row["format"]) == ("items", "csv")
        assert counts(row, "read", "created", "updated", "unchanged", "quarantined") == (3, 2, 0, 0, 1)
        assert int(row["version"]) == head_version(master_hub)
        [entry] = report_entries(tmp_path / "quarantine.csv")
        assert (entry["file"], entry["record"], entry["locator"]) == ("items.csv", "2", "line 3")
        assert (entry["stage"], entry["field"]) == ("parse", "uom")
        assert entry["reason"]
        assert "1 refused rows" in flat(done.stderr) and "quarantine.csv" in flat(done.stderr)
        with master_hub.client(master_hub.admin) as admin:
            cheese = admin.get("/v1/products/MI-A")
            apples = admin.get("/v1/products/MI-C")
            crates = admin.get("/v1/products/MI-B")
        assert cheese.status_code == 200, cheese.text
        assert (cheese.json()["department"], cheese.json()["conversions"]) == ("DAIRY", {"G": "0.001"})
        assert apples.json()["conversions"] == {"KG": "5"}
        assert crates.status_code == 404

        # the same file again: nothing changes, the bad row is refused again
        again = load(master_hub, "items", items, cwd=tmp_path)
        assert again.returncode == 3, again.stderr
        row = summary_rows(again.stderr)[items.name]
        assert counts(row, "read", "created", "unchanged", "quarantined") == (3, 0, 2, 1)


class TestPrices:
    def test_a_csv_of_prices_loads_in_batches_and_the_store_is_charged_the_narrowest(
        self, master_hub: RunningHub, tmp_path: Path
    ) -> None:
        prices = tmp_path / "prices.csv"
        prices.write_text(
            "sku,price,currency,region,store_id,effective_from\n"
            f"MP-A,3.00,EUR,,,{START}\n"
            f"MP-A,2.80,EUR,north,,{START}\n"
            f"MP-A,2.50,EUR,,S002,{START}\n"
            f"MP-B,1.00,EUR,,,{START}\n"
            f"MP-B,0.90,EUR,south,,{START}\n"
        )
        done = load(master_hub, "prices", prices, cwd=tmp_path, extra=("--batch", "2"))

        assert done.returncode == 0, done.stderr
        row = summary_rows(done.stderr)[prices.name]
        assert counts(row, "read", "created", "quarantined") == (5, 5, 0)
        assert int(row["version"]) == head_version(master_hub)
        assert not (tmp_path / "quarantine.csv").exists()
        charged = {}
        with master_hub.client(master_hub.admin) as admin:
            for store in ("S001", "S002"):
                for sku in ("MP-A", "MP-B"):
                    answer = admin.get(f"/v1/prices/{store}/{sku}", params=AT)
                    assert answer.status_code == 200, answer.text
                    charged[store, sku] = answer.json()["price"]["price"]
        assert charged == {
            ("S001", "MP-A"): "2.80", ("S001", "MP-B"): "1.00",
            ("S002", "MP-A"): "2.50", ("S002", "MP-B"): "0.90",
        }  # fmt: skip

        # one price changed, the others as they were
        prices.write_text(prices.read_text().replace("MP-B,1.00,", "MP-B,1.10,"))
        again = load(master_hub, "prices", prices, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        row = summary_rows(again.stderr)[prices.name]
        assert counts(row, "created", "updated", "unchanged") == (0, 1, 4)
        with master_hub.client(master_hub.keys["S001"]) as s1:
            assert s1.get("/v1/prices/S001/MP-B", params=AT).json()["price"]["price"] == "1.10"


class TestPromotions:
    def test_a_json_of_promotions_loads_and_withdrawals_pass_through(
        self, master_hub: RunningHub, tmp_path: Path
    ) -> None:
        (tmp_path / "price.csv").write_text(f"sku,price,currency,effective_from\nMQ-A,4.00,EUR,{START}\n")
        assert load(master_hub, "prices", tmp_path / "price.csv", cwd=tmp_path).returncode == 0
        promotions = tmp_path / "promotions.json"
        promotions.write_text(json.dumps([promotion("MQ-P1", "MQ-A"), promotion("MQ-P2", "MQ-A", "20")]))
        first = load(master_hub, "promotions", promotions, cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        row = summary_rows(first.stderr)[promotions.name]
        assert (row["format"], *counts(row, "read", "created")) == ("json", 2, 2)
        loaded = int(row["version"])
        with master_hub.client(master_hub.keys["S001"]) as s1:
            active = s1.get("/v1/prices/S001/MQ-A", params=AT).json()["promotions"]
        assert sorted(p["promotion_id"] for p in active) == ["MQ-P1", "MQ-P2"]

        # JSON lines: a withdrawal, one the hub refuses (not alone), one of nothing, a bad row
        changes = tmp_path / "changes.jsonl"
        changes.write_text(
            "\n".join(
                json.dumps(r)
                for r in (
                    {"withdraw": "MQ-P2"},
                    {"withdraw": "MQ-P1", "reason": "ended early"},
                    {"withdraw": "MQ-NONE"},
                    {**promotion("MQ-P3", "MQ-A"), "percent": "150"},
                )
            )
        )
        done = load(master_hub, "promotions", changes, cwd=tmp_path)

        assert done.returncode == 3, done.stderr
        row = summary_rows(done.stderr)[changes.name]
        assert counts(row, "read", "created", "withdrawn", "quarantined") == (4, 0, 1, 2)
        assert int(row["version"]) == head_version(master_hub)
        assert "1 withdrawal(s) named nothing the hub holds" in flat(done.stderr)
        entries = report_entries(tmp_path / "quarantine.csv")
        assert [(e["record"], e["locator"], e["stage"], e["field"]) for e in entries] == [
            ("4", "line 4", "parse", "percent"),
            ("2", "line 2", "hub", "withdraw"),
        ]
        assert all(e["file"] == changes.name and e["reason"] for e in entries)
        with master_hub.client(master_hub.keys["S001"]) as s1:
            active = s1.get("/v1/prices/S001/MQ-A", params=AT).json()["promotions"]
            delta = s1.get("/v1/stores/S001/masterdata", params={"since": loaded}).json()
        assert [p["promotion_id"] for p in active] == ["MQ-P1"]
        assert [(kind, key, record) for _, kind, key, record in delta["changes"]] == [
            ("promotion", "MQ-P2", None)
        ]


# -- the way to the hub ----------------------------------------------------------------------


class TestTheHub:
    def test_a_busy_hub_is_waited_out(self, master_hub: RunningHub, tmp_path: Path) -> None:
        items = tmp_path / "items.json"
        items.write_text(json.dumps([{"sku": f"MB-{i}", "description": "Busy"} for i in range(3)]))
        with busy_front(master_hub.url, [503, 429]) as (url, answered):
            done = load(master_hub, "items", items, cwd=tmp_path, url=url, extra=("--batch", "2"))

        assert done.returncode == 0, done.stderr
        assert answered == [503, 429, 200, 200]
        row = summary_rows(done.stderr)[items.name]
        assert counts(row, "read", "created", "quarantined") == (3, 3, 0)
        with master_hub.client(master_hub.admin) as admin:
            assert [admin.get(f"/v1/products/MB-{i}").status_code for i in range(3)] == [200] * 3

    @pytest.mark.parametrize(
        ("which", "status", "reason"),
        [
            ("unknown", 401, "the key is unknown or revoked"),
            ("store", 403, "this endpoint needs an admin key"),
        ],
    )
    def test_a_key_that_may_not_load_stops_the_import_with_the_hubs_reason(
        self, master_hub: RunningHub, tmp_path: Path, which: str, status: int, reason: str
    ) -> None:
        items = tmp_path / "items.csv"
        items.write_text(f"sku,description\nMK-{which},Refused\n")
        key = "tf_0000_not_a_key" if which == "unknown" else master_hub.keys["S001"]
        done = load(master_hub, "items", items, cwd=tmp_path, key=key)

        assert done.returncode == 2, done.stderr
        message = flat(done.stderr)
        assert f"the hub answered {status}: {reason}" in message
        assert "import stopped" in message
        with master_hub.client(master_hub.admin) as admin:
            assert admin.get(f"/v1/products/MK-{which}").status_code == 404


# -- the command line ------------------------------------------------------------------------


class TestCommandLine:
    def test_a_dry_run_prints_each_row_as_it_would_be_sent(self, tmp_path: Path) -> None:
        prices = tmp_path / "prices.csv"
        prices.write_text(f"sku,price,currency,effective_from\nMD-A,1.50,EUR,{START}\nMD-B,-1,EUR,{START}\n")
        done = run_import("--kind", "prices", "--dry-run", "--json", prices, cwd=tmp_path)

        assert done.returncode == 3, done.stderr
        assert [json.loads(line) for line in done.stdout.splitlines()] == [
            {"sku": "MD-A", "price": "1.50", "currency": "EUR", "effective_from": START}
        ]
        row = summary_rows(done.stderr)[prices.name]
        assert counts(row, "read", "valid", "quarantined") == (2, 1, 1)
        assert "dry run" in done.stderr
        [entry] = report_entries(tmp_path / "quarantine.csv")
        assert (entry["record"], entry["stage"], entry["field"]) == ("2", "parse", "price")

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("--kind", "stock"), "--kind is items, prices or promotions, not stock"),
            (("--kind", "items", "--format", "poslog"), "with --kind, --format is csv or json, not poslog"),
            (("--kind", "items"), "give --hub URL and --api-key KEY"),
        ],
    )
    def test_a_usage_error_exits_2(self, args: tuple[str, ...], message: str, tmp_path: Path) -> None:
        items = tmp_path / "items.csv"
        items.write_text("sku\nMU-A\n")
        done = run_import(*args, items, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert message in flat(done.stderr)

    def test_an_unreadable_file_exits_2_and_the_others_load(
        self, master_hub: RunningHub, tmp_path: Path
    ) -> None:
        broken = tmp_path / "broken.csv"
        broken.write_text("sku,colour\nMR-A,red\n")
        items = tmp_path / "items.csv"
        items.write_text("sku\nMR-B\n")
        done = load(master_hub, "items", broken, items, cwd=tmp_path)

        assert done.returncode == 2, done.stderr
        assert "unknown columns colour" in flat(done.stderr)
        assert counts(summary_rows(done.stderr)[items.name], "read", "created") == (1, 1)
