"""Every error tillflow raises on purpose, under one root.

    TillflowError
    ├── ConfigError            Raised when the configuration file or environment is invalid.
    ├── StorageError           Raised when the state store fails (driver errors are wrapped).
    │   └── MigrationError     Raised when the schema cannot be brought to the current version.
    ├── EventLogError          Raised when the event log cannot append, fetch or acknowledge.
    ├── FlowError              Raised when a flow cannot apply an event.
    │   └── PoisonEventError   Raised when an event can never be applied as it is.
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


class ImportAbortedError(TillflowError):
    """Raised when an import cannot go on: the hub is unreachable or refuses the batch."""


# Failures of what carries the work, not of the work itself: the runner retries the batch
# without counting them against its events, and no flow's retry policy may reclassify them.
INFRASTRUCTURE: tuple[type[BaseException], ...] = (StorageError, EventLogError, OSError)
