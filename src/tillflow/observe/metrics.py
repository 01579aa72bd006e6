"""Placeholder (being built): Prometheus metrics."""

from __future__ import annotations

import threading

from tillflow.services import Services


def start_publisher(services: Services, stop: threading.Event) -> threading.Thread | None:
    """Publish this worker process's own counters to the state store until `stop`."""
    return None
