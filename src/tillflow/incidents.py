"""The demo's operational incidents, each of which the operations console shows and sees clear.

- **ERP maintenance.** Mid-run the reference ERP goes into an unscheduled maintenance window: it
  answers 503 with a Retry-After, the posting flow pauses and its lag grows, then catches up.
- **A poison record.** Finance closed last month's fiscal period. A till sends a sale dated on
  its last day: the hub accepts it, and the ERP refuses its journal, so the posting flow
  dead-letters it. At the end finance reopens the period and an operator replays the dead
  letter through the hub's API, as the console's Replay button does: the journal is posted.
- **Alerts.** The demo's alert rules are tuned to a minute-long run: a store offline for three
  seconds, any dead letter. The run notes every alert that fires, waits until the
  poison record's has, and, at the end, until every one has cleared.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import orjson

from tillflow.model import Store, Transaction
from tillflow.observe.alert_rules import AlertSettings, DeadLettersRule, LagRule, StoreOfflineRule
from tillflow.sim.pos import PosTrafficGenerator

POSTING = "posting"


def demo_alerts() -> AlertSettings:
    """Rules for a minute-long run, evaluated every second."""
    return AlertSettings(
        evaluate_seconds=1.0,
        rules=[
            StoreOfflineRule(name="store-offline", kind="store_offline", minutes=0.05, severity="critical"),
            DeadLettersRule(name="dead-letters", kind="dead_letters", above=0),
            LagRule(name="flow-lag", kind="lag", above=50_000),
        ],
    )


def last_month_day(day: date) -> date:
    """The last day of the month before `day`'s."""
    return day.replace(day=1) - timedelta(days=1)


def poison_sale(store: Store, day: date, seed: int) -> Transaction:
    """A plain sale (no member, no discount) of `store` on the last day of last month."""
    gen = PosTrafficGenerator([store], business_day=last_month_day(day), seed=seed)
    for tx in gen.transactions(200):
        plain = not tx.modifiers and not any(line.modifiers for line in tx.lines)
        if tx.kind == "sale" and tx.customer is None and plain:
            return tx
    raise RuntimeError(f"no plain sale among 200 of {store.store_id}")  # the generator changed


class Incidents:
    """Drives the incidents against the running hub and reference ERP, and says what became of them."""

    def __init__(
        self, hub: httpx.Client, erp_url: str, admin_headers: dict[str, str], maintenance_seconds: float
    ) -> None:
        self.hub = hub
        self.erp_url = erp_url
        self.admin = admin_headers
        self.maintenance_seconds = maintenance_seconds
        self.poison: Transaction | None = None
        self.dead_letter: dict[str, Any] | None = None
        self.replayed = 0
        self.fired: set[str] = set()
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="alert-watch", daemon=True)

    def __enter__(self) -> Incidents:
        self._watcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._watcher.join(timeout=10)

    def _watch(self) -> None:
        """Note every alert that fires during the run, however briefly."""
        while not self._stop.wait(0.5):
            try:
                self.fired |= self._firing()
            except httpx.HTTPError:
                continue  # the hub is busy or stopping: the next look catches up

    def _period(self, status: str) -> None:
        assert self.poison is not None
        period = self.poison.business_day.strftime("%Y-%m")
        answer = httpx.put(f"{self.erp_url}/admin/periods/{period}", json={"status": status}, timeout=10)
        answer.raise_for_status()

    def start_maintenance(self) -> None:
        until = datetime.now(UTC) + timedelta(seconds=self.maintenance_seconds)
        faults = {"maintenance_until": until.isoformat()}
        httpx.put(f"{self.erp_url}/admin/faults", json=faults, timeout=10).raise_for_status()

    def send_poison(self, store: Store, key: str, day: date, seed: int) -> None:
        """Close last month's period at the ERP, then send the sale dated in it to the hub."""
        self.poison = poison_sale(store, day, seed)
        self._period("closed")
        answer = self.hub.post(
            "/v1/transactions",
            content=orjson.dumps({"transactions": [self.poison.model_dump(mode="json")]}),
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        )
        answer.raise_for_status()
        status = answer.json()["results"][0]["status"]
        if status != "accepted":
            raise RuntimeError(f"the hub answered {status} for the poison record")

    def _dead_letters(self) -> list[dict[str, Any]]:
        answer = self.hub.get("/v1/dead-letters", params={"group": POSTING}, headers=self.admin)
        answer.raise_for_status()
        rows: list[dict[str, Any]] = answer.json()["dead_letters"]
        return rows

    def _firing(self) -> set[str]:
        answer = self.hub.get("/v1/alerts", params={"state": "firing"}, headers=self.admin)
        answer.raise_for_status()
        return {a["rule"] for a in answer.json()["alerts"]}

    def wait_dead_lettered(self, deadline: float) -> None:
        """Until the poison record is in the posting flow's dead letters and its alert fired."""
        assert self.poison is not None
        poison = self.poison.transaction_id
        while time.monotonic() < deadline:
            if self.dead_letter is None:
                self.dead_letter = next(
                    (d for d in self._dead_letters() if d.get("transaction_id") == poison), None
                )
            if self.dead_letter is not None and "dead-letters" in self.fired:
                return
            time.sleep(0.2)

    def replay(self) -> None:
        """Finance reopens the period; the operator replays the dead letter."""
        if self.poison is None or self.dead_letter is None:
            return
        self._period("open")
        answer = self.hub.post(
            "/v1/dead-letters/replay",
            json={"ids": [self.dead_letter["id"]], "why": "finance reopened the period"},
            headers=self.admin,
        )
        answer.raise_for_status()
        self.replayed = int(answer.json()["replayed"])

    def wait_clear(self, deadline: float) -> set[str]:
        """Until no alert fires (or the deadline); the rules still firing."""
        firing = self._firing()
        while firing and time.monotonic() < deadline:
            time.sleep(0.5)
            firing = self._firing()
        return firing

    def outcome(self, still_firing: set[str]) -> dict[str, Any]:
        posted = False
        if self.poison is not None:
            trace = self.hub.get(f"/v1/transactions/{self.poison.transaction_id}/trace", headers=self.admin)
            posted = trace.is_success and any(h["hop"].startswith("erp.") for h in trace.json()["hops"])
        return {
            "maintenance_seconds": self.maintenance_seconds,
            "poison": self.poison.transaction_id if self.poison else None,
            "dead_lettered": self.dead_letter is not None,
            "replayed": self.replayed,
            "posted_after_replay": posted,
            "alerts_fired": sorted(self.fired),
            "alerts_firing_at_end": sorted(still_firing),
            "consistent": self.poison is not None
            and self.dead_letter is not None
            and self.replayed == 1
            and posted
            and not still_firing,
        }
