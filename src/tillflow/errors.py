"""Every error tillflow raises on purpose, under one root.

    TillflowError
    ├── ConfigError            Raised when the configuration file or environment is invalid.
    ├── StorageError           Raised when the state store fails (driver errors are wrapped).
    │   ├── MigrationError     Raised when the schema cannot be brought to the current version.
    │   └── DiskFullError      Raised when a file cannot grow (a full disk, or its size limit).
    ├── EventLogError          Raised when the event log cannot append, fetch or acknowledge.
    ├── FlowError              Raised when a flow cannot apply an event.
    │   └── PoisonEventError   Raised when an event can never be applied as it is.
    ├── FormatError            Raised when an input as a whole cannot be read.
    ├── ImportAbortedError     Raised when an import cannot go on.
    ├── ConnectorError         Raised when a downstream system could not take a request.
    │   ├── DownstreamRejectedError     ...refused it for good (its reason kept).
    │   └── DownstreamUnavailableError  ...is away, throttling or slow: try again later.
    │       └── DownstreamPausedError   ...is held back by its connector (breaker, maintenance).
    └── Problem (hub)          Raised when an HTTP request is answered with an RFC 9457 problem.

Driver errors (sqlite3, psycopg, httpx) are translated at the adapter boundary with
``raise X(...) from exc``.
"""

from __future__ import annotations


class TillflowError(Exception):
    """Raised by tillflow on purpose; the root of every error below."""


class ConfigError(TillflowError):
    """Raised when the configuration file or environment is invalid; names the bad key."""


class StorageError(TillflowError):
    """Raised when the state store fails; the driver's error is the cause."""


class MigrationError(StorageError):
    """Raised when the schema cannot be brought to the current version."""


class DiskFullError(StorageError):
    """Raised when a file cannot grow (the disk, or its size limit, is full): what was being
    submitted is not stored; everything committed before is intact."""


class EventLogError(TillflowError):
    """Raised when the event log cannot append, fetch or acknowledge."""


class FlowError(TillflowError):
    """Raised when a flow cannot apply an event."""


class PoisonEventError(FlowError):
    """Raised when an event can never be applied as it is: retrying will not help, so the
    runner sends it to dead letters at once."""


class FormatError(TillflowError, ValueError):
    """Raised when an input as a whole cannot be read (not the format it claims, not
    well-formed, too large, unsafe): nothing of it is imported, and the message says why.
    One bad record inside a readable input is quarantined instead."""


class MasterDeltaError(FormatError):
    """Raised when a master data delta does not follow on from the version a store's cache
    applied: it starts after it (a gap: the changes in between would be missed), or starts before
    it and ends after it (a withdrawal in between could be missed); or when it is not a delta
    answer at all."""


class ImportAbortedError(TillflowError):
    """Raised when an import cannot go on: the hub is unreachable or refuses the batch."""


class ConnectorError(TillflowError):
    """Raised when a downstream system (loyalty platform, ERP) could not take a request."""


class DownstreamRejectedError(ConnectorError):
    """Raised when the downstream system refuses a request for good (a validation error, an
    unknown account, a closed period): retrying will not help; its reason is kept."""

    def __init__(self, system: str, reason: str, *, status: int | None = None) -> None:
        super().__init__(f"{system} refused: {reason}")
        self.system = system
        self.reason = reason
        self.status = status


class DownstreamUnavailableError(ConnectorError):
    """Raised when the downstream system is away, in maintenance, throttling or too slow: try
    again later (after `retry_after` seconds when it said)."""

    def __init__(
        self, system: str, reason: str, *, retry_after: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(f"{system} unavailable: {reason}")
        self.system = system
        self.reason = reason
        self.retry_after = retry_after
        self.status = status  # the HTTP status when the system answered (429, 503...)

    @property
    def throttled(self) -> bool:
        """The system is up but asks us to slow down (HTTP 429)."""
        return self.status == 429


class DownstreamPausedError(DownstreamUnavailableError):
    """Raised without calling the downstream system, when its connector holds calls back: the
    circuit breaker is open, or a configured maintenance window is on. The consuming flow
    pauses for `retry_after` seconds; no attempt is counted against its events."""

    def __init__(self, system: str, reason: str, *, retry_after: float) -> None:
        super().__init__(system, reason, retry_after=retry_after)


# Failures of what carries the work, not of the work itself: the runner retries the batch
# without counting them against its events, and no flow's retry policy may reclassify them.
INFRASTRUCTURE: tuple[type[BaseException], ...] = (
    StorageError,
    EventLogError,
    OSError,
    DownstreamUnavailableError,
)
