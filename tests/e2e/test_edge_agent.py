"""The store agent as the tills see it, over real processes: a `tillflow hub` and a
`tillflow edge` forwarding to it. What the agent acknowledged reaches the hub exactly once,
through a SIGKILL of the agent and while the hub is down; a corrupt request is answered as the
hub answers it; a reused sequence stops at the agent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.conftest import RunningHub, hub_process
from tests.servers import free_port
from tests.shared_data import sample
from tillflow.config import TillflowConfig
from tillflow.edge.agent import key_variable
from tillflow.flows.z_report import z_reports
from tillflow.formats.policy import PolicyMaps
from tillflow.hub.runtime import stop_process
from tillflow.model import Store, Transaction, transaction_id
from tillflow.processes import HubProcess
from tillflow.sim.pos import PosTrafficGenerator, demo_stores

pytestmark = pytest.mark.e2e

STORES = demo_stores(2)
CLI = [sys.executable, "-m", "tillflow.cli"]
PROBLEM = "application/problem+json"
XML = {"content-type": "application/xml"}
NCR_SMALL = sample("poslog", "ncr-acs-2.1", "SMALL.xml")  # a sign-on and one sale of NCR store 9


class EdgeAgentProcess:
    """A `tillflow edge` process for the stores given, with their hub keys in its environment."""

    def __init__(
        self,
        hub_url: str,
        keys: dict[str, str],
        data_dir: Path,
        *,
        port: int | None = None,
        options: tuple[str, ...] = (),
        local_key: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith("TILLFLOW_")}
        env |= {key_variable(store): key for store, key in keys.items()}
        if local_key is not None:
            env["TILLFLOW_EDGE_LOCAL_KEY"] = local_key
        args = [arg for store in keys for arg in ("--store", store)]
        args += ["--hub", hub_url, "--data-dir", str(data_dir), "--port", str(self.port)]
        args += ["--max-backoff", "1", "--heartbeat-seconds", "1", *options]
        data_dir.mkdir(parents=True, exist_ok=True)
        self._log = (data_dir / "edge.log").open("ab")
        self.proc = subprocess.Popen(
            [*CLI, "edge", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the agent exited with {self.proc.returncode}; see {self.data_dir}/edge.log"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the agent was not ready in time; see {self.data_dir}/edge.log")

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def status(self, key: str | None = None) -> dict[str, Any]:
        with self.client(key) as client:
            body: dict[str, Any] = client.get("/v1/edge/status").raise_for_status().json()
        return body

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop_process(self.proc)
        if not self._log.closed:
            self._log.close()


@contextmanager
def edge_agent(
    hub_url: str, keys: dict[str, str], data_dir: Path, **kwargs: Any
) -> Iterator[EdgeAgentProcess]:
    agent = EdgeAgentProcess(hub_url, keys, data_dir, **kwargs)
    try:
        yield agent
    finally:
        agent.stop()


def traffic(business_day: date, n: int) -> list[dict[str, Any]]:
    """`n` transactions of the two stores' tills on `business_day` (each test its own day, so
    the tests can share the module's hub), as JSON records."""
    gen = PosTrafficGenerator(STORES, business_day=business_day, seed=business_day.day)
    return [tx.model_dump(mode="json") for tx in gen.transactions(n)]


