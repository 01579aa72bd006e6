"""The health of a store's edge agent, as it reports it to the hub every few seconds.

A heartbeat says how far the agent is behind (transactions waiting in its outbox, the age of
the oldest), the last error it met, and its own clock (`sent_at`), so the hub can show the
skew between the store's clock and its own. The hub keeps the latest heartbeat of each store;
a store whose latest is older than the hub's limit is offline, one never heard from unknown.

The hub answers a heartbeat with the transactions it misses from the store's day closes; the
agent sends again those it holds, and names in its next heartbeats those it does not hold
(`missing`): they never reached the agent, or it forgot them after its retention.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, Field

from tillflow.model.base import Canonical

MAX_ERROR_LENGTH = 500
MAX_MISSING = 1000  # transaction ids a heartbeat names as missing, at most


class StoreHeartbeat(Canonical):
    """What a store's edge agent reports about itself (`POST /v1/stores/{id}/heartbeat`)."""

    agent_version: Annotated[str, Field(min_length=1, max_length=64)]
    sent_at: AwareDatetime  # the agent's clock when it sent the beat
    buffer_depth: int = Field(ge=0)  # transactions in the outbox not yet acknowledged by the hub
    oldest_unsent_age_seconds: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    last_error: Annotated[str, Field(max_length=MAX_ERROR_LENGTH)] | None = None
    delivered_total: int = Field(ge=0)  # transactions the hub acknowledged since the agent started
    conflicts: int = Field(ge=0)  # of those, refused as conflicts
    # transactions the hub asked for again that the outbox does not hold (None: none reported)
    missing: (
        Annotated[
            tuple[Annotated[str, Field(min_length=1, max_length=200)], ...], Field(max_length=MAX_MISSING)
        ]
        | None
    ) = None


class StoreStatus(StrEnum):
    ONLINE = "online"  # its latest heartbeat is younger than the limit
    OFFLINE = "offline"  # older
    UNKNOWN = "unknown"  # never heard from


def store_status(seconds_since: float | None, offline_after: float) -> StoreStatus:
    """The status of a store whose latest heartbeat is `seconds_since` old (None: none yet)."""
    if seconds_since is None:
        return StoreStatus.UNKNOWN
    return StoreStatus.ONLINE if seconds_since < offline_after else StoreStatus.OFFLINE
