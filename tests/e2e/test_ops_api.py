"""The operations API the console acts through, against a real hub process posting to the
reference ERP: records the ERP refuses (their fiscal period is closed) are dead-lettered by the
posting flow, listed with their reason, replayed once the period is reopened, or purged; one
store in detail; the transaction search; the reconciliation report; re-sends asked of a store;
and none of it for a store's key."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningHub, hub_process, record, reference_service, sales
from tillflow.config import TillflowConfig
from tillflow.connectors.settings import ConnectorSettings, HttpConnectorSettings
from tillflow.flows.posting import journal_id_for
from tillflow.model import Transaction
from tillflow.sim.pos import PosTrafficGenerator, demo_stores

DAY = date(2026, 11, 29)
STORES = demo_stores(2)
CLOSED = {"2026-08": "S002", "2026-09": "S001", "2026-10": "S001"}  # period -> the store sending into it
TRACE_ID = secrets.token_hex(16)
PROBLEM = "application/problem+json"


@dataclass
class Ops:
    hub: RunningHub
    erp_url: str
    sent: list[Transaction]  # accepted for DAY
    traced: Transaction  # sent alone, in trace TRACE_ID
    poison: dict[str, Transaction]  # by closed period
    conflict: Transaction  # S002's, refused: another record under an accepted identity

    def admin(self) -> httpx.Client:
        return self.hub.client(self.hub.admin)


def post(hub: RunningHub, store: str, txs: list[Transaction], **headers: str) -> dict[str, Any]:
    with hub.client(hub.keys[store]) as client:
        answer = client.post(
            "/v1/transactions", json={"transactions": [record(t) for t in txs]}, headers=headers
        )
    assert answer.status_code == 200, answer.text
    summary: dict[str, Any] = answer.json()["summary"]
    return summary


def dead_letters(client: httpx.Client, **params: str) -> dict[str, Any]:
    answer = client.get("/v1/dead-letters", params=params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def wait_for(what: str, check: Any) -> Any:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"never came: {what}")


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    """A hub posting to the reference ERP, both stores line by line, sent a day's sales, one
    sale in its own trace, a conflicting record, and a sale into each closed period (each
    dead-lettered by the posting flow)."""
    data_dir = tmp_path_factory.mktemp("ops")
    with reference_service("erp", data_dir / "erp") as erp:
        for period in CLOSED:
            assert (
                httpx.put(f"{erp.url}/admin/periods/{period}", json={"status": "closed"}).status_code == 200
            )
        config = TillflowConfig(
            stores=STORES, connectors=ConnectorSettings(erp=HttpConnectorSettings(url=erp.url))
        )
        with hub_process(data_dir, config) as hub:
            gen = PosTrafficGenerator(STORES, business_day=DAY, seed=7)
            sent = {store: sales(gen, store, 12) for store in ("S001", "S002")}
            for store, txs in sent.items():
                assert post(hub, store, txs)["accepted"] == len(txs)
            [traced] = sales(gen, "S001", 1)
            assert (
                post(hub, "S001", [traced], traceparent=f"00-{TRACE_ID}-{secrets.token_hex(8)}-01")[
                    "accepted"
                ]
                == 1
            )
            conflict = sent["S002"][0].model_copy(
                update={"ended_at": datetime(2026, 11, 29, 23, 0, tzinfo=UTC)}
            )
            assert post(hub, "S002", [conflict])["conflict"] == 1
            poison = {}
            for period, store in sorted(CLOSED.items()):
                late = PosTrafficGenerator(STORES, business_day=date.fromisoformat(f"{period}-28"), seed=1)
                [poison[period]] = sales(late, store, 1)
                assert post(hub, store, [poison[period]])["accepted"] == 1
            running = Ops(hub, erp.url, [*sent["S001"], *sent["S002"], traced], traced, poison, conflict)
            with running.admin() as client:
                wait_for("three dead letters", lambda: dead_letters(client)["total"] == len(CLOSED))
            yield running


class TestDeadLetters:
    def test_each_store_sees_its_dead_letters_newest_first_with_the_erps_reason(self, ops: Ops) -> None:
        with ops.admin() as client:
            s001 = dead_letters(client, store_id="S001")
            s002 = dead_letters(client, store_id="S002", group="posting")
            assert dead_letters(client, store_id="S002", group="inventory") == {
                "total": 0,
                "dead_letters": [],
            }
            paged = dead_letters(client, store_id="S001", limit="1", offset="1")

        assert s001["total"] == 2
        newest, oldest = s001["dead_letters"]
        assert newest["transaction_id"] == ops.poison["2026-10"].transaction_id
        assert oldest["transaction_id"] == ops.poison["2026-09"].transaction_id
        assert paged["total"] == 2 and [d["id"] for d in paged["dead_letters"]] == [oldest["id"]]
        assert newest["dead_lettered_at"] >= oldest["dead_lettered_at"] and newest["id"] > oldest["id"]
        [row] = s002["dead_letters"]
        assert (row["group"], row["store_id"], row["type"]) == (
            "posting",
            "S002",
            "retail.transaction.completed.v1",
        )
        assert (
            row["transaction_id"] == row["subject"] == row["event_id"] == ops.poison["2026-08"].transaction_id
        )
        assert "2026-08" in row["reason"] and "closed" in row["reason"]
        assert row["attempts"] >= 1 and row["age_seconds"] >= 0 and row["event_seq"] > len(ops.sent)

    def test_one_dead_letter_shows_its_event_body(self, ops: Ops) -> None:
        with ops.admin() as client:
            [row] = dead_letters(client, store_id="S002")["dead_letters"]
            shown = client.get(f"/v1/dead-letters/{row['id']}")
            missing = client.get("/v1/dead-letters/999999")

        assert shown.status_code == 200
        body = shown.json()
        assert body["data_format"] == "json"
        assert body["data"]["store_id"] == "S002" and body["data"]["business_day"] == "2026-08-28"
        assert body["source"] == "/stores/S002/registers/" + body["data"]["register_id"]
        assert (body["reason"], body["id"]) == (row["reason"], row["id"])
        assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM
        assert "999999" in missing.json()["detail"]

    def test_a_replay_needs_why_and_known_ids_then_the_flow_posts_the_record(self, ops: Ops) -> None:
        poison = ops.poison["2026-10"]
        journal = f"{ops.erp_url}/api/journals/{journal_id_for(poison.transaction_id)}"
        with ops.admin() as client:
            [dead] = [
                d
                for d in dead_letters(client)["dead_letters"]
                if d["transaction_id"] == poison.transaction_id
            ]
            unexplained = client.post("/v1/dead-letters/replay", json={"ids": [dead["id"]]})
            unknown = client.post("/v1/dead-letters/replay", json={"ids": [dead["id"], 999998], "why": "x"})
            nothing = client.post("/v1/dead-letters/replay", json={"why": "x"})
            assert httpx.get(journal).status_code == 404  # refused: never posted
            assert client.get(f"/v1/dead-letters/{dead['id']}").status_code == 200  # nothing was done

            # the controller reopens the period; the operator replays the record
            assert (
                httpx.put(f"{ops.erp_url}/admin/periods/2026-10", json={"status": "open"}).status_code == 200
            )
            replayed = client.post(
                "/v1/dead-letters/replay", json={"ids": [dead["id"]], "why": "period reopened"}
            )
            left = dead_letters(client, store_id="S001")

        assert unexplained.status_code == 422 and unexplained.headers["content-type"] == PROBLEM
        assert any(e["field"] == "why" for e in unexplained.json()["errors"])
        assert unknown.status_code == 404 and unknown.json()["unknown"] == [999998]
        assert "999998" in unknown.json()["detail"]
        assert nothing.status_code == 422
        assert replayed.status_code == 200 and replayed.json() == {"replayed": 1}
        assert poison.transaction_id not in [d["transaction_id"] for d in left["dead_letters"]]
        posted = wait_for("the replayed record posted", lambda: httpx.get(journal).status_code == 200)
        assert posted

    def test_a_purge_deletes_for_good(self, ops: Ops) -> None:
        poison = ops.poison["2026-09"]
        with ops.admin() as client:
            [dead] = [
                d
                for d in dead_letters(client, store_id="S001")["dead_letters"]
                if d["transaction_id"] == poison.transaction_id
            ]
            other_flow = client.post(
                "/v1/dead-letters/purge", json={"ids": [dead["id"]], "group": "inventory", "why": "x"}
            )
            purged = client.post(
                "/v1/dead-letters/purge", json={"ids": [dead["id"]], "group": "posting", "why": "test till"}
            )
            again = client.get(f"/v1/dead-letters/{dead['id']}")

        assert other_flow.status_code == 404  # no dead letter of that id in that flow
        assert purged.status_code == 200 and purged.json() == {"purged": 1}
        assert again.status_code == 404


class TestStoreDetail:
    def test_a_store_with_its_heartbeat_dead_letters_conflicts_and_books(self, ops: Ops) -> None:
        missing = "S002:R01:2026-11-28:00000042"
        beat = {
            "agent_version": "1.0.0",
            "sent_at": datetime.now(UTC).isoformat(),
            "buffer_depth": 3,
            "delivered_total": 25,
            "conflicts": 1,
            "last_error": "hub unreachable: connection reset",
            "missing": [missing],
        }
        with ops.hub.client(ops.hub.keys["S002"]) as store_client:
            assert store_client.post("/v1/stores/S002/heartbeat", json=beat).status_code == 200
        with ops.admin() as client:
            answer = client.get("/v1/stores/S002/detail", params={"day": DAY.isoformat()})
            health = client.get("/v1/stores/health").json()
            unknown = client.get("/v1/stores/S999/detail")
            bad_day = client.get("/v1/stores/S002/detail", params={"day": "yesterday"})

        assert answer.status_code == 200, answer.text
        detail = answer.json()
        [entry] = [s for s in health["stores"] if s["store_id"] == "S002"]
        shared = set(entry) - {"seconds_since"}
        assert {k: detail[k] for k in shared} == {k: entry[k] for k in shared}
        assert detail["status"] == "online" and detail["buffer_depth"] == 3
        assert detail["last_error"] == "hub unreachable: connection reset" and detail["missing"] == [missing]
        assert detail["dead_letters"]["count"] == 1
        assert detail["dead_letters"]["newest"][0]["transaction_id"] == ops.poison["2026-08"].transaction_id
        assert detail["recent_conflicts"]["count"] == 1
        conflicts = detail["recent_conflicts"]["newest"]
        assert [c["transaction_id"] for c in conflicts] == [ops.conflict.transaction_id]
        assert detail["masterdata"]["behind"] == 0 and detail["masterdata"]["up_to_date"] is True
        rec = detail["reconciliation"]
        assert rec["business_day"] == DAY.isoformat()
        assert rec["transactions"] == sum(1 for t in ops.sent if t.store_id == "S002")
        assert rec["status"] in ("matched", "mismatched") and rec["report"].startswith(
            "/v1/reconciliation/report"
        )
        assert unknown.status_code == 404 and unknown.headers["content-type"] == PROBLEM
        assert bad_day.status_code == 422


class TestSearch:
    def search(self, ops: Ops, **params: str) -> list[dict[str, Any]]:
        with ops.admin() as client:
            answer = client.get("/v1/transactions-search", params=params)
        assert answer.status_code == 200, answer.text
        found: list[dict[str, Any]] = answer.json()
        return found

    def test_by_exact_id(self, ops: Ops) -> None:
        tx = ops.sent[3]
        [found] = self.search(ops, q=tx.transaction_id)
        assert found["transaction_id"] == tx.transaction_id
        assert (found["store_id"], found["business_day"]) == (tx.store_id, DAY.isoformat())
        assert found["event_seq"] >= 1 and found["traceparent"].startswith("00-")

    def test_by_prefix_newest_first(self, ops: Ops) -> None:
        prefix = f"S001:{ops.sent[0].register_id}:{DAY.isoformat()}"
        found = self.search(ops, q=prefix)
        expected = {t.transaction_id for t in ops.sent if t.transaction_id.startswith(prefix)}
        assert {f["transaction_id"] for f in found} == expected
        times = [f["received_at"] for f in found]
        assert times == sorted(times, reverse=True)
        late = self.search(ops, q=ops.poison["2026-10"].transaction_id)
        assert self.search(ops, q="S001:", business_day="2026-10-28") == late and len(late) == 1
        assert self.search(ops, q="S001:", store_id="S002") == []
        assert len(self.search(ops, q="S00", limit="5")) == 5

    def test_by_trace_id(self, ops: Ops) -> None:
        [found] = self.search(ops, q=TRACE_ID)
        assert found["transaction_id"] == ops.traced.transaction_id
        assert found["traceparent"].split("-")[1] == TRACE_ID

    def test_a_bad_business_day_is_refused(self, ops: Ops) -> None:
        with ops.admin() as client:
            answer = client.get("/v1/transactions-search", params={"q": "S001", "business_day": "2026-02-30"})
        assert answer.status_code == 422 and answer.headers["content-type"] == PROBLEM


class TestReconciliationReport:
    def test_the_report_is_html_naming_the_store_days(self, ops: Ops) -> None:
        with ops.admin() as client:
            answer = client.get("/v1/reconciliation/report", params={"day": DAY.isoformat()})
            one = client.get("/v1/reconciliation/report", params={"day": DAY.isoformat(), "store_id": "S002"})
            bad = client.get("/v1/reconciliation/report", params={"day": "2026-13-01"})

        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
        page = answer.text
        assert page.startswith("<!DOCTYPE html>") and f"Reconciliation {DAY}" in page
        for store in ("S001", "S002"):
            assert f"{store} {DAY.isoformat()}" in page
        assert "S002 2026-11-29" in one.text and "S001 2026-11-29" not in one.text
        assert bad.status_code == 422 and bad.headers["content-type"] == PROBLEM
        assert "2026-13-01" in bad.json()["detail"]


class TestResend:
    def test_an_operator_asks_a_store_for_what_the_hub_lacks(self, ops: Ops) -> None:
        lacking = f"S001:R01:{DAY.isoformat()}:00099999"
        held = ops.sent[0].transaction_id
        with ops.admin() as client:
            asked = client.post(
                "/v1/stores/S001/resend",
                json={"transaction_ids": [lacking, held], "why": "gap in the Z report"},
            )
            detail = client.get("/v1/stores/S001/detail").json()
            foreign = client.post(
                "/v1/stores/S001/resend", json={"transaction_ids": ["S002:R01:2026-11-29:1"]}
            )
            empty = client.post("/v1/stores/S001/resend", json={"transaction_ids": []})
            unknown = client.post("/v1/stores/S999/resend", json={"transaction_ids": [lacking]})

        assert asked.status_code == 202, asked.text
        assert asked.json() == {"store_id": "S001", "requested": 2, "pending": [lacking]}
        assert detail["resend_requested"] == [lacking]
        assert foreign.status_code == 422 and "S002:R01:2026-11-29:1" in foreign.json()["detail"]
        assert empty.status_code == 422
        assert unknown.status_code == 404


class TestAccess:
    @pytest.mark.parametrize(
        ("method", "path", "body"),
        [
            ("GET", "/v1/dead-letters", None),
            ("GET", "/v1/dead-letters/1", None),
            ("POST", "/v1/dead-letters/replay", {"ids": [1], "why": "x"}),
            ("POST", "/v1/dead-letters/purge", {"ids": [1], "why": "x"}),
            ("GET", "/v1/stores/S001/detail", None),
            ("GET", "/v1/transactions-search?q=S001", None),
            ("GET", f"/v1/reconciliation/report?day={DAY}", None),
            ("POST", "/v1/stores/S001/resend", {"transaction_ids": ["S001:R01:2026-11-29:00000001"]}),
        ],
    )
    def test_a_store_key_is_refused_and_no_key_is_unauthenticated(
        self, ops: Ops, method: str, path: str, body: dict[str, Any] | None
    ) -> None:
        with ops.hub.client(ops.hub.keys["S001"]) as store_client, ops.hub.client() as anonymous:
            refused = store_client.request(method, path, json=body)
            unauthenticated = anonymous.request(method, path, json=body)
        assert refused.status_code == 403 and refused.headers["content-type"] == PROBLEM
        assert refused.json()["title"] == "Admin key required"
        assert unauthenticated.status_code == 401
