"""Every error tillflow raises on purpose, under one root.

    TillflowError
    ├── ConfigError            Raised when the configuration file or environment is invalid.
    ├── StorageError           Raised when the state store fails (driver errors are wrapped).
    │   └── MigrationError     Raised when the schema cannot be brought to the current version.
    ├── EventLogError          Raised when the event log cannot append, fetch or acknowledge.
    ├── AuthError              Raised when a request has no valid key or acts beyond its key.
    ├── IngestError            Raised when a batch as a whole cannot be taken.
    │   └── BatchTooLarge      Raised when a batch exceeds the record or byte limit.
    └── FlowError              Raised when a flow cannot apply an event.

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


class EventLogError(TillflowError):
    """Raised when the event log cannot append, fetch or acknowledge."""


class AuthError(TillflowError):
    """Raised when a request has no valid key, or acts for a store its key is not bound to."""


class IngestError(TillflowError):
    """Raised when a batch as a whole cannot be taken (its records are judged one by one)."""


class BatchTooLarge(IngestError):
    """Raised when a batch exceeds the record or byte limit."""


class FlowError(TillflowError):
    """Raised when a flow cannot apply an event."""
