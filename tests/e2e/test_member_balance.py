"""`GET /v1/loyalty/members/{id}` of a real hub process through the reference loyalty platform
(its own process): the balance, a short cache, and the last known balance marked stale while
the platform is away."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import hub_process, reference_service
from tillflow.config import HubSettings, TillflowConfig
from tillflow.connectors.settings import ConnectorSettings, HttpConnectorSettings
from tillflow.errors import DownstreamUnavailableError
from tillflow.hub.api.loyalty import MemberBalances
from tillflow.ports import Member
from tillflow.processes import ReferenceService
from tillflow.sim.pos import demo_stores


@dataclass
class Running:
    hub: httpx.Client
    loyalty: ReferenceService


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    """A hub for store S001 that keeps a member's balance half a second and waits two seconds for
    the reference loyalty platform."""
    with reference_service("loyalty", tmp_path / "loyalty") as loyalty:
        config = TillflowConfig(
            hub=HubSettings(member_cache_seconds=0.5),
            stores=demo_stores(1),
            connectors=ConnectorSettings(loyalty=HttpConnectorSettings(url=loyalty.url, timeout=2)),
        )
        with hub_process(tmp_path, config) as hub, hub.client(hub.keys["S001"]) as client:
            yield Running(client, loyalty)


class TestMemberBalance:
    def test_fresh_then_stale_while_the_platform_is_away(self, running: Running) -> None:
        fresh = running.hub.get("/v1/loyalty/members/M0001")
        assert fresh.status_code == 200, fresh.text
        body = fresh.json()
        assert (body["member_id"], body["stale"], body["balance"]) == ("M0001", False, 1000)

        unknown = running.hub.get("/v1/loyalty/members/NOBODY")
        assert unknown.status_code == 404
        assert unknown.headers["content-type"].startswith("application/problem+json")

        running.loyalty.stop()
        time.sleep(0.6)  # past the cache's half second: the hub asks again, and cannot
        stale = running.hub.get("/v1/loyalty/members/M0001")
        assert stale.status_code == 200, stale.text
        assert stale.json()["stale"] is True
        assert (stale.json()["balance"], stale.json()["as_of"]) == (1000, body["as_of"])

        never_seen = running.hub.get("/v1/loyalty/members/M0002")
        assert never_seen.status_code == 503
        assert never_seen.headers["content-type"].startswith("application/problem+json")
        assert "retry-after" in never_seen.headers

    def test_a_key_is_required(self, running: Running) -> None:
        answer = httpx.get(f"{running.hub.base_url}/v1/loyalty/members/M0001", timeout=10)
        assert answer.status_code == 401


class _Platform:
    """A loyalty platform that answers from a dict, or is away (for the cache's own timing)."""

    def __init__(self) -> None:
        self.away = False
        self.asked = 0
        self.balance = 10

    def find_member(self, member_id: str, *, program: str = "default") -> Member | None:
        self.asked += 1
        if self.away:
            raise DownstreamUnavailableError("loyalty", "away")
        return Member(member_id, program, "basic", self.balance)


class TestTheCache:
    def test_an_answer_is_reused_until_it_is_older_than_the_ttl(self) -> None:
        platform, now = _Platform(), [0.0]
        balances = MemberBalances(lambda: platform, ttl=30, clock=lambda: now[0])  # type: ignore[arg-type,return-value]
        assert balances.lookup("M1", "default").member.balance == 10  # type: ignore[union-attr]
        platform.balance = 25
        now[0] = 29.9
        assert balances.lookup("M1", "default").member.balance == 10  # type: ignore[union-attr]
        now[0] = 30.0
        assert balances.lookup("M1", "default").member.balance == 25  # type: ignore[union-attr]
        assert platform.asked == 2

    def test_the_least_recently_asked_member_is_forgotten_first(self) -> None:
        platform, now = _Platform(), [0.0]
        balances = MemberBalances(lambda: platform, ttl=30, clock=lambda: now[0], max_entries=2)  # type: ignore[arg-type,return-value]
        for member in ("M1", "M2", "M1", "M3"):  # M2 goes
            balances.lookup(member, "default")
        platform.away = True
        assert balances.lookup("M1", "default").member is not None
        with pytest.raises(DownstreamUnavailableError):
            balances.lookup("M2", "default")
