"""Placeholder (being built): the alert evaluator."""

from __future__ import annotations

import threading

from tillflow.services import Services


def start_evaluator(services: Services, stop: threading.Event) -> threading.Thread | None:
    """Evaluate the configured alert rules every `alerts.evaluate_seconds` until `stop`."""
    return None