def eventually(probe: Callable[[], Any], *, within: float = 45.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def drained(agent: EdgeAgentProcess, key: str | None = None) -> bool:
    """Nothing of any store waits in the agent's outbox."""
    return all(s["buffer_depth"] == 0 for s in agent.status(key)["stores"].values())


def hub_counts(hub: RunningHub) -> dict[str, int]:
    with hub.client(hub.admin) as client:
        stats = client.get("/v1/stats").raise_for_status().json()
    return {"transactions": stats["transactions"], "conflicts": stats["conflicts"]}


class HubCounts:
    """What the hub took in since this was made: transactions accepted, conflicts recorded."""

    def __init__(self, hub: RunningHub) -> None:
        self.hub = hub
        self.start = hub_counts(hub)

    def added(self) -> dict[str, int]:
        now = hub_counts(self.hub)
        return {k: now[k] - self.start[k] for k in now}


def post(agent: EdgeAgentProcess, records: list[dict[str, Any]], **headers: str) -> dict[str, Any]:
    with agent.client() as client:
        answer = client.post("/v1/transactions", json={"transactions": records}, headers=headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def tx_id(record: dict[str, Any]) -> str:
    day = date.fromisoformat(record["business_day"])
    return transaction_id(record["store_id"], record["register_id"], day, record["sequence"])


def batches(records: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [records[i : i + size] for i in range(0, len(records), size)]


class TestForwarding:
    def test_every_acknowledged_transaction_reaches_the_hub_once_in_till_order(
        self, hub: RunningHub, tmp_path: Path
    ) -> None:
        records = traffic(date(2026, 11, 2), 2000)
        counts = HubCounts(hub)
        # the module's hub takes at most 50 records a request: the agent's batches of 500 shrink
        with edge_agent(hub.url, hub.keys, tmp_path / "edge") as agent:
            verdicts = [r["status"] for part in batches(records, 100) for r in post(agent, part)["results"]]
            again = post(agent, records[:100])["summary"]
            assert eventually(lambda: drained(agent))
            status = agent.status()["stores"]
        assert verdicts == ["accepted"] * 2000
        assert again == {"accepted": 0, "duplicate": 100, "conflict": 0, "invalid": 0}
        assert counts.added() == {"transactions": 2000, "conflicts": 0}
        assert sum(s["delivered_total"] for s in status.values()) == 2000
        assert all(s["conflicts"] == 0 and s["last_error"] is None for s in status.values())
        # a register's transactions, as the till sent them, logged at the hub in till order
        register = [r for r in records if r["store_id"] == "S001" and r["register_id"] == "R01"]
        with hub.client(hub.keys["S001"]) as client:
            logged = [client.get(f"/v1/transactions/{tx_id(r)}").raise_for_status().json() for r in register]
        assert [t["transaction"] for t in logged] == [
            Transaction.model_validate(r).model_dump(mode="json") for r in register
        ]
        seqs = [t["event_seq"] for t in logged]
        assert seqs == sorted(seqs) and len(register) == 500

    def test_a_sigkill_in_the_middle_of_forwarding_loses_and_repeats_nothing(
        self, hub: RunningHub, tmp_path: Path
    ) -> None:
        records = traffic(date(2026, 11, 3), 2000)
        counts = HubCounts(hub)
        port = free_port()
        acknowledged: list[dict[str, Any]] = []
        unanswered: list[dict[str, Any]] = []
        slow = ("--batch", "10", "--linger-ms", "0")
        agent = EdgeAgentProcess(hub.url, hub.keys, tmp_path / "edge", port=port, options=slow)
        try:

            def till() -> None:  # posts until the agent stops answering; keeps what was not answered
                for part in batches(records, 40):
                    try:
                        results = [] if unanswered else post(agent, part)["results"]
                    except (httpx.HTTPError, AssertionError):
                        results = []
                    if not results:
                        unanswered.extend(part)
                    acknowledged.extend(
                        r for r, v in zip(part, results, strict=False) if v["status"] == "accepted"
                    )

            pos = threading.Thread(target=till)
            pos.start()
            assert eventually(lambda: counts.added()["transactions"] >= 200 and len(acknowledged) >= 400)
            agent.kill()  # the forwarder is halfway through the outbox
            pos.join()
            at_kill = counts.added()["transactions"]
            agent = EdgeAgentProcess(hub.url, hub.keys, tmp_path / "edge", port=port, options=slow)
            resent = [r["status"] for part in batches(unanswered, 100) for r in post(agent, part)["results"]]
            assert eventually(lambda: drained(agent))
        finally:
            agent.stop()
        assert 0 < at_kill < 2000
        assert set(resent) <= {"accepted", "duplicate"}  # stored before the kill, or not
        assert len(acknowledged) + len(resent) == 2000
        assert counts.added() == {"transactions": 2000, "conflicts": 0}
        with hub.client(hub.keys["S002"]) as client:
            for r in [r for r in acknowledged if r["store_id"] == "S002"][-20:]:
                assert client.get(f"/v1/transactions/{tx_id(r)}").status_code == 200

    def test_with_the_hub_down_for_the_whole_capture_everything_arrives_once_it_is_up(
        self, tmp_path: Path
    ) -> None:
        records = traffic(date(2026, 11, 4), 600)
        (tmp_path / "hub").mkdir()
        with hub_process(tmp_path / "hub", TillflowConfig(stores=STORES)) as hub:
            hub.process.stop()  # the hub is down before the store opens
            with edge_agent(hub.url, hub.keys, tmp_path / "edge") as agent:
                verdicts = {
                    r["status"] for part in batches(records, 100) for r in post(agent, part)["results"]
                }
                waiting = eventually(lambda: all(s["last_error"] for s in agent.status()["stores"].values()))
                status = agent.status()["stores"]
                restarted = HubProcess(hub.config_path, hub.data_dir / "hub-again.log", hub.url)
                try:
                    restarted.wait_ready()
                    assert eventually(lambda: drained(agent))
                    counts = hub_counts(hub)
                finally:
                    restarted.stop()
        assert verdicts == {"accepted"}
        assert waiting and "unreachable" in status["S001"]["last_error"]
        assert sum(s["buffer_depth"] for s in status.values()) == 600
        assert status["S001"]["oldest_unsent_age_seconds"] > 0
        assert counts == {"transactions": 600, "conflicts": 0}


class TestTheTillsAnswers:
    def test_a_corrupt_request_is_answered_as_the_hub_does_and_the_good_records_are_kept(
        self, hub: RunningHub, tmp_path: Path
    ) -> None:
        good, bad, other, foreign = traffic(date(2026, 11, 5), 4)
        bad["totals"]["grand_total"] = float(bad["totals"]["grand_total"])
        foreign["store_id"] = "S999"
        counts = HubCounts(hub)
        with edge_agent(hub.url, hub.keys, tmp_path / "edge", local_key="till-secret") as agent:
            with agent.client() as client:
                unauthenticated = client.post("/v1/transactions", json={"transactions": [good]})
            with agent.client("till-secret") as client:
                malformed = client.post(
                    "/v1/transactions",
                    content=b'{"transactions": [',
                    headers={"content-type": "application/json"},
                )
                not_a_batch = client.post("/v1/transactions", json=[good])
                refused = client.post("/v1/transactions", json={"transactions": [good, foreign]})
                answer = client.post("/v1/transactions", json={"transactions": [good, bad, other]})
            assert eventually(lambda: drained(agent, "till-secret"))
        assert unauthenticated.status_code == 401 and unauthenticated.headers["content-type"] == PROBLEM
        assert malformed.status_code == 400 and malformed.headers["content-type"] == PROBLEM
        assert malformed.json()["title"] == "Malformed JSON"
        assert not_a_batch.status_code == 400 and not_a_batch.json()["type"].endswith("/not-a-batch")
        assert refused.status_code == 403 and "S999" in refused.json()["detail"]
        results = answer.json()["results"]
        assert [r["status"] for r in results] == ["accepted", "invalid", "accepted"]
        assert results[1]["errors"][0]["field"] == "totals.grand_total"
        assert "decimal strings" in results[1]["errors"][0]["reason"]
        assert counts.added() == {"transactions": 2, "conflicts": 0}

    def test_a_poslog_document_is_answered_per_transaction_as_the_hub_does(self, tmp_path: Path) -> None:
        config = TillflowConfig(
            stores=[Store(store_id="S009", timezone="America/New_York", currency="USD")],
            policy=PolicyMaps(store_aliases={"9": "S009"}),
        )
        (tmp_path / "hub").mkdir()
        with hub_process(tmp_path / "hub", config) as hub:
            options = ("--config", str(hub.config_path))  # the hub's stores and policy maps
            with edge_agent(hub.url, hub.keys, tmp_path / "edge", options=options) as agent:
                with agent.client() as client:
                    first = client.post("/v1/transactions", content=NCR_SMALL.read_bytes(), headers=XML)
                    again = client.post("/v1/transactions", content=NCR_SMALL.read_bytes(), headers=XML)
                assert eventually(lambda: drained(agent))
            with hub.client(hub.keys["S009"]) as client:
                at_hub = client.get("/v1/transactions/S009:34:2017-09-30:00000161")
        assert [(r["index"], r["status"]) for r in first.json()["results"]] == [
            (0, "not_posted"),
            (1, "accepted"),
        ]
        assert first.json()["results"][0]["errors"] == [{"field": "$", "reason": "sign-on"}]
        assert [r["status"] for r in again.json()["results"]] == ["not_posted", "duplicate"]
        assert at_hub.status_code == 200

    def test_a_file_dropped_in_the_drop_folder_reaches_the_hub_and_moves_to_done(
        self, tmp_path: Path
    ) -> None:
        config = TillflowConfig(
            stores=[Store(store_id="S009", timezone="America/New_York", currency="USD")],
            policy=PolicyMaps(store_aliases={"9": "S009"}),
        )
        (tmp_path / "hub").mkdir()
        with hub_process(tmp_path / "hub", config) as hub:
            options = ("--config", str(hub.config_path))
            with edge_agent(hub.url, hub.keys, tmp_path / "edge", options=options) as agent:
                drop = tmp_path / "edge" / "drop"
                (drop / "z.xml.part").write_bytes(NCR_SMALL.read_bytes())  # copied, then renamed
                (drop / "z.xml.part").rename(drop / "z.xml")
                assert eventually(lambda: (drop / "done" / "z.xml").exists())
                assert eventually(lambda: drained(agent))
            with hub.client(hub.keys["S009"]) as client:
                at_hub = client.get("/v1/transactions/S009:34:2017-09-30:00000161")
        assert at_hub.status_code == 200
        assert not (drop / "z.xml").exists() and not list((drop / "failed").iterdir())

    def test_a_full_outbox_is_a_507_problem_and_loses_nothing_acknowledged(
        self, hub: RunningHub, tmp_path: Path
    ) -> None:
        records = [r for r in traffic(date(2026, 11, 8), 1000) if r["store_id"] == "S001"]
        counts = HubCounts(hub)
        acknowledged: list[dict[str, Any]] = []
        with edge_agent(hub.url, hub.keys, tmp_path / "edge", options=("--max-outbox-mb", "0.2")) as agent:
            with agent.client() as client:
                for part in batches(records, 20):
                    answer = client.post("/v1/transactions", json={"transactions": part})
                    if answer.status_code != 200:
                        break
                    acknowledged += part
            assert eventually(lambda: drained(agent))
        assert answer.status_code == 507 and answer.headers["content-type"] == PROBLEM
        assert answer.json()["title"] == "Insufficient Storage"
        assert "outbox cannot grow" in answer.json()["detail"]
        assert 0 < len(acknowledged) < len(records)
        assert counts.added() == {"transactions": len(acknowledged), "conflicts": 0}
        with hub.client(hub.keys["S001"]) as client:
            for r in [r for r in acknowledged if r["store_id"] == "S001"][-10:]:
                assert client.get(f"/v1/transactions/{tx_id(r)}").status_code == 200

    def test_a_reused_sequence_with_other_content_stops_at_the_agent(
        self, hub: RunningHub, tmp_path: Path
    ) -> None:
        [original] = traffic(date(2026, 11, 6), 1)
        clash = {**original, "operator_id": "RESTORED-FROM-BACKUP"}
        counts = HubCounts(hub)
        with edge_agent(hub.url, hub.keys, tmp_path / "edge") as agent:
            first = post(agent, [original])["results"][0]["status"]
            second = post(agent, [clash])["results"][0]["status"]
            assert eventually(lambda: drained(agent))
            status = agent.status()["stores"][original["store_id"]]
        with hub.client(hub.keys[original["store_id"]]) as client:
            at_hub = client.get(f"/v1/transactions/{tx_id(original)}").json()
        assert (first, second) == ("accepted", "conflict")
        assert status["local_conflicts"] == 1 and status["delivered_total"] == 1
        assert at_hub["transaction"]["operator_id"] == original["operator_id"]
        assert at_hub["conflicts"] == 0  # the clash was never forwarded
        assert counts.added() == {"transactions": 1, "conflicts": 0}


class TestDayClose:
    def test_close_day_sends_the_z_report_of_the_outbox_after_the_days_transactions(
        self, hub: RunningHub, tmp_path: Path
    ) -> None:
        day = date(2026, 11, 7)
        records = [r for r in traffic(day, 600) if r["store_id"] == "S001"]
        # the day's transactions linger in the outbox while the report is queued behind them
        with edge_agent(hub.url, hub.keys, tmp_path / "edge", options=("--linger-ms", "3000")) as agent:
            post(agent, records)
            args = ["--store", "S001", "--day", day.isoformat(), "--url", agent.url, "--json"]
            closed = subprocess.run(
                [*CLI, "edge", "close-day", *args],
                capture_output=True,
                check=False,
                env={k: v for k, v in os.environ.items() if not k.startswith("TILLFLOW_")},
            )
            assert closed.returncode == 0, closed.stderr.decode()
            assert eventually(lambda: agent.status()["stores"]["S001"]["day_closes_pending"] == 0)
        with hub.client(hub.keys["S001"]) as client:
            closes = client.get("/v1/day-closes", params={"day": day.isoformat(), "store": "S001"}).json()
            received = [client.get(f"/v1/transactions/{tx_id(r)}").json()["received_at"] for r in records]
        [expected] = z_reports([Transaction.model_validate(r) for r in records], closed_at=datetime.now(UTC))
        sent = orjson.loads(closed.stdout)
        assert sent["registers"] == orjson.loads(expected.model_dump_json())["registers"]
        [at_hub] = closes["day_closes"]
        assert [
            (r["register_id"], r["transaction_count"], r["last_sequence"]) for r in at_hub["registers"]
        ] == [(r.register_id, r.transaction_count, r.last_sequence) for r in expected.registers]
        assert at_hub["received_at"] > max(received)  # sent after every transaction it counts
