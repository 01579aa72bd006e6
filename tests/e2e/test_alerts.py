"""Alert rules through a real hub process and a webhook receiver: a store that beats and falls
silent fires `store_offline`, the receiver gets it signed (after its first answer failed) and gets
"resolved" once the store beats again; a dead letter fires `dead_letters` and purging it clears
it. `GET /v1/alerts` lists them with the rules, and an admin acknowledges one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest

from tests.builders import cloud_event
from tests.e2e.conftest import RunningHub, hub_process
from tillflow.bootstrap import bootstrap
from tillflow.config import HubSettings, TillflowConfig
from tillflow.observe.alert_rules import AlertSettings, DeadLettersRule, StoreOfflineRule
from tillflow.observe.webhook import SECRET_VARIABLE, SIGNATURE_HEADER, verify
from tillflow.ports import DeadLetterSelection
from tillflow.sim.pos import demo_stores

SECRET = "webhook-test-secret"
DEADLINE = 90.0  # seconds a test waits for what it expects before it gives up


class Receiver:
    """A webhook receiver on a loopback port: keeps every request, refuses the first with 503."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    status = 503 if not receiver.requests else 200
                    receiver.requests.append((dict(self.headers.items()), body, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def accepted(self) -> list[tuple[dict[str, str], bytes]]:
        """The requests answered 200, in the order they came."""
        with self.lock:
            return [(headers, body) for headers, body, status in self.requests if status == 200]

    def states_of(self, rule: str, subject: str) -> list[str]:
        found = [orjson.loads(body) for _, body in self.accepted()]
        return [
            doc["state"]
            for doc in found
            if (doc["alert"]["rule"], doc["alert"]["subject"]) == (rule, subject)
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[RunningHub]:
    """A hub for S001 and S002 that takes a store as offline after half a second of silence,
    alerts once it was offline 1.2 s more or the inventory flow has a dead letter, and evaluates
    five times a second; its webhook signs with SECRET."""
    alerts = AlertSettings(
        evaluate_seconds=0.2,
        webhook_url=receiver.url,
        rules=[
            StoreOfflineRule(name="store-offline", kind="store_offline", minutes=0.02, severity="critical"),
            DeadLettersRule(name="inventory-dlq", kind="dead_letters", group="inventory", above=0),
        ],
    )
    config = TillflowConfig(hub=HubSettings(store_offline_seconds=0.5), stores=demo_stores(2), alerts=alerts)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SECRET_VARIABLE, SECRET)
        with hub_process(tmp_path_factory.mktemp("alerts"), config) as hub:
            yield hub


def eventually(probe: Callable[[], Any], what: str) -> Any:
    """The first truthy answer of `probe` (fails after DEADLINE)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.1)


def beat(hub: RunningHub, store_id: str) -> None:
    doc = {
        "agent_version": "1.0.0",
        "sent_at": datetime.now(UTC).isoformat(),
        "buffer_depth": 0,
        "delivered_total": 0,
        "conflicts": 0,
    }
    with hub.client(hub.keys[store_id]) as client:
        assert client.post(f"/v1/stores/{store_id}/heartbeat", json=doc).status_code == 200


def alerts(hub: RunningHub, state: str = "all") -> dict[str, Any]:
    with hub.client(hub.admin) as admin:
        answer = admin.get("/v1/alerts", params={"state": state})
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def alert_of(hub: RunningHub, rule: str, subject: str, state: str) -> dict[str, Any] | None:
    return next(
        (a for a in alerts(hub, state)["alerts"] if (a["rule"], a["subject"]) == (rule, subject)), None
    )


def silent_store(hub: RunningHub, store_id: str) -> dict[str, Any]:
    """The firing alert of a store that beat once (now, unless it already did) and fell silent."""
    if alert_of(hub, "store-offline", store_id, "all") is None:
        beat(hub, store_id)
    found: dict[str, Any] = eventually(
        lambda: alert_of(hub, "store-offline", store_id, "firing"), f"{store_id} offline"
    )
    return found


class TestStoreOffline:
    def test_a_silent_store_fires_signed_and_clears_when_it_beats_again(
        self, running: RunningHub, receiver: Receiver
    ) -> None:
        beat(running, "S001")

        fired = eventually(lambda: alert_of(running, "store-offline", "S001", "firing"), "S001 offline")
        eventually(lambda: receiver.states_of("store-offline", "S001") == ["firing"], "the firing webhook")
        beat(running, "S001")
        cleared = eventually(lambda: alert_of(running, "store-offline", "S001", "resolved"), "S001 back")
        eventually(lambda: receiver.states_of("store-offline", "S001") == ["firing", "resolved"], "resolved")

        assert fired["id"] == cleared["id"] and fired["kind"] == "store_offline"
        assert fired["severity"] == "critical" and fired["threshold"] == 0.02
        assert fired["value"] >= 0.02 and "S001" in fired["summary"]
        assert cleared["resolved_at"] is not None
        # S002 was never heard from: unknown, not offline
        assert alert_of(running, "store-offline", "S002", "all") is None
        # the receiver's first answer failed: the alert came again, signed over the raw body
        assert receiver.requests[0][2] == 503
        for headers, body in receiver.accepted():
            assert verify(SECRET.encode(), body, headers[SIGNATURE_HEADER])
        sent = [orjson.loads(body) for _, body in receiver.accepted()]
        first = next(doc for doc in sent if doc["alert"]["subject"] == "S001")
        assert first["alert"]["id"] == fired["id"] and first["alert"]["state"] == "firing"


class TestDeadLetters:
    def test_a_dead_letter_fires_and_purging_it_clears_it(
        self, running: RunningHub, receiver: Receiver
    ) -> None:
        services = bootstrap(running.config)
        try:
            # an event the inventory flow cannot read: it is dead-lettered at once
            services.event_log.append_events([cloud_event(1)])
            fired = eventually(
                lambda: alert_of(running, "inventory-dlq", "inventory", "firing"), "the dead letter"
            )
            assert (fired["value"], fired["threshold"]) == (1, 0)

            services.event_log.purge_dead_letters(
                DeadLetterSelection(group="inventory"), actor="ops", why="test"
            )
            eventually(lambda: alert_of(running, "inventory-dlq", "inventory", "resolved"), "the purge")
            eventually(
                lambda: receiver.states_of("inventory-dlq", "inventory") == ["firing", "resolved"], "hooks"
            )
        finally:
            services.close()


class TestApi:
    def test_the_listing_shows_the_rules_and_firing_alerts_first(self, running: RunningHub) -> None:
        silent_store(running, "S002")

        body = alerts(running)

        assert [rule["name"] for rule in body["rules"]] == ["store-offline", "inventory-dlq"]
        assert body["rules"][0] == {
            "name": "store-offline",
            "severity": "critical",
            "kind": "store_offline",
            "minutes": 0.02,
        }
        states = [a["state"] for a in body["alerts"]]
        assert states == sorted(states)  # "firing" < "resolved"
        assert set(body["alerts"][0]) == {
            "id", "rule", "kind", "subject", "severity", "state", "summary", "value", "threshold",
            "fired_at", "resolved_at", "acknowledged_at", "acknowledged_by",
        }  # fmt: skip

    def test_an_admin_acknowledges_an_alert(self, running: RunningHub) -> None:
        fired = silent_store(running, "S002")

        with running.client(running.admin) as admin:
            answer = admin.post(f"/v1/alerts/{fired['id']}/acknowledge", json={"by": "ana"})
            unknown = admin.post("/v1/alerts/999999/acknowledge")
        with running.client(running.keys["S001"]) as store:
            refused = store.post(f"/v1/alerts/{fired['id']}/acknowledge")

        assert answer.status_code == 200, answer.text
        acked = answer.json()
        assert acked["acknowledged_by"].startswith("ana (key ") and acked["acknowledged_at"] is not None
        shown = alert_of(running, "store-offline", "S002", "firing")
        assert shown is not None and shown["acknowledged_by"] == acked["acknowledged_by"]
        assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
        assert refused.status_code == 403

    def test_a_store_key_cannot_list_alerts(self, running: RunningHub) -> None:
        with running.client(running.keys["S001"]) as store:
            assert store.get("/v1/alerts").status_code == 403
        with httpx.Client(base_url=running.url) as anonymous:
            assert anonymous.get("/v1/alerts").status_code == 401
